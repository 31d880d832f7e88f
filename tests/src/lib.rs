//! The shared test harness: locating the workspace's binaries and booting the hypervisor through the same QEMU
//! command lines as `cargo xtask` ([`xtask::qemu`]).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use xtask::{qemu, Arch};

pub mod console;
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
