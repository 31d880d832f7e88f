//! The `virtxend` command line (exported so that man pages can be generated from it).

use std::path::PathBuf;

/// virtxend: the libvirt Xen driver daemon for xen-hv.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "virtxend", version, about, long_about = None)]
pub struct Cli {
    /// Path of the read-write socket (default: virtxend-sock in the configuration's unix_sock_dir, /run/libvirt).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Path of the read-only socket (default: the read-write path with `-ro` appended).
    #[arg(long)]
    pub socket_ro: Option<PathBuf>,
    /// Configuration file (default: /etc/libvirt/virtxend.conf when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of persistent domain definitions.
    #[arg(long, default_value = "/etc/libvirt/libxl")]
    pub config_dir: PathBuf,
    /// Directory of running-domain status files.
    #[arg(long, default_value = "/run/libvirt/libxl")]
    pub state_dir: PathBuf,
    /// Directory of domain snapshot metadata (`<domain>/<snapshot>.xml`); it must survive a reboot, as the
    /// snapshots inside the qcow2 images do.
    #[arg(long, default_value = "/var/lib/libvirt/libxl/snapshot")]
    pub snapshot_dir: PathBuf,
    /// Directory of managed-save images (`<domain>.save`), which must survive a reboot (default: `save` beside
    /// the snapshot directory, /var/lib/libvirt/libxl/save as libvirt's libxl driver).
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
    /// Client authentication: `polkit` (the default when running as root, as libvirt's privileged daemons) or
    /// `none` (the default otherwise: the socket permissions are the access control).
    #[arg(long, value_enum)]
    pub auth: Option<crate::auth::Auth>,
    /// The hypervisor: `auto` (the privcmd devices when /dev/xen/privcmd exists, otherwise none), `none`,
    /// `privcmd`, or `sandbox:DIR` (xen-hv in QEMU, DIR as `scripts/sandbox up` prints it).
    #[arg(long, default_value = "auto")]
    pub hypervisor: String,
    /// Where the toolstack keeps the names and configurations of the domains it built (shared with `xl`).
    #[arg(long, env = "XEN_RS_STATE_DIR", default_value = "/run/xen-rs/xl")]
    pub xl_state_dir: PathBuf,
    /// Log connections and failed calls to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

/// The daemon's effective settings: command line over configuration file over defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The read-write socket.
    pub socket: PathBuf,
    /// The read-only socket.
    pub socket_ro: PathBuf,
    /// Authentication on the read-write socket.
    pub auth_rw: crate::auth::Auth,
    /// Authentication on the read-only socket.
    pub auth_ro: crate::auth::Auth,
    /// Configuration keys the daemon ignored.
    pub ignored_keys: Vec<String>,
}

impl Cli {
    /// Combines the command line with the configuration file.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        let file = match &self.config {
            Some(path) => crate::config::FileConfig::load(path, true)?,
            None => crate::config::FileConfig::load(
                std::path::Path::new(crate::config::DEFAULT_PATH),
                false,
            )?,
        };
        let dir = file
            .unix_sock_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCK_DIR));
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| dir.join("virtxend-sock"));
        let socket_ro = self.socket_ro.clone().unwrap_or_else(|| {
            let mut s = socket.clone().into_os_string();
            s.push("-ro");
            PathBuf::from(s)
        });
        let default_auth = self.auth_mode();
        Ok(Settings {
            socket,
            socket_ro,
            auth_rw: self.auth.or(file.auth_unix_rw).unwrap_or(default_auth),
            auth_ro: self.auth.or(file.auth_unix_ro).unwrap_or(default_auth),
            ignored_keys: file.ignored,
        })
    }
}

impl Cli {
    /// The managed-save directory in effect.
    pub fn save_dir(&self) -> PathBuf {
        self.save_dir.clone().unwrap_or_else(|| {
            self.snapshot_dir
                .parent()
                .map_or_else(|| PathBuf::from("save"), |p| p.join("save"))
        })
    }

    /// The authentication mode in effect.
    pub fn auth_mode(&self) -> crate::auth::Auth {
        self.auth.unwrap_or_else(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                crate::auth::Auth::Polkit
            } else {
                crate::auth::Auth::None
            }
        })
    }
}
