//! The pure part of a PVH domain builder, shared by the hypervisor (domains from boot modules) and the toolstack
//! (`virsh start`): checking where an ELF image loads, and writing `hvm_start_info` with its module list, memory
//! map and command line into one guest page.

use crate::elf::{ElfError, ElfImage};
use crate::plain::Plain;
use crate::start_info::{HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};

/// Why a PVH domain cannot be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvhError {
    /// The image itself is unusable.
    Elf(ElfError),
    /// A segment or the entry point falls outside `[min_gpa, mem_bytes)`.
    OutsideMemory {
        /// First byte of the offending range.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// The start info, tables and command line do not fit in one page.
    StartInfoTooBig(usize),
}

impl core::fmt::Display for PvhError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "{e}"),
            Self::OutsideMemory { start, end } => write!(
                f,
                "the image range {start:#x}..{end:#x} lies outside the domain's loadable memory"
            ),
            Self::StartInfoTooBig(n) => {
                write!(f, "the start info needs {n} bytes, more than one page")
            }
        }
    }
}

impl From<ElfError> for PvhError {
    fn from(e: ElfError) -> Self {
        Self::Elf(e)
    }
}

/// Checks that every loadable segment of `image` and its PVH entry lie in `[min_gpa, mem_bytes)`; returns the
/// entry point.
pub fn check_layout(image: &ElfImage<'_>, min_gpa: u64, mem_bytes: u64) -> Result<u64, PvhError> {
    let entry = image.pvh_entry()?;
    let mut inside_segment = false;
    for seg in image.load_segments() {
        let seg = seg?;
        let end = seg.paddr + seg.memsz;
        if seg.paddr < min_gpa || end > mem_bytes {
            return Err(PvhError::OutsideMemory {
                start: seg.paddr,
                end,
            });
        }
        inside_segment |= (seg.paddr..end).contains(&entry);
    }
    if !inside_segment {
        return Err(PvhError::OutsideMemory {
            start: entry,
            end: entry + 1,
        });
    }
    Ok(entry)
}

/// Records the guest-physical address of the ACPI RSDP in the start info [`write_start_info`] wrote at the
/// start of `page`.
pub fn set_rsdp(page: &mut [u8], rsdp: u64) {
    let at = core::mem::offset_of!(HvmStartInfo, rsdp_paddr);
    if let Some(b) = page.get_mut(at..at + 8) {
        b.copy_from_slice(&rsdp.to_le_bytes());
    }
}

/// Writes `hvm_start_info` (version 1) at the start of `page`, which the guest sees at `page_gpa`, followed by
/// the module list, the memory map and the NUL-terminated command line; returns the guest-physical address of
/// the start info (what `ebx` holds at entry).
pub fn write_start_info(
    page: &mut [u8],
    page_gpa: u64,
    memmap: &[HvmMemmapEntry],
    modules: &[HvmModlistEntry],
    cmdline: &[u8],
) -> Result<u64, PvhError> {
    let si_len = core::mem::size_of::<HvmStartInfo>();
    let mod_at = si_len.next_multiple_of(8);
    let map_at = mod_at + core::mem::size_of_val(modules);
    let cmd_at = map_at + core::mem::size_of_val(memmap);
    let end = cmd_at + cmdline.len() + 1;
    if end > page.len() {
        return Err(PvhError::StartInfoTooBig(end));
    }
    page[..end].fill(0);
    let si = HvmStartInfo {
        magic: HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            page_gpa + mod_at as u64
        },
        cmdline_paddr: page_gpa + cmd_at as u64,
        rsdp_paddr: 0,
        memmap_paddr: if memmap.is_empty() {
            0
        } else {
            page_gpa + map_at as u64
        },
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    page[..si_len].copy_from_slice(si.as_bytes());
    for (i, m) in modules.iter().enumerate() {
        let at = mod_at + i * core::mem::size_of::<HvmModlistEntry>();
        page[at..at + core::mem::size_of::<HvmModlistEntry>()].copy_from_slice(m.as_bytes());
    }
    for (i, m) in memmap.iter().enumerate() {
        let at = map_at + i * core::mem::size_of::<HvmMemmapEntry>();
        page[at..at + core::mem::size_of::<HvmMemmapEntry>()].copy_from_slice(m.as_bytes());
    }
    page[cmd_at..cmd_at + cmdline.len()].copy_from_slice(cmdline);
    Ok(page_gpa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_checks_segments_and_entry() {
        let f = crate::elf::tests::elf64(&0x10_0040u64.to_le_bytes());
        let img = ElfImage::parse(&f).expect("valid");
        assert_eq!(check_layout(&img, 0x10_0000, 8 << 20), Ok(0x10_0040));
        assert_eq!(
            check_layout(&img, 0x10_0000, 0x10_1000),
            Err(PvhError::OutsideMemory {
                start: 0x10_0000,
                end: 0x10_2000
            })
        );
        assert!(check_layout(&img, 0x20_0000, 8 << 20).is_err());
        let f = crate::elf::tests::elf64(&0x50_0000u64.to_le_bytes());
        let img = ElfImage::parse(&f).expect("valid");
        assert_eq!(
            check_layout(&img, 0x10_0000, 8 << 20),
            Err(PvhError::OutsideMemory {
                start: 0x50_0000,
                end: 0x50_0001
            })
        );
    }

    #[test]
    fn start_info_layout_points_inside_the_page() {
        let mut page = [0xffu8; 4096];
        let map = [HvmMemmapEntry {
            addr: 0,
            size: 8 << 20,
            kind: 1,
            reserved: 0,
        }];
        let m = [HvmModlistEntry {
            paddr: 0x40_0000,
            size: 0x1000,
            cmdline_paddr: 0,
            reserved: 0,
        }];
        let gpa = write_start_info(&mut page, 0x1000, &map, &m, b"console=hvc0").expect("fits");
        assert_eq!(gpa, 0x1000);
        let si = HvmStartInfo::read_from(&page).expect("start info");
        assert_eq!(si.magic, HVM_START_MAGIC);
        assert_eq!((si.version, si.nr_modules, si.memmap_entries), (1, 1, 1));
        let off = |pa: u64| (pa - 0x1000) as usize;
        assert_eq!(
            HvmModlistEntry::read_from(&page[off(si.modlist_paddr)..]),
            Some(m[0])
        );
        assert_eq!(
            HvmMemmapEntry::read_from(&page[off(si.memmap_paddr)..]),
            Some(map[0])
        );
        let c = off(si.cmdline_paddr);
        assert_eq!(&page[c..c + 13], b"console=hvc0\0");
        // Without modules or a map the pointers are 0 ("absent").
        let gpa = write_start_info(&mut page, 0x2000, &[], &[], b"").expect("fits");
        let si = HvmStartInfo::read_from(&page).expect("start info");
        assert_eq!((gpa, si.modlist_paddr, si.memmap_paddr), (0x2000, 0, 0));
        let long = [b'x'; 5000];
        assert_eq!(
            write_start_info(&mut page, 0, &map, &m, &long),
            Err(PvhError::StartInfoTooBig(56 + 32 + 24 + 5001))
        );
    }
}
