//! Shared helpers: scratch directories and command checks.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use xen_storage::{PoolDef, PoolRef, StorageDriver};

/// A scratch directory under cargo's per-target temporary directory, removed on drop.
pub struct Scratch {
    /// The directory.
    pub root: PathBuf,
}

impl Scratch {
    /// A fresh, empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "xen-storage-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("creating scratch dir");
        Scratch { root }
    }

    /// The daemon's configuration directory.
    pub fn config(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// The daemon's runtime state directory.
    pub fn state(&self) -> PathBuf {
        self.root.join("run")
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A driver on this directory's config and state dirs (a daemon start).
    pub fn driver(&self) -> StorageDriver {
        StorageDriver::open(&self.config(), &self.state()).expect("opening the storage driver")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Unmount anything a failed fs-pool test left behind before removing the tree.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                if let Some(target) = line.split(' ').nth(1) {
                    if Path::new(target).starts_with(&self.root) {
                        let _ = Command::new("umount").arg(target).status();
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Defines, builds and starts a dir pool at `<scratch>/<name>`.
pub fn running_dir_pool(driver: &StorageDriver, scratch: &Scratch, name: &str) -> PoolRef {
    let pool = driver
        .define_pool(PoolDef::dir(name, scratch.path(name)))
        .expect("define");
    driver.build_pool(&pool, 0).expect("build");
    driver.start_pool(&pool, 0).expect("start");
    pool
}

/// `qemu-img info --output=json` of a file.
pub fn qemu_img_info(path: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .expect("running qemu-img info");
    assert!(
        out.status.success(),
        "qemu-img info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img info JSON")
}

/// Bytes allocated on disk (`stat` blocks × 512).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// Whether the tests run as root (mounting needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
