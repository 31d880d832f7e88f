//! A private system message bus with a real polkitd on it, for authorization tests.
//!
//! `dbus-daemon` runs with a system-type configuration on a socket in a temporary directory; polkitd runs in its
//! own mount namespace where `/usr/share/polkit-1/actions` and both rules directories are bind mounts of
//! temporary directories, so a test controls exactly which actions and rules exist without touching the host's
//! polkit configuration. Needs root (to mount and to run polkitd).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running bus and polkitd; both are killed on drop.
pub struct PolkitEnv {
    dir: PathBuf,
    bus: Child,
    polkitd: Child,
    /// The bus address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

/// True when the process runs as root (needed to start polkitd with private mounts).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn unique_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("xenrs-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}

impl PolkitEnv {
    /// Starts the bus and polkitd with the action files in `actions` installed.
    pub fn start(actions: &[&Path]) -> Self {
        let dir = unique_dir("polkit");
        for sub in ["actions", "rules", "empty"] {
            std::fs::create_dir_all(dir.join(sub)).expect("creating polkit directories");
        }
        for a in actions {
            let name = a.file_name().expect("action file name");
            std::fs::copy(a, dir.join("actions").join(name)).expect("installing an action file");
        }
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("writing the bus configuration");
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon");
        let address = format!("unix:path={}", socket.display());
        wait_for(|| socket.exists(), "the bus socket");
        let script = format!(
            "mount --bind {a} /usr/share/polkit-1/actions && mount --bind {r} /etc/polkit-1/rules.d && \
             mount --bind {e} /usr/share/polkit-1/rules.d && exec /usr/lib/polkit-1/polkitd --no-debug",
            a = dir.join("actions").display(),
            r = dir.join("rules").display(),
            e = dir.join("empty").display(),
        );
        let polkitd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting polkitd");
        let env = Self {
            dir,
            bus,
            polkitd,
            address,
        };
        wait_for(|| env.polkit_ready(), "polkitd on the bus");
        env
    }

    fn polkit_ready(&self) -> bool {
        Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args([
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.PolicyKit1",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
            .unwrap_or(false)
    }

    /// Installs (or replaces) a rules file; polkitd reloads its rules when the directory changes.
    pub fn add_rules(&self, name: &str, javascript: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, javascript).expect("writing a rules file");
        std::fs::rename(&tmp, self.dir.join("rules").join(name)).expect("installing a rules file");
    }
}

impl Drop for PolkitEnv {
    fn drop(&mut self) {
        let _ = self.polkitd.kill();
        let _ = self.polkitd.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` every 50 ms for up to 20 s; panics naming `what` if it never holds.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
