//! The guest pack: several guest images in the one boot module QEMU's PVH loader passes (`-initrd`).
//!
//! Layout (little-endian): a 16-byte header `"XHVPACK1"`, `count: u32`, `reserved: u32`, then `count` 64-byte
//! entries `name: [u8; 32]` (NUL-padded UTF-8; also the domain's command line), `module_of: u32`,
//! `reserved: u32`, `vcpus: u32`, `mem_mib: u32`, `offset: u64`, `size: u64`. An entry with `module_of == 0` is
//! a domain whose ELF image is at `offset..offset + size` from the start of the pack; an entry with
//! `module_of == n` is a boot module (an initramfs) for the domain of entry `n - 1`. `cargo xtask hv-boot`
//! writes it.

/// The pack's magic.
pub const MAGIC: &[u8; 8] = b"XHVPACK1";
/// Header size.
pub const HEADER: usize = 16;
/// Entry size.
pub const ENTRY: usize = 64;
/// Bytes of the name field.
pub const NAME_LEN: usize = 32;

/// Why a pack is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackError {
    /// The module does not start with the pack magic.
    BadMagic,
    /// The entry table or an image lies outside the module.
    Truncated,
    /// A name is not UTF-8, or a vCPU or memory count is zero.
    BadEntry(usize),
}

impl core::fmt::Display for PackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("the boot module is not a guest pack (bad magic)"),
            Self::Truncated => f.write_str("the guest pack is truncated"),
            Self::BadEntry(i) => write!(f, "guest pack entry {i} is malformed"),
        }
    }
}

/// One guest in the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry<'a> {
    /// Guest name.
    pub name: &'a str,
    /// For a boot module: the index of the domain entry it belongs to.
    pub module_of: Option<usize>,
    /// vCPUs to give it.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// The ELF image.
    pub image: &'a [u8],
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0u64, |v, x| (v << 8) | u64::from(*x))
}

/// Parses a pack, checking every entry.
pub fn parse(data: &[u8]) -> Result<impl Iterator<Item = PackEntry<'_>> + '_, PackError> {
    if data.len() < HEADER || &data[..8] != MAGIC {
        return Err(PackError::BadMagic);
    }
    let count = le(data, 8, 4) as usize;
    let table_end = count
        .checked_mul(ENTRY)
        .and_then(|n| n.checked_add(HEADER))
        .ok_or(PackError::Truncated)?;
    if table_end > data.len() {
        return Err(PackError::Truncated);
    }
    for i in 0..count {
        entry(data, i)?;
    }
    Ok((0..count).filter_map(move |i| entry(data, i).ok()))
}

fn entry(data: &[u8], i: usize) -> Result<PackEntry<'_>, PackError> {
    let e = &data[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY];
    let name_len = e[..NAME_LEN]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(NAME_LEN);
    let name = core::str::from_utf8(&e[..name_len]).map_err(|_| PackError::BadEntry(i))?;
    let module_of = match le(e, 32, 4) as usize {
        0 => None,
        n if n - 1 < i => Some(n - 1),
        _ => return Err(PackError::BadEntry(i)),
    };
    let vcpus = le(e, 40, 4) as u32;
    let mem_mib = le(e, 44, 4) as u32;
    let offset = usize::try_from(le(e, 48, 8)).map_err(|_| PackError::Truncated)?;
    let size = usize::try_from(le(e, 56, 8)).map_err(|_| PackError::Truncated)?;
    if module_of.is_none() && (name.is_empty() || vcpus == 0 || mem_mib == 0) {
        return Err(PackError::BadEntry(i));
    }
    let image = offset
        .checked_add(size)
        .and_then(|end| data.get(offset..end))
        .ok_or(PackError::Truncated)?;
    Ok(PackEntry {
        name,
        module_of,
        vcpus,
        mem_mib,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(entries: &[(&str, u32, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut off = HEADER + ENTRY * entries.len();
        let mut blobs = Vec::new();
        for (name, vcpus, mem, img) in entries {
            let mut n = [0u8; NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            out.extend_from_slice(&n);
            let module_of: u32 = if name.starts_with("initrd") { 1 } else { 0 };
            out.extend_from_slice(&module_of.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&vcpus.to_le_bytes());
            out.extend_from_slice(&mem.to_le_bytes());
            out.extend_from_slice(&(off as u64).to_le_bytes());
            out.extend_from_slice(&(img.len() as u64).to_le_bytes());
            off += img.len();
            blobs.extend_from_slice(img);
        }
        out.extend_from_slice(&blobs);
        out
    }

    #[test]
    fn parses_entries() {
        let p = pack(&[("hypercalls", 1, 8, b"abc"), ("counter", 2, 16, b"defg")]);
        let v: Vec<_> = parse(&p).expect("valid").collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "hypercalls");
        assert_eq!(v[0].image, b"abc");
        assert_eq!(v[1].vcpus, 2);
        assert_eq!(v[1].mem_mib, 16);
        assert_eq!(v[1].image, b"defg");
        assert_eq!(v[1].module_of, None);
        // A module for the first domain.
        let p = pack(&[("linux", 1, 64, b"elf"), ("initrd", 0, 0, b"cpio")]);
        let v: Vec<_> = parse(&p).expect("valid").collect();
        assert_eq!(v[1].module_of, Some(0));
        assert_eq!(v[1].image, b"cpio");
        // A module may only refer to an earlier entry.
        let mut p = pack(&[("a", 1, 8, b"abc")]);
        p[16 + 32] = 1;
        assert_eq!(parse(&p).err(), Some(PackError::BadEntry(0)));
    }

    #[test]
    fn rejects_bad_packs() {
        assert_eq!(
            parse(b"XHVPACK0\0\0\0\0\0\0\0\0").err(),
            Some(PackError::BadMagic)
        );
        let p = pack(&[("a", 1, 8, b"abc")]);
        assert_eq!(parse(&p[..p.len() - 1]).err(), Some(PackError::Truncated));
        assert_eq!(parse(&p[..20]).err(), Some(PackError::Truncated));
        let p = pack(&[("a", 0, 8, b"abc")]);
        assert_eq!(parse(&p).err(), Some(PackError::BadEntry(0)));
        let mut p = pack(&[("a", 1, 8, b"abc")]);
        p[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&p).err(), Some(PackError::Truncated));
        for n in 0..p.len() {
            let _ = parse(&p[..n]).map(|it| it.count());
        }
    }
}
