//! [`FakeXen`]: an in-memory model of the hypervisor's control interface, for unit tests of the domain
//! builder, lifecycle and console layers. It decodes the same hypercall buffers the real transports carry
//! (so encoding mistakes fail tests), keeps domains with their frames, vCPU context, HVM params, pause and
//! shutdown state, and raises `VIRQ_DOM_EXC` like Xen when a domain shuts down or dies.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use xen_abi::domctl::{self, dominf, GetDomainInfo, XenDomctl};
use xen_abi::errno::Errno;
use xen_abi::hvmsave::{self, HvmHwCpu};
use xen_abi::memres::{self, MemoryReservation};
use xen_abi::plain::Plain;
use xen_abi::sysctl::{self, GetDomainInfoList, Physinfo, XenSysctl};
use xen_abi::xen::{VcpuHvmContext, XenHvmParam};

use super::{Arg, Call, Error, ForeignMapping, Transport};

const PAGE: usize = 4096;

/// One modelled domain.
#[derive(Debug, Clone, Default)]
pub struct FakeDomain {
    /// The creation request.
    pub create: domctl::CreateDomain,
    /// Memory limit in KiB.
    pub max_memkb: u64,
    /// Populated frames.
    pub frames: BTreeMap<u64, Vec<u8>>,
    /// vCPU contexts set by the toolstack.
    pub vcpus: BTreeMap<u32, VcpuHvmContext>,
    /// HVM params.
    pub params: BTreeMap<u32, u64>,
    /// Paused by the control domain.
    pub paused: bool,
    /// Shutdown reason once shut down.
    pub shutdown: Option<u32>,
    /// Nanoseconds of CPU time to report.
    pub cpu_time: u64,
    /// Remote shutdown requests received.
    pub shutdown_requests: Vec<u32>,
    /// Unbound ports allocated in the domain, with the remote domain each is for.
    pub unbound: Vec<(u32, u16)>,
    /// The e820 map set by the toolstack.
    pub e820: Vec<xen_abi::xen::E820Entry>,
    /// The domain's HVM context records (`xen_abi::hvmsave`): what the toolstack loaded with
    /// `sethvmcontext`, or what a test puts here as the state of a running guest. Without it,
    /// `gethvmcontext` describes the vCPUs set with `setvcpucontext`.
    pub hvm_context: Option<Vec<u8>>,
    /// How often `XEN_DOMCTL_resumedomain` ran a suspended domain again.
    pub resumed: u32,
}

impl FakeDomain {
    /// The vCPUs that are up: those given an entry state, and those with a CPU record in the HVM context.
    pub fn online_vcpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.vcpus.keys().copied().collect();
        if let Some(records) = self
            .hvm_context
            .as_deref()
            .and_then(|c| hvmsave::parse(c).ok())
        {
            v.extend(
                records
                    .filter(|r| r.typecode == hvmsave::CPU)
                    .map(|r| u32::from(r.instance)),
            );
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The HVM context `gethvmcontext` returns: the loaded or test-given records, else a header and one CPU
    /// record per vCPU with an entry state (rip = its entry point, rbx = its start info).
    pub fn context(&self) -> Vec<u8> {
        if let Some(c) = &self.hvm_context {
            return c.clone();
        }
        let cpus: Vec<(u32, HvmHwCpu)> = self
            .vcpus
            .iter()
            .map(|(id, c)| {
                let mut cpu = HvmHwCpu {
                    rip: u64::from(c.x86_32.eip),
                    ..HvmHwCpu::default()
                };
                cpu.gprs[1] = u64::from(c.x86_32.ebx);
                (*id, cpu)
            })
            .collect();
        context_of(&cpus)
    }
}

/// An HVM context with the header and a CPU record for each of `cpus`.
pub fn context_of(cpus: &[(u32, HvmHwCpu)]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + cpus.len() * (hvmsave::DESC_LEN + size_of::<HvmHwCpu>())];
    let header = hvmsave::HvmSaveHeader {
        magic: hvmsave::FILE_MAGIC,
        version: hvmsave::FILE_VERSION,
        ..hvmsave::HvmSaveHeader::default()
    };
    let mut w = hvmsave::Writer::new(&mut buf, &header);
    for (id, cpu) in cpus {
        w.push(hvmsave::CPU, *id as u16, cpu.as_bytes());
    }
    let n = w.finish().unwrap_or(0);
    buf.truncate(n);
    buf
}

/// The model's state.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Domains by ID.
    pub domains: BTreeMap<u16, FakeDomain>,
    /// Next domain ID to hand out.
    pub next_domid: u16,
    /// Pending control-domain events.
    pub events: VecDeque<u32>,
    /// The port VIRQ_DOM_EXC is bound to.
    pub dom_exc_port: Option<u32>,
    /// Host pages.
    pub total_pages: u64,
    /// Every hypercall seen, as (op, first argument).
    pub log: Vec<(u64, u64)>,
    /// Control-domain ports bound to domains' channels: local port -> (domain, its port).
    pub bound: BTreeMap<u32, (u16, u32)>,
    /// Events the control domain sent, as (domain, its port).
    pub sent: Vec<(u16, u32)>,
    /// Control-domain ports whose other end notified (what `poll_notified` returns next).
    pub notified: Vec<u32>,
}

impl FakeState {
    fn free_pages(&self) -> u64 {
        let used: u64 = self.domains.values().map(|d| d.frames.len() as u64).sum();
        self.total_pages.saturating_sub(used)
    }

    fn raise_dom_exc(&mut self) {
        if let Some(p) = self.dom_exc_port {
            self.events.push_back(p);
        }
    }
}

/// The test double; clones share one state.
#[derive(Debug, Clone)]
pub struct FakeXen {
    /// Shared state, open for tests to inspect and drive.
    pub state: Rc<RefCell<FakeState>>,
}

impl Default for FakeXen {
    fn default() -> Self {
        Self::new(256 << 20)
    }
}

fn neg(e: Errno) -> i64 {
    -(e as i64)
}

impl FakeXen {
    /// A host with `ram_bytes` of memory and only the control domain.
    pub fn new(ram_bytes: u64) -> Self {
        let mut st = FakeState {
            next_domid: 1,
            total_pages: ram_bytes / PAGE as u64,
            ..FakeState::default()
        };
        st.domains.insert(
            0,
            FakeDomain {
                max_memkb: 1 << 20,
                ..FakeDomain::default()
            },
        );
        Self {
            state: Rc::new(RefCell::new(st)),
        }
    }

    /// The guest `domid` shuts itself down with `reason` (as `SCHEDOP_shutdown` would).
    pub fn guest_shutdown(&self, domid: u16, reason: u32) {
        let mut st = self.state.borrow_mut();
        if let Some(d) = st.domains.get_mut(&domid) {
            d.shutdown = Some(reason);
            st.raise_dom_exc();
        }
    }

    /// Reads guest memory of `domid` (unpopulated frames read as `None`).
    pub fn read_guest(&self, domid: u16, gpa: u64, len: usize) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let d = st.domains.get(&domid)?;
        let mut out = Vec::with_capacity(len);
        let mut a = gpa;
        while out.len() < len {
            let f = d.frames.get(&(a / PAGE as u64))?;
            let o = (a % PAGE as u64) as usize;
            let n = (PAGE - o).min(len - out.len());
            out.extend_from_slice(&f[o..o + n]);
            a += n as u64;
        }
        Some(out)
    }

    /// Writes guest memory of `domid` (as the guest itself would).
    pub fn write_guest(&self, domid: u16, gpa: u64, data: &[u8]) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(d) = st.domains.get_mut(&domid) else {
            return false;
        };
        let mut a = gpa;
        let mut rest = data;
        while !rest.is_empty() {
            let Some(f) = d.frames.get_mut(&(a / PAGE as u64)) else {
                return false;
            };
            let o = (a % PAGE as u64) as usize;
            let n = (PAGE - o).min(rest.len());
            f[o..o + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            a += n as u64;
        }
        true
    }

    fn do_domctl(&self, d: &mut XenDomctl, buf1: Option<&mut [u8]>) -> i64 {
        let mut st = self.state.borrow_mut();
        let id = d.domain;
        if d.cmd != domctl::cmd::CREATEDOMAIN && !st.domains.contains_key(&id) {
            return neg(Errno::Esrch);
        }
        match d.cmd {
            domctl::cmd::CREATEDOMAIN => {
                let c: domctl::CreateDomain = d.payload();
                if c.max_vcpus == 0 || c.max_vcpus > 128 {
                    return neg(Errno::Einval);
                }
                let id = if id == 0 {
                    let mut n = st.next_domid;
                    while st.domains.contains_key(&n) {
                        n += 1;
                    }
                    st.next_domid = n + 1;
                    n
                } else if st.domains.contains_key(&id) {
                    return neg(Errno::Eexist);
                } else {
                    id
                };
                st.domains.insert(
                    id,
                    FakeDomain {
                        create: c,
                        paused: true,
                        ..FakeDomain::default()
                    },
                );
                d.domain = id;
                0
            }
            domctl::cmd::DESTROYDOMAIN => {
                if id == 0 {
                    return neg(Errno::Einval);
                }
                st.domains.remove(&id);
                st.raise_dom_exc();
                0
            }
            domctl::cmd::PAUSEDOMAIN | domctl::cmd::UNPAUSEDOMAIN => {
                let p = d.cmd == domctl::cmd::PAUSEDOMAIN;
                if let Some(dom) = st.domains.get_mut(&id) {
                    if !p && dom.online_vcpus().is_empty() && id != 0 {
                        // Xen refuses to run a domain whose vCPU 0 was never initialised.
                        return neg(Errno::Einval);
                    }
                    dom.paused = p;
                }
                0
            }
            domctl::cmd::GETDOMAININFO => {
                let Some(info) = st.domains.range(id..).next().map(|(i, dm)| info(*i, dm)) else {
                    return neg(Errno::Esrch);
                };
                d.domain = info.domain;
                d.set_payload(&info);
                0
            }
            domctl::cmd::MAX_MEM => {
                let m: domctl::MaxMem = d.payload();
                if let Some(dom) = st.domains.get_mut(&id) {
                    dom.max_memkb = m.max_memkb;
                }
                0
            }
            domctl::cmd::MAX_VCPUS => 0,
            domctl::cmd::SETVCPUCONTEXT => {
                let v: domctl::VcpuContext = d.payload();
                let Some(b) = buf1 else {
                    return neg(Errno::Efault);
                };
                let Some(ctx) = VcpuHvmContext::read_from(b) else {
                    return neg(Errno::Efault);
                };
                let Some(dom) = st.domains.get_mut(&id) else {
                    return neg(Errno::Esrch);
                };
                if v.vcpu >= dom.create.max_vcpus {
                    return neg(Errno::Einval);
                }
                dom.vcpus.insert(v.vcpu, ctx);
                0
            }
            domctl::cmd::GETHVMCONTEXT => {
                let mut h: domctl::HvmContext = d.payload();
                let (Some(b), Some(dom)) = (buf1, st.domains.get(&id)) else {
                    return neg(Errno::Efault);
                };
                // As the hypervisor offers it: only while the vCPUs cannot move (paused or suspended).
                if !dom.paused && dom.shutdown.is_none() {
                    return neg(Errno::Ebusy);
                }
                let c = dom.context();
                h.size = c.len() as u32;
                d.set_payload(&h);
                match b.get_mut(..c.len()) {
                    Some(out) => {
                        out.copy_from_slice(&c);
                        0
                    }
                    None => neg(Errno::Enobufs),
                }
            }
            domctl::cmd::SETHVMCONTEXT => {
                let h: domctl::HvmContext = d.payload();
                let Some(b) = buf1 else {
                    return neg(Errno::Efault);
                };
                let Some(c) = b.get(..h.size as usize) else {
                    return neg(Errno::Efault);
                };
                let Some(dom) = st.domains.get_mut(&id) else {
                    return neg(Errno::Esrch);
                };
                let Ok(records) = hvmsave::parse(c) else {
                    return neg(Errno::Einval);
                };
                let max = dom.create.max_vcpus;
                if records
                    .filter(|r| r.typecode == hvmsave::CPU)
                    .any(|r| u32::from(r.instance) >= max)
                {
                    return neg(Errno::Einval);
                }
                if !dom.paused && dom.shutdown.is_none() {
                    return neg(Errno::Ebusy);
                }
                dom.hvm_context = Some(c.to_vec());
                0
            }
            domctl::cmd::RESUMEDOMAIN => {
                let Some(dom) = st.domains.get_mut(&id) else {
                    return neg(Errno::Esrch);
                };
                if dom.shutdown != Some(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND) {
                    return neg(Errno::Einval);
                }
                dom.shutdown = None;
                dom.resumed += 1;
                0
            }
            _ => neg(Errno::Enosys),
        }
    }

    fn do_sysctl(&self, s: &mut XenSysctl, buf1: Option<&mut [u8]>) -> i64 {
        let st = self.state.borrow();
        match s.cmd {
            sysctl::cmd::PHYSINFO => {
                s.set_payload(&Physinfo {
                    threads_per_core: 1,
                    cores_per_socket: 2,
                    nr_cpus: 2,
                    max_cpu_id: 1,
                    nr_nodes: 1,
                    cpu_khz: 2_000_000,
                    capabilities: sysctl::physcap::HVM | sysctl::physcap::HAP,
                    total_pages: st.total_pages,
                    free_pages: st.free_pages(),
                    max_mfn: st.total_pages,
                    ..Physinfo::default()
                });
                0
            }
            sysctl::cmd::GETDOMAININFOLIST => {
                let mut l: GetDomainInfoList = s.payload();
                let Some(out) = buf1 else {
                    return neg(Errno::Efault);
                };
                let sz = size_of::<GetDomainInfo>();
                let mut n = 0usize;
                for (id, dm) in st.domains.range(l.first_domain..) {
                    if n >= l.max_domains as usize || (n + 1) * sz > out.len() {
                        break;
                    }
                    out[n * sz..(n + 1) * sz].copy_from_slice(info(*id, dm).as_bytes());
                    n += 1;
                }
                l.num_domains = n as u32;
                s.set_payload(&l);
                0
            }
            _ => neg(Errno::Enosys),
        }
    }
}

fn info(id: u16, d: &FakeDomain) -> GetDomainInfo {
    let mut flags = dominf::HVM_GUEST | dominf::HAP;
    if d.paused {
        flags |= dominf::PAUSED;
    } else if d.shutdown.is_none() {
        flags |= dominf::RUNNING;
    }
    if let Some(r) = d.shutdown {
        flags |= dominf::SHUTDOWN | (r << dominf::SHUTDOWN_SHIFT);
    }
    GetDomainInfo {
        domain: id,
        flags,
        tot_pages: d.frames.len() as u64,
        max_pages: d.max_memkb / 4,
        cpu_time: d.cpu_time,
        nr_online_vcpus: if id == 0 {
            2
        } else {
            d.online_vcpus().len() as u32
        },
        max_vcpu_id: if id == 0 {
            1
        } else {
            d.create.max_vcpus.saturating_sub(1)
        },
        handle: d.create.handle,
        ..GetDomainInfo::default()
    }
}

impl Transport for FakeXen {
    fn hypercall(&mut self, call: &mut Call<'_>) -> Result<i64, Error> {
        call.validate()?;
        let first = match call.args[0] {
            Arg::Value(v) => v,
            Arg::Buf(_) => 0,
        };
        self.state.borrow_mut().log.push((call.op, first));
        // Handles must point at the buffer the transport would pass; the fake checks the index form.
        call.patch_handles(|t| t as u64);
        let bufs = &mut call.bufs;
        let ret = match call.op {
            xen_abi::hypercall::DOMCTL => {
                let mut d =
                    XenDomctl::read_from(bufs[0]).ok_or(Error::Protocol("short domctl".into()))?;
                if d.interface_version != domctl::INTERFACE_VERSION {
                    return Ok(neg(Errno::Eacces));
                }
                let (a, b) = bufs.split_at_mut(1);
                let r = self.do_domctl(&mut d, b.first_mut().map(|x| &mut **x));
                a[0].copy_from_slice(d.as_bytes());
                r
            }
            xen_abi::hypercall::SYSCTL => {
                let mut s =
                    XenSysctl::read_from(bufs[0]).ok_or(Error::Protocol("short sysctl".into()))?;
                if s.interface_version != sysctl::INTERFACE_VERSION {
                    return Ok(neg(Errno::Eacces));
                }
                let (a, b) = bufs.split_at_mut(1);
                let r = self.do_sysctl(&mut s, b.first_mut().map(|x| &mut **x));
                a[0].copy_from_slice(s.as_bytes());
                r
            }
            xen_abi::hypercall::MEMORY_OP if first == memres::XENMEM_POPULATE_PHYSMAP => {
                let r = MemoryReservation::read_from(bufs[0])
                    .ok_or(Error::Protocol("short reservation".into()))?;
                let list = bufs
                    .get(1)
                    .ok_or(Error::Protocol("no extent list".into()))?;
                let mut st = self.state.borrow_mut();
                let free = st.free_pages();
                let Some(d) = st.domains.get_mut(&r.domid) else {
                    return Ok(neg(Errno::Esrch));
                };
                if r.extent_order > 18 {
                    return Ok(neg(Errno::Einval));
                }
                let per = 1u64 << r.extent_order;
                let mut done = 0i64;
                let mut used = 0u64;
                for c in list.chunks_exact(8).take(r.nr_extents as usize) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    let gfn = u64::from_le_bytes(a);
                    if gfn % per != 0 {
                        return Ok(if done == 0 { neg(Errno::Einval) } else { done });
                    }
                    if (d.frames.len() as u64 + per) * 4 > d.max_memkb || used + per > free {
                        break;
                    }
                    for f in gfn..gfn + per {
                        // Fresh frames hold a poison pattern, so tests prove the builder zeroes what it must.
                        d.frames.entry(f).or_insert_with(|| vec![0xddu8; PAGE]);
                    }
                    used += per;
                    done += 1;
                }
                done
            }
            xen_abi::hypercall::MEMORY_OP if first == memres::XENMEM_SET_MEMORY_MAP => {
                let m = memres::ForeignMemoryMap::read_from(bufs[0])
                    .ok_or(Error::Protocol("short memory map".into()))?;
                let list = bufs
                    .get(1)
                    .ok_or(Error::Protocol("no map entries".into()))?;
                let n = m.nr_entries as usize;
                if n > memres::MAX_E820 || list.len() < n * 20 {
                    return Ok(neg(Errno::Einval));
                }
                let mut st = self.state.borrow_mut();
                let Some(d) = st.domains.get_mut(&m.domid) else {
                    return Ok(neg(Errno::Esrch));
                };
                d.e820 = (0..n)
                    .map(|i| {
                        xen_abi::xen::E820Entry::read_from(&list[i * 20..]).unwrap_or_default()
                    })
                    .collect();
                0
            }
            xen_abi::hypercall::HVM_OP => {
                let mut p = XenHvmParam::read_from(bufs[0])
                    .ok_or(Error::Protocol("short hvm param".into()))?;
                let mut st = self.state.borrow_mut();
                let Some(d) = st.domains.get_mut(&p.domid) else {
                    return Ok(neg(Errno::Esrch));
                };
                if first == memres::HVMOP_SET_PARAM {
                    d.params.insert(p.index, p.value);
                } else {
                    p.value = d.params.get(&p.index).copied().unwrap_or(0);
                    bufs[0].copy_from_slice(p.as_bytes());
                }
                0
            }
            xen_abi::hypercall::SCHED_OP if first == domctl::SCHEDOP_REMOTE_SHUTDOWN => {
                let r = domctl::RemoteShutdown::read_from(bufs[0])
                    .ok_or(Error::Protocol("short".into()))?;
                let mut st = self.state.borrow_mut();
                // As Xen's SCHEDOP_remote_shutdown: the domain is shut down with the reason at once (a domain
                // already shut down keeps its first reason), and VIRQ_DOM_EXC fires.
                match st.domains.get_mut(&r.domain_id) {
                    Some(d) => {
                        d.shutdown_requests.push(r.reason);
                        if d.shutdown.is_none() {
                            d.shutdown = Some(r.reason);
                            st.raise_dom_exc();
                        }
                        0
                    }
                    None => neg(Errno::Esrch),
                }
            }
            xen_abi::hypercall::EVENT_CHANNEL_OP
                if first == xen_abi::ctlserver::EVTCHNOP_ALLOC_UNBOUND =>
            {
                let b = &mut bufs[0];
                if b.len() < 8 {
                    return Ok(neg(Errno::Efault));
                }
                let dom = u16::from_le_bytes([b[0], b[1]]);
                let remote = u16::from_le_bytes([b[2], b[3]]);
                let mut st = self.state.borrow_mut();
                if !st.domains.contains_key(&remote) {
                    return Ok(neg(Errno::Esrch));
                }
                let Some(d) = st.domains.get_mut(&dom) else {
                    return Ok(neg(Errno::Esrch));
                };
                let port = d.unbound.len() as u32 + 1;
                d.unbound.push((port, remote));
                b[4..8].copy_from_slice(&port.to_le_bytes());
                0
            }
            _ => neg(Errno::Enosys),
        };
        Ok(ret)
    }

    fn map_foreign(&mut self, domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error> {
        let mut data = Vec::with_capacity(gfns.len() * PAGE);
        {
            let st = self.state.borrow();
            let d = st
                .domains
                .get(&domid)
                .ok_or_else(|| Error::NoSuchDomain(domid.to_string()))?;
            for g in gfns {
                let f = d.frames.get(g).ok_or(Error::Hypercall {
                    op: format!("mapping frame {g:#x} of domain {domid}"),
                    ret: neg(Errno::Einval),
                })?;
                data.extend_from_slice(f);
            }
        }
        let state = self.state.clone();
        let gfns = gfns.to_vec();
        Ok(ForeignMapping::from_copy(
            data,
            Box::new(move |bytes| {
                let mut st = state.borrow_mut();
                if let Some(d) = st.domains.get_mut(&domid) {
                    for (g, c) in gfns.iter().zip(bytes.chunks_exact(PAGE)) {
                        if let Some(f) = d.frames.get_mut(g) {
                            f.copy_from_slice(c);
                        }
                    }
                }
            }),
        ))
    }

    fn bind_virq(&mut self, virq: u32) -> Result<u32, Error> {
        if virq != memres::VIRQ_DOM_EXC {
            return Err(Error::Hypercall {
                op: format!("binding VIRQ {virq}"),
                ret: neg(Errno::Einval),
            });
        }
        self.state.borrow_mut().dom_exc_port = Some(5);
        Ok(5)
    }

    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, Error> {
        let mut st = self.state.borrow_mut();
        let known = st
            .domains
            .get(&domid)
            .is_some_and(|d| d.unbound.contains(&(remote_port, 0)));
        if !known {
            return Err(Error::Hypercall {
                op: format!("binding port {remote_port} of domain {domid}"),
                ret: neg(Errno::Einval),
            });
        }
        let local = st.bound.keys().next_back().map_or(10, |p| p + 1);
        st.bound.insert(local, (domid, remote_port));
        Ok(local)
    }

    fn poll_notified(&mut self) -> Result<Vec<u32>, Error> {
        Ok(std::mem::take(&mut self.state.borrow_mut().notified))
    }

    fn unbind(&mut self, port: u32) -> Result<(), Error> {
        match self.state.borrow_mut().bound.remove(&port) {
            Some(_) => Ok(()),
            None => Err(Error::Hypercall {
                op: format!("closing port {port}"),
                ret: neg(Errno::Einval),
            }),
        }
    }

    fn notify(&mut self, port: u32) -> Result<(), Error> {
        let mut st = self.state.borrow_mut();
        if let Some(&target) = st.bound.get(&port) {
            st.sent.push(target);
        }
        Ok(())
    }

    fn wait_event(&mut self, _timeout: Duration) -> Result<Option<u32>, Error> {
        Ok(self.state.borrow_mut().events.pop_front())
    }
}
