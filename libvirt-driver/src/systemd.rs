//! systemd integration: socket activation (`LISTEN_FDS`, as `sd_listen_fds_with_names`) and readiness
//! notification (`NOTIFY_SOCKET`, as `sd_notify`), so the packaged `virtxend.socket` / `virtxend-ro.socket` units
//! start the daemon on the first client and `Type=notify` knows when it serves.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

/// The first file descriptor systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;

/// A socket systemd passed, with its name (`FileDescriptorName=`, by default the socket unit's name).
#[derive(Debug)]
pub struct Activated {
    /// The listening socket.
    pub listener: UnixListener,
    /// Its name, e.g. `virtxend.socket` or `virtxend-ro.socket`.
    pub name: String,
}

impl Activated {
    /// True for the read-only socket (its unit or name carries `-ro`).
    pub fn is_read_only(&self) -> bool {
        self.name.contains("-ro")
    }
}

/// Parses the activation variables: `Some(names)` when `LISTEN_PID` is `pid` and `LISTEN_FDS` is a count.
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    pid: u32,
) -> Option<Vec<String>> {
    if listen_pid?.trim().parse::<u32>().ok()? != pid {
        return None;
    }
    let n: usize = listen_fds?.trim().parse().ok()?;
    let given: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    Some(
        (0..n)
            .map(|i| {
                given
                    .get(i)
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| "unknown".to_string(), |s| s.to_string())
            })
            .collect(),
    )
}

/// Takes the sockets systemd passed to this process, if any, and clears the variables so children do not see
/// them. Descriptors that are not listening Unix stream sockets are skipped.
pub fn listen_fds() -> Vec<Activated> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(names) = parse_listen_env(
        env("LISTEN_PID").as_deref(),
        env("LISTEN_FDS").as_deref(),
        env("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    ) else {
        return Vec::new();
    };
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called from main before any other thread is started, so nothing reads the environment
        // concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let Ok(offset) = RawFd::try_from(i) else {
            break;
        };
        let fd = SD_LISTEN_FDS_START + offset;
        if !is_unix_stream_listener(fd) {
            eprintln!("virtxend: ignoring passed descriptor {fd} ({name}): not a listening Unix stream socket");
            continue;
        }
        // SAFETY: systemd passed `fd` to this process for its exclusive use and it was checked to be an open,
        // listening Unix stream socket; ownership moves into the UnixListener, which closes it on drop.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        // SAFETY: `fd` is open (checked above); setting FD_CLOEXEC only affects exec in children.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        out.push(Activated { listener, name });
    }
    out
}

fn is_unix_stream_listener(fd: RawFd) -> bool {
    let get = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes and `len` holds the size of `v`; an invalid descriptor only
        // makes getsockopt fail.
        let r =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
        (r == 0).then_some(v)
    };
    get(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && get(libc::SO_ACCEPTCONN) == Some(1)
}

/// Sends `state` (e.g. `READY=1`) to the service manager when `NOTIFY_SOCKET` names one; a no-op otherwise.
pub fn notify(state: &str) -> std::io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path, state),
        None => Ok(()),
    }
}

/// Sends `state` to the notification socket `path` (a file path, or `@name` for an abstract socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_variables() {
        let names = parse_listen_env(
            Some("42"),
            Some("2"),
            Some("virtxend.socket:virtxend-ro.socket"),
            42,
        )
        .unwrap();
        assert_eq!(names, ["virtxend.socket", "virtxend-ro.socket"]);
        assert_eq!(parse_listen_env(Some("41"), Some("2"), None, 42), None);
        assert_eq!(parse_listen_env(None, Some("2"), None, 42), None);
        assert_eq!(parse_listen_env(Some("42"), Some("x"), None, 42), None);
        assert_eq!(
            parse_listen_env(Some("42"), Some("1"), None, 42).unwrap(),
            ["unknown"]
        );
    }

    #[test]
    fn notify_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("virtxend-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 16];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
