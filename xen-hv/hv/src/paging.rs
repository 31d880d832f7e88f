//! Page tables as data: building the 4-level nested tables of a domain (x86 NPT or aarch64 stage-2 with a 4 KiB
//! granule and a 48-bit IPA space, which have the same shape and differ only in their descriptor bits), and
//! walking a guest's own x86 page tables to turn a guest-virtual hypercall pointer into a guest-physical address. Memory is reached through
//! [`PhysMem`], so the logic is tested on the host against a fake memory.

/// Present.
pub const PTE_P: u64 = 1;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// User (NPT entries need it: guest accesses count as user accesses).
pub const PTE_US: u64 = 1 << 2;
/// Large page.
pub const PTE_PS: u64 = 1 << 7;
/// Address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Flags of an NPT leaf or table entry granting everything.
pub const NPT_RWX: u64 = PTE_P | PTE_RW | PTE_US;

/// Stage-2 leaf attributes for guest RAM: normal write-back memory (MemAttr 0b1111), read/write (S2AP 0b11),
/// inner shareable, access flag set, executable.
pub const S2_RAM: u64 = (0xf << 2) | (3 << 6) | (3 << 8) | (1 << 10);

/// The descriptor format of a table tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// x86 long-mode entries (present bit 0, large-page bit 7), as AMD nested paging uses.
    Npt,
    /// aarch64 VMSAv8-64 stage-2 descriptors, 4 KiB granule, starting at level 0 (`VTCR_EL2.SL0` = 2).
    Stage2,
}

impl Format {
    /// The descriptor that points at the next-level table `t`.
    fn table(self, t: u64) -> u64 {
        match self {
            Self::Npt => t | NPT_RWX,
            Self::Stage2 => t | 3,
        }
    }

    /// The 4 KiB leaf descriptor for `pa` with `flags`.
    fn leaf(self, pa: u64, flags: u64) -> u64 {
        match self {
            Self::Npt => pa | flags | PTE_P,
            Self::Stage2 => pa | flags | 3,
        }
    }

    /// True when entry `e` at `level` (0 = the 4 KiB level) maps a large page/block instead of a table.
    fn large(self, e: u64, level: u32) -> bool {
        match self {
            Self::Npt => level > 0 && e & PTE_PS != 0,
            Self::Stage2 => level > 0 && e & 2 == 0,
        }
    }
}

/// Access to physical memory for table reads and writes.
pub trait PhysMem {
    /// Reads the 8-byte entry at `pa`; `None` when `pa` is not memory.
    fn read_u64(&self, pa: u64) -> Option<u64>;
    /// Writes the 8-byte entry at `pa`; false when `pa` is not memory.
    fn write_u64(&mut self, pa: u64, v: u64) -> bool;
}

/// Supplies zeroed frames for new tables.
pub trait FrameSource {
    /// A zeroed 4 KiB frame, `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<u64>;
}

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    /// No frame for a new table.
    NoMemory,
    /// An address is not 4 KiB-aligned or beyond 48 bits.
    BadAddress(u64),
    /// A large page already covers the address.
    Conflict(u64),
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoMemory => f.write_str("out of memory for page tables"),
            Self::BadAddress(a) => write!(f, "address {a:#x} cannot be mapped"),
            Self::Conflict(a) => write!(f, "a large page already maps {a:#x}"),
        }
    }
}

fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

/// A 4-level table tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTable {
    /// Physical address of the top-level table (the `N_CR3` or `VTTBR_EL2` base).
    pub root: u64,
    /// Descriptor format.
    pub format: Format,
}

impl PageTable {
    /// A new, empty table in the NPT format.
    pub fn new<F: FrameSource>(frames: &mut F) -> Result<Self, PagingError> {
        Self::with_format(frames, Format::Npt)
    }

    /// A new, empty table in `format`.
    pub fn with_format<F: FrameSource>(
        frames: &mut F,
        format: Format,
    ) -> Result<Self, PagingError> {
        Ok(Self {
            root: frames.alloc_table().ok_or(PagingError::NoMemory)?,
            format,
        })
    }

    fn leaf_slot<M: PhysMem, F: FrameSource>(
        &self,
        mem: &mut M,
        frames: Option<&mut F>,
        va: u64,
    ) -> Result<Option<u64>, PagingError> {
        let mut frames = frames;
        let mut table = self.root;
        for level in (1..4).rev() {
            let slot = table + 8 * index(va, level);
            let e = mem.read_u64(slot).ok_or(PagingError::BadAddress(slot))?;
            if e & PTE_P == 0 {
                let Some(f) = frames.as_deref_mut() else {
                    return Ok(None);
                };
                let t = f.alloc_table().ok_or(PagingError::NoMemory)?;
                if !mem.write_u64(slot, self.format.table(t)) {
                    return Err(PagingError::BadAddress(slot));
                }
                table = t;
            } else if self.format.large(e, level) {
                return Err(PagingError::Conflict(va));
            } else {
                table = e & ADDR_MASK;
            }
        }
        Ok(Some(table + 8 * index(va, 0)))
    }

    /// Maps the 4 KiB page at `va` to `pa` with `flags`, creating tables as needed.
    pub fn map<M: PhysMem, F: FrameSource>(
        &self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        pa: u64,
        flags: u64,
    ) -> Result<(), PagingError> {
        if va & 0xfff != 0 || va >> 48 != 0 {
            return Err(PagingError::BadAddress(va));
        }
        if pa & !ADDR_MASK != 0 {
            return Err(PagingError::BadAddress(pa));
        }
        let slot = self
            .leaf_slot(mem, Some(frames), va)?
            .ok_or(PagingError::NoMemory)?;
        if mem.write_u64(slot, self.format.leaf(pa, flags)) {
            Ok(())
        } else {
            Err(PagingError::BadAddress(slot))
        }
    }

    /// Removes the mapping of `va`, returning the physical address it had.
    pub fn unmap<M: PhysMem>(&self, mem: &mut M, va: u64) -> Option<u64> {
        let slot = self.leaf_slot::<M, NoFrames>(mem, None, va).ok()??;
        let e = mem.read_u64(slot)?;
        if e & PTE_P == 0 {
            return None;
        }
        mem.write_u64(slot, 0);
        Some(e & ADDR_MASK)
    }

    /// The physical address `va` maps to, following large pages too.
    pub fn translate<M: PhysMem>(&self, mem: &M, va: u64) -> Option<u64> {
        let mut table = self.root;
        for level in (0..4).rev() {
            let e = mem.read_u64(table + 8 * index(va, level))?;
            if e & PTE_P == 0 {
                return None;
            }
            if level == 0 || (level < 3 && self.format.large(e, level)) {
                let size = 1u64 << (12 + 9 * level);
                return Some((e & ADDR_MASK & !(size - 1)) | (va & (size - 1)));
            }
            table = e & ADDR_MASK;
        }
        None
    }

    /// Every table frame of this tree (root included), for freeing a domain.
    pub fn table_frames<M: PhysMem>(&self, mem: &M, out: &mut impl FnMut(u64)) {
        fn walk<M: PhysMem>(
            mem: &M,
            format: Format,
            table: u64,
            level: u32,
            out: &mut impl FnMut(u64),
        ) {
            if level > 0 {
                for i in 0..512 {
                    let Some(e) = mem.read_u64(table + 8 * i) else {
                        continue;
                    };
                    if e & PTE_P != 0 && !format.large(e, level) {
                        walk(mem, format, e & ADDR_MASK, level - 1, out);
                    }
                }
            }
            out(table);
        }
        walk(mem, self.format, self.root, 3, out);
    }
}

struct NoFrames;
impl FrameSource for NoFrames {
    fn alloc_table(&mut self) -> Option<u64> {
        None
    }
}

/// The guest's paging-relevant control state, as held in its VMCB/VMCS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestPaging {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// Why a guest-virtual address did not translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// No present mapping (or a table outside guest memory).
    NotMapped(u64),
    /// A write to a read-only page with CR0.WP set.
    ReadOnly(u64),
    /// A non-canonical long-mode address, or a 32-bit address above 4 GiB.
    BadAddress(u64),
}

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;

/// Translates guest-virtual `gva` to guest-physical through the guest's own tables. `read` reads 8 bytes of
/// guest-physical memory (through the nested tables); for 2-level 32-bit paging the low 4 bytes are used.
pub fn guest_walk(
    p: &GuestPaging,
    gva: u64,
    write: bool,
    read: impl Fn(u64) -> Option<u64>,
) -> Result<u64, WalkError> {
    let wp = p.cr0 & CR0_WP != 0;
    let check = |e: u64, at: u64| -> Result<(), WalkError> {
        if e & PTE_P == 0 {
            return Err(WalkError::NotMapped(at));
        }
        if write && wp && e & PTE_RW == 0 {
            return Err(WalkError::ReadOnly(at));
        }
        Ok(())
    };
    if p.cr0 & CR0_PG == 0 {
        return if gva >> 32 == 0 {
            Ok(gva)
        } else {
            Err(WalkError::BadAddress(gva))
        };
    }
    if p.efer & EFER_LMA != 0 {
        // Canonical check for 48-bit addresses.
        let top = (gva as i64) >> 47;
        if top != 0 && top != -1 {
            return Err(WalkError::BadAddress(gva));
        }
        let mut table = p.cr3 & ADDR_MASK;
        for level in (0..4).rev() {
            let e = read(table + 8 * index(gva, level)).ok_or(WalkError::NotMapped(gva))?;
            check(e, gva)?;
            if level == 0 || (level < 3 && e & PTE_PS != 0) {
                let size = 1u64 << (12 + 9 * level);
                return Ok((e & ADDR_MASK & !(size - 1)) | (gva & (size - 1)));
            }
            table = e & ADDR_MASK;
        }
        return Err(WalkError::NotMapped(gva));
    }
    if gva >> 32 != 0 {
        return Err(WalkError::BadAddress(gva));
    }
    if p.cr4 & CR4_PAE != 0 {
        let pdpte =
            read((p.cr3 & 0xffff_ffe0) + 8 * (gva >> 30)).ok_or(WalkError::NotMapped(gva))?;
        if pdpte & PTE_P == 0 {
            return Err(WalkError::NotMapped(gva));
        }
        let pde = read((pdpte & ADDR_MASK) + 8 * ((gva >> 21) & 0x1ff))
            .ok_or(WalkError::NotMapped(gva))?;
        check(pde, gva)?;
        if pde & PTE_PS != 0 {
            return Ok((pde & ADDR_MASK & !0x1f_ffff) | (gva & 0x1f_ffff));
        }
        let pte =
            read((pde & ADDR_MASK) + 8 * ((gva >> 12) & 0x1ff)).ok_or(WalkError::NotMapped(gva))?;
        check(pte, gva)?;
        return Ok((pte & ADDR_MASK) | (gva & 0xfff));
    }
    let pde = read((p.cr3 & 0xffff_f000) + 4 * (gva >> 22)).ok_or(WalkError::NotMapped(gva))?
        & 0xffff_ffff;
    check(pde, gva)?;
    if pde & PTE_PS != 0 && p.cr4 & CR4_PSE != 0 {
        return Ok((pde & 0xffc0_0000) | (gva & 0x3f_ffff));
    }
    let pte = read((pde & 0xffff_f000) + 4 * ((gva >> 12) & 0x3ff))
        .ok_or(WalkError::NotMapped(gva))?
        & 0xffff_ffff;
    check(pte, gva)?;
    Ok((pte & 0xffff_f000) | (gva & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        words: HashMap<u64, u64>,
        next: u64,
        limit: u64,
    }

    impl PhysMem for Mem {
        fn read_u64(&self, pa: u64) -> Option<u64> {
            (pa < self.limit).then(|| self.words.get(&pa).copied().unwrap_or(0))
        }
        fn write_u64(&mut self, pa: u64, v: u64) -> bool {
            if pa >= self.limit {
                return false;
            }
            self.words.insert(pa, v);
            true
        }
    }

    impl FrameSource for Mem {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.next + 4096 > self.limit {
                return None;
            }
            let f = self.next;
            self.next += 4096;
            Some(f)
        }
    }

    fn mem() -> Mem {
        Mem {
            words: HashMap::new(),
            next: 0x1000,
            limit: 0x10_0000,
        }
    }

    #[test]
    fn npt_maps_translates_and_unmaps() {
        let mut m = mem();
        let mut frames = mem();
        frames.next = 0x8_0000;
        let mut t = PageTable::new(&mut frames).expect("root");
        // Tables come from `frames` but live in `m`'s address space (both are the same fake RAM here).
        std::mem::swap(&mut m.next, &mut frames.next);
        t.root = 0x8_0000;
        let mut f = Mem {
            next: 0x9_0000,
            ..mem()
        };
        for i in 0..4u64 {
            t.map(
                &mut m,
                &mut f,
                0x10_0000 + i * 4096,
                0x4000_0000 + i * 4096,
                NPT_RWX,
            )
            .expect("map");
        }
        // Root + PDPT + PD + PT.
        assert_eq!(f.next, 0x9_0000 + 3 * 4096);
        assert_eq!(t.translate(&m, 0x10_2abc), Some(0x4000_2abc));
        assert_eq!(t.translate(&m, 0x10_4000), None);
        assert_eq!(t.unmap(&mut m, 0x10_1000), Some(0x4000_1000));
        assert_eq!(t.translate(&m, 0x10_1000), None);
        assert_eq!(t.unmap(&mut m, 0x10_1000), None);
        assert_eq!(
            t.map(&mut m, &mut f, 0x10_0001, 0, NPT_RWX),
            Err(PagingError::BadAddress(0x10_0001))
        );
        let mut tables = Vec::new();
        t.table_frames(&m, &mut |f| tables.push(f));
        assert_eq!(tables.len(), 4);
        let mut empty = Mem { limit: 0, ..mem() };
        assert_eq!(PageTable::new(&mut empty), Err(PagingError::NoMemory));
    }

    #[test]
    fn stage2_descriptors() {
        let mut m = mem();
        let t = PageTable {
            root: 0x8_0000,
            format: Format::Stage2,
        };
        let mut f = Mem {
            next: 0x9_0000,
            ..mem()
        };
        t.map(&mut m, &mut f, 0x4000_1000, 0x7654_3000, S2_RAM)
            .expect("map");
        // Level 0 index 0 -> table at 0x90000, level 1 index 1 -> 0x91000, level 2 index 0 -> 0x92000.
        assert_eq!(m.read_u64(0x8_0000), Some(0x9_0000 | 3));
        assert_eq!(m.read_u64(0x9_0000 + 8), Some(0x9_1000 | 3));
        assert_eq!(m.read_u64(0x9_1000), Some(0x9_2000 | 3));
        let leaf = m.read_u64(0x9_2000 + 8).unwrap();
        assert_eq!(
            leaf,
            0x7654_3000 | 0x7ff,
            "page, normal WB, RW, inner shareable, AF"
        );
        assert_eq!(t.translate(&m, 0x4000_1234), Some(0x7654_3234));
        // A level-2 block descriptor (bits 1:0 = 01) maps 2 MiB.
        m.write_u64(0x9_1000 + 8, 0x8000_0000 | S2_RAM | 1);
        assert_eq!(t.translate(&m, 0x4020_0042), Some(0x8000_0042));
        assert_eq!(
            t.map(&mut m, &mut f, 0x4020_0000, 0, S2_RAM),
            Err(PagingError::Conflict(0x4020_0000))
        );
        let mut tables = Vec::new();
        t.table_frames(&m, &mut |f| tables.push(f));
        assert_eq!(tables, [0x9_2000, 0x9_1000, 0x9_0000, 0x8_0000]);
    }

    #[test]
    fn guest_walk_of_random_tables_never_panics() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let p = GuestPaging {
                cr0: next(),
                cr3: next(),
                cr4: next(),
                efer: next(),
            };
            let seed = next();
            // Table entries are a function of their address: arbitrary, sometimes unreadable.
            let read = |pa: u64| {
                let v = pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
                (!v.is_multiple_of(7)).then_some(v)
            };
            let _ = guest_walk(&p, next(), next() & 1 == 0, read);
        }
    }

    #[test]
    fn guest_walk_handles_each_paging_mode() {
        let mut m = mem();
        // Long mode: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 (2 MiB page at 0x20_0000 for va 0x4000_0000),
        // PD entry 1 -> PT 0x4000 with a read-only 4 KiB page.
        m.write_u64(0x1000, 0x2000 | 3);
        m.write_u64(0x2000 + 8, 0x3000 | 3);
        m.write_u64(0x3000, 0x20_0000 | 3 | PTE_PS);
        m.write_u64(0x3000 + 8, 0x4000 | 3);
        m.write_u64(0x4000 + 8 * 5, 0x7000 | 1);
        let lm = GuestPaging {
            cr0: CR0_PG | CR0_WP | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
        };
        let rd = |pa| m.read_u64(pa);
        assert_eq!(guest_walk(&lm, 0x4001_2345, true, rd), Ok(0x21_2345));
        assert_eq!(guest_walk(&lm, 0x4020_5010, false, rd), Ok(0x7010));
        assert_eq!(
            guest_walk(&lm, 0x4020_5010, true, rd),
            Err(WalkError::ReadOnly(0x4020_5010))
        );
        assert_eq!(
            guest_walk(&lm, 0x4020_6000, false, rd),
            Err(WalkError::NotMapped(0x4020_6000))
        );
        assert_eq!(
            guest_walk(&lm, 0x8000_0000_0000, false, rd),
            Err(WalkError::BadAddress(0x8000_0000_0000))
        );
        // Paging off: identity below 4 GiB.
        let real = GuestPaging::default();
        assert_eq!(guest_walk(&real, 0x1234, true, rd), Ok(0x1234));
        assert!(guest_walk(&real, 1 << 32, false, rd).is_err());
        // 32-bit, 4 MiB page with PSE.
        let mut m2 = mem();
        m2.write_u64(0x5000 + 4, 0x0040_0083);
        let p32 = GuestPaging {
            cr0: CR0_PG | 1,
            cr3: 0x5000,
            cr4: CR4_PSE,
            efer: 0,
        };
        assert_eq!(
            guest_walk(&p32, 0x0041_0000, true, |pa| m2.read_u64(pa)),
            Ok(0x41_0000)
        );
        // PAE: PDPTE 0 -> PD at 0x6000, 2 MiB page.
        let mut m3 = mem();
        m3.write_u64(0x5000, 0x6000 | 1);
        m3.write_u64(0x6000 + 8, 0x80_0000 | 0x83);
        let pae = GuestPaging {
            cr0: CR0_PG | 1,
            cr3: 0x5000,
            cr4: CR4_PAE,
            efer: 0,
        };
        assert_eq!(
            guest_walk(&pae, 0x20_0010, false, |pa| m3.read_u64(pa)),
            Ok(0x80_0010)
        );
        assert_eq!(
            guest_walk(&pae, 0x40_0010, false, |pa| m3.read_u64(pa)),
            Err(WalkError::NotMapped(0x40_0010))
        );
    }
}
