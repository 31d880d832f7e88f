//! Builds the bare-metal images with the workspace's own cargo.

use std::path::PathBuf;
use std::process::Command;

use crate::{workspace_root, Arch, Error};

/// The cargo binary that runs us, or `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Builds bare-metal package `package` (binary of the same name) for `arch` in release mode and returns the
/// ELF's path.
pub fn build_bare_metal(package: &str, arch: Arch) -> Result<PathBuf, Error> {
    let root = workspace_root();
    let status = Command::new(cargo())
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            package,
            "--bin",
            package,
            "--target",
            arch.triple(),
        ])
        .status()
        .map_err(|source| Error::Spawn {
            program: cargo(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Failed(format!(
            "building {package} for {}",
            arch.name()
        )));
    }
    Ok(target_dir()
        .join(arch.triple())
        .join("release")
        .join(package))
}

/// The workspace's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the hypervisor image for `arch`.
pub fn build_hv(arch: Arch) -> Result<PathBuf, Error> {
    build_bare_metal("xen-hv", arch)
}
