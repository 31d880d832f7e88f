//! The `virtxend` command line (exported so that man pages can be generated from it).

use std::path::PathBuf;

/// virtxend: the libvirt Xen driver daemon for xen-hv.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "virtxend", version, about, long_about = None)]
pub struct Cli {
    /// Path of the read-write socket.
    #[arg(long, default_value = "/run/libvirt/virtxend-sock")]
    pub socket: PathBuf,
    /// Path of the read-only socket (default: the read-write path with `-ro` appended).
    #[arg(long)]
    pub socket_ro: Option<PathBuf>,
    /// Directory of persistent domain definitions.
    #[arg(long, default_value = "/etc/libvirt/libxl")]
    pub config_dir: PathBuf,
    /// Directory of running-domain status files.
    #[arg(long, default_value = "/run/libvirt/libxl")]
    pub state_dir: PathBuf,
    /// Client authentication: `polkit` (the default when running as root, as libvirt's privileged daemons) or
    /// `none` (the default otherwise: the socket permissions are the access control).
    #[arg(long, value_enum)]
    pub auth: Option<crate::auth::Auth>,
    /// Log connections and failed calls to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

impl Cli {
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

    /// The read-only socket path.
    pub fn ro_socket(&self) -> PathBuf {
        self.socket_ro.clone().unwrap_or_else(|| {
            let mut s = self.socket.clone().into_os_string();
            s.push("-ro");
            PathBuf::from(s)
        })
    }
}
