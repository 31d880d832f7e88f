//! The sandbox the way a user runs it: `scripts/sandbox up` boots xen-hv in QEMU and starts the control-channel
//! mux and virtxend in the background; the tests drive the stock `virsh` and the project's `xl` against it.
//! Dropping a [`Sandbox`] runs `scripts/sandbox down` and removes its directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::console::Session;

/// A sandbox in its own directory.
pub struct Sandbox {
    /// Its state directory (`XEN_RS_SANDBOX_DIR`).
    pub dir: PathBuf,
}

impl Sandbox {
    /// Brings a sandbox up in a fresh directory named after `tag` and the test process; panics with the script's
    /// output when it does not come up.
    pub fn up(tag: &str) -> Self {
        let sb = Self {
            dir: std::env::temp_dir().join(format!("{tag}-{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&sb.dir);
        let up = sb.script("up");
        assert!(up.status.success(), "sandbox up failed: {}", text(&up));
        sb
    }

    /// Runs `scripts/sandbox ARG` for this sandbox.
    pub fn script(&self, arg: &str) -> Output {
        Command::new(xtask::workspace_root().join("scripts/sandbox"))
            .arg(arg)
            .env("XEN_RS_SANDBOX_DIR", &self.dir)
            .output()
            .expect("running scripts/sandbox")
    }

    /// The libvirt URI of its daemon.
    pub fn uri(&self) -> String {
        format!("xen:///system?socket={}/virtxend-sock", self.dir.display())
    }

    /// Runs `virsh -c URI ARGS`.
    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .output()
            .expect("running virsh")
    }

    /// Runs virsh and returns its stdout; panics with the daemon's log when it fails.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "virsh {args:?} failed: {}\n{}",
            text(&o),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the workspace's `xl` against the sandbox.
    pub fn xl(&self, args: &[&str]) -> Output {
        Command::new(xtask::build::target_dir().join("debug/xl"))
            .args(args)
            .env("XEN_RS_SANDBOX", &self.dir)
            .env("XEN_RS_STATE_DIR", self.dir.join("xl"))
            .output()
            .expect("running xl")
    }

    /// An interactive `virsh console NAME` (under `script`, which gives it the terminal it needs).
    pub fn console(&self, name: &str) -> Session {
        let cmd = format!("virsh -c '{}' console {name}", self.uri());
        let mut c = Command::new("script");
        c.args(["-qfec", &cmd, "/dev/null"]);
        Session::spawn(c).expect("starting virsh console")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("virtxend.log")).unwrap_or_default()
    }

    /// What xen-hv printed on its serial console.
    pub fn hv_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// The PIDs `scripts/sandbox up` recorded.
    pub fn pids(&self) -> Vec<u32> {
        ["qemu", "mux", "virtxend"]
            .iter()
            .filter_map(|n| std::fs::read_to_string(self.dir.join(format!("{n}.pid"))).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// A file in the sandbox directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.script("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command's stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `path` as a string for XML and command lines.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}
