//! Client authentication on the Unix sockets: peer credentials and polkit, following libvirt's
//! `auth_unix_rw = "polkit"` model (root peers are trusted; others need `org.libvirt.unix.manage` on the
//! read-write socket, `org.libvirt.unix.monitor` on the read-only one).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::driver::ConnState;
use crate::proto::RpcError;

/// The error domain of polkit failures (`VIR_FROM_POLKIT`).
pub const VIR_FROM_POLKIT: i32 = 60;
/// `VIR_ERR_AUTH_FAILED`.
pub const AUTH_FAILED: i32 = 45;
/// `VIR_ERR_AUTH_CANCELLED`.
pub const AUTH_CANCELLED: i32 = 79;
/// `VIR_ERR_AUTH_UNAVAILABLE`.
pub const AUTH_UNAVAILABLE: i32 = 94;

/// How clients of the sockets are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// No authentication: the socket's file permissions are the only access control.
    None,
    /// polkit for every non-root peer.
    Polkit,
}

/// The peer's (pid, uid), from `SO_PEERCRED`.
pub fn peer_cred(s: &UnixStream) -> Option<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`, as SO_PEERCRED expects;
    // the descriptor is owned by `s` and open for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some((cred.pid as u32, cred.uid))
}

/// Asks polkitd (on the system bus, `DBUS_SYSTEM_BUS_ADDRESS` honoured) whether the peer may use the socket.
pub fn polkit_check(conn: &ConnState) -> Result<(), RpcError> {
    let (pid, uid) = conn.peer.ok_or_else(|| {
        RpcError::new(
            AUTH_FAILED,
            VIR_FROM_POLKIT,
            "authentication failed: cannot identify the peer process",
        )
    })?;
    let action = if conn.readonly {
        polkit::ACTION_MONITOR
    } else {
        polkit::ACTION_MANAGE
    };
    let failed = |e: polkit::Error| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        RpcError::new(
            AUTH_FAILED,
            VIR_FROM_POLKIT,
            format!("authentication failed: {msg}"),
        )
    };
    let subject = polkit::Subject::from_peer(pid, uid).map_err(failed)?;
    let authority = polkit::Authority::system().map_err(failed)?;
    match authority.check(&subject, action, true).map_err(failed)? {
        polkit::Decision::Authorized => Ok(()),
        polkit::Decision::Challenge => Err(RpcError::new(
            AUTH_UNAVAILABLE,
            VIR_FROM_POLKIT,
            format!("authentication unavailable: no polkit agent available to authenticate action '{action}'"),
        )),
        polkit::Decision::Denied { dismissed: true } => Err(RpcError::new(
            AUTH_CANCELLED,
            VIR_FROM_POLKIT,
            "authentication cancelled: user cancelled authentication process",
        )),
        polkit::Decision::Denied { dismissed: false } => Err(RpcError::new(
            AUTH_FAILED,
            VIR_FROM_POLKIT,
            "authentication failed: access denied by policy",
        )),
    }
}
