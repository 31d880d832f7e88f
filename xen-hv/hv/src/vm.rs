//! Domains on the bare-metal image: building them from the guest pack, running their vCPUs round robin on the
//! CPUs, handling their exits and hypercalls, and judging the test guests' results. Architecture-neutral: the
//! hardware vCPU, the domain layout, time and idling come from `crate::arch`'s facade; the x86-only exits
//! (CPUID, MSR, port I/O) are compiled for x86_64 only.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write as _;

use xen_abi::errno::Errno;
use xen_abi::xen::{E820Entry, VcpuStart};
use xen_hv::frames::{FrameAllocator, PAGE};
use xen_hv::hypercall::{self, Guest, Next, NR_PARAMS};
use xen_hv::paging::{FrameSource, PageTable, PhysMem};
use xen_hv::sched::{RoundRobin, State};
use xen_hv::vcpu::{Exit, Vcpu};

use crate::arch::{self, HwVcpu};
use crate::console::Serial;

// On aarch64 the control port type has no values (the virt machine has no second UART), so the compiler sees
// the channel code as unreachable there.
#[cfg_attr(target_arch = "aarch64", allow(unreachable_code, unused_variables))]
mod ctl;

/// Most domains at once.
pub const MAX_DOMAINS: usize = 512;
/// Most vCPUs at once.
pub const MAX_VCPUS: usize = 512;
/// Most vCPUs per domain.
pub const MAX_DOMAIN_VCPUS: usize = 4;
/// Guest frames at or above this cannot take the shared_info page.
const MAX_GPFN: u64 = 1 << 20;

/// Host physical memory through the identity map.
pub struct HostMem;

impl PhysMem for HostMem {
    fn read_u64(&self, pa: u64) -> Option<u64> {
        if pa >= 1 << 32 || !pa.is_multiple_of(8) {
            return None;
        }
        // SAFETY: the first 4 GiB are identity-mapped and the address is aligned; table frames are owned by the
        // hypervisor.
        Some(unsafe { core::ptr::read_volatile(pa as usize as *const u64) })
    }

    fn write_u64(&mut self, pa: u64, v: u64) -> bool {
        if pa >= 1 << 32 || !pa.is_multiple_of(8) {
            return false;
        }
        // SAFETY: as for `read_u64`; writes only go to table frames the hypervisor allocated.
        unsafe { core::ptr::write_volatile(pa as usize as *mut u64, v) };
        true
    }
}

/// Zeroed frames from the frame allocator.
pub struct Frames<'a>(pub &'a mut FrameAllocator);

impl FrameSource for Frames<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let f = self.0.alloc(PAGE, PAGE)?;
        zero(f, PAGE);
        Some(f)
    }
}

fn zero(pa: u64, len: u64) {
    // SAFETY: callers pass memory they just allocated from the frame allocator, identity-mapped.
    unsafe { core::ptr::write_bytes(pa as usize as *mut u8, 0, len as usize) };
}

fn copy_in(pa: u64, data: &[u8]) {
    // SAFETY: callers pass a destination inside memory owned by the hypervisor or a domain, translated and
    // bounds-checked; source and destination never overlap (the source is the boot module or a local).
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as usize as *mut u8, data.len()) };
}

/// A domain's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomState {
    /// Running.
    Alive,
    /// Shut down by its own request with this reason.
    Shutdown(u32),
    /// Killed by the hypervisor.
    Crashed,
}

/// One domain.
pub struct Domain {
    /// Domain id (1-based).
    pub id: u16,
    /// Name from the pack.
    pub name: &'static str,
    mem_base: u64,
    mem_bytes: u64,
    npt: PageTable,
    shared_info: u64,
    params: [u64; NR_PARAMS],
    /// The e820 map the toolstack set (`XENMEM_set_memory_map`); without one, all RAM.
    e820: [E820Entry; xen_abi::memres::MAX_E820],
    e820_len: usize,
    line: [u8; 200],
    line_len: usize,
    /// Printed a `PASS` line.
    pub passed: bool,
    /// Printed a `FAIL` line.
    pub failed: bool,
    /// Announced that it is about to be crashed on purpose.
    pub expect_crash: bool,
    /// Its state.
    pub state: DomState,
    vcpus: [usize; MAX_DOMAIN_VCPUS],
    nr_vcpus: usize,
    /// Exits handled, for the summary.
    pub exits: u64,
    /// Hypercalls handled.
    pub hypercalls: u64,
    /// Exits for host interrupts (preemption points).
    pub interrupts: u64,
    /// Physical CPUs its vCPUs ran on (bit per CPU).
    pub cpu_mask: u64,
    hw: arch::DomainHw,
    released: bool,
    evtchn: Box<xen_hv::evtchn::Table>,
    /// Interdomain ports below 64 on which the domain notified the control domain since it last asked
    /// (`XENRS_EVTCHNOP_poll_notified`): its console and xenstore channels.
    notified: u64,
    /// Grant table frames (host-physical, 0: not allocated yet), mapped into the guest on request.
    grant_frames: [u64; xen_hv::hypercall::MAX_GRANT_FRAMES as usize],
    /// PIT channel 2 (what Linux calibrates its CPU clock against; x86 only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pit: xen_hv::pit::Pit2,
    /// The PV console ring the hypervisor serves (host-physical page, port), where the architecture has one.
    console_ring: Option<(u64, u32)>,
    /// The guest has written to its console ring: typed input goes there, and the domain can be woken by it.
    console_active: bool,
}

impl Domain {
    /// The vector of the callback-vector upcall (`HVM_PARAM_CALLBACK_IRQ` of the architecture's callback type
    /// in bits 63:56), when the guest set one.
    fn upcall_vector(&self) -> Option<u8> {
        let cb = self.params[xen_abi::xen::hvmop::PARAM_CALLBACK_IRQ as usize];
        (cb >> 56 == arch::UPCALL_CALLBACK_TYPE).then_some(cb as u8)
    }
}

/// One vCPU's bookkeeping (its hardware state lives in [`Machine::hw`] and is taken out while it runs).
pub struct VcpuMeta {
    dom: usize,
    id: u32,
    vcpu_info: Option<u64>,
    timer: u64,
    /// Has a start state (vCPU 0 from the domain builder, the others from `VCPUOP_initialise`).
    initialised: bool,
    /// A callback-vector upcall to inject at the next entry.
    virq: Option<u8>,
    /// Its local APIC (x2APIC mode).
    lapic: xen_hv::vlapic::VLapic,
    /// Inter-processor interrupts from other vCPUs to inject at the next entry (bit per INTID 0..15).
    ipis: u16,
    /// The physical CPU it runs on (or last ran on).
    cpu: usize,
    /// Its runstate accounting and, once registered, where the guest reads it (host-physical pieces: the
    /// record may straddle two pages).
    runstate: xen_abi::xen::VcpuRunstateInfo,
    runstate_area: Option<[(u64, usize); 2]>,
    /// Another vCPU took it down (`VCPUOP_down`) while it ran: it stops at its next exit.
    down_requested: bool,
}

impl VcpuMeta {
    /// Enters runstate `state` at system time `now`, accounting the time spent in the previous one, and
    /// publishes the record when the guest registered an area.
    fn enter_runstate(&mut self, state: u32, now: u64) {
        let r = &mut self.runstate;
        if let Some(t) = r.time.get_mut(r.state as usize) {
            *t += now.saturating_sub(r.state_entry_time);
        }
        r.state = state;
        r.state_entry_time = now;
        self.publish_runstate();
    }

    fn publish_runstate(&self) {
        use xen_abi::plain::Plain;
        let bytes = self.runstate.as_bytes();
        if let Some(area) = self.runstate_area {
            let mut done = 0;
            for (hpa, len) in area {
                copy_in(hpa, &bytes[done..done + len]);
                done += len;
            }
        }
    }
}

/// All domains and vCPUs of the machine, behind one lock; guest code runs without it.
pub struct Machine {
    /// Frame allocator.
    pub frames: FrameAllocator,
    domains: Vec<Option<Domain>>,
    meta: Vec<Option<VcpuMeta>>,
    hw: Vec<Option<Box<HwVcpu>>>,
    sched: RoundRobin<MAX_VCPUS>,
    /// vCPUs whose timer expired, collected while the scheduler is borrowed.
    woken: Vec<usize>,
    con: Serial,
    /// The sandbox control channel, when the machine has COM2.
    ctl: Option<ctl::Ctl>,
}

/// What the toolstack set up for a domain it builds over the control channel.
struct Setup {
    /// vCPU 0's start context (instead of the PVH entry state).
    start: Option<VcpuStart>,
    /// HVM params.
    params: [u64; NR_PARAMS],
    /// The e820 map and its length (0: all RAM).
    e820: [E820Entry; xen_abi::memres::MAX_E820],
    e820_len: usize,
    /// Ports `1..dom0_ports` were allocated unbound for the control domain before the domain existed.
    dom0_ports: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            start: None,
            params: [0; NR_PARAMS],
            e820: [E820Entry::default(); xen_abi::memres::MAX_E820],
            e820_len: 0,
            dom0_ports: 1,
        }
    }
}

/// Why a domain could not be built.
#[derive(Debug, Clone, Copy)]
pub enum BuildError {
    /// The image is unusable.
    Elf(xen_abi::elf::ElfError),
    /// The image or its start info does not fit the domain's memory.
    Layout(xen_abi::pvh::PvhError),
    /// Out of host memory or table slots.
    NoMemory,
    /// More vCPUs than a domain may have.
    TooManyVcpus,
    /// The toolstack's start context for vCPU 0 cannot be loaded.
    BadContext,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "{e}"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::NoMemory => f.write_str("out of memory for the domain"),
            Self::TooManyVcpus => write!(f, "a domain has 1 to {MAX_DOMAIN_VCPUS} vCPUs"),
            Self::BadContext => f.write_str("the start context of vCPU 0 cannot be loaded"),
        }
    }
}

impl Machine {
    /// A machine with the given free memory and SVM enabled.
    pub fn new(frames: FrameAllocator) -> Self {
        Self {
            frames,
            domains: (0..MAX_DOMAINS).map(|_| None).collect(),
            meta: (0..MAX_VCPUS).map(|_| None).collect(),
            hw: (0..MAX_VCPUS).map(|_| None).collect(),
            sched: RoundRobin::new(),
            woken: Vec::with_capacity(MAX_VCPUS),
            con: Serial::init(),
            ctl: ctl::Ctl::probe(),
        }
    }

    /// True when the control domain drives this machine over COM2; it then idles instead of ending when no
    /// domain is left.
    pub fn has_ctl(&self) -> bool {
        self.ctl.is_some()
    }

    /// Tells the control channel the machine's CPUs and RAM (for HELLO and physinfo).
    pub fn set_ctl_host(&mut self, nr_cpus: u32, ram_bytes: u64) {
        if let Some(c) = self.ctl.as_mut() {
            c.set_host(nr_cpus, ram_bytes);
        }
    }

    /// True when the control domain paused the domain of vCPU `v`.
    fn ctl_paused(&self, v: usize) -> bool {
        match (self.ctl.as_ref(), self.meta[v].as_ref()) {
            (Some(c), Some(m)) => c.is_paused(m.dom),
            _ => false,
        }
    }

    /// Builds a PVH domain from an ELF image with `mem_mib` MiB and `vcpus` vCPUs (vCPU 0 starts at the PVH
    /// entry; the others wait for `VCPUOP_initialise` + `VCPUOP_up`).
    pub fn create_domain(
        &mut self,
        name: &'static str,
        image: &[u8],
        mem_mib: u32,
        vcpus: u32,
        module: Option<&[u8]>,
    ) -> Result<u16, BuildError> {
        let nr_vcpus = vcpus as usize;
        if nr_vcpus == 0 || nr_vcpus > MAX_DOMAIN_VCPUS {
            return Err(BuildError::TooManyVcpus);
        }
        let slot = self
            .domains
            .iter()
            .position(Option::is_none)
            .ok_or(BuildError::NoMemory)?;
        let mem_bytes = u64::from(mem_mib) << 20;
        // The layout is checked before any allocation.
        let plan = arch::plan_domain(image, mem_bytes, vcpus, module)?;
        let mem_base = self
            .frames
            .alloc(mem_bytes, 2 << 20)
            .ok_or(BuildError::NoMemory)?;
        zero(mem_base, mem_bytes);
        let mut fs = Frames(&mut self.frames);
        let npt = match PageTable::with_format(&mut fs, arch::NESTED_FORMAT) {
            Ok(t) => t,
            Err(_) => {
                self.frames.free(mem_base, mem_bytes);
                return Err(BuildError::NoMemory);
            }
        };
        let mut mapped = Ok(());
        for off in (0..mem_bytes).step_by(PAGE as usize) {
            mapped = npt.map(
                &mut HostMem,
                &mut fs,
                arch::GUEST_RAM_BASE + off,
                mem_base + off,
                arch::GUEST_RAM_FLAGS,
            );
            if mapped.is_err() {
                break;
            }
        }
        let written = mapped.map_err(|_| BuildError::NoMemory).and_then(|()| {
            arch::write_domain(&plan, image, name, module, &mut |off, data| {
                // The plan keeps every piece inside the domain's RAM.
                if off
                    .checked_add(data.len() as u64)
                    .is_some_and(|end| end <= mem_bytes)
                {
                    copy_in(mem_base + off, data);
                }
            })
        });
        let (entry, si) = match written {
            Ok(x) => x,
            Err(e) => {
                let frames = &mut self.frames;
                npt.table_frames(&HostMem, &mut |f| {
                    frames.free(f, PAGE);
                });
                frames.free(mem_base, mem_bytes);
                return Err(e);
            }
        };
        self.install(
            slot,
            name,
            (mem_base, mem_bytes),
            npt,
            nr_vcpus,
            (entry, si),
            Setup::default(),
        )
    }

    /// The part of building a domain shared by the boot-module builder and the control channel's: shared
    /// info, I/O and MSR permission maps, the vCPUs (vCPU 0 at the PVH entry with `ebx` = start info, or at
    /// `start` when the toolstack gave a full context) and the domain's table entry.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        slot: usize,
        name: &'static str,
        (mem_base, mem_bytes): (u64, u64),
        npt: PageTable,
        nr_vcpus: usize,
        (entry, si): (u64, u64),
        setup: Setup,
    ) -> Result<u16, BuildError> {
        let id = slot as u16 + 1;
        let mut fs = Frames(&mut self.frames);
        let shared_info = fs.alloc_table().ok_or(BuildError::NoMemory)?;
        for i in 0..nr_vcpus as u64 {
            write_pvclock(shared_info + 64 * i);
        }
        // A PV console ring outside the domain's RAM, unless the toolstack set one up.
        let pfn_param = xen_abi::memres::HVM_PARAM_CONSOLE_PFN as usize;
        let console_page = match arch::CONSOLE_RING_GPA {
            Some(gpa) if setup.params[pfn_param] == 0 => {
                let page = fs.alloc_table().ok_or(BuildError::NoMemory)?;
                npt.map(&mut HostMem, &mut fs, gpa, page, arch::GUEST_RAM_FLAGS)
                    .map_err(|_| BuildError::NoMemory)?;
                Some((gpa, page))
            }
            _ => None,
        };
        let dom_hw = arch::DomainHw::new(fs.0).ok_or(BuildError::NoMemory)?;
        let mut slots = [0usize; MAX_DOMAIN_VCPUS];
        for (i, out) in slots.iter_mut().enumerate().take(nr_vcpus) {
            let vmcb = Frames(&mut self.frames)
                .alloc_table()
                .ok_or(BuildError::NoMemory)?;
            let first = i == 0;
            let (meta, hws) = (&self.meta, &self.hw);
            let v = self
                .sched
                .add_reusing(if first { State::Runnable } else { State::Down }, |i| {
                    meta[i].is_none() && hws[i].is_none()
                })
                .ok_or(BuildError::NoMemory)?;
            if self.meta[v].is_some() {
                return Err(BuildError::NoMemory);
            }
            // Each vCPU has its own ASID (guest TLB tag), never 0.
            let mut hw = arch::new_vcpu(
                vmcb,
                &dom_hw,
                npt.root,
                (v as u32 + 1, i as u32, nr_vcpus as u32),
                entry,
                si,
            );
            if let (true, Some(start)) = (first, setup.start.as_ref()) {
                if !hw.start_from(start) {
                    return Err(BuildError::BadContext);
                }
            }
            self.meta[v] = Some(VcpuMeta {
                dom: slot,
                id: i as u32,
                vcpu_info: None,
                timer: 0,
                initialised: first,
                virq: None,
                lapic: xen_hv::vlapic::VLapic::new(i as u32, i == 0),
                ipis: 0,
                cpu: 0,
                runstate: xen_abi::xen::VcpuRunstateInfo {
                    state: if first {
                        xen_abi::xen::runstate::RUNNABLE
                    } else {
                        xen_abi::xen::runstate::OFFLINE
                    },
                    state_entry_time: arch::now_ns(),
                    ..Default::default()
                },
                runstate_area: None,
                down_requested: false,
            });
            self.hw[v] = Some(Box::new(hw));
            *out = v;
        }
        let mut params = setup.params;
        let cb = xen_abi::xen::hvmop::PARAM_CALLBACK_IRQ as usize;
        if params[cb] == 0 {
            params[cb] = arch::DEFAULT_CALLBACK_IRQ;
        }
        let mut evtchn = Box::new(xen_hv::evtchn::Table::new());
        let console_ring = match console_page {
            Some((gpa, page)) => {
                let port = evtchn.bind_console().map_err(|_| BuildError::NoMemory)?;
                params[pfn_param] = gpa >> 12;
                params[xen_abi::memres::HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
                Some((page, port))
            }
            None => None,
        };
        self.domains[slot] = Some(Domain {
            id,
            name,
            mem_base,
            mem_bytes,
            npt,
            shared_info,
            params,
            e820: setup.e820,
            e820_len: setup.e820_len,
            line: [0; 200],
            line_len: 0,
            passed: false,
            failed: false,
            expect_crash: false,
            state: DomState::Alive,
            vcpus: slots,
            nr_vcpus,
            exits: 0,
            hypercalls: 0,
            interrupts: 0,
            cpu_mask: 0,
            hw: dom_hw,
            released: false,
            notified: 0,
            grant_frames: [0; xen_hv::hypercall::MAX_GRANT_FRAMES as usize],
            pit: xen_hv::pit::Pit2::default(),
            evtchn,
            console_ring,
            console_active: false,
        });
        if let Some(d) = self.domains[slot].as_mut() {
            for port in 1..setup.dom0_ports {
                let _ = d.evtchn.reserve_interdomain(port, 0);
            }
        }
        let _ = writeln!(
            self.con,
            "(XEN) d{id}: created \"{name}\": {} MiB at {mem_base:#x}, {nr_vcpus} vCPU(s), entry {entry:#x}",
            mem_bytes >> 20
        );
        Ok(id)
    }

    /// Picks the next vCPU for this CPU and takes its hardware state; `Err(true)` when every domain is gone,
    /// `Err(false)` when nothing is runnable now.
    fn take_next(&mut self) -> Result<(usize, Box<HwVcpu>), bool> {
        let now = arch::now_ns();
        let mut woken = core::mem::take(&mut self.woken);
        woken.clear();
        self.sched.expire_each(now, |i| woken.push(i));
        for &i in &woken {
            // A vCPU woken by its Xen timer gets the timer event; one woken by its architectural timer (see
            // `Vcpu::timer_deadline`) finds that timer's interrupt when it runs.
            let xen_timer_due = self.meta[i]
                .as_ref()
                .is_some_and(|m| m.timer != 0 && m.timer <= now);
            if xen_timer_due {
                self.raise_upcall(i);
            }
        }
        self.woken = woken;
        loop {
            let Some(i) = self.sched.pick(now) else {
                // With a control domain, blocked or paused domains wait for it instead of being destroyed, and an
                // empty machine idles.
                if self.sched.stuck() && self.ctl.is_none() {
                    self.destroy_stuck();
                }
                return Err(self.sched.all_dead() && self.ctl.is_none());
            };
            match self.hw[i].take() {
                Some(mut hw) => {
                    self.apply_virq(i, &mut hw);
                    let cpu = arch::cpu_index();
                    if let Some(m) = self.meta[i].as_mut() {
                        m.enter_runstate(xen_abi::xen::runstate::RUNNING, now);
                        m.cpu = cpu;
                    }
                    if let Some(d) = self.meta[i]
                        .as_ref()
                        .and_then(|m| self.domains[m.dom].as_mut())
                    {
                        d.cpu_mask |= 1 << (cpu % 64);
                    }
                    return Ok((i, hw));
                }
                // Already gone: forget it.
                None => self.sched.set(i, State::Dead),
            }
        }
    }

    /// Every remaining vCPU waits for an event nothing can send (there are no event sources besides timers yet):
    /// destroy those domains instead of idling forever.
    fn destroy_stuck(&mut self) {
        for dom in 0..MAX_DOMAINS {
            let Some(d) = self.domains[dom].as_ref() else {
                continue;
            };
            // A domain using its PV console waits for typed input, which can wake it.
            if d.state != DomState::Alive || d.console_active {
                continue;
            }
            let _ = writeln!(
                self.con,
                "(XEN) d{}: every vCPU is blocked with nothing left that could wake it: domain destroyed",
                d.id
            );
            self.destroy(dom, DomState::Crashed);
        }
    }

    /// Puts a vCPU back after its slice.
    fn put_back(&mut self, v: usize, hw: Box<HwVcpu>, next: State) {
        if self.meta[v].is_some() && self.sched.state(v) == State::Running {
            self.hw[v] = Some(hw);
            // An upcall queued between the exit and now (the lock was dropped) must not be slept through.
            let next = match next {
                State::Blocked(_) if self.meta[v].as_ref().is_some_and(|m| m.virq.is_some()) => {
                    State::Runnable
                }
                other => other,
            };
            self.sched.set(v, next);
            let state = match next {
                State::Runnable | State::Running => xen_abi::xen::runstate::RUNNABLE,
                State::Blocked(_) => xen_abi::xen::runstate::BLOCKED,
                State::Down | State::Dead => xen_abi::xen::runstate::OFFLINE,
            };
            if let Some(m) = self.meta[v].as_mut() {
                m.enter_runstate(state, arch::now_ns());
            }
        } else {
            // Its domain died while it ran.
            self.release_vcpu(v, hw);
        }
    }

    /// Raises `port` of the domain in `slot` on the vCPU it is bound to, for the control domain's end of an
    /// interdomain channel (`EVTCHNOP_send` over the control channel). Wakes that vCPU.
    fn raise_port(&mut self, slot: usize, port: u32) -> Result<(), Errno> {
        let d = self.domains[slot].as_ref().ok_or(Errno::Esrch)?;
        if d.released || d.state != DomState::Alive {
            return Err(Errno::Esrch);
        }
        let xen_hv::evtchn::Binding::Interdomain { remote: 0, vcpu } = d.evtchn.get(port) else {
            return Err(Errno::Einval);
        };
        let target = *d.vcpus[..d.nr_vcpus]
            .get(vcpu as usize)
            .ok_or(Errno::Einval)?;
        let meta = self.meta[target].as_mut().ok_or(Errno::Esrch)?;
        deliver_port(d, meta, port);
        self.sched.wake(target);
        Ok(())
    }

    fn raise_upcall(&mut self, v: usize) {
        let Some(meta) = self.meta[v].as_mut() else {
            return;
        };
        meta.timer = 0;
        let Some(d) = self.domains[meta.dom].as_ref() else {
            return;
        };
        // A bound VIRQ_TIMER port gets the event; without one only the upcall flag is raised.
        if let Some(port) = d.evtchn.virq_port(xen_hv::evtchn::VIRQ_TIMER, meta.id) {
            deliver_port(d, meta, port);
            return;
        }
        let pa = meta
            .vcpu_info
            .unwrap_or(d.shared_info + 64 * u64::from(meta.id));
        // SAFETY: `pa` is the vCPU's vcpu_info: either translated through the domain's nested tables when the
        // guest registered it (inside the domain's RAM), or vcpu_info[id] of the domain's shared_info frame.
        // Byte 0 is evtchn_upcall_pending, byte 1 evtchn_upcall_mask.
        let masked = unsafe {
            core::ptr::write_volatile(pa as usize as *mut u8, 1);
            core::ptr::read_volatile((pa + 1) as usize as *const u8) != 0
        };
        // Deliver the upcall as the guest's callback-vector interrupt.
        if let (Some(vector), false) = (d.upcall_vector(), masked) {
            meta.virq = Some(vector);
        }
    }

    /// Moves a pending upcall into the vCPU's hardware state.
    fn apply_virq(&mut self, v: usize, hw: &mut HwVcpu) {
        let Some(m) = self.meta[v].as_mut() else {
            return;
        };
        if let Some(vector) = m.virq.take() {
            hw.queue_upcall(vector);
        } else if !hw.upcall_queued() {
            // Interrupts the guest sent itself through its local APIC, one at a time.
            if let Some(vector) = m.lapic.take_pending() {
                hw.queue_upcall(vector);
            }
        }
        let ipis = core::mem::take(&mut m.ipis);
        for intid in (0..16u8).filter(|i| ipis & (1 << i) != 0) {
            hw.queue_upcall(intid);
        }
    }

    fn handle_exit(&mut self, v: usize, hw: &mut HwVcpu, exit: Exit) -> Flow {
        let Some((dom, vid, timer)) = self.meta[v].as_ref().map(|m| (m.dom, m.id, m.timer)) else {
            return Flow::Stop(State::Dead);
        };
        match self.domains[dom].as_ref().map(|d| d.state) {
            Some(DomState::Alive) => {}
            // Another vCPU suspended the domain: this one stops with its state kept.
            Some(DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND)) => {
                return Flow::Stop(State::Down)
            }
            // Another vCPU of the domain ended it.
            _ => return Flow::Stop(State::Dead),
        }
        if let Some(d) = self.domains[dom].as_mut() {
            d.exits += 1;
        }
        let Some(d) = self.domains[dom].as_mut() else {
            return Flow::Stop(State::Dead);
        };
        match exit {
            Exit::Interrupt => {
                d.interrupts += 1;
                Flow::Continue
            }
            #[cfg(target_arch = "x86_64")]
            Exit::Cpuid { leaf, subleaf } => {
                use xen_hv::vcpu::Reg;
                let r = arch::guest::guest_cpuid(d.id, vid, leaf, subleaf);
                hw.set_reg(Reg::Rax, u64::from(r[0]));
                hw.set_reg(Reg::Rbx, u64::from(r[1]));
                hw.set_reg(Reg::Rcx, u64::from(r[2]));
                hw.set_reg(Reg::Rdx, u64::from(r[3]));
                hw.skip_instruction(&exit);
                Flow::Continue
            }
            #[cfg(target_arch = "x86_64")]
            Exit::MsrRead(msr) => {
                use xen_hv::vcpu::Reg;
                let val = if msr == xen_abi::xen::cpuid::HYPERCALL_MSR {
                    Some(0)
                } else if xen_hv::vlapic::VLapic::owns(msr) {
                    self.meta[v].as_ref().and_then(|m| m.lapic.read(msr))
                } else {
                    hw.read_state_msr(msr)
                };
                match val {
                    Some(x) => {
                        hw.set_reg(Reg::Rax, x & 0xffff_ffff);
                        hw.set_reg(Reg::Rdx, x >> 32);
                        hw.skip_instruction(&exit);
                    }
                    None => hw.inject_exception(13, Some(0)),
                }
                Flow::Continue
            }
            #[cfg(target_arch = "x86_64")]
            Exit::MsrWrite(msr, val) => {
                let ok = if msr == xen_abi::xen::cpuid::HYPERCALL_MSR {
                    arch::guest::fill_hypercall_page(
                        &HostMem,
                        &d.npt,
                        (d.mem_base, d.mem_bytes),
                        val,
                        copy_in,
                    )
                } else if xen_hv::vlapic::VLapic::owns(msr) {
                    let r = self.meta[v].as_mut().map(|m| m.lapic.write(msr, val));
                    match r {
                        Some(Ok(Some(ipi))) => {
                            self.lapic_ipi(dom, v, ipi);
                            true
                        }
                        Some(Ok(None)) => true,
                        _ => false,
                    }
                } else {
                    hw.write_state_msr(msr, val)
                };
                if ok {
                    hw.skip_instruction(&exit);
                } else {
                    hw.inject_exception(13, Some(0));
                }
                Flow::Continue
            }
            #[cfg(target_arch = "x86_64")]
            Exit::Io {
                port,
                size,
                write,
                string,
                ..
            } => {
                use xen_hv::vcpu::Reg;
                if write && !string && port == 0xe9 {
                    let b = hw.reg(Reg::Rax) as u8;
                    console_bytes(&mut self.con, d, &[b]);
                } else if !string && size == 1 && xen_hv::pit::Pit2::owns(port) {
                    let now = arch::now_ns();
                    if write {
                        d.pit.write(port, hw.reg(Reg::Rax) as u8, now);
                    } else {
                        let rax = hw.reg(Reg::Rax) & !0xff;
                        hw.set_reg(Reg::Rax, rax | u64::from(d.pit.read(port, now)));
                    }
                } else if write && !string {
                    // The FADT's sleep control and reset registers: poweroff and reboot requests.
                    let request = xen_abi::acpi::port_write(port, hw.reg(Reg::Rax) as u8);
                    let reason = match request {
                        xen_abi::acpi::PortRequest::PowerOff => Some(0),
                        xen_abi::acpi::PortRequest::Reset => Some(1),
                        xen_abi::acpi::PortRequest::None => None,
                    };
                    if let Some(reason) = reason {
                        hw.skip_instruction(&exit);
                        self.destroy(dom, DomState::Shutdown(reason));
                        return Flow::Stop(State::Dead);
                    }
                } else if !write && !string {
                    let mask = if size == 4 {
                        0xffff_ffff
                    } else {
                        (1u64 << (8 * size)) - 1
                    };
                    let rax = hw.reg(Reg::Rax);
                    hw.set_reg(Reg::Rax, rax | mask);
                }
                hw.skip_instruction(&exit);
                Flow::Continue
            }
            Exit::Halt => {
                hw.skip_instruction(&exit);
                // Sleep until the earlier of the Xen timer and the vCPU's own architectural timer, unless an
                // event arrived while the vCPU was running (the control domain sending on a channel, a timer):
                // that is delivered instead, as Xen's HLT handling checks for pending events first.
                let wake = match (timer, hw.timer_deadline()) {
                    (0, Some(t)) => t.max(1),
                    (x, Some(t)) => x.min(t.max(1)),
                    (x, None) => x,
                };
                if self.wake_instead_of_halt(v) {
                    Flow::Continue
                } else {
                    Flow::Stop(State::Blocked(wake))
                }
            }
            Exit::Hypercall => {
                d.hypercalls += 1;
                let (nr, args) = hw.hypercall_args();
                let mut ctx = Ctx {
                    d,
                    v,
                    metas: &mut self.meta,
                    hws: &mut self.hw,
                    sched: &mut self.sched,
                    hw,
                    frames: &mut self.frames,
                    con: &mut self.con,
                };
                let out = hypercall::dispatch(&mut ctx, nr, args);
                hw.set_hypercall_result(out.ret);
                hw.skip_instruction(&exit);
                match out.next {
                    Next::Resume => Flow::Continue,
                    Next::Yield => Flow::Stop(State::Runnable),
                    Next::Block => {
                        if self.upcall_pending(v) {
                            Flow::Continue
                        } else {
                            let t = self.meta[v].as_ref().map_or(0, |s| s.timer);
                            Flow::Stop(State::Blocked(t))
                        }
                    }
                    // With a control domain, a suspending domain keeps its vCPUs and memory for the toolstack to
                    // save (`XEN_DOMCTL_gethvmcontext`) and then destroy or resume.
                    Next::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND)
                        if self.ctl.is_some() =>
                    {
                        self.suspend(dom);
                        Flow::Stop(State::Down)
                    }
                    Next::Shutdown(reason) => {
                        self.destroy(dom, DomState::Shutdown(reason));
                        Flow::Stop(State::Dead)
                    }
                }
            }
            Exit::SendIpi {
                intid,
                targets,
                all_but_self,
            } => {
                let (vcpus, nr) = (d.vcpus, d.nr_vcpus);
                for (i, &t) in vcpus[..nr].iter().enumerate() {
                    let chosen = if all_but_self {
                        i as u32 != vid
                    } else {
                        i < 64 && targets & (1 << i) != 0
                    };
                    if let (true, Some(m)) = (chosen && intid < 16, self.meta[t].as_mut()) {
                        m.ipis |= 1 << intid;
                        self.sched.wake(t);
                        kick_if_elsewhere(&self.sched, t, m);
                    }
                }
                Flow::Continue
            }
            Exit::Firmware { function, args } => {
                d.hypercalls += 1;
                let (ret, flow) = self.psci(dom, function, args);
                hw.set_hypercall_result(ret as u64);
                flow
            }
            Exit::Forbidden(what) => {
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: {what} is not available to guests: undefined instruction",
                    d.id
                );
                hw.inject_undefined();
                Flow::Continue
            }
            Exit::NestedFault { gpa, code } => {
                let rip = hw.rip();
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: access to unmapped guest-physical address {gpa:#x} (error {code:#x}) at rip {rip:#x}: domain crashed",
                    d.id
                );
                self.destroy(dom, DomState::Crashed);
                Flow::Stop(State::Dead)
            }
            Exit::TripleFault => {
                let rip = hw.rip();
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: triple fault at rip {rip:#x}: domain crashed",
                    d.id
                );
                self.destroy(dom, DomState::Crashed);
                Flow::Stop(State::Dead)
            }
            Exit::InvalidState => {
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: VMRUN refused the guest state: domain crashed",
                    d.id
                );
                self.destroy(dom, DomState::Crashed);
                Flow::Stop(State::Dead)
            }
            #[cfg(not(target_arch = "x86_64"))]
            Exit::Cpuid { .. } | Exit::MsrRead(_) | Exit::MsrWrite(..) | Exit::Io { .. } => {
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: x86 exit {exit:?} on another architecture: domain crashed",
                    d.id
                );
                self.destroy(dom, DomState::Crashed);
                Flow::Stop(State::Dead)
            }
            Exit::Unhandled(code) => {
                let _ = writeln!(
                    self.con,
                    "(XEN) d{}v{vid}: unhandled exit {code:#x}: domain crashed",
                    d.id
                );
                self.destroy(dom, DomState::Crashed);
                Flow::Stop(State::Dead)
            }
        }
    }

    /// Delivers an interrupt command of vCPU `v` (domain slot `dom`) to the other vCPUs it names: fixed
    /// interrupts are queued on their local APICs; INIT puts a vCPU that has not started into wait-for-SIPI and
    /// a start-up IPI starts it in real mode at the vector's page (how an x86 guest such as Linux brings up its
    /// secondary CPUs, besides `VCPUOP_initialise`/`VCPUOP_up`). NMIs and the other modes are not delivered.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn lapic_ipi(&mut self, dom: usize, v: usize, ipi: xen_hv::vlapic::Ipi) {
        let Some(d) = self.domains[dom].as_ref() else {
            return;
        };
        let (vcpus, nr) = (d.vcpus, d.nr_vcpus);
        for (id, &t) in vcpus[..nr].iter().enumerate() {
            let to = ipi.dest == u32::MAX || ipi.dest == id as u32;
            if t == v || !to {
                continue;
            }
            match ipi.mode {
                0 => {
                    if let Some(m) = self.meta[t].as_mut() {
                        m.lapic.raise(ipi.vector);
                        self.sched.wake(t);
                    }
                }
                // INIT: only a vCPU that never started is affected (it waits for a SIPI either way).
                5 => {}
                #[cfg(target_arch = "x86_64")]
                6 => {
                    let waiting = self.sched.state(t) == State::Down
                        && self.meta[t].as_ref().is_some_and(|m| !m.initialised);
                    if !waiting {
                        continue;
                    }
                    if let Some(hw) = self.hw[t].as_mut() {
                        hw.start_sipi(ipi.vector);
                        if let Some(m) = self.meta[t].as_mut() {
                            m.initialised = true;
                        }
                        self.sched.set(t, State::Runnable);
                    }
                }
                _ => {}
            }
        }
    }

    /// True when the vCPU has an upcall queued or pending in its `vcpu_info` (re-queueing the callback vector
    /// for the latter), so a halt must not block it.
    fn wake_instead_of_halt(&mut self, v: usize) -> bool {
        if self.meta[v]
            .as_ref()
            .is_some_and(|m| m.virq.is_some() || m.lapic.has_pending())
        {
            return true;
        }
        if !self.upcall_pending(v) {
            return false;
        }
        let Some(m) = self.meta[v].as_mut() else {
            return false;
        };
        match self.domains[m.dom].as_ref().and_then(Domain::upcall_vector) {
            Some(vector) => {
                m.virq = Some(vector);
                true
            }
            None => false,
        }
    }

    /// A PSCI call of a vCPU of domain slot `dom`: its return value and what the vCPU does next.
    fn psci(&mut self, dom: usize, function: u64, args: [u64; 3]) -> (i64, Flow) {
        use xen_hv::psci::{self, Call};
        let Some(d) = self.domains[dom].as_ref() else {
            return (psci::INTERNAL_FAILURE, Flow::Stop(State::Dead));
        };
        let target_slot = |mpidr: u64| {
            psci::vcpu_of(mpidr)
                .map(|i| i as usize)
                .filter(|&i| i < d.nr_vcpus)
                .map(|i| d.vcpus[i])
        };
        match psci::decode(function, args) {
            Call::Version => (psci::VERSION_1_0 as i64, Flow::Continue),
            Call::CpuOn {
                target,
                entry,
                context,
            } => {
                let Some(t) = target_slot(target) else {
                    return (psci::INVALID_PARAMETERS, Flow::Continue);
                };
                if self.sched.state(t) != State::Down {
                    return (psci::ALREADY_ON, Flow::Continue);
                }
                let started = self.hw[t]
                    .as_mut()
                    .is_some_and(|hw| hw.start_at(entry, context));
                match self.meta[t].as_mut() {
                    Some(m) if started => {
                        m.initialised = true;
                        self.sched.set(t, State::Runnable);
                        (psci::SUCCESS, Flow::Continue)
                    }
                    _ => (psci::INTERNAL_FAILURE, Flow::Continue),
                }
            }
            Call::CpuOff => (psci::SUCCESS, Flow::Stop(State::Down)),
            Call::AffinityInfo { target, level } => match (target_slot(target), level) {
                (Some(t), 0) if matches!(self.sched.state(t), State::Down | State::Dead) => {
                    (psci::AFFINITY_OFF, Flow::Continue)
                }
                (Some(_), 0) => (psci::AFFINITY_ON, Flow::Continue),
                _ => (psci::INVALID_PARAMETERS, Flow::Continue),
            },
            Call::MigrateInfoType => (psci::MIGRATE_NOT_REQUIRED, Flow::Continue),
            Call::SystemOff => {
                self.destroy(dom, DomState::Shutdown(0));
                (psci::SUCCESS, Flow::Stop(State::Dead))
            }
            Call::SystemReset => {
                self.destroy(dom, DomState::Shutdown(1));
                (psci::SUCCESS, Flow::Stop(State::Dead))
            }
            Call::Features(fid) if psci::supported(fid) => (psci::SUCCESS, Flow::Continue),
            Call::Features(_) | Call::Unknown(_) => (psci::NOT_SUPPORTED, Flow::Continue),
        }
    }

    fn upcall_pending(&self, v: usize) -> bool {
        let Some(slot) = self.meta[v].as_ref() else {
            return false;
        };
        let pa = match (slot.vcpu_info, self.domains[slot.dom].as_ref()) {
            (Some(pa), _) => pa,
            (None, Some(d)) => d.shared_info + 64 * u64::from(slot.id),
            _ => return false,
        };
        // SAFETY: as in `raise_upcall`.
        unsafe { core::ptr::read_volatile(pa as usize as *const u8) != 0 }
    }

    fn destroy(&mut self, dom: usize, state: DomState) {
        let Some(d) = self.domains[dom].as_mut() else {
            return;
        };
        d.state = state;
        if d.line_len > 0 {
            console_bytes(&mut self.con, d, b"\n");
        }
        let why = match state {
            DomState::Shutdown(0) => "shut down (poweroff)",
            DomState::Shutdown(1) => "shut down (reboot)",
            DomState::Shutdown(2) => "shut down (suspend)",
            DomState::Shutdown(3) => "shut down (crash)",
            DomState::Shutdown(4) => "shut down (watchdog)",
            DomState::Shutdown(_) => "shut down (soft reset)",
            DomState::Crashed => "destroyed after a crash",
            DomState::Alive => "alive",
        };
        let _ = writeln!(
            self.con,
            "(XEN) d{} ({}) {why}; {} exits, {} hypercalls, {} interrupts, ran on pCPU mask {:#x}",
            d.id, d.name, d.exits, d.hypercalls, d.interrupts, d.cpu_mask
        );
        let vcpus = d.vcpus;
        let nr = d.nr_vcpus;
        // vCPUs not running anywhere are released now; a running one (the caller, or one on another CPU) is
        // released by `put_back` when its CPU lets go of it. The domain's memory goes when the last one is back.
        for &v in &vcpus[..nr] {
            self.sched.set(v, State::Dead);
            if let Some(hw) = self.hw[v].take() {
                self.release_vcpu(v, hw);
            }
        }
        self.try_release(dom);
        if let Some(c) = self.ctl.as_mut() {
            c.raise_dom_exc();
        }
    }

    /// Shuts a domain down with reason suspend but keeps its vCPUs (stopped, their state intact) and memory,
    /// as Xen does for `SHUTDOWN_suspend`: its toolstack saves it, then destroys or resumes it. vCPUs running on
    /// other CPUs stop at their next exit.
    fn suspend(&mut self, dom: usize) {
        let Some(d) = self.domains[dom].as_mut() else {
            return;
        };
        d.state = DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND);
        if d.line_len > 0 {
            console_bytes(&mut self.con, d, b"\n");
        }
        let _ = writeln!(
            self.con,
            "(XEN) d{} ({}) suspended; {} exits, {} hypercalls",
            d.id, d.name, d.exits, d.hypercalls
        );
        let (vcpus, nr) = (d.vcpus, d.nr_vcpus);
        for &v in &vcpus[..nr] {
            if matches!(self.sched.state(v), State::Runnable | State::Blocked(_)) {
                self.sched.set(v, State::Down);
            }
        }
        if let Some(c) = self.ctl.as_mut() {
            c.raise_dom_exc();
        }
    }

    /// True (once) when another vCPU took `v` down while it ran.
    fn take_down_request(&mut self, v: usize) -> bool {
        self.meta[v]
            .as_mut()
            .is_some_and(|m| core::mem::take(&mut m.down_requested))
    }

    /// True when vCPU `v`'s domain shut down to suspend (its vCPUs stay stopped until it is resumed).
    fn suspended(&self, v: usize) -> bool {
        self.meta[v]
            .as_ref()
            .and_then(|m| self.domains[m.dom].as_ref())
            .is_some_and(|d| {
                d.state == DomState::Shutdown(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND)
            })
    }

    fn release_vcpu(&mut self, v: usize, hw: Box<HwVcpu>) {
        self.frames.free(hw.state_frame(), PAGE);
        let dom = self.meta[v].take().map(|m| m.dom);
        if let Some(dom) = dom {
            self.try_release(dom);
        }
    }

    /// Returns a dead domain's memory, tables and frames once none of its vCPUs is in use.
    fn try_release(&mut self, dom: usize) {
        let Some(d) = self.domains[dom].as_mut() else {
            return;
        };
        if d.state == DomState::Alive || d.released {
            return;
        }
        // With a control domain, a dead domain's memory stays (for its console and inspection) until the
        // control domain destroys it, as in Xen.
        if self.ctl.as_ref().is_some_and(|c| !c.may_release(dom)) {
            return;
        }
        if d.vcpus[..d.nr_vcpus]
            .iter()
            .any(|&v| self.meta[v].is_some())
        {
            return;
        }
        d.released = true;
        let frames = &mut self.frames;
        d.npt.table_frames(&HostMem, &mut |f| {
            frames.free(f, PAGE);
        });
        frames.free(d.mem_base, d.mem_bytes);
        frames.free(d.shared_info, PAGE);
        for f in d.grant_frames.iter().filter(|f| **f != 0) {
            frames.free(*f, PAGE);
        }
        if let Some((page, _)) = d.console_ring {
            frames.free(page, PAGE);
        }
        d.hw.release(frames);
    }

    /// Moves bytes typed on the console into the PV console ring of the first domain using one and signals its
    /// console port (on the boot CPU, as the control channel is polled).
    fn poll_console_input(&mut self) {
        let Some(dom) = self.domains.iter().position(|d| {
            d.as_ref()
                .is_some_and(|d| d.console_active && d.state == DomState::Alive)
        }) else {
            return;
        };
        let Some(d) = self.domains[dom].as_ref() else {
            return;
        };
        let Some((page, port)) = d.console_ring else {
            return;
        };
        // SAFETY: the ring page is a frame the hypervisor allocated for this domain (identity-mapped); the
        // guest may change it concurrently, which the ring functions tolerate (indices are re-read and bounded).
        let ring =
            unsafe { core::slice::from_raw_parts_mut(page as usize as *mut u8, PAGE as usize) };
        let mut moved = 0;
        while xen_hv::console_ring::in_space(ring) > 0 {
            let Some(b) = arch::console_read_byte() else {
                break;
            };
            moved += xen_hv::console_ring::push_in(ring, &[b]);
        }
        if moved > 0 {
            let v0 = d.vcpus[0];
            if let Some(meta) = self.meta[v0].as_mut() {
                deliver_port(d, meta, port);
                self.sched.wake(v0);
                kick_if_elsewhere(&self.sched, v0, meta);
            }
        }
    }

    /// Free memory in bytes.
    pub fn free_bytes(&self) -> u64 {
        self.frames.free_bytes()
    }

    /// Prints the results and returns true when every domain passed.
    pub fn report(&mut self) -> bool {
        let mut all = true;
        let mut count = 0;
        for d in self.domains.iter().flatten() {
            count += 1;
            let ok = !d.failed
                && match d.state {
                    DomState::Shutdown(0) => d.passed,
                    DomState::Crashed => d.expect_crash && d.passed,
                    _ => false,
                };
            let verdict = match (ok, d.state) {
                (true, DomState::Crashed) => "PASS (contained)",
                (true, _) => "PASS",
                (false, _) => "FAIL",
            };
            let _ = writeln!(self.con, "(XEN) result d{} {}: {verdict}", d.id, d.name);
            all &= ok;
        }
        all && count > 0
    }
}

enum Flow {
    Continue,
    Stop(State),
}

/// The scheduling loop of one physical CPU: runs vCPUs from the shared machine until every domain is gone.
pub fn cpu_loop(machine: &spin::Mutex<Option<Machine>>) {
    loop {
        let next = {
            let mut guard = machine.lock();
            let Some(m) = guard.as_mut() else {
                return;
            };
            m.take_next()
        };
        let (v, mut hw) = match next {
            Ok(x) => x,
            Err(true) => return,
            Err(false) => {
                if is_bsp() {
                    if let Some(m) = machine.lock().as_mut() {
                        m.poll_ctl();
                        m.poll_console_input();
                    }
                }
                // Nothing runnable: sleep until the next tick.
                arch::idle();
                continue;
            }
        };
        let start = arch::cpu_ticks();
        // The vCPU may come from another CPU or have missed a nested-table change: start with a clean TLB.
        hw.flush_guest_tlb();
        hw.load_guest_fpu();
        let state = loop {
            let exit = hw.run();
            let mut guard = machine.lock();
            let Some(m) = guard.as_mut() else {
                return;
            };
            match m.handle_exit(v, &mut hw, exit) {
                Flow::Continue => {}
                Flow::Stop(s) => break s,
            }
            // A control request arrived (its interrupt ended the slice): serve it now rather than at the end of
            // the slice.
            if is_bsp() && arch::take_ctl_irq() {
                m.poll_ctl();
            }
            if m.ctl_paused(v) || m.suspended(v) || m.take_down_request(v) {
                break State::Down;
            }
            let due = m.meta[v]
                .as_ref()
                .is_some_and(|s| s.timer != 0 && arch::now_ns() >= s.timer);
            if due {
                m.raise_upcall(v);
            }
            m.apply_virq(v, &mut hw);
            if arch::cpu_ticks() != start {
                break State::Runnable;
            }
        };
        hw.save_guest_fpu();
        let mut guard = machine.lock();
        if let Some(m) = guard.as_mut() {
            m.put_back(v, hw, state);
            if is_bsp() {
                m.poll_ctl();
                m.poll_console_input();
            }
        }
    }
}

/// True on the boot CPU, which serves the control channel.
fn is_bsp() -> bool {
    arch::cpu_index() == 0
}

fn console_bytes(con: &mut Serial, d: &mut Domain, bytes: &[u8]) {
    // A toolstack's console ring (in guest RAM at a frame number the toolstack chose) also gets the output;
    // the hypervisor's own ring is the guest's producer side and is not written here.
    if !d.released && d.console_ring.is_none() {
        let pfn = d.params[xen_abi::memres::HVM_PARAM_CONSOLE_PFN as usize];
        ctl::console_to_ring(d.mem_base, d.mem_bytes, pfn, bytes);
        // As if the guest had notified its console channel after writing the ring itself.
        let port = d.params[xen_abi::memres::HVM_PARAM_CONSOLE_EVTCHN as usize];
        if pfn != 0 && port != 0 && port < 64 {
            d.notified |= 1 << port;
        }
    }
    for &b in bytes {
        if b == b'\n' || d.line_len == d.line.len() {
            let line = core::str::from_utf8(&d.line[..d.line_len]).unwrap_or("<non-UTF-8 output>");
            let _ = writeln!(con, "(d{}) {line}", d.id);
            if line.starts_with("PASS ") {
                d.passed = true;
            } else if line.starts_with("FAIL ") {
                d.failed = true;
            } else if line.starts_with("EXPECT-CRASH ") {
                d.expect_crash = true;
            }
            d.line_len = 0;
            if b == b'\n' {
                continue;
            }
        }
        if b == b'\r' {
            continue;
        }
        let c = if b == b'\t' || (0x20..0x7f).contains(&b) {
            b
        } else {
            b'?'
        };
        d.line[d.line_len] = c;
        d.line_len += 1;
    }
}

/// Runs `f` over the domain's shared_info page and a copy of the vCPU's vcpu_info (written back afterwards), for
/// the event-channel bit logic. The bits are updated with plain byte writes: a vCPU of the same domain running on
/// another CPU at that moment could race with them (Xen uses atomic bit operations); single-vCPU guests cannot.
fn with_event_pages<R>(
    d: &Domain,
    meta: &VcpuMeta,
    f: impl FnOnce(&mut [u8], &mut [u8]) -> R,
) -> R {
    let vi = meta
        .vcpu_info
        .unwrap_or(d.shared_info + 64 * u64::from(meta.id));
    let mut local = [0u8; 64];
    // SAFETY: `vi` is the vCPU's vcpu_info, 64 bytes of the domain's memory (registered inside its RAM, or a slot
    // of its shared_info frame); the machine lock is held. Copying avoids two live references to one page.
    unsafe { core::ptr::copy_nonoverlapping(vi as usize as *const u8, local.as_mut_ptr(), 64) };
    let r = {
        // SAFETY: the shared_info frame is owned by the domain and identity-mapped; no other reference to it is
        // alive while the lock is held.
        let shared = unsafe {
            core::slice::from_raw_parts_mut(d.shared_info as usize as *mut u8, PAGE as usize)
        };
        f(shared, &mut local)
    };
    copy_in(vi, &local);
    r
}

/// Makes the CPU running the vCPU of `meta` exit, when that is another CPU, so it takes the interrupts just
/// queued for it at once instead of at its next exit.
fn kick_if_elsewhere(sched: &RoundRobin<MAX_VCPUS>, v: usize, meta: &VcpuMeta) {
    if sched.state(v) == State::Running && meta.cpu != arch::cpu_index() {
        arch::kick(meta.cpu);
    }
}

/// Marks `port` pending for the vCPU of `meta` and queues the callback-vector upcall when one is due.
fn deliver_port(d: &Domain, meta: &mut VcpuMeta, port: u32) {
    if with_event_pages(d, meta, |shared, vi| {
        xen_hv::evtchn::set_pending(shared, vi, port)
    }) {
        if let Some(vector) = d.upcall_vector() {
            meta.virq = Some(vector);
        }
    }
}

/// Writes the time record (`vcpu_time_info`) of the `vcpu_info` at host-physical `vcpu_info_pa`.
fn write_pvclock(vcpu_info_pa: u64) {
    use xen_abi::plain::Plain;
    copy_in(vcpu_info_pa + 32, arch::time_info().as_bytes());
}

/// The hypercall view of one vCPU and its domain.
struct Ctx<'a> {
    d: &'a mut Domain,
    v: usize,
    metas: &'a mut [Option<VcpuMeta>],
    hws: &'a mut [Option<Box<HwVcpu>>],
    sched: &'a mut RoundRobin<MAX_VCPUS>,
    hw: &'a mut HwVcpu,
    frames: &'a mut FrameAllocator,
    con: &'a mut Serial,
}

impl Ctx<'_> {
    /// Puts the hypervisor-owned `frame` (shared_info, a grant table frame) at guest frame `gpfn`, in place of
    /// whatever was mapped there.
    fn map_at(&mut self, gpfn: u64, frame: u64) -> Result<(), Errno> {
        let gpa = gpfn << 12;
        let npt = self.d.npt;
        npt.unmap(&mut HostMem, gpa);
        npt.map(
            &mut HostMem,
            &mut Frames(self.frames),
            gpa,
            frame,
            arch::GUEST_RAM_FLAGS,
        )
        .map_err(|_| Errno::Enomem)?;
        self.hw.flush_guest_tlb();
        Ok(())
    }

    /// Guest-virtual to host-physical for `len` bytes that stay inside one page.
    fn translate(&self, gva: u64, write: bool) -> Result<u64, Errno> {
        let npt = self.d.npt;
        let gpa = self
            .hw
            .guest_to_gpa(gva, write, &|gpa| {
                npt.translate(&HostMem, gpa & !7)
                    .and_then(|hpa| HostMem.read_u64(hpa))
            })
            .map_err(|_| Errno::Efault)?;
        let hpa = npt.translate(&HostMem, gpa).ok_or(Errno::Efault)?;
        Ok(hpa)
    }

    fn each_page(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < len {
            let at = gva.checked_add(done as u64).ok_or(Errno::Efault)?;
            let chunk = ((PAGE - (at & (PAGE - 1))) as usize).min(len - done);
            let hpa = self.translate(at, write)?;
            f(hpa, done, chunk);
            done += chunk;
        }
        Ok(())
    }
}

impl Guest for Ctx<'_> {
    fn domid(&self) -> u16 {
        self.d.id
    }

    fn vcpu_count(&self) -> u32 {
        self.d.nr_vcpus as u32
    }

    fn copy_from(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let len = buf.len();
        self.each_page(gva, len, false, |hpa, off, n| {
            // SAFETY: `hpa..hpa + n` was translated through the domain's nested tables and stays in one page of
            // memory the domain owns (its RAM or its shared_info frame).
            let src = unsafe { core::slice::from_raw_parts(hpa as usize as *const u8, n) };
            buf[off..off + n].copy_from_slice(src);
        })
    }

    fn copy_to(&mut self, gva: u64, buf: &[u8]) -> Result<(), Errno> {
        // Translate everything first so a fault leaves guest memory untouched.
        self.each_page(gva, buf.len(), true, |_, _, _| {})?;
        self.each_page(gva, buf.len(), true, |hpa, off, n| {
            copy_in(hpa, &buf[off..off + n])
        })
    }

    fn console_write(&mut self, bytes: &[u8]) {
        console_bytes(self.con, self.d, bytes);
    }

    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        // Input typed on the serial console goes to the domain that reads it (there is no console focus
        // switching between domains yet); bytes are consumed from the UART under the machine lock.
        let mut n = 0;
        while n < buf.len() {
            match arch::console_read_byte() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn memory_map(&self, out: &mut [E820Entry]) -> usize {
        if out.is_empty() {
            return 0;
        }
        if self.d.e820_len > 0 {
            let n = self.d.e820_len.min(out.len());
            out[..n].copy_from_slice(&self.d.e820[..n]);
            return n;
        }
        arch::boot_memory_map(self.d.mem_bytes, out)
    }

    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        // Anywhere in the 48-bit guest-physical space: Linux puts them above its RAM, in unpopulated space.
        if gpfn >= 1 << 36 {
            return Err(Errno::Einval);
        }
        let slot = self
            .d
            .grant_frames
            .get_mut(idx as usize)
            .ok_or(Errno::Einval)?;
        if *slot == 0 {
            let f = self.frames.alloc(PAGE, PAGE).ok_or(Errno::Enomem)?;
            zero(f, PAGE);
            *slot = f;
        }
        let frame = *slot;
        self.map_at(gpfn, frame)
    }

    fn grant_frames(&self) -> u32 {
        self.d.grant_frames.iter().filter(|f| **f != 0).count() as u32
    }

    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        if gpfn >= MAX_GPFN {
            return Err(Errno::Einval);
        }
        self.map_at(gpfn, self.d.shared_info)
    }

    fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        let hpa = self
            .d
            .npt
            .translate(&HostMem, gfn.checked_mul(PAGE).ok_or(Errno::Einval)?)
            .ok_or(Errno::Einval)?;
        let hpa = hpa + u64::from(offset);
        if hpa + 64 > self.d.mem_base + self.d.mem_bytes || hpa < self.d.mem_base {
            // Only the domain's RAM may hold a vcpu_info.
            return Err(Errno::Einval);
        }
        let target = self.d.vcpus[vcpu as usize];
        let meta = self.metas[target].as_mut().ok_or(Errno::Enoent)?;
        meta.vcpu_info = Some(hpa);
        write_pvclock(hpa);
        Ok(())
    }

    fn register_runstate(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno> {
        let size = core::mem::size_of::<xen_abi::xen::VcpuRunstateInfo>();
        let area = if gva == 0 {
            None
        } else {
            let first = ((PAGE - (gva & (PAGE - 1))) as usize).min(size);
            let a = self.translate(gva, true)?;
            let b = if first < size {
                self.translate(gva + first as u64, true)?
            } else {
                0
            };
            Some([(a, first), (b, size - first)])
        };
        let target = self.d.vcpus[vcpu as usize];
        let meta = self.metas[target].as_mut().ok_or(Errno::Enoent)?;
        meta.runstate_area = area;
        meta.publish_runstate();
        Ok(())
    }

    fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuStart) -> Result<(), Errno> {
        let target = self.d.vcpus[vcpu as usize];
        let meta = self.metas[target].as_mut().ok_or(Errno::Enoent)?;
        if meta.initialised {
            return Err(Errno::Eexist);
        }
        let hw = self.hws[target].as_mut().ok_or(Errno::Ebusy)?;
        if !hw.start_from(ctx) {
            return Err(Errno::Einval);
        }
        meta.initialised = true;
        Ok(())
    }

    fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno> {
        let target = self.d.vcpus[vcpu as usize];
        let meta = self.metas[target].as_mut().ok_or(Errno::Enoent)?;
        if !meta.initialised {
            return Err(Errno::Einval);
        }
        meta.down_requested = false;
        if self.sched.state(target) == State::Down {
            self.sched.set(target, State::Runnable);
        }
        Ok(())
    }

    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        let target = self.d.vcpus[vcpu as usize];
        let down = self.metas[target].as_ref().is_none_or(|m| m.down_requested);
        !down && !matches!(self.sched.state(target), State::Down | State::Dead)
    }

    fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno> {
        let target = self.d.vcpus[vcpu as usize];
        let meta = self.metas[target].as_mut().ok_or(Errno::Enoent)?;
        match self.sched.state(target) {
            State::Runnable | State::Blocked(_) => self.sched.set(target, State::Down),
            // On another CPU: it stops at its next exit.
            State::Running => meta.down_requested = true,
            State::Down | State::Dead => {}
        }
        Ok(())
    }

    fn hvm_params(&mut self) -> &mut [u64; NR_PARAMS] {
        &mut self.d.params
    }

    fn evtchn(&mut self) -> &mut xen_hv::evtchn::Table {
        &mut self.d.evtchn
    }

    fn send_event(&mut self, port: u32) {
        let vcpu = match self.d.evtchn.get(port) {
            xen_hv::evtchn::Binding::Console => {
                // The guest wrote to its console ring: take the output now.
                if let Some((page, _)) = self.d.console_ring {
                    // SAFETY: as in `poll_console_input`.
                    let ring = unsafe {
                        core::slice::from_raw_parts_mut(page as usize as *mut u8, PAGE as usize)
                    };
                    let mut buf = [0u8; 256];
                    loop {
                        let n = xen_hv::console_ring::drain_out(ring, &mut buf);
                        if n == 0 {
                            break;
                        }
                        console_bytes(self.con, self.d, &buf[..n]);
                    }
                    self.d.console_active = true;
                }
                return;
            }
            b => match b.vcpu() {
                Some(v) => v,
                None => return,
            },
        };
        let Some(&target) = self.d.vcpus[..self.d.nr_vcpus].get(vcpu as usize) else {
            return;
        };
        if let Some(meta) = self.metas[target].as_mut() {
            deliver_port(self.d, meta, port);
            self.sched.wake(target);
            if target != self.v {
                kick_if_elsewhere(self.sched, target, meta);
            }
        }
    }

    fn notify_remote(&mut self, port: u32) {
        // The other end is the control domain's console and xenstore daemon. In the sandbox it is a host
        // process, which no interrupt reaches (and an event frame per notification would go to every client of
        // the control channel, most of which never read events): it asks which channels fired instead.
        if port < 64 {
            self.d.notified |= 1 << port;
        }
    }

    fn unmask_event(&mut self, port: u32) {
        let Some(vcpu) = self.d.evtchn.get(port).vcpu() else {
            return;
        };
        let Some(&target) = self.d.vcpus[..self.d.nr_vcpus].get(vcpu as usize) else {
            return;
        };
        if let Some(meta) = self.metas[target].as_mut() {
            if with_event_pages(self.d, meta, |shared, vi| {
                xen_hv::evtchn::unmask(shared, vi, port)
            }) {
                if let Some(vector) = self.d.upcall_vector() {
                    meta.virq = Some(vector);
                }
                self.sched.wake(target);
            }
        }
    }

    fn vcpu_id(&self) -> u32 {
        self.metas[self.v].as_ref().map_or(0, |m| m.id)
    }

    fn timer(&self) -> u64 {
        self.metas[self.v].as_ref().map_or(0, |m| m.timer)
    }

    fn port_pending(&mut self, port: u32) -> bool {
        // SAFETY: the shared_info frame is owned by the domain and identity-mapped; the machine lock is held.
        let shared = unsafe {
            core::slice::from_raw_parts(self.d.shared_info as usize as *const u8, PAGE as usize)
        };
        xen_hv::evtchn::is_pending(shared, port)
    }

    fn set_timer(&mut self, deadline_ns: u64) {
        if let Some(m) = self.metas[self.v].as_mut() {
            m.timer = deadline_ns;
        }
    }
}
