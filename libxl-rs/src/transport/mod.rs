//! How the toolstack reaches the hypervisor: the [`Transport`] trait and its implementations.
//!
//! A transport runs hypercalls as the control domain, maps foreign guest frames and carries event channel
//! notifications. [`privcmd::PrivcmdTransport`] does it the way a Linux dom0 does (`/dev/xen/privcmd`,
//! `/dev/xen/hypercall`, `/dev/xen/evtchn`); [`sandbox::SandboxTransport`] does it for xen-hv running inside
//! QEMU with the control domain on the host (docs/sandbox-transport.md); [`fake::FakeXen`] is an in-memory
//! hypervisor model for unit tests of the layers above. Nothing above this module knows which one is in use.
//!
//! The typed operations (domctl, sysctl, memory_op, hvm_op, sched_op) are provided methods built on one
//! required method, [`Transport::hypercall`], which takes a [`Call`]: the hypercall number, its arguments
//! (values or buffers) and the guest handles inside buffers that point at other buffers. Each transport turns
//! buffer references into what its hypervisor expects (hypercall-buffer addresses for privcmd, buffer indices
//! for the sandbox).

pub mod any;
pub mod fake;
pub mod mux;
pub mod privcmd;
pub mod sandbox;
mod sys;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use xen_abi::domctl::XenDomctl;
use xen_abi::errno::Errno;
use xen_abi::plain::Plain;
use xen_abi::sysctl::XenSysctl;

/// Errors of the toolstack's hypervisor-facing layers (transport, domain builder, lifecycle, console).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device node a transport needs is missing or cannot be opened.
    #[error("cannot open {path}: {source} (is this a Xen control domain with the privcmd and evtchn drivers loaded?)")]
    DeviceMissing {
        /// The device path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An OS call failed.
    #[error("{what} failed: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hypervisor returned an error for a hypercall.
    #[error("the hypervisor refused {op}: {}", errno_name(*.ret))]
    Hypercall {
        /// The operation.
        op: String,
        /// The negative return value.
        ret: i64,
    },
    /// The sandbox control channel broke its protocol.
    #[error("the control channel is out of protocol: {0}")]
    Protocol(String),
    /// No domain with that ID or name.
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// The kernel or ramdisk cannot be used.
    #[error("cannot load {path}: {message}")]
    Image {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The domain configuration cannot be built.
    #[error("invalid domain configuration: {0}")]
    Config(String),
    /// Waiting for something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A domain cannot be saved because its guest cannot be asked to suspend.
    #[error("domain {0} cannot be saved: its guest does not support suspend (it has not announced control/feature-suspend, so it has no PV suspend driver)")]
    NoSuspend(u16),
    /// A save image is malformed, truncated or not one.
    #[error("the save image cannot be restored: {0}")]
    SaveImage(String),
}

fn errno_name(ret: i64) -> String {
    match Errno::from_ret(ret) {
        Some(e) => format!("{e:?} ({ret})"),
        None => format!("error {ret}"),
    }
}

impl Error {
    /// The Xen errno of a refused hypercall.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Hypercall { ret, .. } => Errno::from_ret(*ret),
            _ => None,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// A hypercall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A plain value.
    Value(u64),
    /// A pointer to the call's buffer with this index.
    Buf(usize),
}

/// A guest handle (a 64-bit pointer field) inside buffer `buf` at byte `offset` that must point at buffer
/// `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleRef {
    /// The buffer holding the handle.
    pub buf: usize,
    /// Byte offset of the handle in it.
    pub offset: usize,
    /// The buffer it points at.
    pub target: usize,
}

/// One hypercall with its buffers; the transport copies the buffers back after the call.
#[derive(Debug)]
pub struct Call<'a> {
    /// Hypercall number (`xen_abi::hypercall`).
    pub op: u64,
    /// Arguments.
    pub args: [Arg; 5],
    /// Buffers the hypervisor reads and writes.
    pub bufs: Vec<&'a mut [u8]>,
    /// Handles inside buffers.
    pub handles: Vec<HandleRef>,
}

impl<'a> Call<'a> {
    /// A call with `args`, no buffers yet.
    pub fn new(op: u64, args: [Arg; 5]) -> Self {
        Self {
            op,
            args,
            bufs: Vec::new(),
            handles: Vec::new(),
        }
    }

    /// Checks that every buffer reference is in range and every handle fits its buffer.
    pub fn validate(&self) -> Result<(), Error> {
        for a in &self.args {
            if let Arg::Buf(i) = a {
                if *i >= self.bufs.len() {
                    return Err(Error::Protocol(format!(
                        "argument refers to missing buffer {i}"
                    )));
                }
            }
        }
        for h in &self.handles {
            let fits = self
                .bufs
                .get(h.buf)
                .is_some_and(|b| h.offset.checked_add(8).is_some_and(|e| e <= b.len()));
            if !fits || h.target >= self.bufs.len() {
                return Err(Error::Protocol(format!(
                    "handle {h:?} does not fit the call's buffers"
                )));
            }
        }
        Ok(())
    }

    /// Writes `value` into every handle (what the transport's pointer for buffer `target` is).
    pub fn patch_handles(&mut self, value_of: impl Fn(usize) -> u64) {
        for h in &self.handles {
            let v = value_of(h.target).to_le_bytes();
            self.bufs[h.buf][h.offset..h.offset + 8].copy_from_slice(&v);
        }
    }
}

/// A mapping of foreign guest frames into the toolstack's address space, contiguous in frame order.
pub struct ForeignMapping {
    inner: MapInner,
}

/// Stores a copied mapping back into the model when it is dropped.
pub type WriteBack = Box<dyn FnMut(&[u8])>;

enum MapInner {
    Mmap(sys::Mapping),
    Copy {
        data: Vec<u8>,
        write_back: WriteBack,
    },
}

impl ForeignMapping {
    pub(crate) fn from_mmap(m: sys::Mapping) -> Self {
        Self {
            inner: MapInner::Mmap(m),
        }
    }

    /// A mapping backed by a copy that `write_back` stores when the mapping is dropped (for test doubles).
    pub fn from_copy(data: Vec<u8>, write_back: WriteBack) -> Self {
        Self {
            inner: MapInner::Copy { data, write_back },
        }
    }
}

impl std::fmt::Debug for ForeignMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForeignMapping({} bytes)", self.len())
    }
}

impl Deref for ForeignMapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            MapInner::Mmap(m) => m.as_slice(),
            MapInner::Copy { data, .. } => data,
        }
    }
}

impl DerefMut for ForeignMapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            MapInner::Mmap(m) => m.as_mut_slice(),
            MapInner::Copy { data, .. } => data,
        }
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        if let MapInner::Copy { data, write_back } = &mut self.inner {
            write_back(data);
        }
    }
}

/// What the toolstack needs from the hypervisor.
pub trait Transport {
    /// Runs one hypercall as the control domain; returns the hypervisor's raw return value (a negative Xen
    /// errno on failure) or an error of the transport itself.
    fn hypercall(&mut self, call: &mut Call<'_>) -> Result<i64, Error>;

    /// Maps the frames `gfns` of domain `domid`, in order, into one contiguous read-write mapping.
    fn map_foreign(&mut self, domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error>;

    /// Binds a global virtual IRQ (e.g. `VIRQ_DOM_EXC`) to a control-domain event channel; returns its port.
    fn bind_virq(&mut self, virq: u32) -> Result<u32, Error>;

    /// Binds a local port to `remote_port` of `domid`, a port the toolstack allocated unbound for the control
    /// domain (`EVTCHNOP_bind_interdomain`, as xenconsoled does for a guest's console channel).
    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, Error>;

    /// Closes a local port from [`Transport::bind_interdomain`].
    fn unbind(&mut self, port: u32) -> Result<(), Error>;

    /// The control-domain ports bound with [`Transport::bind_interdomain`] whose other end notified since the
    /// last call, without waiting (the console daemon serves only those rings).
    fn poll_notified(&mut self) -> Result<Vec<u32>, Error>;

    /// Sends an event on a control-domain port.
    fn notify(&mut self, port: u32) -> Result<(), Error>;

    /// Waits up to `timeout` for a pending control-domain event; returns its port (and re-arms it).
    fn wait_event(&mut self, timeout: Duration) -> Result<Option<u32>, Error>;

    /// `XEN_DOMCTL_*`; `handle` optionally names a buffer a guest handle in the payload points at (offset
    /// inside the payload union).
    fn domctl(
        &mut self,
        op: &mut XenDomctl,
        handle: Option<(usize, &mut [u8])>,
    ) -> Result<(), Error>
    where
        Self: Sized,
    {
        let name = format!("domctl {} on domain {}", op.cmd, op.domain);
        let mut bytes = op.as_bytes().to_vec();
        let mut call = Call::new(
            xen_abi::hypercall::DOMCTL,
            [
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut bytes);
        if let Some((offset, data)) = handle {
            call.handles.push(HandleRef {
                buf: 0,
                offset: xen_abi::domctl::UNION_OFFSET + offset,
                target: 1,
            });
            call.bufs.push(data);
        }
        check(self.hypercall(&mut call), name)?;
        drop(call);
        *op = XenDomctl::read_from(&bytes).unwrap_or_default();
        Ok(())
    }

    /// `XEN_SYSCTL_*`, like [`Transport::domctl`].
    fn sysctl(
        &mut self,
        op: &mut XenSysctl,
        handle: Option<(usize, &mut [u8])>,
    ) -> Result<(), Error>
    where
        Self: Sized,
    {
        let name = format!("sysctl {}", op.cmd);
        let mut bytes = op.as_bytes().to_vec();
        let mut call = Call::new(
            xen_abi::hypercall::SYSCTL,
            [
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut bytes);
        if let Some((offset, data)) = handle {
            call.handles.push(HandleRef {
                buf: 0,
                offset: xen_abi::sysctl::UNION_OFFSET + offset,
                target: 1,
            });
            call.bufs.push(data);
        }
        check(self.hypercall(&mut call), name)?;
        drop(call);
        *op = XenSysctl::read_from(&bytes).unwrap_or_default();
        Ok(())
    }

    /// `XENMEM_populate_physmap` of 4 KiB frames `gfns` for domain `domid`; returns how many were populated.
    fn populate_physmap(&mut self, domid: u16, gfns: &[u64]) -> Result<u64, Error>
    where
        Self: Sized,
    {
        self.populate_physmap_order(domid, gfns, 0)
    }

    /// `XENMEM_populate_physmap` with extents of `1 << order` frames, each starting at a gfn of `starts`
    /// (aligned to its size); returns the number of extents, an error unless all were populated.
    fn populate_physmap_order(
        &mut self,
        domid: u16,
        starts: &[u64],
        order: u32,
    ) -> Result<u64, Error>
    where
        Self: Sized,
    {
        use xen_abi::memres::{MemoryReservation, XENMEM_POPULATE_PHYSMAP};
        let gfns = starts;
        let r = MemoryReservation {
            nr_extents: gfns.len() as u64,
            extent_order: order,
            domid,
            ..MemoryReservation::default()
        };
        let mut rb = r.as_bytes().to_vec();
        let mut list: Vec<u8> = gfns.iter().flat_map(|g| g.to_le_bytes()).collect();
        let mut call = Call::new(
            xen_abi::hypercall::MEMORY_OP,
            [
                Arg::Value(XENMEM_POPULATE_PHYSMAP),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut rb);
        call.bufs.push(&mut list);
        call.handles.push(HandleRef {
            buf: 0,
            offset: xen_abi::memres::RESERVATION_EXTENT_START_OFFSET,
            target: 1,
        });
        let n = check(
            self.hypercall(&mut call),
            format!("populate_physmap for domain {domid}"),
        )?;
        if n as u64 != gfns.len() as u64 {
            return Err(Error::Hypercall {
                op: format!(
                    "populate_physmap for domain {domid} ({n} of {} frames)",
                    gfns.len()
                ),
                ret: -(Errno::Enomem as i64),
            });
        }
        Ok(n as u64)
    }

    /// `XENMEM_set_memory_map`: the e820 map the domain's `XENMEM_memory_map` returns.
    fn set_memory_map(&mut self, domid: u16, map: &[xen_abi::xen::E820Entry]) -> Result<(), Error>
    where
        Self: Sized,
    {
        use xen_abi::memres::{
            ForeignMemoryMap, FOREIGN_MEMORY_MAP_BUFFER_OFFSET, XENMEM_SET_MEMORY_MAP,
        };
        let m = ForeignMemoryMap {
            domid,
            nr_entries: u32::try_from(map.len())
                .map_err(|_| Error::Config("too many memory map entries".into()))?,
            ..ForeignMemoryMap::default()
        };
        let mut mb = m.as_bytes().to_vec();
        let mut list: Vec<u8> = map.iter().flat_map(|e| e.as_bytes().to_vec()).collect();
        let mut call = Call::new(
            xen_abi::hypercall::MEMORY_OP,
            [
                Arg::Value(XENMEM_SET_MEMORY_MAP),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut mb);
        call.bufs.push(&mut list);
        call.handles.push(HandleRef {
            buf: 0,
            offset: FOREIGN_MEMORY_MAP_BUFFER_OFFSET,
            target: 1,
        });
        check(
            self.hypercall(&mut call),
            format!("setting the memory map of domain {domid}"),
        )?;
        Ok(())
    }

    /// `HVMOP_set_param` on a foreign domain.
    fn hvm_set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Error>
    where
        Self: Sized,
    {
        let p = xen_abi::xen::XenHvmParam {
            domid,
            pad: 0,
            index,
            value,
        };
        let mut b = p.as_bytes().to_vec();
        let mut call = Call::new(
            xen_abi::hypercall::HVM_OP,
            [
                Arg::Value(xen_abi::memres::HVMOP_SET_PARAM),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut b);
        check(
            self.hypercall(&mut call),
            format!("hvm set_param {index} on domain {domid}"),
        )?;
        Ok(())
    }

    /// `HVMOP_get_param` on a foreign domain.
    fn hvm_get_param(&mut self, domid: u16, index: u32) -> Result<u64, Error>
    where
        Self: Sized,
    {
        let p = xen_abi::xen::XenHvmParam {
            domid,
            pad: 0,
            index,
            value: 0,
        };
        let mut b = p.as_bytes().to_vec();
        let mut call = Call::new(
            xen_abi::hypercall::HVM_OP,
            [
                Arg::Value(xen_abi::memres::HVMOP_GET_PARAM),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut b);
        check(
            self.hypercall(&mut call),
            format!("hvm get_param {index} on domain {domid}"),
        )?;
        drop(call);
        Ok(xen_abi::xen::XenHvmParam::read_from(&b)
            .unwrap_or_default()
            .value)
    }

    /// `EVTCHNOP_alloc_unbound`: a port in `dom` that `remote` may bind to.
    fn evtchn_alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, Error>
    where
        Self: Sized,
    {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&dom.to_le_bytes());
        b[2..4].copy_from_slice(&remote.to_le_bytes());
        let mut call = Call::new(
            xen_abi::hypercall::EVENT_CHANNEL_OP,
            [
                Arg::Value(xen_abi::ctlserver::EVTCHNOP_ALLOC_UNBOUND),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut b);
        check(
            self.hypercall(&mut call),
            format!("allocating an event channel in domain {dom}"),
        )?;
        drop(call);
        Ok(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
    }

    /// `SCHEDOP_remote_shutdown`: asks domain `domid` to shut down with `reason` (`SHUTDOWN_*`).
    fn remote_shutdown(&mut self, domid: u16, reason: u32) -> Result<(), Error>
    where
        Self: Sized,
    {
        let r = xen_abi::domctl::RemoteShutdown {
            domain_id: domid,
            pad: 0,
            reason,
        };
        let mut b = r.as_bytes().to_vec();
        let mut call = Call::new(
            xen_abi::hypercall::SCHED_OP,
            [
                Arg::Value(xen_abi::domctl::SCHEDOP_REMOTE_SHUTDOWN),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut b);
        check(
            self.hypercall(&mut call),
            format!("remote shutdown of domain {domid}"),
        )?;
        Ok(())
    }

    /// `XEN_DOMCTL_gethvmcontext` of a paused or suspended domain with up to `vcpus` vCPUs: its HVM context
    /// records (`xen_abi::hvmsave`).
    fn get_hvm_context(&mut self, domid: u16, vcpus: u32) -> Result<Vec<u8>, Error>
    where
        Self: Sized,
    {
        use xen_abi::hvmsave as hs;
        let per_vcpu = 3 * hs::DESC_LEN
            + std::mem::size_of::<hs::HvmHwCpu>()
            + std::mem::size_of::<hs::HvmHwLapic>()
            + hs::LAPIC_REGS_LEN;
        let size = 2 * hs::DESC_LEN
            + std::mem::size_of::<hs::HvmSaveHeader>()
            + per_vcpu * vcpus.max(1) as usize;
        let mut data = vec![0u8; size];
        let h = xen_abi::domctl::HvmContext {
            size: size as u32,
            pad: 0,
            buffer: 0,
        };
        // A vCPU still on its way off a CPU (a suspend that just happened) makes the hypervisor ask again.
        let mut tries = 0;
        let op = loop {
            let mut op = XenDomctl::new(xen_abi::domctl::cmd::GETHVMCONTEXT, domid, &h);
            match self.domctl(
                &mut op,
                Some((xen_abi::domctl::HVMCONTEXT_BUFFER_OFFSET, &mut data)),
            ) {
                Err(e) if e.errno() == Some(Errno::Eagain) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r.map(|()| op)?,
            }
        };
        let used = op.payload::<xen_abi::domctl::HvmContext>().size as usize;
        data.truncate(used.min(size));
        Ok(data)
    }

    /// `XEN_DOMCTL_sethvmcontext`: loads HVM context records into a domain being built, or a paused or
    /// suspended one.
    fn set_hvm_context(&mut self, domid: u16, records: &[u8]) -> Result<(), Error>
    where
        Self: Sized,
    {
        let mut data = records.to_vec();
        let h = xen_abi::domctl::HvmContext {
            size: data.len() as u32,
            pad: 0,
            buffer: 0,
        };
        let mut tries = 0;
        loop {
            let mut op = XenDomctl::new(xen_abi::domctl::cmd::SETHVMCONTEXT, domid, &h);
            match self.domctl(
                &mut op,
                Some((xen_abi::domctl::HVMCONTEXT_BUFFER_OFFSET, &mut data)),
            ) {
                Err(e) if e.errno() == Some(Errno::Eagain) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// `XEN_DOMCTL_resumedomain`: a domain that shut down to suspend runs again.
    fn resume_domain(&mut self, domid: u16) -> Result<(), Error>
    where
        Self: Sized,
    {
        let mut op = XenDomctl::new(
            xen_abi::domctl::cmd::RESUMEDOMAIN,
            domid,
            &xen_abi::domctl::MaxVcpus::default(),
        );
        self.domctl(&mut op, None)
    }
}

fn check(r: Result<i64, Error>, op: String) -> Result<i64, Error> {
    match r {
        Ok(v) if v >= 0 => Ok(v),
        Ok(ret) => Err(Error::Hypercall { op, ret }),
        Err(Error::Hypercall { ret, .. }) => Err(Error::Hypercall { op, ret }),
        Err(e) => Err(e),
    }
}
