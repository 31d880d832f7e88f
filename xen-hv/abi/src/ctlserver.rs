//! The hypervisor end of the sandbox control channel, independent of how domains are kept: decodes HELLO,
//! HYPERCALL and MAP frames, runs the control-domain subset of domctl / sysctl / memory_op / hvm_op /
//! sched_op / event_channel_op against a [`Backend`], and encodes the RESULT. xen-hv implements [`Backend`]
//! on its domain table; tests implement it on a model. `no_std` and allocation-free: request buffers are
//! copied into the reply first and the handlers work on them there.
//!
//! Guest handles inside buffers carry buffer indices (docs/sandbox-transport.md).

use crate::ctlframe::{self, FrameError, Header, Hello, Kind, Writer, HEADER_LEN, MAX_BUFS};
use crate::domctl::{self, GetDomainInfo, XenDomctl};
use crate::errno::Errno;
use crate::memres::{self, MemoryReservation};
use crate::plain::Plain;
use crate::sysctl::{self, GetDomainInfoList, Physinfo, XenSysctl};
use crate::xen::{E820Entry, VcpuHvmContext, XenHvmParam};

/// `EVTCHNOP_bind_interdomain`: `struct evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t
/// remote_port; evtchn_port_t local_port; }` (remote_port at offset 4, local_port at 8).
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `EVTCHNOP_close`: `struct evtchn_close { evtchn_port_t port; }`.
pub const EVTCHNOP_CLOSE: u64 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u64 = 4;
/// xen-rs's own event-channel operation for the sandbox, where no interrupt reaches the control domain: returns
/// the control domain's ports whose other end notified since the last call, as a `u32` count followed by that
/// many `u32` ports in the buffer of arg 1 (at most `(len - 4) / 4`; the rest stay for the next call).
pub const XENRS_EVTCHNOP_POLL_NOTIFIED: u64 = 0x7852_0001;
/// `EVTCHNOP_alloc_unbound`: `struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }`.
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

/// What the control interface needs from the hypervisor's domain table. Errors are Xen errnos.
pub trait Backend {
    /// Protocol HELLO contents.
    fn hello(&self) -> Hello;
    /// Creates a domain (`domid` 0 = pick one); returns its ID. The domain starts paused, without memory.
    fn create_domain(&mut self, domid: u16, req: &domctl::CreateDomain) -> Result<u16, Errno>;
    /// Destroys a domain.
    fn destroy_domain(&mut self, domid: u16) -> Result<(), Errno>;
    /// Pauses (`true`) or unpauses a domain.
    fn set_paused(&mut self, domid: u16, paused: bool) -> Result<(), Errno>;
    /// The first domain with an ID at or above `domid`.
    fn domain_info(&mut self, domid: u16) -> Option<GetDomainInfo>;
    /// Sets the memory limit.
    fn set_max_mem(&mut self, domid: u16, kb: u64) -> Result<(), Errno>;
    /// Backs one guest frame with memory.
    fn populate(&mut self, domid: u16, gfn: u64) -> Result<(), Errno>;
    /// Sets a vCPU's PVH entry state.
    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuHvmContext,
    ) -> Result<(), Errno>;
    /// Sets an HVM param.
    fn set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Errno>;
    /// Reads an HVM param.
    fn get_param(&mut self, domid: u16, index: u32) -> Result<u64, Errno>;
    /// Asks a domain to shut down.
    fn remote_shutdown(&mut self, domid: u16, reason: u32) -> Result<(), Errno>;
    /// Host information.
    fn physinfo(&mut self) -> Physinfo;
    /// Machine frame (RAM-file page) behind a guest frame.
    fn translate(&mut self, domid: u16, gfn: u64) -> Result<u64, Errno>;
    /// Binds a global VIRQ to a control-domain port.
    fn bind_virq(&mut self, virq: u32) -> Result<u32, Errno>;
    /// Allocates a port in domain `dom` that `remote` may bind to; returns the port.
    fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, Errno>;
    /// Sets the e820 map `XENMEM_memory_map` returns to the domain.
    fn set_memory_map(&mut self, domid: u16, map: &[E820Entry]) -> Result<(), Errno>;
    /// `EVTCHNOP_bind_interdomain`: binds a local (control domain) port to `remote_port` of `remote_dom`, a port
    /// allocated unbound for domain 0; returns the local port.
    fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> Result<u32, Errno>;
    /// `EVTCHNOP_send` on a local port: raises the other end.
    fn send(&mut self, local_port: u32) -> Result<(), Errno>;
    /// `EVTCHNOP_close` of a local port.
    fn close(&mut self, local_port: u32) -> Result<(), Errno>;
    /// Local ports whose other end notified since the last call, up to `out.len()`; returns how many.
    fn poll_notified(&mut self, out: &mut [u32]) -> usize;
    /// `XEN_DOMCTL_gethvmcontext` of a paused or suspended domain: writes the records (`crate::hvmsave`) into
    /// `out` and returns their length; `Err((ENOBUFS, needed))` when `out` is too small.
    fn get_hvm_context(&mut self, _domid: u16, _out: &mut [u8]) -> Result<usize, (Errno, usize)> {
        Err((Errno::Enosys, 0))
    }
    /// `XEN_DOMCTL_sethvmcontext`: loads records into a domain being built, or a paused or suspended one.
    fn set_hvm_context(&mut self, _domid: u16, _records: &[u8]) -> Result<(), Errno> {
        Err(Errno::Enosys)
    }
    /// `XEN_DOMCTL_resumedomain`: a domain shut down with reason suspend runs again.
    fn resume_domain(&mut self, _domid: u16) -> Result<(), Errno> {
        Err(Errno::Enosys)
    }
}

fn err(e: Errno) -> i64 {
    -(e as i64)
}

/// Where each request buffer sits in the reply.
#[derive(Clone, Copy, Default)]
struct Bufs {
    at: [(usize, usize); MAX_BUFS as usize],
    n: usize,
}

impl Bufs {
    fn get<'a>(&self, out: &'a mut [u8], i: u64) -> Option<&'a mut [u8]> {
        let i = usize::try_from(i).ok()?;
        if i >= self.n {
            return None;
        }
        let (s, l) = self.at[i];
        out.get_mut(s..s + l)
    }
}

/// Handles one frame; writes the reply (if any) into `out` and returns its length. Malformed requests get
/// a RESULT of -EINVAL; replies that do not fit `out` are dropped (`None`).
pub fn handle<B: Backend>(
    b: &mut B,
    header: &Header,
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    match header.kind {
        Kind::Hello => ctlframe::encode(out, Kind::Hello, header.seq, |w| b.hello().write(w)).ok(),
        Kind::Hypercall => hypercall(b, header.seq, payload, out)
            .or_else(|_| invalid(header.seq, out))
            .ok(),
        Kind::MapRange => map_range(b, header.seq, payload, out)
            .or_else(|_| invalid(header.seq, out))
            .ok(),
        Kind::Map => map(b, header.seq, payload, out)
            .or_else(|_| invalid(header.seq, out))
            .ok(),
        // Frames only the hypervisor sends are ignored.
        Kind::Result | Kind::Event => None,
    }
}

/// The -EINVAL RESULT for a malformed request with sequence number `seq`.
pub fn invalid(seq: u32, out: &mut [u8]) -> Result<usize, FrameError> {
    ctlframe::encode(out, Kind::Result, seq, |w| {
        ctlframe::write_result(w, err(Errno::Einval), &[])
    })
}

/// An EVENT frame for `port`.
pub fn event(port: u32, out: &mut [u8]) -> Result<usize, FrameError> {
    ctlframe::encode(out, Kind::Event, 0, |w| w.u32(port))
}

fn hypercall<B: Backend>(
    b: &mut B,
    seq: u32,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let (head, mut r) = ctlframe::read_hypercall(payload)?;
    // Copy the request buffers into the reply (RESULT: ret u64, then len u32 + bytes each).
    let mut bufs = Bufs::default();
    let body = out.get_mut(HEADER_LEN..).ok_or(FrameError::NoRoom)?;
    let limit = body.len().min(ctlframe::MAX_PAYLOAD);
    let mut w = Writer::new(&mut body[..limit]);
    w.u64(0)?;
    for i in 0..head.nr_bufs as usize {
        let data = ctlframe::read_buf(&mut r)?;
        w.u32(data.len() as u32)?;
        bufs.at[i] = (HEADER_LEN + w.len(), data.len());
        w.bytes(data)?;
        bufs.n = i + 1;
    }
    let len = w.len();
    let ret = dispatch(b, head.op as u64, &head.args, &bufs, out);
    out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&(ret as u64).to_le_bytes());
    let h = Header {
        kind: Kind::Result,
        flags: 0,
        seq,
        len: len as u32,
    };
    out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    Ok(HEADER_LEN + len)
}

fn dispatch<B: Backend>(b: &mut B, op: u64, args: &[u64; 5], bufs: &Bufs, out: &mut [u8]) -> i64 {
    use crate::hypercall as hc;
    match op {
        hc::DOMCTL => {
            let Some(buf) = bufs.get(out, args[0]) else {
                return err(Errno::Efault);
            };
            let Some(mut d) = XenDomctl::read_from(buf) else {
                return err(Errno::Efault);
            };
            if d.interface_version != domctl::INTERFACE_VERSION {
                return err(Errno::Eacces);
            }
            let r = domctl_op(b, &mut d, bufs, out);
            if let Some(buf) = bufs.get(out, args[0]) {
                buf[..core::mem::size_of::<XenDomctl>()].copy_from_slice(d.as_bytes());
            }
            r
        }
        hc::SYSCTL => {
            let Some(buf) = bufs.get(out, args[0]) else {
                return err(Errno::Efault);
            };
            let Some(mut s) = XenSysctl::read_from(buf) else {
                return err(Errno::Efault);
            };
            if s.interface_version != sysctl::INTERFACE_VERSION {
                return err(Errno::Eacces);
            }
            let r = sysctl_op(b, &mut s, bufs, out);
            if let Some(buf) = bufs.get(out, args[0]) {
                buf[..core::mem::size_of::<XenSysctl>()].copy_from_slice(s.as_bytes());
            }
            r
        }
        hc::MEMORY_OP if args[0] == memres::XENMEM_POPULATE_PHYSMAP => {
            let Some(r) = bufs
                .get(out, args[1])
                .and_then(|x| MemoryReservation::read_from(x))
            else {
                return err(Errno::Efault);
            };
            // Superpage extents (what libxc uses for 2 MiB and 1 GiB chunks): each listed gfn starts
            // `1 << extent_order` frames and must be aligned to them.
            if r.extent_order > 18 {
                return err(Errno::Einval);
            }
            let per = 1u64 << r.extent_order;
            let Some(list) = bufs.get(out, r.extent_start) else {
                return err(Errno::Efault);
            };
            let mut done = 0i64;
            let n = (r.nr_extents as usize).min(list.len() / 8);
            'extents: for i in 0..n {
                let mut a = [0u8; 8];
                a.copy_from_slice(&list[i * 8..i * 8 + 8]);
                let gfn = u64::from_le_bytes(a);
                if gfn % per != 0 || gfn.checked_add(per).is_none() {
                    if done == 0 {
                        return err(Errno::Einval);
                    }
                    break;
                }
                for f in gfn..gfn + per {
                    match b.populate(r.domid, f) {
                        Ok(()) => {}
                        Err(e) if done == 0 => return err(e),
                        Err(_) => break 'extents,
                    }
                }
                done += 1;
            }
            done
        }
        hc::MEMORY_OP if args[0] == memres::XENMEM_SET_MEMORY_MAP => {
            let Some(m) = bufs
                .get(out, args[1])
                .and_then(|x| memres::ForeignMemoryMap::read_from(x))
            else {
                return err(Errno::Efault);
            };
            let n = m.nr_entries as usize;
            if n > memres::MAX_E820 {
                return err(Errno::E2big);
            }
            let Some(list) = bufs.get(out, m.buffer).filter(|l| l.len() >= n * 20) else {
                return err(Errno::Efault);
            };
            let mut map = [E820Entry::default(); memres::MAX_E820];
            for (i, e) in map.iter_mut().enumerate().take(n) {
                *e = E820Entry::read_from(&list[i * 20..]).unwrap_or_default();
            }
            b.set_memory_map(m.domid, &map[..n]).map_or_else(err, |_| 0)
        }
        hc::HVM_OP if args[0] == memres::HVMOP_SET_PARAM || args[0] == memres::HVMOP_GET_PARAM => {
            let Some(buf) = bufs.get(out, args[1]) else {
                return err(Errno::Efault);
            };
            let Some(mut p) = XenHvmParam::read_from(buf) else {
                return err(Errno::Efault);
            };
            let r = if args[0] == memres::HVMOP_SET_PARAM {
                b.set_param(p.domid, p.index, p.value)
            } else {
                b.get_param(p.domid, p.index).map(|v| p.value = v)
            };
            buf[..16].copy_from_slice(p.as_bytes());
            r.map_or_else(err, |_| 0)
        }
        hc::SCHED_OP if args[0] == domctl::SCHEDOP_REMOTE_SHUTDOWN => {
            let Some(r) = bufs
                .get(out, args[1])
                .and_then(|x| domctl::RemoteShutdown::read_from(x))
            else {
                return err(Errno::Efault);
            };
            b.remote_shutdown(r.domain_id, r.reason)
                .map_or_else(err, |_| 0)
        }
        hc::EVENT_CHANNEL_OP if args[0] == EVTCHNOP_BIND_VIRQ => {
            let Some(buf) = bufs.get(out, args[1]).filter(|x| x.len() >= 12) else {
                return err(Errno::Efault);
            };
            let virq = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            match b.bind_virq(virq) {
                Ok(port) => {
                    buf[8..12].copy_from_slice(&port.to_le_bytes());
                    0
                }
                Err(e) => err(e),
            }
        }
        hc::EVENT_CHANNEL_OP if args[0] == EVTCHNOP_ALLOC_UNBOUND => {
            let Some(buf) = bufs.get(out, args[1]).filter(|x| x.len() >= 8) else {
                return err(Errno::Efault);
            };
            let dom = u16::from_le_bytes([buf[0], buf[1]]);
            let remote = u16::from_le_bytes([buf[2], buf[3]]);
            match b.alloc_unbound(dom, remote) {
                Ok(port) => {
                    buf[4..8].copy_from_slice(&port.to_le_bytes());
                    0
                }
                Err(e) => err(e),
            }
        }
        hc::EVENT_CHANNEL_OP if args[0] == EVTCHNOP_BIND_INTERDOMAIN => {
            let Some(buf) = bufs.get(out, args[1]).filter(|x| x.len() >= 12) else {
                return err(Errno::Efault);
            };
            let dom = u16::from_le_bytes([buf[0], buf[1]]);
            let port = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
            match b.bind_interdomain(dom, port) {
                Ok(local) => {
                    buf[8..12].copy_from_slice(&local.to_le_bytes());
                    0
                }
                Err(e) => err(e),
            }
        }
        hc::EVENT_CHANNEL_OP if args[0] == XENRS_EVTCHNOP_POLL_NOTIFIED => {
            let Some(buf) = bufs.get(out, args[1]).filter(|x| x.len() >= 4) else {
                return err(Errno::Efault);
            };
            let mut ports = [0u32; 256];
            let room = ((buf.len() - 4) / 4).min(ports.len());
            let n = b.poll_notified(&mut ports[..room]);
            buf[..4].copy_from_slice(&(n as u32).to_le_bytes());
            for (i, p) in ports[..n].iter().enumerate() {
                buf[4 + 4 * i..8 + 4 * i].copy_from_slice(&p.to_le_bytes());
            }
            0
        }
        hc::EVENT_CHANNEL_OP if args[0] == EVTCHNOP_SEND || args[0] == EVTCHNOP_CLOSE => {
            let Some(buf) = bufs.get(out, args[1]).filter(|x| x.len() >= 4) else {
                return err(Errno::Efault);
            };
            let port = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let r = if args[0] == EVTCHNOP_SEND {
                b.send(port)
            } else {
                b.close(port)
            };
            r.map_or_else(err, |()| 0)
        }
        hc::XEN_VERSION if args[0] == hc::xenver::VERSION => i64::from(b.hello().xen_version),
        _ => err(Errno::Enosys),
    }
}

fn domctl_op<B: Backend>(b: &mut B, d: &mut XenDomctl, bufs: &Bufs, out: &mut [u8]) -> i64 {
    let id = d.domain;
    let r = match d.cmd {
        domctl::cmd::CREATEDOMAIN => {
            let c: domctl::CreateDomain = d.payload();
            b.create_domain(id, &c).map(|n| d.domain = n)
        }
        domctl::cmd::DESTROYDOMAIN => b.destroy_domain(id),
        domctl::cmd::PAUSEDOMAIN => b.set_paused(id, true),
        domctl::cmd::UNPAUSEDOMAIN => b.set_paused(id, false),
        domctl::cmd::GETDOMAININFO => match b.domain_info(id) {
            Some(i) => {
                d.domain = i.domain;
                d.set_payload(&i);
                Ok(())
            }
            None => Err(Errno::Esrch),
        },
        domctl::cmd::MAX_MEM => b.set_max_mem(id, d.payload::<domctl::MaxMem>().max_memkb),
        domctl::cmd::MAX_VCPUS => Ok(()),
        domctl::cmd::SETVCPUCONTEXT => {
            let v: domctl::VcpuContext = d.payload();
            match bufs
                .get(out, v.ctxt)
                .and_then(|x| VcpuHvmContext::read_from(x))
            {
                Some(ctx) => b.set_vcpu_context(id, v.vcpu, &ctx),
                None => Err(Errno::Efault),
            }
        }
        domctl::cmd::GETHVMCONTEXT => {
            let mut h: domctl::HvmContext = d.payload();
            let Some(buf) = bufs.get(out, h.buffer) else {
                return err(Errno::Efault);
            };
            let room = (h.size as usize).min(buf.len());
            let r = match b.get_hvm_context(id, &mut buf[..room]) {
                Ok(n) => {
                    h.size = n as u32;
                    Ok(())
                }
                Err((e, needed)) => {
                    h.size = needed as u32;
                    Err(e)
                }
            };
            d.set_payload(&h);
            r
        }
        domctl::cmd::SETHVMCONTEXT => {
            let h: domctl::HvmContext = d.payload();
            match bufs.get(out, h.buffer) {
                Some(buf) => {
                    let n = (h.size as usize).min(buf.len());
                    b.set_hvm_context(id, &buf[..n])
                }
                None => Err(Errno::Efault),
            }
        }
        domctl::cmd::RESUMEDOMAIN => b.resume_domain(id),
        _ => Err(Errno::Enosys),
    };
    r.map_or_else(err, |_| 0)
}

fn sysctl_op<B: Backend>(b: &mut B, s: &mut XenSysctl, bufs: &Bufs, out: &mut [u8]) -> i64 {
    match s.cmd {
        sysctl::cmd::PHYSINFO => {
            let p = b.physinfo();
            s.set_payload(&p);
            0
        }
        sysctl::cmd::GETDOMAININFOLIST => {
            let mut l: GetDomainInfoList = s.payload();
            let sz = core::mem::size_of::<GetDomainInfo>();
            let mut next = Some(l.first_domain);
            let mut n = 0usize;
            while let Some(from) = next {
                if n >= l.max_domains as usize {
                    break;
                }
                let Some(i) = b.domain_info(from) else {
                    break;
                };
                let Some(buf) = bufs.get(out, l.buffer) else {
                    return err(Errno::Efault);
                };
                let Some(slot) = buf.get_mut(n * sz..(n + 1) * sz) else {
                    break;
                };
                slot.copy_from_slice(i.as_bytes());
                n += 1;
                next = i.domain.checked_add(1);
            }
            l.num_domains = n as u32;
            s.set_payload(&l);
            0
        }
        _ => err(Errno::Enosys),
    }
}

/// The most frames one MAP_RANGE may ask for (64 MiB).
pub const MAP_RANGE_MAX: u32 = 16384;

/// MAP_RANGE: RESULT with `ret` 0 and one buffer of runs `(value i64, frames u64)` covering the range in
/// order: `value` is the machine frame of the run's first frame (the others follow it contiguously) or a
/// negative errno for every frame of the run.
fn map_range<B: Backend>(
    b: &mut B,
    seq: u32,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let (domid, first, count) = ctlframe::read_map_range(payload)?;
    if count > MAP_RANGE_MAX || first.checked_add(u64::from(count)).is_none() {
        return ctlframe::encode(out, Kind::Result, seq, |w| {
            w.u64(err(Errno::Einval) as u64)?;
            w.u32(0)
        });
    }
    // Runs are counted first so the buffer length can precede them.
    let mut runs = 0u32;
    let mut prev: Option<i64> = None;
    let value = |b: &mut B, gfn: u64| match b.translate(domid, gfn) {
        Ok(m) => m as i64,
        Err(e) => err(e),
    };
    for i in 0..u64::from(count) {
        let v = value(b, first + i);
        let continues = matches!(prev, Some(p) if (p >= 0 && v == p + 1) || (p < 0 && v == p));
        if !continues {
            runs += 1;
        }
        prev = Some(v);
    }
    ctlframe::encode(out, Kind::Result, seq, |w| {
        w.u64(0)?;
        w.u32(runs.checked_mul(16).ok_or(FrameError::NoRoom)?)?;
        let mut start: Option<(i64, u64)> = None;
        let mut last = 0i64;
        for i in 0..u64::from(count) {
            let v = value(b, first + i);
            match start {
                Some((s, n)) if (last >= 0 && v == last + 1) || (last < 0 && v == last) => {
                    start = Some((s, n + 1));
                }
                Some((s, n)) => {
                    w.u64(s as u64)?;
                    w.u64(n)?;
                    start = Some((v, 1));
                }
                None => start = Some((v, 1)),
            }
            last = v;
        }
        if let Some((s, n)) = start {
            w.u64(s as u64)?;
            w.u64(n)?;
        }
        Ok(())
    })
}

fn map<B: Backend>(
    b: &mut B,
    seq: u32,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let (domid, count, mut r) = ctlframe::read_map(payload)?;
    ctlframe::encode(out, Kind::Result, seq, |w| {
        w.u64(0)?;
        w.u32(count.checked_mul(8).ok_or(FrameError::NoRoom)?)?;
        for _ in 0..count {
            let gfn = r.u64()?;
            let v = match b.translate(domid, gfn) {
                Ok(m) => m as i64,
                Err(e) => err(e),
            };
            w.u64(v as u64)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctlframe::{Decoded, Reader};

    /// A backend that records what reached it.
    #[derive(Default)]
    struct Rec {
        created: Option<domctl::CreateDomain>,
        populated: [u64; 4],
        n: usize,
        ctx: Option<VcpuHvmContext>,
        map_len: usize,
        sent: Option<u32>,
    }

    impl Backend for Rec {
        fn hello(&self) -> Hello {
            Hello {
                version: 1,
                ram_bytes: 1 << 26,
                nr_cpus: 2,
                xen_version: 0x4_0013,
            }
        }
        fn create_domain(&mut self, _: u16, req: &domctl::CreateDomain) -> Result<u16, Errno> {
            self.created = Some(*req);
            Ok(5)
        }
        fn destroy_domain(&mut self, d: u16) -> Result<(), Errno> {
            if d == 5 {
                Ok(())
            } else {
                Err(Errno::Esrch)
            }
        }
        fn set_paused(&mut self, _: u16, _: bool) -> Result<(), Errno> {
            Ok(())
        }
        fn domain_info(&mut self, d: u16) -> Option<GetDomainInfo> {
            (d <= 5).then_some(GetDomainInfo {
                domain: if d == 0 { 0 } else { 5 },
                ..GetDomainInfo::default()
            })
        }
        fn set_max_mem(&mut self, _: u16, _: u64) -> Result<(), Errno> {
            Ok(())
        }
        fn populate(&mut self, _: u16, gfn: u64) -> Result<(), Errno> {
            if self.n == self.populated.len() {
                return Err(Errno::Enomem);
            }
            self.populated[self.n] = gfn;
            self.n += 1;
            Ok(())
        }
        fn set_vcpu_context(&mut self, _: u16, _: u32, c: &VcpuHvmContext) -> Result<(), Errno> {
            self.ctx = Some(*c);
            Ok(())
        }
        fn set_param(&mut self, _: u16, _: u32, _: u64) -> Result<(), Errno> {
            Ok(())
        }
        fn get_param(&mut self, _: u16, i: u32) -> Result<u64, Errno> {
            Ok(u64::from(i) * 10)
        }
        fn remote_shutdown(&mut self, _: u16, _: u32) -> Result<(), Errno> {
            Ok(())
        }
        fn physinfo(&mut self) -> Physinfo {
            Physinfo {
                nr_cpus: 2,
                ..Physinfo::default()
            }
        }
        fn translate(&mut self, _: u16, gfn: u64) -> Result<u64, Errno> {
            if gfn < 10 {
                Ok(gfn + 100)
            } else {
                Err(Errno::Einval)
            }
        }
        fn bind_virq(&mut self, _: u32) -> Result<u32, Errno> {
            Ok(7)
        }
        fn set_memory_map(&mut self, _: u16, map: &[E820Entry]) -> Result<(), Errno> {
            self.map_len = map.len();
            Ok(())
        }
        fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, Errno> {
            if dom == 5 && remote == 0 {
                Ok(2)
            } else {
                Err(Errno::Esrch)
            }
        }
        fn bind_interdomain(&mut self, dom: u16, port: u32) -> Result<u32, Errno> {
            if dom == 5 && port == 2 {
                Ok(3)
            } else {
                Err(Errno::Einval)
            }
        }
        fn send(&mut self, local: u32) -> Result<(), Errno> {
            self.sent = Some(local);
            if local == 3 {
                Ok(())
            } else {
                Err(Errno::Einval)
            }
        }
        fn close(&mut self, local: u32) -> Result<(), Errno> {
            if local == 3 {
                Ok(())
            } else {
                Err(Errno::Einval)
            }
        }
        fn poll_notified(&mut self, out: &mut [u32]) -> usize {
            let fired = [3u32, 9];
            let n = fired.len().min(out.len());
            out[..n].copy_from_slice(&fired[..n]);
            n
        }
    }

    #[test]
    fn interdomain_channels_bind_send_and_close() {
        let mut b = Rec::default();
        let mut req = [0u8; 12];
        req[..2].copy_from_slice(&5u16.to_le_bytes());
        req[4..8].copy_from_slice(&2u32.to_le_bytes());
        let (ret, flat, n) = call(&mut b, 32, [EVTCHNOP_BIND_INTERDOMAIN, 0, 0, 0, 0], &[&req]);
        assert_eq!((ret, n), (0, 12));
        assert_eq!(flat[8..12], 3u32.to_le_bytes());
        req[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            call(&mut b, 32, [EVTCHNOP_BIND_INTERDOMAIN, 0, 0, 0, 0], &[&req]).0,
            -22
        );
        assert_eq!(
            call(
                &mut b,
                32,
                [EVTCHNOP_SEND, 0, 0, 0, 0],
                &[&3u32.to_le_bytes()]
            )
            .0,
            0
        );
        assert_eq!(b.sent, Some(3));
        assert_eq!(
            call(
                &mut b,
                32,
                [EVTCHNOP_SEND, 0, 0, 0, 0],
                &[&4u32.to_le_bytes()]
            )
            .0,
            -22
        );
        assert_eq!(
            call(
                &mut b,
                32,
                [EVTCHNOP_CLOSE, 0, 0, 0, 0],
                &[&3u32.to_le_bytes()]
            )
            .0,
            0
        );
        // A short buffer faults.
        assert_eq!(
            call(&mut b, 32, [EVTCHNOP_SEND, 0, 0, 0, 0], &[&[1u8, 2]]).0,
            -14
        );
    }

    /// Sends a HYPERCALL through `handle`; returns ret and the reply buffers' bytes concatenated.
    fn call(b: &mut Rec, op: u32, args: [u64; 5], bufs: &[&[u8]]) -> (i64, [u8; 512], usize) {
        let mut req = [0u8; 1024];
        let n = ctlframe::encode(&mut req, Kind::Hypercall, 9, |w| {
            ctlframe::write_hypercall(w, op, &args, bufs)
        })
        .expect("encode");
        let Decoded::Frame { header, consumed } = ctlframe::decode(&req[..n]) else {
            panic!("frame");
        };
        let mut out = [0u8; 2048];
        let len = handle(b, &header, &req[HEADER_LEN..consumed], &mut out).expect("reply");
        let Decoded::Frame { header: h, .. } = ctlframe::decode(&out[..len]) else {
            panic!("reply frame");
        };
        assert_eq!((h.kind, h.seq), (Kind::Result, 9));
        let (ret, mut r) = ctlframe::read_result(&out[HEADER_LEN..len]).expect("result");
        let mut flat = [0u8; 512];
        let mut at = 0;
        for _ in 0..bufs.len() {
            let x = ctlframe::read_buf(&mut r).expect("buf");
            flat[at..at + x.len()].copy_from_slice(x);
            at += x.len();
        }
        (ret, flat, at)
    }

    #[test]
    fn domctl_create_writes_back_the_new_domain_id() {
        let mut b = Rec::default();
        let c = domctl::CreateDomain {
            max_vcpus: 2,
            ..domctl::CreateDomain::default()
        };
        let d = XenDomctl::new(domctl::cmd::CREATEDOMAIN, 0, &c);
        let (ret, flat, n) = call(&mut b, 36, [0; 5], &[d.as_bytes()]);
        assert_eq!(ret, 0);
        assert_eq!(n, 144);
        assert_eq!(XenDomctl::read_from(&flat).expect("domctl").domain, 5);
        assert_eq!(b.created.expect("created").max_vcpus, 2);
        // A wrong interface version is refused, as Xen does.
        let mut d2 = d;
        d2.interface_version = 0x17;
        assert_eq!(call(&mut b, 36, [0; 5], &[d2.as_bytes()]).0, -13);
        // Destroying an unknown domain.
        let d3 = XenDomctl::new(domctl::cmd::DESTROYDOMAIN, 9, &domctl::MaxMem::default());
        assert_eq!(call(&mut b, 36, [0; 5], &[d3.as_bytes()]).0, -3);
    }

    #[test]
    fn handles_resolve_to_buffer_indices_and_bad_ones_fault() {
        let mut b = Rec::default();
        let ctx = VcpuHvmContext {
            mode: 0,
            ..VcpuHvmContext::default()
        };
        let mut d = XenDomctl::new(
            domctl::cmd::SETVCPUCONTEXT,
            5,
            &domctl::VcpuContext {
                vcpu: 0,
                pad: 0,
                ctxt: 1,
            },
        );
        assert_eq!(
            call(&mut b, 36, [0; 5], &[d.as_bytes(), ctx.as_bytes()]).0,
            0
        );
        assert!(b.ctx.is_some());
        // Handle to a buffer that does not exist, and a too-short context.
        d.set_payload(&domctl::VcpuContext {
            vcpu: 0,
            pad: 0,
            ctxt: 7,
        });
        assert_eq!(call(&mut b, 36, [0; 5], &[d.as_bytes()]).0, -14);
        d.set_payload(&domctl::VcpuContext {
            vcpu: 0,
            pad: 0,
            ctxt: 1,
        });
        assert_eq!(call(&mut b, 36, [0; 5], &[d.as_bytes(), &[0; 10]]).0, -14);
        // A domctl argument pointing nowhere, a short domctl, an unknown hypercall.
        assert_eq!(call(&mut b, 36, [3, 0, 0, 0, 0], &[]).0, -14);
        assert_eq!(call(&mut b, 36, [0; 5], &[&[0; 20]]).0, -14);
        assert_eq!(call(&mut b, 99, [0; 5], &[]).0, -38);
        // alloc_unbound writes the port back; a short argument faults.
        let (ret, flat, _) = call(&mut b, 32, [6, 0, 0, 0, 0], &[&[5, 0, 0, 0, 0, 0, 0, 0]]);
        assert_eq!((ret, &flat[4..8]), (0, &2u32.to_le_bytes()[..]));
        assert_eq!(
            call(&mut b, 32, [6, 0, 0, 0, 0], &[&[9, 0, 0, 0, 0, 0, 0, 0]]).0,
            -3
        );
        assert_eq!(call(&mut b, 32, [6, 0, 0, 0, 0], &[&[5, 0, 0]]).0, -14);
        // set_memory_map: entries through a handle, bounded.
        let mut m = memres::ForeignMemoryMap {
            domid: 5,
            nr_entries: 2,
            buffer: 1,
            ..memres::ForeignMemoryMap::default()
        };
        assert_eq!(
            call(&mut b, 12, [13, 0, 0, 0, 0], &[m.as_bytes(), &[0; 40]]).0,
            0
        );
        assert_eq!(b.map_len, 2);
        assert_eq!(
            call(&mut b, 12, [13, 0, 0, 0, 0], &[m.as_bytes(), &[0; 39]]).0,
            -14
        );
        m.nr_entries = 17;
        assert_eq!(
            call(&mut b, 12, [13, 0, 0, 0, 0], &[m.as_bytes(), &[0; 340]]).0,
            -7
        );
    }

    #[test]
    fn populate_reports_partial_success_and_sysctl_lists_domains() {
        let mut b = Rec::default();
        let r = MemoryReservation {
            extent_start: 1,
            nr_extents: 6,
            domid: 5,
            ..MemoryReservation::default()
        };
        let gfns: [u8; 48] = core::array::from_fn(|i| if i % 8 == 0 { (i / 8) as u8 } else { 0 });
        let (ret, ..) = call(&mut b, 12, [6, 0, 0, 0, 0], &[r.as_bytes(), &gfns]);
        assert_eq!(ret, 4, "the backend ran out after 4 frames");
        assert_eq!(b.populated, [0, 1, 2, 3]);
        let l = GetDomainInfoList {
            first_domain: 0,
            max_domains: 8,
            buffer: 1,
            ..GetDomainInfoList::default()
        };
        let s = XenSysctl::new(sysctl::cmd::GETDOMAININFOLIST, &l);
        let out = [0u8; 3 * 112];
        let (ret, flat, n) = call(&mut b, 35, [0; 5], &[s.as_bytes(), &out]);
        assert_eq!((ret, n), (0, 136 + 336));
        let back: GetDomainInfoList = XenSysctl::read_from(&flat).expect("sysctl").payload();
        assert_eq!(back.num_domains, 2, "domains 0 and 5");
        assert_eq!(
            GetDomainInfo::read_from(&flat[136 + 112..])
                .expect("info")
                .domain,
            5
        );
    }

    #[test]
    fn populate_with_superpage_extents() {
        let mut b = Rec::default();
        let r = MemoryReservation {
            extent_start: 1,
            nr_extents: 1,
            extent_order: 2,
            domid: 5,
            ..MemoryReservation::default()
        };
        // One extent of 4 frames at gfn 8.
        let (ret, ..) = call(
            &mut b,
            12,
            [6, 0, 0, 0, 0],
            &[r.as_bytes(), &8u64.to_le_bytes()],
        );
        assert_eq!(ret, 1);
        assert_eq!(b.populated, [8, 9, 10, 11]);
        // A misaligned extent and an absurd order are refused.
        let mut b = Rec::default();
        let (ret, ..) = call(
            &mut b,
            12,
            [6, 0, 0, 0, 0],
            &[r.as_bytes(), &6u64.to_le_bytes()],
        );
        assert_eq!(ret, -22);
        assert_eq!(b.n, 0);
        let r = MemoryReservation {
            extent_order: 40,
            ..r
        };
        let (ret, ..) = call(
            &mut b,
            12,
            [6, 0, 0, 0, 0],
            &[r.as_bytes(), &0u64.to_le_bytes()],
        );
        assert_eq!(ret, -22);
    }

    fn map_range_runs(b: &mut Rec, first: u64, count: u32) -> (i64, Vec<(i64, u64)>) {
        let mut req = [0u8; 64];
        let n = ctlframe::encode(&mut req, Kind::MapRange, 6, |w| {
            ctlframe::write_map_range(w, 5, first, count)
        })
        .expect("map range");
        let Decoded::Frame { header, consumed } = ctlframe::decode(&req[..n]) else {
            panic!("frame");
        };
        let mut out = [0u8; 1024];
        let len = handle(b, &header, &req[HEADER_LEN..consumed], &mut out).expect("reply");
        let (ret, mut r) = ctlframe::read_result(&out[HEADER_LEN..len]).expect("result");
        if ret < 0 {
            return (ret, Vec::new());
        }
        let buf = ctlframe::read_buf(&mut r).expect("runs");
        let runs = buf
            .chunks_exact(16)
            .map(|c| {
                let v = i64::from_le_bytes(c[..8].try_into().expect("8"));
                let n = u64::from_le_bytes(c[8..].try_into().expect("8"));
                (v, n)
            })
            .collect();
        (ret, runs)
    }

    #[test]
    fn map_range_replies_with_runs() {
        let mut b = Rec::default();
        // The model translates gfns below 10 to gfn + 100 and fails the rest.
        assert_eq!(map_range_runs(&mut b, 2, 5), (0, vec![(102, 5)]));
        assert_eq!(
            map_range_runs(&mut b, 8, 4),
            (0, vec![(108, 2), (-22, 2)]),
            "contiguous frames, then one run of the same error"
        );
        assert_eq!(map_range_runs(&mut b, 0, MAP_RANGE_MAX + 1).0, -22);
        assert_eq!(map_range_runs(&mut b, u64::MAX, 2).0, -22);
    }

    #[test]
    fn map_and_hello_and_malformed_requests() {
        let mut b = Rec::default();
        let mut req = [0u8; 128];
        let n = ctlframe::encode(&mut req, Kind::Map, 4, |w| {
            ctlframe::write_map(w, 5, &[1, 50])
        })
        .expect("map");
        let Decoded::Frame { header, consumed } = ctlframe::decode(&req[..n]) else {
            panic!("frame");
        };
        let mut out = [0u8; 256];
        let len = handle(&mut b, &header, &req[HEADER_LEN..consumed], &mut out).expect("reply");
        let (ret, mut r) = ctlframe::read_result(&out[HEADER_LEN..len]).expect("result");
        assert_eq!(ret, 0);
        let list = ctlframe::read_buf(&mut r).expect("list");
        let mut lr = Reader::new(list);
        assert_eq!(lr.u64(), Ok(101));
        assert_eq!(lr.u64().map(|v| v as i64), Ok(-22));
        // A MAP whose count exceeds its frames gets -EINVAL with the request's seq.
        let mut bad = req;
        bad[HEADER_LEN + 2..HEADER_LEN + 6].copy_from_slice(&1000u32.to_le_bytes());
        let len = handle(&mut b, &header, &bad[HEADER_LEN..consumed], &mut out).expect("reply");
        let h = Header::parse(&out).expect("header");
        assert_eq!((h.kind, h.seq), (Kind::Result, 4));
        assert_eq!(
            ctlframe::read_result(&out[HEADER_LEN..len]).expect("r").0,
            -22
        );
        // HELLO is answered; RESULT/EVENT from the host are ignored.
        let hh = Header {
            kind: Kind::Hello,
            flags: 0,
            seq: 1,
            len: 0,
        };
        let len = handle(&mut b, &hh, &[], &mut out).expect("hello");
        assert_eq!(
            Hello::read(&out[HEADER_LEN..len]).expect("hello").nr_cpus,
            2
        );
        let ev = Header {
            kind: Kind::Event,
            ..hh
        };
        assert_eq!(handle(&mut b, &ev, &[], &mut out), None);
        // A reply that cannot fit the output buffer is dropped, not a panic.
        let mut tiny = [0u8; 8];
        assert_eq!(handle(&mut b, &hh, &[], &mut tiny), None);
    }
}
