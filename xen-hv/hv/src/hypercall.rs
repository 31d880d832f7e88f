//! Architecture-neutral hypercall dispatch for HVM/PVH guests.
//!
//! The architecture code decodes the hypercall number and arguments from the vCPU's registers, calls
//! [`dispatch`] with the domain and vCPU behind the [`Guest`] trait, writes [`Outcome::ret`] back and acts on
//! [`Outcome::next`]. Pointer arguments are guest-virtual; [`Guest::copy_from`] / [`Guest::copy_to`] translate
//! them and fail with `EFAULT`. Everything here is tested on the host with a fake guest.

use xen_abi::errno::Errno;
use xen_abi::hypercall::{consoleio, schedop, xenver};
use xen_abi::plain::Plain;
use xen_abi::xen::{
    hvmop, vcpuop, xenmem, E820Entry, SchedShutdown, VcpuHvmContext, VcpuRegisterVcpuInfo,
    VcpuStart, XenAddToPhysmap, XenHvmParam, XenMemoryMap, DOMID_SELF,
};

/// Number of HVM parameters kept per domain.
pub const NR_PARAMS: usize = hvmop::NR_PARAMS as usize;
/// `XENVER_extraversion`, a 16-byte string.
pub const EXTRAVERSION: &[u8; 16] = b"-xen-rs\0\0\0\0\0\0\0\0\0";
/// `XENVER_capabilities` (1024-byte buffer, NUL-terminated).
pub const CAPABILITIES: &str = "hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p";
/// `XENVER_get_features` submap 0 for a PVH domU: writable_page_tables, auto_translated_physmap,
/// hvm_callback_vector, hvm_safe_pvclock.
pub const FEATURES_SUBMAP0: u32 = (1 << 0) | (1 << 2) | (1 << 8) | (1 << 9);
/// Largest console write accepted in one call.
pub const CONSOLE_WRITE_MAX: u64 = 64 * 1024;

/// What the dispatcher needs from the calling vCPU and its domain.
pub trait Guest {
    /// The calling domain's id.
    fn domid(&self) -> u16;
    /// The domain's vCPU count.
    fn vcpu_count(&self) -> u32;
    /// Copies guest-virtual memory at `gva` into `buf`.
    fn copy_from(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `buf` to guest-virtual memory at `gva`.
    fn copy_to(&mut self, gva: u64, buf: &[u8]) -> Result<(), Errno>;
    /// Emits guest console output.
    fn console_write(&mut self, bytes: &[u8]);
    /// Takes pending console input; returns the bytes stored.
    fn console_read(&mut self, buf: &mut [u8]) -> usize;
    /// The domain's memory map, up to `out.len()` entries; returns how many were written.
    fn memory_map(&self, out: &mut [E820Entry]) -> usize;
    /// Maps the domain's shared_info frame at guest frame `gpfn`.
    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno>;
    /// Maps grant table frame `idx` (allocated on first use) at guest frame `gpfn`.
    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno>;
    /// How many grant table frames the domain has.
    fn grant_frames(&self) -> u32;
    /// Registers the guest-virtual address where vCPU `vcpu`'s `vcpu_runstate_info` is kept up to date (0 stops
    /// the updates).
    fn register_runstate(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno>;
    /// Registers vCPU `vcpu`'s `vcpu_info` at guest frame `gfn`, byte `offset`.
    fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno>;
    /// Sets the start state of vCPU `vcpu`, which must not have been started (`EEXIST` otherwise).
    fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuStart) -> Result<(), Errno>;
    /// Starts an initialised vCPU (`EINVAL` when it was never initialised; 0 when already up).
    fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno>;
    /// True when vCPU `vcpu` runs.
    fn vcpu_is_up(&self, vcpu: u32) -> bool;
    /// Takes another vCPU of the domain down (`VCPUOP_down`): it stops at its next exit and stays stopped until
    /// `VCPUOP_up`. A guest re-registers per-vCPU areas this way after a restore.
    fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno>;
    /// The domain's HVM parameters.
    fn hvm_params(&mut self) -> &mut [u64; NR_PARAMS];
    /// The domain's event-channel ports.
    fn evtchn(&mut self) -> &mut crate::evtchn::Table;
    /// Raises `port` on the vCPU it is bound to.
    fn send_event(&mut self, port: u32);
    /// Tells the other end of the interdomain channel `port` that there is work (the control domain's
    /// console and xenstore backends).
    fn notify_remote(&mut self, port: u32);
    /// Unmasks `port` (re-raising it when pending).
    fn unmask_event(&mut self, port: u32);
    /// The calling vCPU's id.
    fn vcpu_id(&self) -> u32;
    /// Arms (or with 0 cancels) the calling vCPU's one-shot timer at system time `deadline_ns`.
    fn set_timer(&mut self, deadline_ns: u64);
    /// The calling vCPU's single-shot timer deadline (0: none).
    fn timer(&self) -> u64;
    /// True when `port` of the domain is pending.
    fn port_pending(&mut self, port: u32) -> bool;
}

/// What the scheduler does after the hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Return to the guest.
    Resume,
    /// Let other vCPUs run first.
    Yield,
    /// Sleep until an event (timer) arrives.
    Block,
    /// The domain asked to shut down with this `SHUTDOWN_*` reason.
    Shutdown(u32),
}

/// The result of one hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The value for the guest's `rax`.
    pub ret: u64,
    /// The scheduling consequence.
    pub next: Next,
}

fn ok(v: u64) -> Outcome {
    Outcome {
        ret: v,
        next: Next::Resume,
    }
}

fn err(e: Errno) -> Outcome {
    ok(e.to_ret())
}

fn read<T: Plain, G: Guest>(g: &mut G, gva: u64) -> Result<T, Errno> {
    let mut buf = [0u8; 128];
    let n = core::mem::size_of::<T>();
    g.copy_from(gva, &mut buf[..n])?;
    T::read_from(&buf[..n]).ok_or(Errno::Efault)
}

fn check_domid<G: Guest>(g: &G, domid: u16) -> Result<(), Errno> {
    if domid == DOMID_SELF || domid == g.domid() {
        Ok(())
    } else {
        Err(Errno::Esrch)
    }
}

/// Runs hypercall `nr` with the 64-bit ABI arguments `a` (rdi, rsi, rdx, r10, r8).
pub fn dispatch<G: Guest>(g: &mut G, nr: u64, a: [u64; 5]) -> Outcome {
    let r = match nr {
        xen_abi::hypercall::XEN_VERSION => xen_version(g, a),
        xen_abi::hypercall::CONSOLE_IO => console_io(g, a),
        xen_abi::hypercall::SCHED_OP => return sched_op(g, a),
        xen_abi::hypercall::MEMORY_OP => memory_op(g, a),
        xen_abi::hypercall::HVM_OP => hvm_op(g, a),
        xen_abi::hypercall::VCPU_OP => vcpu_op(g, a),
        xen_abi::hypercall::EVENT_CHANNEL_OP => event_channel_op(g, a),
        xen_abi::hypercall::GRANT_TABLE_OP => grant_table_op(g, a),
        xen_abi::hypercall::SET_TIMER_OP => {
            g.set_timer(a[0]);
            Ok(0)
        }
        _ => Err(Errno::Enosys),
    };
    match r {
        Ok(v) => ok(v),
        Err(e) => err(e),
    }
}

fn xen_version<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] {
        xenver::VERSION => Ok(u64::from(crate::VERSION.0 << 16 | crate::VERSION.1)),
        xenver::EXTRAVERSION => g.copy_to(a[1], EXTRAVERSION).map(|()| 0),
        xenver::CAPABILITIES => {
            let mut buf = [0u8; 1024];
            buf[..CAPABILITIES.len()].copy_from_slice(CAPABILITIES.as_bytes());
            g.copy_to(a[1], &buf).map(|()| 0)
        }
        xenver::GET_FEATURES => {
            let mut fi = [0u8; 8];
            g.copy_from(a[1], &mut fi)?;
            let idx = u32::from_le_bytes([fi[0], fi[1], fi[2], fi[3]]);
            let map = if idx == 0 { FEATURES_SUBMAP0 } else { 0 };
            fi[4..].copy_from_slice(&map.to_le_bytes());
            g.copy_to(a[1], &fi).map(|()| 0)
        }
        xenver::PAGESIZE => Ok(4096),
        _ => Err(Errno::Enosys),
    }
}

fn console_io<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    let (count, mut ptr) = (a[1], a[2]);
    match a[0] {
        consoleio::WRITE => {
            if count > CONSOLE_WRITE_MAX {
                return Err(Errno::Einval);
            }
            let mut left = count;
            let mut buf = [0u8; 128];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                g.copy_from(ptr, &mut buf[..n])?;
                g.console_write(&buf[..n]);
                ptr += n as u64;
                left -= n as u64;
            }
            Ok(0)
        }
        consoleio::READ => {
            let mut buf = [0u8; 128];
            let n = (count.min(buf.len() as u64)) as usize;
            let got = g.console_read(&mut buf[..n]);
            g.copy_to(ptr, &buf[..got])?;
            Ok(got as u64)
        }
        _ => Err(Errno::Enosys),
    }
}

fn sched_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Outcome {
    match a[0] {
        schedop::YIELD => Outcome {
            ret: 0,
            next: Next::Yield,
        },
        schedop::BLOCK => Outcome {
            ret: 0,
            next: Next::Block,
        },
        // SCHEDOP_poll { ports (handle), nr_ports, timeout }: returns at once when one of the ports is pending,
        // otherwise blocks until an event arrives for the vCPU or the absolute timeout (0: none) passes. Linux's
        // paravirtual spinlocks wait here.
        3 => {
            let mut b = [0u8; 24];
            if let Err(e) = g.copy_from(a[1], &mut b) {
                return err(e);
            }
            let ports = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let nr = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            let timeout =
                u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]);
            if nr > 128 {
                return err(Errno::Einval);
            }
            for i in 0..u64::from(nr) {
                let mut p = [0u8; 4];
                if let Err(e) = g.copy_from(ports + 4 * i, &mut p) {
                    return err(e);
                }
                let port = u32::from_le_bytes(p);
                if port as usize >= crate::evtchn::NR_PORTS {
                    return err(Errno::Einval);
                }
                if g.port_pending(port) {
                    return ok(0);
                }
            }
            if timeout != 0 {
                let t = match g.timer() {
                    0 => timeout,
                    cur => cur.min(timeout),
                };
                g.set_timer(t);
            }
            Outcome {
                ret: 0,
                next: Next::Block,
            }
        }
        schedop::SHUTDOWN => match read::<SchedShutdown, G>(g, a[1]) {
            Ok(s) if s.reason <= 5 => Outcome {
                ret: 0,
                next: Next::Shutdown(s.reason),
            },
            Ok(_) => err(Errno::Einval),
            Err(e) => err(e),
        },
        _ => err(Errno::Enosys),
    }
}

fn memory_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] & 0x3f {
        xenmem::ADD_TO_PHYSMAP => {
            let x: XenAddToPhysmap = read(g, a[1])?;
            check_domid(g, x.domid)?;
            match (x.space, x.idx) {
                (xenmem::MAPSPACE_SHARED_INFO, 0) => g.map_shared_info(x.gpfn).map(|()| 0),
                (xenmem::MAPSPACE_SHARED_INFO, _) => Err(Errno::Einval),
                // Grant table frames (version 1 only: no status frames).
                (xenmem::MAPSPACE_GRANT_TABLE, idx) if idx < MAX_GRANT_FRAMES as u64 => {
                    g.map_grant_frame(idx as u32, x.gpfn).map(|()| 0)
                }
                (xenmem::MAPSPACE_GRANT_TABLE, _) => Err(Errno::Einval),
                _ => Err(Errno::Eopnotsupp),
            }
        }
        xenmem::MEMORY_MAP => {
            let mut m: XenMemoryMap = read(g, a[1])?;
            let mut entries = [E820Entry::default(); 16];
            let cap = (m.nr_entries as usize).min(entries.len());
            let n = g.memory_map(&mut entries[..cap]);
            for (i, e) in entries[..n].iter().enumerate() {
                g.copy_to(m.buffer + (i * 20) as u64, e.as_bytes())?;
            }
            m.nr_entries = n as u32;
            g.copy_to(a[1], m.as_bytes()).map(|()| 0)
        }
        _ => Err(Errno::Enosys),
    }
}

fn hvm_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] {
        hvmop::SET_PARAM | hvmop::GET_PARAM => {
            let mut p: XenHvmParam = read(g, a[1])?;
            check_domid(g, p.domid)?;
            let idx = p.index as usize;
            if idx >= NR_PARAMS {
                return Err(Errno::Einval);
            }
            if a[0] == hvmop::SET_PARAM {
                g.hvm_params()[idx] = p.value;
                Ok(0)
            } else {
                p.value = g.hvm_params()[idx];
                g.copy_to(a[1], p.as_bytes()).map(|()| 0)
            }
        }
        _ => Err(Errno::Enosys),
    }
}

/// Grant table frames a domain may have (`max_nr_frames` of `GNTTABOP_query_size`).
pub const MAX_GRANT_FRAMES: u32 = 32;

/// `GNTTABOP_query_size` for the calling domain: the grant table's frames, mapped into the guest with
/// `XENMAPSPACE_grant_table`. There are no grant mappings or copies yet (no backend uses them): a guest can set
/// its table up, but other domains cannot map what it grants.
fn grant_table_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    // GNTTABOP_query_size { domid_t dom; uint32_t nr_frames, max_nr_frames; int16_t status; }, one entry.
    if a[0] != 6 {
        return Err(Errno::Enosys);
    }
    if a[2] != 1 {
        return Err(Errno::Einval);
    }
    let mut b = [0u8; 16];
    g.copy_from(a[1], &mut b)?;
    check_domid(g, u16::from_le_bytes([b[0], b[1]]))?;
    b[4..8].copy_from_slice(&g.grant_frames().max(1).to_le_bytes());
    b[8..12].copy_from_slice(&MAX_GRANT_FRAMES.to_le_bytes());
    b[12..14].copy_from_slice(&0i16.to_le_bytes());
    g.copy_to(a[1], &b).map(|()| 0)
}

fn read_u32s<const N: usize, G: Guest>(g: &mut G, gva: u64) -> Result<[u32; N], Errno> {
    let mut b = [0u8; 16];
    g.copy_from(gva, &mut b[..4 * N])?;
    let mut out = [0u32; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    Ok(out)
}

fn event_channel_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    use crate::evtchn::Binding;
    match a[0] {
        // EVTCHNOP_bind_virq { virq, vcpu, port (out) }.
        1 => {
            let [virq, vcpu, _] = read_u32s::<3, G>(g, a[1])?;
            if vcpu >= g.vcpu_count() {
                return Err(Errno::Enoent);
            }
            let port = g.evtchn().bind_virq(virq, vcpu)?;
            if let Err(e) = g.copy_to(a[1] + 8, &port.to_le_bytes()) {
                let _ = g.evtchn().close(port);
                return Err(e);
            }
            Ok(0)
        }
        // EVTCHNOP_close { port }.
        3 => {
            let [port] = read_u32s::<1, G>(g, a[1])?;
            g.evtchn().close(port).map(|()| 0)
        }
        // EVTCHNOP_send { port }.
        4 => {
            let [port] = read_u32s::<1, G>(g, a[1])?;
            match g.evtchn().get(port) {
                Binding::Ipi { .. } | Binding::Console => {
                    g.send_event(port);
                    Ok(0)
                }
                Binding::Interdomain { .. } => {
                    g.notify_remote(port);
                    Ok(0)
                }
                _ => Err(Errno::Einval),
            }
        }
        // EVTCHNOP_bind_ipi { vcpu, port (out) }.
        7 => {
            let [vcpu, _] = read_u32s::<2, G>(g, a[1])?;
            if vcpu >= g.vcpu_count() {
                return Err(Errno::Enoent);
            }
            let port = g.evtchn().bind_ipi(vcpu)?;
            if let Err(e) = g.copy_to(a[1] + 4, &port.to_le_bytes()) {
                let _ = g.evtchn().close(port);
                return Err(e);
            }
            Ok(0)
        }
        // EVTCHNOP_bind_vcpu { port, vcpu }.
        8 => {
            let [port, vcpu] = read_u32s::<2, G>(g, a[1])?;
            if vcpu >= g.vcpu_count() {
                return Err(Errno::Enoent);
            }
            g.evtchn().bind_vcpu(port, vcpu).map(|()| 0)
        }
        // EVTCHNOP_unmask { port }.
        9 => {
            let [port] = read_u32s::<1, G>(g, a[1])?;
            if g.evtchn().get(port) == Binding::Free {
                return Err(Errno::Einval);
            }
            g.unmask_event(port);
            Ok(0)
        }
        // bind_interdomain, bind_pirq, status, alloc_unbound, reset and the FIFO ABI (init_control,
        // expand_array, set_priority): not offered; Linux falls back to the 2-level ABI.
        _ => Err(Errno::Enosys),
    }
}

fn vcpu_op<G: Guest>(g: &mut G, a: [u64; 5]) -> Result<u64, Errno> {
    let vcpu = u32::try_from(a[1]).map_err(|_| Errno::Enoent)?;
    if vcpu >= g.vcpu_count() {
        return Err(Errno::Enoent);
    }
    match a[0] {
        vcpuop::REGISTER_VCPU_INFO => {
            let r: VcpuRegisterVcpuInfo = read(g, a[2])?;
            if u64::from(r.offset) + 64 > 4096 {
                return Err(Errno::Einval);
            }
            g.register_vcpu_info(vcpu, r.mfn, r.offset).map(|()| 0)
        }
        vcpuop::INITIALISE => {
            let c: VcpuHvmContext = read(g, a[2])?;
            let start = c.decode().ok_or(Errno::Einval)?;
            g.vcpu_initialise(vcpu, &start).map(|()| 0)
        }
        vcpuop::UP => g.vcpu_up(vcpu).map(|()| 0),
        // Only other vCPUs: a vCPU taking itself down would need to stop in the middle of the hypercall.
        vcpuop::DOWN if vcpu == g.vcpu_id() => Err(Errno::Einval),
        vcpuop::DOWN => g.vcpu_down(vcpu).map(|()| 0),
        vcpuop::REGISTER_RUNSTATE_MEMORY_AREA => {
            let mut b = [0u8; 8];
            g.copy_from(a[2], &mut b)?;
            g.register_runstate(vcpu, u64::from_le_bytes(b)).map(|()| 0)
        }
        // VCPUOP_set_periodic_timer / stop_periodic_timer: no periodic timer runs, so stopping it succeeds.
        6 => Err(Errno::Enosys),
        7 => Ok(0),
        // VCPUOP_set_singleshot_timer { timeout_abs_ns, flags } and stop_singleshot_timer, calling vCPU only.
        8 | 9 if vcpu != g.vcpu_id() => Err(Errno::Einval),
        8 => {
            let mut b = [0u8; 8];
            g.copy_from(a[2], &mut b)?;
            g.set_timer(u64::from_le_bytes(b).max(1));
            Ok(0)
        }
        9 => {
            g.set_timer(0);
            Ok(0)
        }
        vcpuop::IS_UP => Ok(u64::from(g.vcpu_is_up(vcpu))),
        _ => Err(Errno::Enosys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::hypercall::*;

    /// A guest whose virtual memory is one flat buffer at 0x1000.
    struct Fake {
        mem: Vec<u8>,
        out: Vec<u8>,
        params: [u64; NR_PARAMS],
        shared: Option<u64>,
        vcpu_info: Option<(u32, u64, u32)>,
        runstate: Option<(u32, u64)>,
        timer: u64,
        started: Option<(u32, u64)>,
        ports: crate::evtchn::Table,
        sent: Vec<u32>,
        grants: Vec<(u32, u64)>,
    }

    const BASE: u64 = 0x1000;

    impl Fake {
        fn new() -> Self {
            Self {
                mem: vec![0; 0x2000],
                out: Vec::new(),
                params: [0; NR_PARAMS],
                shared: None,
                vcpu_info: None,
                runstate: None,
                timer: 0,
                started: None,
                ports: crate::evtchn::Table::new(),
                sent: Vec::new(),
                grants: Vec::new(),
            }
        }
        fn range(&self, gva: u64, len: usize) -> Result<core::ops::Range<usize>, Errno> {
            let off = gva.checked_sub(BASE).ok_or(Errno::Efault)? as usize;
            let end = off.checked_add(len).ok_or(Errno::Efault)?;
            if end > self.mem.len() {
                return Err(Errno::Efault);
            }
            Ok(off..end)
        }
        fn put(&mut self, gva: u64, b: &[u8]) {
            let r = self.range(gva, b.len()).expect("in range");
            self.mem[r].copy_from_slice(b);
        }
    }

    impl Guest for Fake {
        fn domid(&self) -> u16 {
            3
        }
        fn vcpu_count(&self) -> u32 {
            2
        }
        fn copy_from(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
            let r = self.range(gva, buf.len())?;
            buf.copy_from_slice(&self.mem[r]);
            Ok(())
        }
        fn copy_to(&mut self, gva: u64, buf: &[u8]) -> Result<(), Errno> {
            let r = self.range(gva, buf.len())?;
            self.mem[r].copy_from_slice(buf);
            Ok(())
        }
        fn console_write(&mut self, bytes: &[u8]) {
            self.out.extend_from_slice(bytes);
        }
        fn console_read(&mut self, _buf: &mut [u8]) -> usize {
            0
        }
        fn memory_map(&self, out: &mut [E820Entry]) -> usize {
            let map = [
                E820Entry {
                    addr: 0,
                    size: 0x80_0000,
                    kind: 1,
                },
                E820Entry {
                    addr: 0xfc00_0000,
                    size: 0x1000,
                    kind: 2,
                },
            ];
            let n = out.len().min(map.len());
            out[..n].copy_from_slice(&map[..n]);
            n
        }
        fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
            self.grants.push((idx, gpfn));
            Ok(())
        }
        fn grant_frames(&self) -> u32 {
            self.grants.len() as u32
        }
        fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
            self.shared = Some(gpfn);
            Ok(())
        }
        fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
            self.vcpu_info = Some((vcpu, gfn, offset));
            Ok(())
        }
        fn register_runstate(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno> {
            self.runstate = Some((vcpu, gva));
            Ok(())
        }
        fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuStart) -> Result<(), Errno> {
            if self.started.is_some() {
                return Err(Errno::Eexist);
            }
            let ip = match ctx {
                VcpuStart::Mode32(c) => u64::from(c.eip),
                VcpuStart::Mode64(c) => c.rip,
            };
            self.started = Some((vcpu, ip));
            Ok(())
        }
        fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno> {
            match self.started {
                Some((v, _)) if v == vcpu => Ok(()),
                _ => Err(Errno::Einval),
            }
        }
        fn vcpu_is_up(&self, vcpu: u32) -> bool {
            vcpu == 0 || self.started.is_some_and(|(v, _)| v == vcpu)
        }
        fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno> {
            match self.started {
                Some((v, _)) if v == vcpu => {
                    self.started = None;
                    Ok(())
                }
                _ => Err(Errno::Einval),
            }
        }
        fn hvm_params(&mut self) -> &mut [u64; NR_PARAMS] {
            &mut self.params
        }
        fn evtchn(&mut self) -> &mut crate::evtchn::Table {
            &mut self.ports
        }
        fn send_event(&mut self, port: u32) {
            self.sent.push(port);
        }
        fn notify_remote(&mut self, port: u32) {
            self.sent.push(port | 0x4000_0000);
        }
        fn unmask_event(&mut self, port: u32) {
            self.sent.push(port | 0x8000_0000);
        }
        fn vcpu_id(&self) -> u32 {
            0
        }
        fn timer(&self) -> u64 {
            self.timer
        }
        fn port_pending(&mut self, port: u32) -> bool {
            port == 9
        }
        fn set_timer(&mut self, deadline_ns: u64) {
            self.timer = deadline_ns;
        }
    }

    fn errno(o: Outcome) -> Option<Errno> {
        Errno::from_ret(o.ret as i64)
    }

    #[test]
    fn version_and_features() {
        let mut g = Fake::new();
        assert_eq!(dispatch(&mut g, XEN_VERSION, [0; 5]).ret, 0x4_0011);
        assert_eq!(dispatch(&mut g, XEN_VERSION, [1, BASE, 0, 0, 0]).ret, 0);
        assert_eq!(&g.mem[..8], b"-xen-rs\0");
        g.put(BASE + 0x100, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            dispatch(&mut g, XEN_VERSION, [6, BASE + 0x100, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.mem[0x104..0x108], FEATURES_SUBMAP0.to_le_bytes());
        assert_eq!(
            errno(dispatch(&mut g, XEN_VERSION, [1, 0x10, 0, 0, 0])),
            Some(Errno::Efault)
        );
        assert_eq!(
            errno(dispatch(&mut g, XEN_VERSION, [77, 0, 0, 0, 0])),
            Some(Errno::Enosys)
        );
    }

    #[test]
    fn console_write_and_read() {
        let mut g = Fake::new();
        let text = vec![b'x'; 300];
        g.put(BASE + 0x200, &text);
        assert_eq!(
            dispatch(&mut g, CONSOLE_IO, [0, 300, BASE + 0x200, 0, 0]).ret,
            0
        );
        assert_eq!(g.out, text);
        assert_eq!(
            errno(dispatch(&mut g, CONSOLE_IO, [0, 10, 0xdead_0000, 0, 0])),
            Some(Errno::Efault)
        );
        assert_eq!(
            errno(dispatch(&mut g, CONSOLE_IO, [0, u64::MAX, BASE, 0, 0])),
            Some(Errno::Einval)
        );
        assert_eq!(dispatch(&mut g, CONSOLE_IO, [1, 16, BASE, 0, 0]).ret, 0);
        assert_eq!(
            errno(dispatch(&mut g, CONSOLE_IO, [9, 0, 0, 0, 0])),
            Some(Errno::Enosys)
        );
    }

    #[test]
    fn sched_op_outcomes() {
        let mut g = Fake::new();
        assert_eq!(dispatch(&mut g, SCHED_OP, [0; 5]).next, Next::Yield);
        assert_eq!(
            dispatch(&mut g, SCHED_OP, [1, 0, 0, 0, 0]).next,
            Next::Block
        );
        g.put(BASE, &3u32.to_le_bytes());
        assert_eq!(
            dispatch(&mut g, SCHED_OP, [2, BASE, 0, 0, 0]).next,
            Next::Shutdown(3)
        );
        g.put(BASE, &99u32.to_le_bytes());
        let o = dispatch(&mut g, SCHED_OP, [2, BASE, 0, 0, 0]);
        assert_eq!((errno(o), o.next), (Some(Errno::Einval), Next::Resume));
        assert_eq!(
            errno(dispatch(&mut g, SCHED_OP, [2, 8, 0, 0, 0])),
            Some(Errno::Efault)
        );
        // SCHEDOP_poll: the model reports port 9 pending. Ports [4, 9]: returns at once.
        g.put(
            BASE + 0x100,
            &[4u32.to_le_bytes(), 9u32.to_le_bytes()].concat(),
        );
        let poll = |nr: u32, timeout: u64| {
            let mut b = [0u8; 24];
            b[..8].copy_from_slice(&(BASE + 0x100).to_le_bytes());
            b[8..12].copy_from_slice(&nr.to_le_bytes());
            b[16..].copy_from_slice(&timeout.to_le_bytes());
            b
        };
        g.put(BASE + 0x200, &poll(2, 0));
        let o = dispatch(&mut g, SCHED_OP, [3, BASE + 0x200, 0, 0, 0]);
        assert_eq!((o.ret, o.next), (0, Next::Resume));
        // Only port 4: blocks, with the earlier of the existing timer and the timeout.
        g.timer = 500;
        g.put(BASE + 0x200, &poll(1, 900));
        let o = dispatch(&mut g, SCHED_OP, [3, BASE + 0x200, 0, 0, 0]);
        assert_eq!((o.ret, o.next, g.timer), (0, Next::Block, 500));
        g.timer = 0;
        dispatch(&mut g, SCHED_OP, [3, BASE + 0x200, 0, 0, 0]);
        assert_eq!(g.timer, 900);
        g.put(BASE + 0x200, &poll(1000, 0));
        assert_eq!(
            errno(dispatch(&mut g, SCHED_OP, [3, BASE + 0x200, 0, 0, 0])),
            Some(Errno::Einval)
        );
    }

    #[test]
    fn grant_table_frames_and_query_size() {
        let mut g = Fake::new();
        let q = |dom: u16| {
            let mut b = [0u8; 16];
            b[..2].copy_from_slice(&dom.to_le_bytes());
            b
        };
        g.put(BASE, &q(DOMID_SELF));
        assert_eq!(dispatch(&mut g, GRANT_TABLE_OP, [6, BASE, 1, 0, 0]).ret, 0);
        let frames = |g: &Fake| {
            let at = 0;
            (
                u32::from_le_bytes(g.mem[at + 4..at + 8].try_into().expect("4")),
                u32::from_le_bytes(g.mem[at + 8..at + 12].try_into().expect("4")),
            )
        };
        assert_eq!(frames(&g), (1, MAX_GRANT_FRAMES));
        // Map frames 0 and 1 with XENMAPSPACE_grant_table.
        for (idx, gpfn) in [(0u64, 0x500u64), (1, 0x501)] {
            let x = XenAddToPhysmap {
                domid: DOMID_SELF,
                size: 0,
                space: xenmem::MAPSPACE_GRANT_TABLE,
                idx,
                gpfn,
            };
            g.put(BASE + 0x100, x.as_bytes());
            assert_eq!(
                dispatch(
                    &mut g,
                    MEMORY_OP,
                    [xenmem::ADD_TO_PHYSMAP, BASE + 0x100, 0, 0, 0]
                )
                .ret,
                0
            );
        }
        assert_eq!(g.grants, vec![(0, 0x500), (1, 0x501)]);
        g.put(BASE, &q(DOMID_SELF));
        dispatch(&mut g, GRANT_TABLE_OP, [6, BASE, 1, 0, 0]);
        assert_eq!(frames(&g).0, 2);
        // Beyond the limit, another domain, several entries, other operations.
        let x = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: xenmem::MAPSPACE_GRANT_TABLE,
            idx: u64::from(MAX_GRANT_FRAMES),
            gpfn: 0x600,
        };
        g.put(BASE + 0x100, x.as_bytes());
        assert_eq!(
            errno(dispatch(
                &mut g,
                MEMORY_OP,
                [xenmem::ADD_TO_PHYSMAP, BASE + 0x100, 0, 0, 0]
            )),
            Some(Errno::Einval)
        );
        g.put(BASE, &q(7));
        assert_eq!(
            errno(dispatch(&mut g, GRANT_TABLE_OP, [6, BASE, 1, 0, 0])),
            Some(Errno::Esrch)
        );
        assert_eq!(
            errno(dispatch(&mut g, GRANT_TABLE_OP, [6, BASE, 2, 0, 0])),
            Some(Errno::Einval)
        );
        assert_eq!(
            errno(dispatch(&mut g, GRANT_TABLE_OP, [1, BASE, 1, 0, 0])),
            Some(Errno::Enosys)
        );
    }

    #[test]
    fn memory_op_physmap_and_map() {
        let mut g = Fake::new();
        let x = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: 0,
            idx: 0,
            gpfn: 0x7ff,
        };
        g.put(BASE, x.as_bytes());
        assert_eq!(dispatch(&mut g, MEMORY_OP, [7, BASE, 0, 0, 0]).ret, 0);
        assert_eq!(g.shared, Some(0x7ff));
        g.put(BASE, XenAddToPhysmap { domid: 9, ..x }.as_bytes());
        assert_eq!(
            errno(dispatch(&mut g, MEMORY_OP, [7, BASE, 0, 0, 0])),
            Some(Errno::Esrch)
        );
        // Spaces other than shared_info and the grant table (gmfn, gmfn_range, ...) are not offered.
        g.put(BASE, XenAddToPhysmap { space: 2, ..x }.as_bytes());
        assert_eq!(
            errno(dispatch(&mut g, MEMORY_OP, [7, BASE, 0, 0, 0])),
            Some(Errno::Eopnotsupp)
        );
        let m = XenMemoryMap {
            nr_entries: 8,
            pad: 0,
            buffer: BASE + 0x100,
        };
        g.put(BASE, m.as_bytes());
        assert_eq!(dispatch(&mut g, MEMORY_OP, [9, BASE, 0, 0, 0]).ret, 0);
        assert_eq!(g.mem[..4], 2u32.to_le_bytes());
        let e = E820Entry::read_from(&g.mem[0x100 + 20..]).expect("entry");
        assert_eq!({ e.addr }, 0xfc00_0000);
        assert_eq!({ e.kind }, 2);
        // A one-entry buffer gets one entry.
        g.put(BASE, XenMemoryMap { nr_entries: 1, ..m }.as_bytes());
        assert_eq!(dispatch(&mut g, MEMORY_OP, [9, BASE, 0, 0, 0]).ret, 0);
        assert_eq!(g.mem[..4], 1u32.to_le_bytes());
        g.put(BASE, XenMemoryMap { buffer: 0x10, ..m }.as_bytes());
        assert_eq!(
            errno(dispatch(&mut g, MEMORY_OP, [9, BASE, 0, 0, 0])),
            Some(Errno::Efault)
        );
    }

    #[test]
    fn hvm_params_round_trip() {
        let mut g = Fake::new();
        let p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: 17,
            value: 0x1234,
        };
        g.put(BASE, p.as_bytes());
        assert_eq!(dispatch(&mut g, HVM_OP, [0, BASE, 0, 0, 0]).ret, 0);
        g.put(BASE, XenHvmParam { value: 0, ..p }.as_bytes());
        assert_eq!(dispatch(&mut g, HVM_OP, [1, BASE, 0, 0, 0]).ret, 0);
        assert_eq!(
            XenHvmParam::read_from(&g.mem).map(|p| p.value),
            Some(0x1234)
        );
        g.put(BASE, XenHvmParam { index: 500, ..p }.as_bytes());
        assert_eq!(
            errno(dispatch(&mut g, HVM_OP, [1, BASE, 0, 0, 0])),
            Some(Errno::Einval)
        );
    }

    #[test]
    fn event_channels_and_singleshot_timer() {
        let mut g = Fake::new();
        // bind_virq(VIRQ_TIMER, vcpu 0) writes the port back.
        g.put(BASE, &[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [1, BASE, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.mem[8..12], 1u32.to_le_bytes());
        assert_eq!(
            errno(dispatch(&mut g, EVENT_CHANNEL_OP, [1, BASE, 0, 0, 0])),
            Some(Errno::Eexist)
        );
        // bind_ipi(vcpu 1) -> port 2, send it, unmask it, close it.
        g.put(BASE + 0x20, &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [7, BASE + 0x20, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.mem[0x24..0x28], 2u32.to_le_bytes());
        g.put(BASE + 0x40, &2u32.to_le_bytes());
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [4, BASE + 0x40, 0, 0, 0]).ret,
            0
        );
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [9, BASE + 0x40, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.sent, vec![2, 2 | 0x8000_0000]);
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [3, BASE + 0x40, 0, 0, 0]).ret,
            0
        );
        assert_eq!(
            errno(dispatch(
                &mut g,
                EVENT_CHANNEL_OP,
                [4, BASE + 0x40, 0, 0, 0]
            )),
            Some(Errno::Einval)
        );
        // Sending on a VIRQ port is refused; a vCPU beyond the domain is ENOENT; FIFO init is ENOSYS.
        g.put(BASE + 0x40, &1u32.to_le_bytes());
        assert_eq!(
            errno(dispatch(
                &mut g,
                EVENT_CHANNEL_OP,
                [4, BASE + 0x40, 0, 0, 0]
            )),
            Some(Errno::Einval)
        );
        g.put(BASE + 0x20, &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            errno(dispatch(
                &mut g,
                EVENT_CHANNEL_OP,
                [7, BASE + 0x20, 0, 0, 0]
            )),
            Some(Errno::Enoent)
        );
        assert_eq!(
            errno(dispatch(&mut g, EVENT_CHANNEL_OP, [11, BASE, 0, 0, 0])),
            Some(Errno::Enosys)
        );
        // A channel the toolstack allocated to the control domain: sending notifies the other end, bind_vcpu
        // moves it to another vCPU (not beyond the domain's), and it unmasks like any port.
        let console = g.ports.alloc_interdomain(0).expect("interdomain");
        g.sent.clear();
        g.put(BASE + 0x80, &console.to_le_bytes());
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [4, BASE + 0x80, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.sent, vec![console | 0x4000_0000]);
        g.put(
            BASE + 0x80,
            &[console.to_le_bytes(), 1u32.to_le_bytes()].concat(),
        );
        assert_eq!(
            dispatch(&mut g, EVENT_CHANNEL_OP, [8, BASE + 0x80, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.ports.get(console).vcpu(), Some(1));
        g.put(BASE + 0x84, &5u32.to_le_bytes());
        assert_eq!(
            errno(dispatch(
                &mut g,
                EVENT_CHANNEL_OP,
                [8, BASE + 0x80, 0, 0, 0]
            )),
            Some(Errno::Enoent)
        );
        // Single-shot timer on the calling vCPU; another vCPU's is refused.
        g.put(BASE + 0x60, &123_456u64.to_le_bytes());
        assert_eq!(dispatch(&mut g, VCPU_OP, [8, 0, BASE + 0x60, 0, 0]).ret, 0);
        assert_eq!(g.timer, 123_456);
        assert_eq!(
            errno(dispatch(&mut g, VCPU_OP, [8, 1, BASE + 0x60, 0, 0])),
            Some(Errno::Einval)
        );
        assert_eq!(dispatch(&mut g, VCPU_OP, [9, 0, 0, 0, 0]).ret, 0);
        assert_eq!(g.timer, 0);
        assert_eq!(dispatch(&mut g, VCPU_OP, [7, 0, 0, 0, 0]).ret, 0);
    }

    #[test]
    fn random_arguments_never_panic_and_fail_cleanly() {
        // xorshift; every hypercall number the dispatcher knows plus neighbours, random sub-ops and pointers.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut g = Fake::new();
        for i in 0..20_000u64 {
            let nr = [12, 15, 17, 18, 24, 29, 32, 34, 0, 99][(i % 10) as usize];
            let mut a = [next(), next(), next(), next(), next()];
            if i % 2 == 0 {
                a[0] %= 16;
            }
            if i % 3 == 0 {
                // A pointer into the fake guest's memory with random contents behind it.
                a[1] = BASE + next() % 0x1f00;
                a[2] = BASE + next() % 0x1f00;
                let at = (next() % 0x1f00) as usize;
                let v = next().to_le_bytes();
                g.mem[at..at + 8].copy_from_slice(&v);
            }
            let o = dispatch(&mut g, nr, a);
            let r = o.ret as i64;
            assert!(r >= -4095, "hypercall {nr} {a:x?} returned {r:#x}");
            if r < 0 {
                assert!(Errno::from_ret(r).is_some(), "unknown errno {r}");
                assert_eq!(o.next, Next::Resume, "an error must not change scheduling");
            }
        }
    }

    #[test]
    fn vcpu_op_and_timer_and_unknown() {
        let mut g = Fake::new();
        let r = VcpuRegisterVcpuInfo {
            mfn: 0x300,
            offset: 64,
            rsvd: 0,
        };
        g.put(BASE, r.as_bytes());
        assert_eq!(dispatch(&mut g, VCPU_OP, [10, 1, BASE, 0, 0]).ret, 0);
        assert_eq!(g.vcpu_info, Some((1, 0x300, 64)));
        // VCPUOP_register_runstate_memory_area takes the address from a one-field struct.
        g.put(BASE + 64, &0xffff_8000_1234u64.to_le_bytes());
        assert_eq!(dispatch(&mut g, VCPU_OP, [5, 1, BASE + 64, 0, 0]).ret, 0);
        assert_eq!(g.runstate, Some((1, 0xffff_8000_1234)));
        assert_eq!(
            errno(dispatch(&mut g, VCPU_OP, [5, 0, 0x10, 0, 0])),
            Some(Errno::Efault)
        );
        assert_eq!(
            errno(dispatch(&mut g, VCPU_OP, [10, 2, BASE, 0, 0])),
            Some(Errno::Enoent)
        );
        g.put(BASE, VcpuRegisterVcpuInfo { offset: 4090, ..r }.as_bytes());
        assert_eq!(
            errno(dispatch(&mut g, VCPU_OP, [10, 0, BASE, 0, 0])),
            Some(Errno::Einval)
        );
        // VCPUOP_down: another vCPU only (the calling one is vCPU 0 here), and it then reads as down.
        assert_eq!(
            errno(dispatch(&mut g, VCPU_OP, [vcpuop::DOWN, 0, 0, 0, 0])),
            Some(Errno::Einval)
        );
        g.started = Some((1, 0x2000));
        assert_eq!(
            dispatch(&mut g, VCPU_OP, [vcpuop::IS_UP, 1, 0, 0, 0]).ret,
            1
        );
        assert_eq!(dispatch(&mut g, VCPU_OP, [vcpuop::DOWN, 1, 0, 0, 0]).ret, 0);
        assert_eq!(
            dispatch(&mut g, VCPU_OP, [vcpuop::IS_UP, 1, 0, 0, 0]).ret,
            0
        );
        assert_eq!(
            dispatch(&mut g, SET_TIMER_OP, [5_000_000, 0, 0, 0, 0]).ret,
            0
        );
        assert_eq!(g.timer, 5_000_000);
        for nr in [0, 1, 11, 40, 1000, u64::MAX] {
            assert_eq!(
                errno(dispatch(&mut g, nr, [u64::MAX; 5])),
                Some(Errno::Enosys)
            );
        }
    }
}
