//! Either real transport, chosen at run time: the dom0 privcmd devices, or the sandbox control channel to xen-hv
//! in QEMU. Used by `xl` and by virtxend's hypervisor backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::privcmd::PrivcmdTransport;
use super::sandbox::SandboxTransport;
use super::{Call, Error, ForeignMapping, Transport};

/// Where the hypervisor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/dev/xen/privcmd` and friends in a control domain.
    Privcmd,
    /// A sandbox directory holding `ctl.sock` (the control channel or its mux) and `ram` (QEMU's RAM file).
    Sandbox(PathBuf),
}

impl Target {
    /// Opens a new connection to the target.
    pub fn connect(&self) -> Result<AnyTransport, Error> {
        Ok(match self {
            Target::Privcmd => AnyTransport::Privcmd(PrivcmdTransport::open()?),
            Target::Sandbox(dir) => AnyTransport::Sandbox(sandbox(dir)?),
        })
    }
}

fn sandbox(dir: &Path) -> Result<SandboxTransport, Error> {
    SandboxTransport::connect(
        &dir.join("ctl.sock"),
        &dir.join("ram"),
        Duration::from_secs(10),
    )
}

/// Either transport.
#[derive(Debug)]
pub enum AnyTransport {
    /// The dom0 devices.
    Privcmd(PrivcmdTransport),
    /// The sandbox control channel.
    Sandbox(SandboxTransport),
}

impl Transport for AnyTransport {
    fn hypercall(&mut self, call: &mut Call<'_>) -> Result<i64, Error> {
        match self {
            Self::Privcmd(t) => t.hypercall(call),
            Self::Sandbox(t) => t.hypercall(call),
        }
    }
    fn map_foreign(&mut self, domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error> {
        match self {
            Self::Privcmd(t) => t.map_foreign(domid, gfns),
            Self::Sandbox(t) => t.map_foreign(domid, gfns),
        }
    }
    fn bind_virq(&mut self, virq: u32) -> Result<u32, Error> {
        match self {
            Self::Privcmd(t) => t.bind_virq(virq),
            Self::Sandbox(t) => t.bind_virq(virq),
        }
    }
    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, Error> {
        match self {
            Self::Privcmd(t) => t.bind_interdomain(domid, remote_port),
            Self::Sandbox(t) => t.bind_interdomain(domid, remote_port),
        }
    }
    fn poll_notified(&mut self) -> Result<Vec<u32>, Error> {
        match self {
            Self::Privcmd(t) => t.poll_notified(),
            Self::Sandbox(t) => t.poll_notified(),
        }
    }
    fn unbind(&mut self, port: u32) -> Result<(), Error> {
        match self {
            Self::Privcmd(t) => t.unbind(port),
            Self::Sandbox(t) => t.unbind(port),
        }
    }
    fn notify(&mut self, port: u32) -> Result<(), Error> {
        match self {
            Self::Privcmd(t) => t.notify(port),
            Self::Sandbox(t) => t.notify(port),
        }
    }
    fn wait_event(&mut self, timeout: Duration) -> Result<Option<u32>, Error> {
        match self {
            Self::Privcmd(t) => t.wait_event(timeout),
            Self::Sandbox(t) => t.wait_event(timeout),
        }
    }
}
