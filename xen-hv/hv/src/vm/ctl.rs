//! The control domain's interface on the sandbox control channel (docs/sandbox-transport.md): COM2 carries
//! control frames, `xen_abi::ctlserver` decodes them and runs the domctl / sysctl / memory_op / hvm_op /
//! sched_op / event_channel_op subset through [`Backend`], implemented here on the machine's domain table.
//! Requests act as domain 0.
//!
//! A domain built over the channel is "pending" from `createdomain` until its first `unpausedomain`: the
//! toolstack sizes it (`max_mem`), populates its memory (one contiguous block, mapped in its nested tables,
//! at the first `populate_physmap`), writes its image through the RAM file, sets HVM params and vCPU 0's
//! context; the first unpause installs it with [`Machine::install`], the code that also finishes domains
//! built from boot modules.

use alloc::boxed::Box;
use alloc::vec::Vec;

use xen_abi::ctlframe::{self, Decoded, Hello, HEADER_LEN, MAX_PAYLOAD};
use xen_abi::ctlserver::{self, Backend};
use xen_abi::domctl::{self, dominf, GetDomainInfo};
use xen_abi::errno::Errno;
use xen_abi::memres;
use xen_abi::sysctl::{physcap, Physinfo};
use xen_abi::xen::{E820Entry, VcpuHvmContext};

use super::{
    zero, DomState, Frames, HostMem, Machine, Setup, State, MAX_DOMAINS, MAX_DOMAIN_VCPUS,
};
use crate::arch::{self, CtlPort as Com2};
use xen_hv::frames::PAGE;
use xen_hv::hypercall::NR_PARAMS;
use xen_hv::paging::PageTable;
use xen_hv::vcpu::Vcpu as _;

/// `(major << 16) | minor` of the version xen-hv reports.
const XEN_VERSION: u32 = (4 << 16) | 17;
/// The port `VIRQ_DOM_EXC` is delivered on.
const DOM_EXC_PORT: u32 = 1;
/// The control domain's ports (port 1 is `VIRQ_DOM_EXC`'s; the others bind to domains' channels).
const NR_LOCAL_PORTS: usize = 512;

/// A domain under construction.
struct Pending {
    create: domctl::CreateDomain,
    max_kb: u64,
    mem: Option<(u64, u64, PageTable)>,
    ctx: Option<VcpuHvmContext>,
    /// HVM context records (`sethvmcontext`), applied once the domain is installed instead of a start context.
    hvm: Option<Vec<u8>>,
    params: [u64; NR_PARAMS],
    next_port: u32,
    e820: [E820Entry; memres::MAX_E820],
    e820_len: usize,
}

/// The control channel's state.
pub struct Ctl {
    uart: Com2,
    rx: Box<[u8]>,
    rx_len: usize,
    out: Box<[u8]>,
    pending: Vec<Option<Pending>>,
    handles: Vec<[u8; 16]>,
    paused: Vec<bool>,
    reap: Vec<bool>,
    dom_exc: bool,
    nr_cpus: u32,
    ram_bytes: u64,
    /// The control domain's interdomain ports: (domain ID, its port).
    locals: Box<[Option<(u16, u32)>]>,
}

impl Ctl {
    /// The channel when the machine has COM2.
    pub fn probe() -> Option<Self> {
        Com2::probe().map(|uart| Self {
            uart,
            rx: alloc::vec![0u8; HEADER_LEN + MAX_PAYLOAD].into_boxed_slice(),
            rx_len: 0,
            out: alloc::vec![0u8; HEADER_LEN + MAX_PAYLOAD].into_boxed_slice(),
            pending: (0..MAX_DOMAINS).map(|_| None).collect(),
            handles: alloc::vec![[0; 16]; MAX_DOMAINS],
            paused: alloc::vec![false; MAX_DOMAINS],
            reap: alloc::vec![false; MAX_DOMAINS],
            dom_exc: false,
            nr_cpus: 1,
            ram_bytes: 0,
            locals: alloc::vec![None; NR_LOCAL_PORTS].into_boxed_slice(),
        })
    }

    /// Records what HELLO and physinfo report.
    pub fn set_host(&mut self, nr_cpus: u32, ram_bytes: u64) {
        self.nr_cpus = nr_cpus;
        self.ram_bytes = ram_bytes;
    }

    /// True when the control domain destroyed the domain in `slot`, so its memory may go.
    pub fn may_release(&self, slot: usize) -> bool {
        self.reap[slot]
    }

    /// True when the domain in `slot` is paused by the control domain.
    pub fn is_paused(&self, slot: usize) -> bool {
        self.paused[slot]
    }

    /// Tells the control domain that a domain shut down or died (`VIRQ_DOM_EXC`).
    pub fn raise_dom_exc(&mut self) {
        if self.dom_exc {
            let mut ev = [0u8; 16];
            if let Ok(n) = ctlserver::event(DOM_EXC_PORT, &mut ev) {
                self.uart.write(&ev[..n]);
            }
        }
    }
}

impl Machine {
    /// Serves the control channel: reads what COM2 holds, keeps reading while a frame is incomplete (QEMU
    /// refills the 16-byte FIFO as it is drained), and answers every whole frame.
    pub fn poll_ctl(&mut self) {
        let Some(mut ctl) = self.ctl.take() else {
            return;
        };
        let mut idle_spins = 0u32;
        loop {
            let at = ctl.rx_len;
            let n = ctl.uart.read(&mut ctl.rx[at..]);
            ctl.rx_len += n;
            let mut progressed = n > 0;
            loop {
                match ctlframe::decode(&ctl.rx[..ctl.rx_len]) {
                    Decoded::Frame { header, consumed } => {
                        let payload_end = consumed;
                        let mut out = core::mem::take(&mut ctl.out);
                        let payload = ctl.rx[HEADER_LEN..payload_end].to_vec();
                        self.ctl = Some(ctl);
                        let reply = ctlserver::handle(self, &header, &payload, &mut out);
                        ctl = self.ctl.take().unwrap_or_else(|| unreachable_ctl());
                        if let Some(len) = reply {
                            ctl.uart.write(&out[..len]);
                        }
                        ctl.out = out;
                        ctl.rx.copy_within(consumed..ctl.rx_len, 0);
                        ctl.rx_len -= consumed;
                        progressed = true;
                    }
                    Decoded::Garbage { skip, seq, .. } => {
                        if let Some(seq) = seq {
                            if let Ok(len) = ctlserver::invalid(seq, &mut ctl.out) {
                                let out = core::mem::take(&mut ctl.out);
                                ctl.uart.write(&out[..len]);
                                ctl.out = out;
                            }
                        }
                        ctl.rx.copy_within(skip..ctl.rx_len, 0);
                        ctl.rx_len -= skip;
                        progressed = true;
                    }
                    Decoded::NeedMore => break,
                }
            }
            if ctl.rx_len == 0 {
                break;
            }
            // A partial frame: wait a little for the rest instead of a whole timer tick.
            if progressed {
                idle_spins = 0;
            } else {
                idle_spins += 1;
                if idle_spins > 200_000 {
                    break;
                }
                core::hint::spin_loop();
            }
        }
        self.ctl = Some(ctl);
        self.reap_destroyed();
    }

    /// Forgets destroyed domains once their memory is back.
    fn reap_destroyed(&mut self) {
        let Some(ctl) = self.ctl.as_mut() else {
            return;
        };
        for slot in 0..MAX_DOMAINS {
            if ctl.reap[slot] && self.domains[slot].as_ref().is_none_or(|d| d.released) {
                self.domains[slot] = None;
                ctl.reap[slot] = false;
                ctl.paused[slot] = false;
                // Its ID may be handed out again: the control domain's ends of its channels go dead.
                for l in ctl.locals.iter_mut() {
                    if l.is_some_and(|(dom, _)| usize::from(dom) == slot + 1) {
                        *l = None;
                    }
                }
            }
        }
    }

    fn ctl(&mut self) -> &mut Ctl {
        self.ctl.as_mut().unwrap_or_else(|| unreachable_ctl())
    }

    fn slot_of(&self, domid: u16) -> Option<usize> {
        let slot = usize::from(domid).checked_sub(1)?;
        (slot < MAX_DOMAINS).then_some(slot)
    }

    fn pending_mut(&mut self, domid: u16) -> Option<&mut Pending> {
        let slot = self.slot_of(domid)?;
        self.ctl.as_mut()?.pending[slot].as_mut()
    }

    fn set_vcpus(&mut self, slot: usize, paused: bool) {
        let Some(d) = self.domains[slot].as_ref() else {
            return;
        };
        // A domain that shut down (to suspend) stays stopped until `resumedomain`.
        if !paused && d.state != DomState::Alive {
            return;
        }
        let (vcpus, nr) = (d.vcpus, d.nr_vcpus);
        for &v in &vcpus[..nr] {
            let initialised = self.meta[v].as_ref().is_some_and(|m| m.initialised);
            match (paused, self.sched.state(v)) {
                (true, State::Runnable | State::Blocked(_)) => self.sched.set(v, State::Down),
                // A running vCPU stops at its next exit (see `handle_exit`).
                (false, State::Down) if initialised => self.sched.set(v, State::Runnable),
                _ => {}
            }
        }
    }

    fn finish_pending(&mut self, slot: usize) -> Result<(), Errno> {
        let p = self.ctl().pending[slot].take().ok_or(Errno::Esrch)?;
        // Either a start context for vCPU 0 (a new domain) or saved HVM context records (a restored one).
        let start = match (&p.ctx, &p.hvm) {
            (_, Some(_)) => None,
            (Some(ctx), None) => match ctx.decode() {
                Some(start) => Some((start, u64::from(ctx.x86_32.eip), u64::from(ctx.x86_32.ebx))),
                None => {
                    self.ctl().pending[slot] = Some(p);
                    return Err(Errno::Einval);
                }
            },
            (None, None) => {
                self.ctl().pending[slot] = Some(p);
                return Err(Errno::Einval);
            }
        };
        let Some((mem_base, mem_bytes, npt)) = p.mem else {
            self.ctl().pending[slot] = Some(p);
            return Err(Errno::Einval);
        };
        let nr_vcpus = (p.create.max_vcpus as usize).clamp(1, MAX_DOMAIN_VCPUS);
        let (start, entry) = match start {
            Some((s, eip, ebx)) => (Some(s), (eip, ebx)),
            None => (None, (0, 0)),
        };
        self.install(
            slot,
            "xl",
            (mem_base, mem_bytes),
            npt,
            nr_vcpus,
            entry,
            Setup {
                start,
                params: p.params,
                e820: p.e820,
                e820_len: p.e820_len,
                dom0_ports: p.next_port,
            },
        )
        .map_err(|_| Errno::Enomem)?;
        if let Some(records) = p.hvm {
            if let Err(e) = self.load_hvm(slot, &records) {
                self.destroy(slot, DomState::Crashed);
                self.ctl().reap[slot] = true;
                self.try_release(slot);
                self.reap_destroyed();
                return Err(e);
            }
            // Every vCPU with a processor record runs (vCPU 0 already does).
            self.set_vcpus(slot, false);
        }
        Ok(())
    }

    /// True when none of the domain's vCPUs is on a CPU (their state can be read or replaced).
    fn vcpus_parked(&self, slot: usize) -> bool {
        self.domains[slot].as_ref().is_some_and(|d| {
            d.vcpus[..d.nr_vcpus]
                .iter()
                .all(|&v| self.meta[v].is_none() || self.hw[v].is_some())
        })
    }

    /// Loads HVM context records into an installed domain whose vCPUs are parked: processor state and local
    /// APICs. A vCPU with a processor record counts as initialised (up), as in Xen.
    fn load_hvm(&mut self, slot: usize, records: &[u8]) -> Result<(), Errno> {
        use xen_abi::hvmsave as hs;
        use xen_abi::plain::Plain;
        let d = self.domains[slot].as_ref().ok_or(Errno::Esrch)?;
        let (vcpus, nr) = (d.vcpus, d.nr_vcpus);
        let mut lapic = [None; MAX_DOMAIN_VCPUS];
        for r in hs::parse(records).map_err(|_| Errno::Einval)? {
            let i = usize::from(r.instance);
            if i >= nr {
                return Err(Errno::Einval);
            }
            let v = vcpus[i];
            match r.typecode {
                hs::CPU => {
                    let c = hs::HvmHwCpu::read_from(r.data).ok_or(Errno::Einval)?;
                    let hw = self.hw[v].as_mut().ok_or(Errno::Ebusy)?;
                    if !hw.load_hvm_cpu(&c) {
                        return Err(Errno::Einval);
                    }
                    if let Some(m) = self.meta[v].as_mut() {
                        m.initialised = true;
                    }
                }
                hs::LAPIC => lapic[i] = hs::HvmHwLapic::read_from(r.data),
                hs::LAPIC_REGS => {
                    let (Some(hw), Ok(regs)) = (lapic[i], <&[u8; 1024]>::try_from(r.data)) else {
                        return Err(Errno::Einval);
                    };
                    let m = self.meta[v].as_mut().ok_or(Errno::Einval)?;
                    if !m.lapic.load(&hw, regs) {
                        return Err(Errno::Einval);
                    }
                }
                // Records of devices this hypervisor does not emulate are ignored, as Xen ignores unknown ones
                // only when they are empty; refuse the rest.
                _ if r.data.is_empty() => {}
                _ => return Err(Errno::Einval),
            }
        }
        Ok(())
    }
}

#[cold]
fn unreachable_ctl() -> ! {
    panic!("the control channel vanished while serving a request")
}

impl Backend for Machine {
    fn hello(&self) -> Hello {
        let (nr_cpus, ram) = self
            .ctl
            .as_ref()
            .map_or((1, 0), |c| (c.nr_cpus, c.ram_bytes));
        Hello {
            version: ctlframe::PROTOCOL_VERSION,
            ram_bytes: ram,
            nr_cpus,
            xen_version: XEN_VERSION,
        }
    }

    fn create_domain(&mut self, domid: u16, req: &domctl::CreateDomain) -> Result<u16, Errno> {
        if req.max_vcpus == 0 || req.max_vcpus as usize > MAX_DOMAIN_VCPUS {
            return Err(Errno::Einval);
        }
        if req.flags & domctl::cdf::HVM == 0 {
            // Only PVH (HVM container) guests exist here.
            return Err(Errno::Eopnotsupp);
        }
        let ctl = self.ctl.as_ref().ok_or(Errno::Enosys)?;
        let free = |s: usize| self.domains[s].is_none() && ctl.pending[s].is_none() && !ctl.reap[s];
        let slot = if domid == 0 {
            (0..MAX_DOMAINS).find(|s| free(*s)).ok_or(Errno::Enospc)?
        } else {
            let s = self.slot_of(domid).ok_or(Errno::Einval)?;
            if !free(s) {
                return Err(Errno::Eexist);
            }
            s
        };
        let ctl = self.ctl();
        ctl.pending[slot] = Some(Pending {
            create: *req,
            max_kb: 0,
            mem: None,
            ctx: None,
            hvm: None,
            params: [0; NR_PARAMS],
            next_port: 1,
            e820: [E820Entry::default(); memres::MAX_E820],
            e820_len: 0,
        });
        ctl.handles[slot] = req.handle;
        ctl.paused[slot] = true;
        Ok(slot as u16 + 1)
    }

    fn destroy_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        if let Some(p) = self.ctl().pending[slot].take() {
            if let Some((base, bytes, npt)) = p.mem {
                let frames = &mut self.frames;
                npt.table_frames(&HostMem, &mut |f| {
                    frames.free(f, PAGE);
                });
                self.frames.free(base, bytes);
            }
            self.ctl().paused[slot] = false;
            self.ctl().raise_dom_exc();
            return Ok(());
        }
        let state = self.domains[slot].as_ref().ok_or(Errno::Esrch)?.state;
        let alive = state == DomState::Alive;
        if self.ctl().reap[slot] {
            return Err(Errno::Esrch);
        }
        if alive {
            self.destroy(slot, DomState::Crashed);
        } else if state == DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND) {
            // A suspended domain still has its vCPUs: they go now.
            self.destroy(slot, state);
        }
        self.ctl().reap[slot] = true;
        self.try_release(slot);
        self.reap_destroyed();
        if !alive {
            self.ctl().raise_dom_exc();
        }
        Ok(())
    }

    fn set_paused(&mut self, domid: u16, paused: bool) -> Result<(), Errno> {
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        if self.ctl().pending[slot].is_some() {
            if paused {
                return Ok(());
            }
            self.finish_pending(slot)?;
            self.ctl().paused[slot] = false;
            return Ok(());
        }
        if self.domains[slot].is_none() || self.ctl().reap[slot] {
            return Err(Errno::Esrch);
        }
        self.ctl().paused[slot] = paused;
        self.set_vcpus(slot, paused);
        Ok(())
    }

    fn domain_info(&mut self, domid: u16) -> Option<GetDomainInfo> {
        let ctl = self.ctl.as_ref()?;
        if domid == 0 {
            return Some(GetDomainInfo {
                domain: 0,
                flags: dominf::RUNNING,
                tot_pages: 0,
                max_pages: u64::MAX / 4,
                nr_online_vcpus: 0,
                max_vcpu_id: 0,
                ..GetDomainInfo::default()
            });
        }
        for slot in usize::from(domid) - 1..MAX_DOMAINS {
            let id = slot as u16 + 1;
            let paused = ctl.paused[slot];
            let mut i = GetDomainInfo {
                domain: id,
                handle: ctl.handles[slot],
                ..GetDomainInfo::default()
            };
            if let Some(p) = &ctl.pending[slot] {
                i.flags = dominf::HVM_GUEST | dominf::HAP | dominf::PAUSED;
                i.tot_pages = p.mem.as_ref().map_or(0, |m| m.1 / PAGE);
                i.max_pages = p.max_kb / 4;
                i.max_vcpu_id = p.create.max_vcpus.saturating_sub(1);
                return Some(i);
            }
            if ctl.reap[slot] {
                continue;
            }
            let Some(d) = self.domains[slot].as_ref() else {
                continue;
            };
            i.flags = dominf::HVM_GUEST | dominf::HAP;
            match d.state {
                DomState::Alive => {}
                DomState::Shutdown(r) => {
                    i.flags |= dominf::SHUTDOWN | ((r & 0xff) << dominf::SHUTDOWN_SHIFT)
                }
                DomState::Crashed => i.flags |= dominf::SHUTDOWN | (3 << dominf::SHUTDOWN_SHIFT),
            }
            let vcpus = &d.vcpus[..d.nr_vcpus];
            let states = vcpus.iter().map(|&v| self.sched.state(v));
            if paused {
                i.flags |= dominf::PAUSED;
            } else if d.state == DomState::Alive {
                let mut running = false;
                let mut blocked = true;
                for s in states {
                    running |= s == State::Running;
                    blocked &= matches!(s, State::Blocked(_) | State::Down);
                }
                if running {
                    i.flags |= dominf::RUNNING;
                } else if blocked {
                    i.flags |= dominf::BLOCKED;
                }
            }
            i.tot_pages = if d.released { 0 } else { d.mem_bytes / PAGE };
            i.max_pages = d.mem_bytes / PAGE;
            i.nr_online_vcpus = vcpus
                .iter()
                .filter(|&&v| self.meta[v].as_ref().is_some_and(|m| m.initialised))
                .count() as u32;
            i.max_vcpu_id = d.nr_vcpus as u32 - 1;
            return Some(i);
        }
        None
    }

    fn set_max_mem(&mut self, domid: u16, kb: u64) -> Result<(), Errno> {
        let p = self.pending_mut(domid).ok_or(Errno::Esrch)?;
        if p.mem.is_some() {
            // Ballooning is not supported: the block is fixed once populated.
            return Err(Errno::Ebusy);
        }
        p.max_kb = kb;
        Ok(())
    }

    fn populate(&mut self, domid: u16, gfn: u64) -> Result<(), Errno> {
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let (max_kb, has_mem) = match self.ctl.as_ref().and_then(|c| c.pending[slot].as_ref()) {
            Some(p) => (p.max_kb, p.mem.is_some()),
            None => return Err(Errno::Esrch),
        };
        let bytes = (max_kb * 1024).next_multiple_of(2 << 20);
        if gfn >= bytes / PAGE {
            return Err(Errno::Enomem);
        }
        if !has_mem {
            let base = self.frames.alloc(bytes, 2 << 20).ok_or(Errno::Enomem)?;
            zero(base, bytes);
            let mut fs = Frames(&mut self.frames);
            let Ok(npt) = PageTable::with_format(&mut fs, arch::NESTED_FORMAT) else {
                self.frames.free(base, bytes);
                return Err(Errno::Enomem);
            };
            for gpa in (0..bytes).step_by(PAGE as usize) {
                if npt
                    .map(
                        &mut HostMem,
                        &mut fs,
                        gpa,
                        base + gpa,
                        arch::GUEST_RAM_FLAGS,
                    )
                    .is_err()
                {
                    let frames = &mut self.frames;
                    npt.table_frames(&HostMem, &mut |f| {
                        frames.free(f, PAGE);
                    });
                    self.frames.free(base, bytes);
                    return Err(Errno::Enomem);
                }
            }
            if let Some(p) = self.ctl().pending[slot].as_mut() {
                p.mem = Some((base, bytes, npt));
            }
        }
        Ok(())
    }

    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuHvmContext,
    ) -> Result<(), Errno> {
        let p = self.pending_mut(domid).ok_or(Errno::Esrch)?;
        if vcpu != 0 {
            // Secondary vCPUs start through VCPUOP_initialise from the guest.
            return Err(Errno::Einval);
        }
        ctx.decode().ok_or(Errno::Einval)?;
        p.ctx = Some(*ctx);
        Ok(())
    }

    fn set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Errno> {
        let i = index as usize;
        if i >= NR_PARAMS {
            return Err(Errno::Einval);
        }
        if let Some(p) = self.pending_mut(domid) {
            p.params[i] = value;
            return Ok(());
        }
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let d = self.domains[slot].as_mut().ok_or(Errno::Esrch)?;
        d.params[i] = value;
        Ok(())
    }

    fn get_hvm_context(&mut self, domid: u16, out: &mut [u8]) -> Result<usize, (Errno, usize)> {
        use xen_abi::hvmsave as hs;
        use xen_abi::plain::Plain;
        let slot = self.slot_of(domid).ok_or((Errno::Esrch, 0))?;
        if self.ctl().pending[slot].is_some() || self.ctl().reap[slot] {
            return Err((Errno::Esrch, 0));
        }
        let d = self.domains[slot].as_ref().ok_or((Errno::Esrch, 0))?;
        if d.released {
            return Err((Errno::Esrch, 0));
        }
        // The lock is held, so the state read is consistent; a vCPU on a CPU right now is asked for again.
        if !self.vcpus_parked(slot) {
            return Err((Errno::Eagain, 0));
        }
        let header = hs::HvmSaveHeader {
            magic: hs::FILE_MAGIC,
            version: hs::FILE_VERSION,
            changeset: u64::from(XEN_VERSION),
            ..hs::HvmSaveHeader::default()
        };
        let mut w = hs::Writer::new(out, &header);
        for (i, &v) in d.vcpus[..d.nr_vcpus].iter().enumerate() {
            let (Some(m), Some(hw)) = (self.meta[v].as_ref(), self.hw[v].as_ref()) else {
                continue;
            };
            // A vCPU that is down has no record and stays down when the context is loaded.
            if !m.initialised {
                continue;
            }
            let cpu = hw.save_hvm_cpu().ok_or((Errno::Eopnotsupp, 0))?;
            w.push(hs::CPU, i as u16, cpu.as_bytes());
            let mut regs = [0u8; hs::LAPIC_REGS_LEN];
            let lapic = m.lapic.save(&mut regs);
            w.push(hs::LAPIC, i as u16, lapic.as_bytes());
            w.push(hs::LAPIC_REGS, i as u16, &regs);
        }
        w.finish().map_err(|(_, needed)| (Errno::Enobufs, needed))
    }

    fn set_hvm_context(&mut self, domid: u16, records: &[u8]) -> Result<(), Errno> {
        use xen_abi::hvmsave as hs;
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let recs = hs::parse(records).map_err(|_| Errno::Einval)?;
        if let Some(p) = self.ctl().pending[slot].as_mut() {
            // Applied when the domain is installed; vCPU 0 must come with a processor record.
            let nr = (p.create.max_vcpus as usize).clamp(1, MAX_DOMAIN_VCPUS);
            let mut has_vcpu0 = false;
            for r in recs {
                if usize::from(r.instance) >= nr {
                    return Err(Errno::Einval);
                }
                has_vcpu0 |= r.typecode == hs::CPU && r.instance == 0;
            }
            if !has_vcpu0 {
                return Err(Errno::Einval);
            }
            p.hvm = Some(records.to_vec());
            return Ok(());
        }
        if self.ctl().reap[slot] {
            return Err(Errno::Esrch);
        }
        let d = self.domains[slot].as_ref().ok_or(Errno::Esrch)?;
        let suspended =
            d.state == DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND);
        if d.released || (d.state != DomState::Alive && !suspended) {
            return Err(Errno::Esrch);
        }
        // A running domain must be paused first, as Xen requires.
        if !suspended && !self.ctl().paused[slot] {
            return Err(Errno::Ebusy);
        }
        if !self.vcpus_parked(slot) {
            return Err(Errno::Eagain);
        }
        self.load_hvm(slot, records)
    }

    fn resume_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        if self.ctl().pending[slot].is_some() || self.ctl().reap[slot] {
            return Err(Errno::Esrch);
        }
        let paused = self.ctl().paused[slot];
        let d = self.domains[slot].as_mut().ok_or(Errno::Esrch)?;
        if d.state != DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND) {
            // As in Xen, resuming a domain that did not suspend changes nothing.
            return if d.released {
                Err(Errno::Esrch)
            } else {
                Ok(())
            };
        }
        d.state = DomState::Alive;
        if !paused {
            self.set_vcpus(slot, false);
        }
        Ok(())
    }

    fn get_param(&mut self, domid: u16, index: u32) -> Result<u64, Errno> {
        let i = index as usize;
        if i >= NR_PARAMS {
            return Err(Errno::Einval);
        }
        if let Some(p) = self.pending_mut(domid) {
            return Ok(p.params[i]);
        }
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let d = self.domains[slot].as_ref().ok_or(Errno::Esrch)?;
        Ok(d.params[i])
    }

    fn remote_shutdown(&mut self, domid: u16, reason: u32) -> Result<(), Errno> {
        // As Xen's SCHEDOP_remote_shutdown: the domain is shut down with `reason` (the toolstack's on_* action
        // decides what follows).
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let alive = self.domains[slot]
            .as_ref()
            .is_some_and(|d| d.state == DomState::Alive);
        if !alive {
            return Err(Errno::Esrch);
        }
        self.destroy(slot, DomState::Shutdown(reason));
        Ok(())
    }

    fn physinfo(&mut self) -> Physinfo {
        let (nr_cpus, ram) = self
            .ctl
            .as_ref()
            .map_or((1, 0), |c| (c.nr_cpus, c.ram_bytes));
        Physinfo {
            threads_per_core: 1,
            cores_per_socket: nr_cpus,
            nr_cpus,
            max_cpu_id: nr_cpus.saturating_sub(1),
            nr_nodes: 1,
            capabilities: physcap::HVM | physcap::HAP,
            total_pages: ram / PAGE,
            free_pages: self.frames.free_bytes() / PAGE,
            max_mfn: ram / PAGE,
            ..Physinfo::default()
        }
    }

    fn translate(&mut self, domid: u16, gfn: u64) -> Result<u64, Errno> {
        let slot = self.slot_of(domid).ok_or(Errno::Esrch)?;
        let (base, bytes) = match self.ctl.as_ref().and_then(|c| c.pending[slot].as_ref()) {
            Some(p) => p.mem.as_ref().map(|m| (m.0, m.1)).ok_or(Errno::Einval)?,
            None => {
                let d = self.domains[slot].as_ref().ok_or(Errno::Esrch)?;
                if d.released {
                    return Err(Errno::Esrch);
                }
                (d.mem_base, d.mem_bytes)
            }
        };
        if gfn >= bytes / PAGE {
            return Err(Errno::Einval);
        }
        Ok(base / PAGE + gfn)
    }

    fn bind_virq(&mut self, virq: u32) -> Result<u32, Errno> {
        if virq != memres::VIRQ_DOM_EXC {
            return Err(Errno::Einval);
        }
        self.ctl().dom_exc = true;
        Ok(DOM_EXC_PORT)
    }

    fn set_memory_map(&mut self, domid: u16, map: &[E820Entry]) -> Result<(), Errno> {
        let p = self.pending_mut(domid).ok_or(Errno::Esrch)?;
        let n = map.len().min(memres::MAX_E820);
        p.e820[..n].copy_from_slice(&map[..n]);
        p.e820_len = n;
        Ok(())
    }

    fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, Errno> {
        if remote != 0 {
            return Err(Errno::Einval);
        }
        if let Some(p) = self.pending_mut(dom) {
            // Reserved in the domain's table when it is installed.
            let port = p.next_port;
            if port as usize >= xen_hv::evtchn::NR_PORTS {
                return Err(Errno::Enospc);
            }
            p.next_port += 1;
            return Ok(port);
        }
        let slot = self.slot_of(dom).ok_or(Errno::Esrch)?;
        match self.domains[slot].as_mut() {
            Some(d) if !d.released => d.evtchn.alloc_interdomain(0),
            _ => Err(Errno::Esrch),
        }
    }

    fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> Result<u32, Errno> {
        let slot = self.slot_of(remote_dom).ok_or(Errno::Esrch)?;
        let pending = self.ctl.as_ref().and_then(|c| c.pending[slot].as_ref());
        let valid = match (pending, self.domains[slot].as_ref()) {
            (Some(p), _) => remote_port >= 1 && remote_port < p.next_port,
            (None, Some(d)) if !d.released => matches!(
                d.evtchn.get(remote_port),
                xen_hv::evtchn::Binding::Interdomain { remote: 0, .. }
            ),
            _ => return Err(Errno::Esrch),
        };
        if !valid {
            return Err(Errno::Einval);
        }
        let ctl = self.ctl();
        let local = (2..NR_LOCAL_PORTS)
            .find(|&p| ctl.locals[p].is_none())
            .ok_or(Errno::Enospc)?;
        ctl.locals[local] = Some((remote_dom, remote_port));
        Ok(local as u32)
    }

    fn send(&mut self, local_port: u32) -> Result<(), Errno> {
        let (dom, port) = self
            .ctl()
            .locals
            .get(local_port as usize)
            .copied()
            .flatten()
            .ok_or(Errno::Einval)?;
        let slot = self.slot_of(dom).ok_or(Errno::Esrch)?;
        if self.ctl().pending[slot].is_some() {
            // Not running yet: nothing can be waiting for the event.
            return Ok(());
        }
        self.raise_port(slot, port)
    }

    fn poll_notified(&mut self, out: &mut [u32]) -> usize {
        let mut n = 0;
        for slot in 0..MAX_DOMAINS {
            let Some(d) = self.domains[slot].as_mut() else {
                continue;
            };
            if d.notified == 0 {
                continue;
            }
            let domid = d.id;
            let mut left = d.notified;
            let Some(ctl) = self.ctl.as_ref() else {
                return n;
            };
            while left != 0 {
                let port = left.trailing_zeros();
                if n == out.len() {
                    break;
                }
                left &= !(1 << port);
                if let Some(local) = ctl.locals.iter().position(|l| *l == Some((domid, port))) {
                    out[n] = local as u32;
                    n += 1;
                }
            }
            if let Some(d) = self.domains[slot].as_mut() {
                d.notified = left;
            }
            if n == out.len() {
                break;
            }
        }
        n
    }

    fn close(&mut self, local_port: u32) -> Result<(), Errno> {
        match self.ctl().locals.get_mut(local_port as usize) {
            Some(l @ Some(_)) => {
                *l = None;
                Ok(())
            }
            _ => Err(Errno::Einval),
        }
    }
}

/// Copies console output of a domain built by the toolstack into its console ring (`HVM_PARAM_CONSOLE_PFN`),
/// where the control domain reads it.
pub fn console_to_ring(mem_base: u64, mem_bytes: u64, pfn: u64, bytes: &[u8]) {
    if pfn == 0 || pfn >= mem_bytes / PAGE {
        return;
    }
    let page = mem_base + pfn * PAGE;
    let prod_pa = page + memres::CONS_OUT_PROD as u64;
    // SAFETY: the ring page lies inside the domain's own memory block (checked above), identity-mapped; the
    // producer index is a naturally aligned u32.
    let mut prod = unsafe { core::ptr::read_volatile(prod_pa as usize as *const u32) };
    for &b in bytes {
        let at = page + (memres::CONS_IN_SIZE + prod as usize % memres::CONS_OUT_SIZE) as u64;
        // SAFETY: `at` is inside the ring page's output area.
        unsafe { core::ptr::write_volatile(at as usize as *mut u8, b) };
        prod = prod.wrapping_add(1);
    }
    // SAFETY: as above; the index is published after the bytes.
    unsafe { core::ptr::write_volatile(prod_pa as usize as *mut u32, prod) };
}
