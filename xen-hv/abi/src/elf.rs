//! A minimal ELF reader for PVH kernels: the file header, `PT_LOAD` segments and the Xen `PHYS32_ENTRY` note.
//!
//! Both the hypervisor's boot-module domain builder and the toolstack's domain builder load guests with it. It
//! accepts little-endian ELF32 (i386) and ELF64 (x86-64) executables and never panics on malformed input.

use crate::start_info::ELFNOTE_PHYS32_ENTRY;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// Why an image cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with the ELF magic.
    NotElf,
    /// Not a little-endian x86 executable of a supported class.
    Unsupported,
    /// A header, segment or note lies outside the file.
    Truncated,
    /// A segment's file size exceeds its memory size, or its addresses overflow.
    BadSegment,
    /// The image has no `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhEntry,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotElf => "the image is not an ELF file",
            Self::Unsupported => "the image is not a little-endian x86 or aarch64 ELF executable",
            Self::Truncated => "a header or segment of the image lies beyond its end",
            Self::BadSegment => {
                "a loadable segment of the image has inconsistent sizes or addresses"
            }
            Self::NoPvhEntry => "the image has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)",
        })
    }
}

/// One loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Physical load address (`p_paddr`, as PVH loaders use).
    pub paddr: u64,
    /// Offset of the data in the file.
    pub offset: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes in memory; the rest after `filesz` is zeroed.
    pub memsz: u64,
}

/// A parsed ELF image borrowing the file bytes.
#[derive(Debug, Clone, Copy)]
pub struct ElfImage<'a> {
    data: &'a [u8],
    is64: bool,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
}

/// `e_machine` of x86_64 images.
pub const EM_X86_64: u64 = 62;
/// `e_machine` of 32-bit x86 images.
pub const EM_386: u64 = 3;
/// `e_machine` of aarch64 images.
pub const EM_AARCH64: u64 = 183;

fn rd(data: &[u8], off: u64, len: usize) -> Result<u64, ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::Truncated)?;
    let end = start.checked_add(len).ok_or(ElfError::Truncated)?;
    let b = data.get(start..end).ok_or(ElfError::Truncated)?;
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(*byte) << (8 * i);
    }
    Ok(v)
}

impl<'a> ElfImage<'a> {
    /// Parses and validates the file header.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 16 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            _ => return Err(ElfError::Unsupported),
        };
        if data[5] != 1 {
            return Err(ElfError::Unsupported);
        }
        let machine = rd(data, 18, 2)?;
        let kind = rd(data, 16, 2)?;
        if kind != 2
            || !matches!(
                (is64, machine),
                (true, EM_X86_64 | EM_AARCH64) | (false, EM_386)
            )
        {
            return Err(ElfError::Unsupported);
        }
        let (phoff, phentsize, phnum) = if is64 {
            (rd(data, 32, 8)?, rd(data, 54, 2)?, rd(data, 56, 2)?)
        } else {
            (rd(data, 28, 4)?, rd(data, 42, 2)?, rd(data, 44, 2)?)
        };
        let min = if is64 { 56 } else { 32 };
        if phnum > 0 && phentsize < min {
            return Err(ElfError::Unsupported);
        }
        let img = Self {
            data,
            is64,
            phoff,
            phentsize,
            phnum,
        };
        // Every program header must be inside the file.
        for i in 0..phnum {
            img.phdr(i)?;
        }
        Ok(img)
    }

    /// The `e_machine` field ([`EM_X86_64`], [`EM_386`] or [`EM_AARCH64`]).
    pub fn machine(&self) -> u64 {
        rd(self.data, 18, 2).unwrap_or(0)
    }

    /// The entry point (`e_entry`).
    pub fn entry(&self) -> u64 {
        if self.is64 {
            rd(self.data, 24, 8).unwrap_or(0)
        } else {
            rd(self.data, 24, 4).unwrap_or(0)
        }
    }

    /// True for ELF64.
    pub fn is_64(&self) -> bool {
        self.is64
    }

    /// (type, offset, paddr, filesz, memsz) of program header `i`.
    fn phdr(&self, i: u64) -> Result<(u32, u64, u64, u64, u64), ElfError> {
        let base = i
            .checked_mul(self.phentsize)
            .and_then(|o| o.checked_add(self.phoff))
            .ok_or(ElfError::Truncated)?;
        let d = self.data;
        let field =
            |o: u64, len: usize| rd(d, base.checked_add(o).ok_or(ElfError::Truncated)?, len);
        let ty = field(0, 4)? as u32;
        if self.is64 {
            Ok((
                ty,
                field(8, 8)?,
                field(24, 8)?,
                field(32, 8)?,
                field(40, 8)?,
            ))
        } else {
            Ok((
                ty,
                field(4, 4)?,
                field(12, 4)?,
                field(16, 4)?,
                field(20, 4)?,
            ))
        }
    }

    /// The `PT_LOAD` segments, validated: data inside the file, `filesz <= memsz`, no address overflow.
    pub fn load_segments(&self) -> impl Iterator<Item = Result<LoadSegment, ElfError>> + '_ {
        (0..self.phnum).filter_map(move |i| match self.phdr(i) {
            Err(e) => Some(Err(e)),
            Ok((ty, offset, paddr, filesz, memsz)) if ty == PT_LOAD => {
                Some(self.check_segment(LoadSegment {
                    paddr,
                    offset,
                    filesz,
                    memsz,
                }))
            }
            Ok(_) => None,
        })
    }

    fn check_segment(&self, s: LoadSegment) -> Result<LoadSegment, ElfError> {
        if s.filesz > s.memsz || s.paddr.checked_add(s.memsz).is_none() {
            return Err(ElfError::BadSegment);
        }
        let end = s.offset.checked_add(s.filesz).ok_or(ElfError::Truncated)?;
        if end > self.data.len() as u64 {
            return Err(ElfError::Truncated);
        }
        Ok(s)
    }

    /// The file bytes of a segment returned by [`Self::load_segments`].
    pub fn segment_data(&self, s: &LoadSegment) -> Result<&'a [u8], ElfError> {
        let start = usize::try_from(s.offset).map_err(|_| ElfError::Truncated)?;
        let len = usize::try_from(s.filesz).map_err(|_| ElfError::Truncated)?;
        self.data
            .get(start..start.checked_add(len).ok_or(ElfError::Truncated)?)
            .ok_or(ElfError::Truncated)
    }

    /// The lowest and one-past-highest physical address the segments occupy; `None` without segments.
    pub fn phys_extent(&self) -> Result<Option<(u64, u64)>, ElfError> {
        let mut ext: Option<(u64, u64)> = None;
        for s in self.load_segments() {
            let s = s?;
            let end = s.paddr + s.memsz;
            ext = Some(match ext {
                None => (s.paddr, end),
                Some((lo, hi)) => (lo.min(s.paddr), hi.max(end)),
            });
        }
        Ok(ext)
    }

    /// The 32-bit physical PVH entry point from the `"Xen"` note of type 18.
    pub fn pvh_entry(&self) -> Result<u64, ElfError> {
        for i in 0..self.phnum {
            let (ty, offset, _, filesz, _) = self.phdr(i)?;
            if ty != PT_NOTE {
                continue;
            }
            let end = offset.checked_add(filesz).ok_or(ElfError::Truncated)?;
            let mut at = offset;
            while at.checked_add(12).is_some_and(|e| e <= end) {
                let namesz = rd(self.data, at, 4)?;
                let descsz = rd(self.data, at + 4, 4)?;
                let ty = rd(self.data, at + 8, 4)? as u32;
                let name_at = at + 12;
                let desc_at = name_at
                    .checked_add(namesz.next_multiple_of(4))
                    .ok_or(ElfError::Truncated)?;
                let next = desc_at
                    .checked_add(descsz.next_multiple_of(4))
                    .ok_or(ElfError::Truncated)?;
                if next > end {
                    return Err(ElfError::Truncated);
                }
                let is_xen = namesz == 4
                    && rd(self.data, name_at, 4)? == u64::from(u32::from_le_bytes(*b"Xen\0"));
                if is_xen && ty == ELFNOTE_PHYS32_ENTRY {
                    return match descsz {
                        4 => rd(self.data, desc_at, 4),
                        8 => rd(self.data, desc_at, 8),
                        _ => Err(ElfError::Truncated),
                    };
                }
                at = next;
            }
        }
        Err(ElfError::NoPvhEntry)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an ELF64 executable with one PT_LOAD (paddr 1 MiB, 8 KiB in memory) and one PT_NOTE holding the
    /// PVH entry.
    pub(crate) fn elf64(entry_desc: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        // PT_LOAD: offset 0x100, paddr 0x100000, filesz 0x10, memsz 0x2000.
        let p = 64;
        f[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&0x100u64.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&0x10u64.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&0x2000u64.to_le_bytes());
        // PT_NOTE at 0x180.
        let n = 64 + 56;
        let note_len = 12 + 4 + entry_desc.len().next_multiple_of(4);
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        f[n + 8..n + 16].copy_from_slice(&0x180u64.to_le_bytes());
        f[n + 32..n + 40].copy_from_slice(&(note_len as u64).to_le_bytes());
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&(entry_desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&18u32.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(entry_desc);
        note.resize(note_len, 0);
        f[0x180..0x180 + note_len].copy_from_slice(&note);
        f[0x100..0x110].copy_from_slice(&[0xaa; 16]);
        f
    }

    #[test]
    fn reads_segments_and_pvh_entry() {
        let f = elf64(&0x10_0040u64.to_le_bytes());
        let img = ElfImage::parse(&f).expect("valid image");
        assert!(img.is_64());
        let segs: Vec<_> = img
            .load_segments()
            .collect::<Result<_, _>>()
            .expect("segments");
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].paddr, 0x10_0000);
        assert_eq!(segs[0].memsz, 0x2000);
        assert_eq!(img.segment_data(&segs[0]).expect("data"), &[0xaa; 16]);
        assert_eq!(img.phys_extent(), Ok(Some((0x10_0000, 0x10_2000))));
        assert_eq!(img.pvh_entry(), Ok(0x10_0040));
        // A 4-byte descriptor works too.
        let f = elf64(&0x10_0080u32.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&f).and_then(|i| i.pvh_entry()),
            Ok(0x10_0080)
        );
    }

    #[test]
    fn rejects_malformed_images() {
        assert_eq!(ElfImage::parse(b"hello").err(), Some(ElfError::NotElf));
        let mut f = elf64(&[0; 8]);
        f[18] = 40; // ARM
        assert_eq!(ElfImage::parse(&f).err(), Some(ElfError::Unsupported));
        let f = elf64(&[0; 8]);
        assert_eq!(ElfImage::parse(&f[..100]).err(), Some(ElfError::Truncated));
        // filesz > memsz.
        let mut f = elf64(&[0; 8]);
        f[64 + 32..64 + 40].copy_from_slice(&0x3000u64.to_le_bytes());
        let img = ElfImage::parse(&f).expect("header ok");
        assert!(img.load_segments().any(|s| s.is_err()));
        // Segment data beyond the file.
        let mut f = elf64(&[0; 8]);
        f[64 + 8..64 + 16].copy_from_slice(&0x1f8u64.to_le_bytes());
        let img = ElfImage::parse(&f).expect("header ok");
        assert_eq!(img.load_segments().next(), Some(Err(ElfError::Truncated)));
        // A note of another type: no entry.
        let mut f = elf64(&[0; 8]);
        f[0x180 + 8] = 17;
        assert_eq!(
            ElfImage::parse(&f).and_then(|i| i.pvh_entry()),
            Err(ElfError::NoPvhEntry)
        );
        // Every truncation of a valid file gives an error or a valid parse, never a panic.
        let f = elf64(&[1; 8]);
        for n in 0..f.len() {
            if let Ok(img) = ElfImage::parse(&f[..n]) {
                let _ = img.pvh_entry();
                let _ = img.load_segments().count();
            }
        }
    }
}
