//! Shared build and QEMU logic for `cargo xtask` and the end-to-end tests.
//!
//! Every QEMU command line the project uses is built in [`qemu`], so the developer entry point, the test suite
//! and the sandbox start the machine the same way.

pub mod build;
pub mod qemu;

use std::path::PathBuf;

/// Errors of the build and boot helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A child program could not be started.
    #[error("could not run {program}")]
    Spawn {
        /// The program name.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A build step failed.
    #[error("{0} failed")]
    Failed(String),
    /// An I/O error on a file or pipe.
    #[error("I/O error on {0}")]
    Io(String, #[source] std::io::Error),
    /// An unknown architecture was named.
    #[error("unknown architecture {0:?} (expected x86_64 or aarch64)")]
    UnknownArch(String),
}

/// The repository root (the workspace directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A hypervisor target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 with AMD SVM.
    X86_64,
    /// AArch64 at EL2.
    Aarch64,
}

impl Arch {
    /// The bare-metal Rust target triple.
    pub fn triple(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-none",
            Self::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The architecture's name as the tools spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Ok(Self::X86_64),
            "aarch64" | "arm64" => Ok(Self::Aarch64),
            other => Err(Error::UnknownArch(other.to_string())),
        }
    }
}
