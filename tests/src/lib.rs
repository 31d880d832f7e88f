//! The shared test harness: locating the workspace's binaries and booting the hypervisor through the same QEMU
//! command lines as `cargo xtask` ([`xtask::qemu`]).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use xtask::{qemu, Arch};

pub mod console;
pub mod sandbox;
pub mod system_bus;

/// Builds (once per test process) and returns the hypervisor image for `arch`.
pub fn hv_image(arch: Arch) -> PathBuf {
    static X86: OnceLock<PathBuf> = OnceLock::new();
    static ARM: OnceLock<PathBuf> = OnceLock::new();
    let cell = match arch {
        Arch::X86_64 => &X86,
        Arch::Aarch64 => &ARM,
    };
    cell.get_or_init(|| {
        xtask::build::build_hv(arch).unwrap_or_else(|e| panic!("building xen-hv: {e}"))
    })
    .clone()
}

/// Boots xen-hv for `arch` with `append` as its command line and returns what happened.
pub fn boot_hv(arch: Arch, append: &str, timeout: Duration) -> qemu::BootOutcome {
    let mut m = qemu::Machine::new(arch, hv_image(arch));
    m.append = append.to_string();
    qemu::run(&m, timeout, false).unwrap_or_else(|e| panic!("running QEMU: {e}"))
}

/// The Debian guest kernel (vmlinux ELF) and the test initramfs, prepared once by `scripts/guest-kernel` from
/// Debian's linux-image-amd64 package.
pub fn guest_kernel() -> (PathBuf, PathBuf) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = std::process::Command::new(xtask::workspace_root().join("scripts/guest-kernel"))
            .output()
            .expect("running scripts/guest-kernel");
        assert!(
            out.status.success(),
            "scripts/guest-kernel failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    });
    (dir.join("vmlinux"), dir.join("initramfs.cpio.gz"))
}

/// The Debian arm64 guest kernel (its `Image`) and an arm64 busybox initramfs, prepared once by
/// `scripts/guest-kernel-arm64` from Debian's archive.
pub fn guest_kernel_arm64() -> (PathBuf, PathBuf) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out =
            std::process::Command::new(xtask::workspace_root().join("scripts/guest-kernel-arm64"))
                .output()
                .expect("running scripts/guest-kernel-arm64");
        assert!(
            out.status.success(),
            "scripts/guest-kernel-arm64 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    });
    (dir.join("Image"), dir.join("initramfs.cpio.gz"))
}

/// Running `virtxend` (the libvirt-RPC daemon) with temporary directories, and the stock clients against it.
pub mod virtxend {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Builds (once per test process) and returns the `virtxend` binary.
    pub fn binary() -> PathBuf {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        BIN.get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let st = Command::new(cargo)
                .current_dir(xtask::workspace_root())
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "libvirt-driver",
                    "--bin",
                    "virtxend",
                ])
                .status()
                .expect("running cargo build for virtxend");
            assert!(st.success(), "building virtxend failed");
            xtask::build::target_dir().join("debug/virtxend")
        })
        .clone()
    }

    /// A daemon listening on a socket in its own temporary directory; killed on drop.
    pub struct Daemon {
        child: Option<Child>,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        /// The temporary directory (socket, config and state directories).
        pub dir: PathBuf,
        /// The read-write socket.
        pub socket: PathBuf,
    }

    impl Daemon {
        /// Starts a daemon in a fresh temporary directory.
        pub fn start(tag: &str) -> Daemon {
            Self::start_with(tag, &[], &[])
        }

        /// Starts a daemon with extra command-line arguments and environment variables.
        pub fn start_with(tag: &str, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
            let dir = std::env::temp_dir().join(format!("virtxend-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creating the test directory");
            let mut d = Daemon {
                child: None,
                args: args.iter().map(|a| a.to_string()).collect(),
                envs: envs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                socket: dir.join("sock"),
                dir,
            };
            d.spawn();
            d
        }

        fn spawn(&mut self) {
            let log = std::fs::File::create(self.dir.join("daemon.log"))
                .expect("creating the daemon log");
            let child = Command::new(binary())
                .arg("--socket")
                .arg(&self.socket)
                .arg("--config-dir")
                .arg(self.dir.join("config"))
                .arg("--state-dir")
                .arg(self.dir.join("state"))
                .arg("--snapshot-dir")
                .arg(self.dir.join("snapshot"))
                .arg("--verbose")
                .args(&self.args)
                .envs(self.envs.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting virtxend");
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "virtxend did not start listening"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Stops the daemon and starts it again on the same directories.
        pub fn restart(&mut self) {
            self.stop();
            self.spawn();
        }

        fn stop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// Sends SIGTERM and waits for the daemon to exit; returns whether it exited successfully.
        pub fn terminate(&mut self) -> bool {
            let Some(mut c) = self.child.take() else {
                return false;
            };
            let sent = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            sent && c.wait().is_ok_and(|s| s.success())
        }

        /// The URI clients use.
        pub fn uri(&self) -> String {
            format!("xen:///system?socket={}", self.socket.display())
        }

        /// The persistent configuration directory.
        pub fn config_dir(&self) -> PathBuf {
            self.dir.join("config")
        }

        /// Runs `virsh -c URI args...`.
        pub fn virsh(&self, args: &[&str]) -> Output {
            Command::new("virsh")
                .arg("-c")
                .arg(self.uri())
                .args(args)
                .output()
                .expect("running virsh")
        }

        /// Runs virsh and returns stdout, panicking with stderr on failure.
        pub fn virsh_ok(&self, args: &[&str]) -> String {
            let o = self.virsh(args);
            assert!(
                o.status.success(),
                "virsh {args:?} failed: {}\ndaemon log:\n{}",
                String::from_utf8_lossy(&o.stderr),
                self.log()
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        }

        /// Runs virsh expecting failure and returns stderr.
        pub fn virsh_err(&self, args: &[&str]) -> String {
            let o = self.virsh(args);
            assert!(
                !o.status.success(),
                "virsh {args:?} unexpectedly succeeded: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            String::from_utf8_lossy(&o.stderr).into_owned()
        }

        /// The daemon's log so far.
        pub fn log(&self) -> String {
            std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
        }

        /// Writes a file in the test directory and returns its path.
        pub fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.join(name);
            std::fs::write(&p, text).expect("writing a test file");
            p
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// The Debian system python (which has python3-libvirt), not a pyenv shim.
    pub fn python() -> &'static Path {
        Path::new("/usr/bin/python3")
    }

    /// A minimal PV guest definition.
    pub fn pv_guest_xml(name: &str) -> String {
        format!(
            "<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>2</vcpu>\n  <os>\n    <type arch='x86_64' machine='xenpv'>xen</type>\n  </os>\n</domain>\n"
        )
    }
}
