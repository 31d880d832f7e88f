//! `virtxend`: a daemon speaking libvirt's remote RPC protocol so that the stock libvirt clients (virsh,
//! virt-install, virt-manager, python3-libvirt, Ansible) manage xen-hv guests unchanged.
//!
//! Layers: [`xdr`] (codec), [`proto`] (framing, header, errors), [`server`] (sockets, connections, streams),
//! [`driver`] (domain state and the REMOTE procedures), [`store`] (persistent definitions), [`save_image`]
//! (the files saved domains are kept in), [`backend`] (guest lifecycle through libxl-rs;
//! [`backend::NoHypervisor`] until the hypervisor integration lands) and [`host`] (node facts and capabilities).

use std::path::PathBuf;

pub mod auth;
pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod driver;
pub mod host;
pub mod libxl_backend;
pub mod proto;
pub mod save_image;
pub mod server;
pub mod storage_rpc;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod xdr;

/// Errors of the daemon itself (startup, files, sockets); per-call failures are [`proto::RpcError`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("I/O error on {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The storage driver could not start.
    #[error("storage driver: {0}")]
    Storage(String),
    /// The hypervisor cannot be reached.
    #[error("hypervisor: {0}")]
    Hypervisor(String),
    /// The configuration file cannot be used.
    #[error("configuration")]
    Config(#[from] config::ConfigError),
    /// A file is not a save image this daemon can read: foreign, truncated or of another version.
    #[error("{0} is not a valid save image: {1}")]
    SaveImage(PathBuf, String),
    /// Another daemon already serves the socket.
    #[error("socket {0} is in use by another daemon")]
    SocketInUse(PathBuf),
}
