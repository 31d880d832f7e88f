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

/// Builds the hypervisor image for `arch`: the ELF on x86_64 (QEMU boots it through its PVH note), a Linux
/// arm64 `Image` made from the ELF on aarch64 (QEMU only passes an initrd and the device tree in x0 to images
/// it takes for Linux).
pub fn build_hv(arch: Arch) -> Result<PathBuf, Error> {
    let elf = build_bare_metal("xen-hv", arch)?;
    match arch {
        Arch::X86_64 => Ok(elf),
        Arch::Aarch64 => {
            let data = std::fs::read(&elf).map_err(|e| Error::Io(elf.display().to_string(), e))?;
            let image = flat_image(&data)?;
            let out = elf.with_file_name("xen-hv.Image");
            std::fs::write(&out, image).map_err(|e| Error::Io(out.display().to_string(), e))?;
            Ok(out)
        }
    }
}

/// The flat memory image of an ELF's `PT_LOAD` segments, from the lowest physical address to the end of the
/// last segment's file data (zero-filled gaps; the BSS past the end is cleared by the image itself).
pub fn flat_image(elf: &[u8]) -> Result<Vec<u8>, Error> {
    let bad =
        |e: xen_abi::elf::ElfError| Error::Failed(format!("reading the hypervisor ELF ({e})"));
    let img = xen_abi::elf::ElfImage::parse(elf).map_err(bad)?;
    let segs: Vec<_> = img.load_segments().collect::<Result<_, _>>().map_err(bad)?;
    let base =
        segs.iter().map(|s| s.paddr).min().ok_or_else(|| {
            Error::Failed("finding a loadable segment in the hypervisor ELF".into())
        })?;
    let mut out = Vec::new();
    for s in &segs {
        let data = img.segment_data(s).map_err(bad)?;
        let at = (s.paddr - base) as usize;
        if out.len() < at + data.len() {
            out.resize(at + data.len(), 0);
        }
        out[at..at + data.len()].copy_from_slice(data);
    }
    Ok(out)
}

/// An in-tree guest: binary, instances, MiB of memory, vCPUs.
pub type GuestSpec = (&'static str, u32, u32, u32);

/// The in-tree test guests. `counter` runs twice so two CPU-bound domains compete for the processors; `smp` has
/// two vCPUs. All of them run when no guest is named.
pub const TEST_GUESTS: &[GuestSpec] = &[
    ("hypercalls", 1, 8, 1),
    ("counter", 2, 8, 1),
    ("smp", 1, 8, 3),
    ("hostile", 1, 8, 1),
    ("triplefault", 1, 8, 1),
    ("sleeper", 1, 8, 1),
];

/// Guests that only run when named: `failing` reports FAIL on purpose, to check that a failure is detected;
/// `suspender` suspends itself for a toolstack to save (`xl save` / `xl restore`).
pub const EXTRA_GUESTS: &[GuestSpec] = &[
    ("failing", 1, 8, 1),
    ("ticker", 1, 8, 1),
    ("echo", 1, 8, 1),
    ("idle", 1, 2, 1),
    ("suspender", 1, 8, 1),
];

/// The test guests that run on aarch64 when none is named: the x86 set without `triplefault` (an x86 event).
pub const AARCH64_TEST_GUESTS: &[GuestSpec] = &[
    ("hypercalls", 1, 8, 1),
    ("counter", 2, 8, 1),
    ("smp", 1, 8, 3),
    ("hostile", 1, 8, 1),
    ("sleeper", 1, 8, 1),
];

/// The default guest set of `arch`.
pub fn test_guests(arch: Arch) -> &'static [GuestSpec] {
    match arch {
        Arch::X86_64 => TEST_GUESTS,
        Arch::Aarch64 => AARCH64_TEST_GUESTS,
    }
}

/// Builds the test guests (package `xen-test-guests`) for x86_64 and returns each binary's path.
pub fn build_guests(names: &[&str]) -> Result<Vec<(String, PathBuf)>, Error> {
    build_guests_for(Arch::X86_64, names)
}

/// Builds the test guests for `arch` and returns each binary's path.
pub fn build_guests_for(arch: Arch, names: &[&str]) -> Result<Vec<(String, PathBuf)>, Error> {
    let root = workspace_root();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "xen-test-guests",
        "--target",
        arch.triple(),
    ]);
    for n in names {
        cmd.args(["--bin", n]);
    }
    let status = cmd.status().map_err(|source| Error::Spawn {
        program: cargo(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Failed("building the test guests".into()));
    }
    let dir = target_dir().join(arch.triple()).join("release");
    Ok(names.iter().map(|n| (n.to_string(), dir.join(n))).collect())
}

/// One guest for [`pack`].
#[derive(Debug, Clone)]
pub struct PackGuest {
    /// Domain name (also its command line).
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// The ELF image.
    pub image: Vec<u8>,
    /// A boot module (an initramfs), passed to the guest as module 0.
    pub module: Option<Vec<u8>>,
}

/// (name, module_of, vcpus, mem_mib, data) of one pack entry.
type PackEntry<'a> = (&'a [u8], u32, u32, u32, &'a [u8]);

/// Serialises guests into the pack format xen-hv reads from its boot module (see `xen-hv/hv/src/modpack.rs`):
/// `"XHVPACK1"`, `count: u32`, `0: u32`, then 64-byte entries (name[32], module_of u32, 0 u32, vcpus u32,
/// mem_mib u32, offset u64, size u64) and the data. Each guest's module follows as an entry whose `module_of` is
/// the guest's entry index + 1.
pub fn pack(guests: &[PackGuest]) -> Result<Vec<u8>, Error> {
    let mut entries: Vec<PackEntry<'_>> = Vec::new();
    for g in guests {
        let name = g.name.as_bytes();
        if name.is_empty() || name.len() >= 32 {
            return Err(Error::Failed(format!("packing guest name {:?}", g.name)));
        }
        let index = entries.len() as u32;
        entries.push((name, 0, g.vcpus, g.mem_mib, &g.image));
        if let Some(m) = &g.module {
            entries.push((b"module", index + 1, 0, 0, m));
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"XHVPACK1");
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut offset = 16 + 64 * entries.len();
    for (name, module_of, vcpus, mem_mib, data) in &entries {
        let mut field = [0u8; 32];
        field[..name.len()].copy_from_slice(name);
        out.extend_from_slice(&field);
        out.extend_from_slice(&module_of.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&vcpus.to_le_bytes());
        out.extend_from_slice(&mem_mib.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        offset += data.len();
    }
    for (.., data) in &entries {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Builds the named x86_64 test guests (all when `names` is empty) and writes their pack to the target
/// directory; returns the pack's path and the domain names in it.
pub fn build_guest_pack(names: &[String]) -> Result<(PathBuf, Vec<String>), Error> {
    build_guest_pack_for(Arch::X86_64, names)
}

/// Builds the named test guests for `arch` (its default set when `names` is empty) and writes their pack to
/// the target directory; returns the pack's path and the domain names in it.
pub fn build_guest_pack_for(arch: Arch, names: &[String]) -> Result<(PathBuf, Vec<String>), Error> {
    let selected: Vec<&GuestSpec> = if names.is_empty() {
        test_guests(arch).iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                TEST_GUESTS
                    .iter()
                    .chain(EXTRA_GUESTS)
                    .find(|g| g.0 == n)
                    .ok_or_else(|| {
                        let known: Vec<_> = TEST_GUESTS
                            .iter()
                            .chain(EXTRA_GUESTS)
                            .map(|g| g.0)
                            .collect();
                        Error::Failed(format!(
                            "finding guest {n:?} (in-tree guests: {})",
                            known.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let bins: Vec<&str> = selected.iter().map(|g| g.0).collect();
    let built = build_guests_for(arch, &bins)?;
    let mut guests = Vec::new();
    for ((bin, instances, mem, vcpus), (_, path)) in selected.iter().zip(&built) {
        let image = std::fs::read(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        for i in 1..=*instances {
            let name = if *instances > 1 {
                format!("{bin}-{i}")
            } else {
                bin.to_string()
            };
            guests.push(PackGuest {
                name,
                vcpus: *vcpus,
                mem_mib: *mem,
                image: image.clone(),
                module: None,
            });
        }
    }
    let names = guests.iter().map(|g| g.name.clone()).collect();
    // One file per selection, so concurrent boots with different guests do not overwrite each other's pack.
    let path = target_dir().join(format!(
        "xen-hv-guests-{}-{}.pack",
        arch.name(),
        bins.join("+")
    ));
    std::fs::write(&path, pack(&guests)?).map_err(|e| Error::Io(path.display().to_string(), e))?;
    Ok((path, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_layout() {
        let p = pack(&[
            PackGuest {
                name: "a".into(),
                vcpus: 1,
                mem_mib: 8,
                image: b"xyz".to_vec(),
                module: None,
            },
            PackGuest {
                name: "bb".into(),
                vcpus: 2,
                mem_mib: 16,
                image: b"12".to_vec(),
                module: Some(b"cpio".to_vec()),
            },
        ])
        .expect("packs");
        assert_eq!(&p[..8], b"XHVPACK1");
        assert_eq!(p[8], 3, "two domains and one module");
        let entry = |i: usize| &p[16 + 64 * i..16 + 64 * (i + 1)];
        assert_eq!(&entry(0)[..1], b"a");
        assert_eq!(entry(0)[32], 0);
        assert_eq!(entry(0)[40], 1);
        assert_eq!(entry(0)[44], 8);
        assert_eq!(entry(0)[48] as usize, 16 + 3 * 64);
        assert_eq!(&entry(2)[..6], b"module");
        assert_eq!(entry(2)[32], 2, "module of entry 1");
        let data = 16 + 3 * 64;
        assert_eq!(&p[data..], b"xyz12cpio");
        let long = PackGuest {
            name: "x".repeat(32),
            vcpus: 1,
            mem_mib: 8,
            image: Vec::new(),
            module: None,
        };
        assert!(pack(&[long]).is_err());
    }
}
