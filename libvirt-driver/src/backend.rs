//! The hypervisor backend: everything that touches a guest goes through a [`Backend`].
//!
//! The daemon's own state (definitions, autostart, callbacks) never depends on the backend. Until the
//! hypervisor integration lands, [`NoHypervisor`] is the only implementation: every guest-touching call
//! fails with a libvirt error and nothing ever pretends to run.

use std::io::{Read, Write};

use crate::proto::{code, RpcError};
use domain_xml::domain::Domain;

/// Runtime information about a running domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    /// libvirt domain state (1 running, 3 paused, ...).
    pub state: i32,
    /// Reason for the state.
    pub reason: i32,
    /// Current memory, KiB.
    pub memory_kib: u64,
    /// Online vCPUs.
    pub vcpus: u32,
    /// CPU time used, nanoseconds.
    pub cpu_time_ns: u64,
}

/// A lifecycle change the backend reports asynchronously (guest shut itself down, crashed, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendEvent {
    /// The hypervisor domain id.
    pub domid: u32,
    /// libvirt lifecycle event (`VIR_DOMAIN_EVENT_*`).
    pub event: i32,
    /// Event detail.
    pub detail: i32,
}

/// A bidirectional console byte stream.
pub trait ConsoleIo: Send {
    /// A reader for guest output; EOF when the console closes.
    fn reader(&mut self) -> Box<dyn Read + Send>;
    /// A writer for keystrokes.
    fn writer(&mut self) -> Box<dyn Write + Send>;
}

/// Receives asynchronous backend events.
pub type EventSink = Box<dyn Fn(BackendEvent) + Send + Sync>;

/// What becomes of a domain once [`Backend::save`] has written its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSave {
    /// It is destroyed (`virsh save`, `managedsave`, a snapshot with `--halt`).
    Stop,
    /// It goes on as it was, running or paused (a snapshot of a running domain).
    Continue,
}

/// Guest lifecycle operations, implemented by the hypervisor integration through libxl-rs.
pub trait Backend: Send + Sync {
    /// The Xen version the hypervisor reports (major * 1e6 + minor * 1e3 + micro), if connected.
    fn hypervisor_version(&self) -> Option<u64>;
    /// Builds and starts a domain; returns its domain id.
    fn create(&self, def: &Domain, paused: bool) -> Result<u32, RpcError>;
    /// Destroys a domain immediately.
    fn destroy(&self, domid: u32) -> Result<(), RpcError>;
    /// Asks the guest to shut down.
    fn shutdown(&self, domid: u32) -> Result<(), RpcError>;
    /// Asks the guest to reboot.
    fn reboot(&self, domid: u32) -> Result<(), RpcError>;
    /// Pauses all vCPUs.
    fn pause(&self, domid: u32) -> Result<(), RpcError>;
    /// Unpauses.
    fn unpause(&self, domid: u32) -> Result<(), RpcError>;
    /// Runtime information; `Ok(None)` when the domain no longer exists.
    fn info(&self, domid: u32) -> Result<Option<RunInfo>, RpcError>;
    /// Opens the guest console.
    fn open_console(&self, domid: u32, dev: Option<&str>) -> Result<Box<dyn ConsoleIo>, RpcError>;
    /// Installs the sink for asynchronous events.
    fn set_event_sink(&self, sink: EventSink);
    /// Whether [`Backend::save`] and [`Backend::restore`] work; the error says why not. Snapshots of running
    /// domains (memory plus disks) and reverting to them ask this before touching anything.
    fn check_save(&self) -> Result<(), RpcError> {
        Err(save_unsupported())
    }
    /// Writes the memory and vCPU state of a running or paused domain to `out` (positioned after the daemon's
    /// header), runs `frozen` while the guest is still suspended (a snapshot takes its disks there, so memory and
    /// disks are of one instant), then stops the domain or lets it go on as `after` says. When `frozen` fails the
    /// domain goes on and its error is returned. The guest may be asked to cooperate (Xen's suspend), so the
    /// domain must not be paused by the caller first.
    fn save(
        &self,
        _domid: u32,
        _out: &mut std::fs::File,
        _after: AfterSave,
        _frozen: &mut dyn FnMut() -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        Err(save_unsupported())
    }
    /// Builds a domain from `def` and the state [`Backend::save`] wrote, read from `input` (positioned after the
    /// daemon's header); returns its domain id. It stays paused when `paused`, else it runs.
    fn restore(
        &self,
        _def: &Domain,
        _input: &mut std::fs::File,
        _paused: bool,
    ) -> Result<u32, RpcError> {
        Err(save_unsupported())
    }
}

/// libvirt's answer while the hypervisor backend cannot save a domain's memory.
pub fn save_unsupported() -> RpcError {
    RpcError::libxl(
        code::OPERATION_UNSUPPORTED,
        "Operation not supported: saving and restoring a running domain's memory is not implemented by this hypervisor backend yet",
    )
}

/// The backend used while no hypervisor is attached: every guest operation fails clearly.
#[derive(Debug, Default)]
pub struct NoHypervisor;

impl NoHypervisor {
    fn err() -> RpcError {
        RpcError::libxl(
            code::OPERATION_FAILED,
            "operation failed: no hypervisor connection: xen-hv is not attached to this daemon",
        )
    }
}

impl Backend for NoHypervisor {
    fn hypervisor_version(&self) -> Option<u64> {
        None
    }
    fn create(&self, _def: &Domain, _paused: bool) -> Result<u32, RpcError> {
        Err(Self::err())
    }
    fn destroy(&self, _domid: u32) -> Result<(), RpcError> {
        Err(Self::err())
    }
    fn shutdown(&self, _domid: u32) -> Result<(), RpcError> {
        Err(Self::err())
    }
    fn reboot(&self, _domid: u32) -> Result<(), RpcError> {
        Err(Self::err())
    }
    fn pause(&self, _domid: u32) -> Result<(), RpcError> {
        Err(Self::err())
    }
    fn unpause(&self, _domid: u32) -> Result<(), RpcError> {
        Err(Self::err())
    }
    fn info(&self, _domid: u32) -> Result<Option<RunInfo>, RpcError> {
        // Without a hypervisor no domain can be running: a domain recorded in the state directory is gone.
        Ok(None)
    }
    fn open_console(
        &self,
        _domid: u32,
        _dev: Option<&str>,
    ) -> Result<Box<dyn ConsoleIo>, RpcError> {
        Err(Self::err())
    }
    fn set_event_sink(&self, _sink: EventSink) {}
}
