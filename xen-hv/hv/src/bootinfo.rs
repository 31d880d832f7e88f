//! Boot information from PVH (`hvm_start_info`) or multiboot2, turned into one neutral description: the memory
//! map, the boot modules and the command line. Pure logic over a [`PhysRead`], so it is tested on the host.

use xen_abi::start_info::{
    memmap_type, HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC,
};

/// Maximum memory map entries kept.
pub const MAX_MEMMAP: usize = 128;
/// Maximum boot modules kept.
pub const MAX_MODULES: usize = 16;
/// Maximum command line length kept, in bytes.
pub const MAX_CMDLINE: usize = 1024;

/// Reads guest-physical memory the boot loader handed over.
pub trait PhysRead {
    /// Fills `buf` from physical address `paddr`.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootError>;
}

/// Why boot information could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The structure's magic value is wrong.
    BadMagic(u32),
    /// A pointer in the boot information leaves readable memory.
    BadAddress(u64),
    /// A multiboot2 tag is malformed.
    BadTag(u32),
    /// The device tree cannot be read.
    Fdt(xen_abi::fdt::FdtError),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "boot information has bad magic {m:#x}"),
            Self::BadAddress(a) => write!(f, "boot information points outside memory at {a:#x}"),
            Self::BadTag(t) => write!(f, "malformed multiboot2 tag of type {t}"),
            Self::Fdt(e) => write!(f, "{e}"),
        }
    }
}

/// One memory region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemRegion {
    /// Base physical address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// E820-style type ([`memmap_type`]).
    pub kind: u32,
}

/// One boot module (a guest kernel, an initrd, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Module {
    /// Physical address.
    pub base: u64,
    /// Size in bytes.
    pub len: u64,
    /// Physical address of its NUL-terminated command line, 0 when absent.
    pub cmdline_paddr: u64,
}

/// Everything the hypervisor learns from its boot loader.
#[derive(Debug, Clone)]
pub struct BootInfo {
    memmap: [MemRegion; MAX_MEMMAP],
    memmap_len: usize,
    modules: [Module; MAX_MODULES],
    modules_len: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
}

impl Default for BootInfo {
    fn default() -> Self {
        Self {
            memmap: [MemRegion::default(); MAX_MEMMAP],
            memmap_len: 0,
            modules: [Module::default(); MAX_MODULES],
            modules_len: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
        }
    }
}

fn read_pod<T: Copy + Default, M: PhysRead>(mem: &M, paddr: u64) -> Result<T, BootError> {
    let mut value = T::default();
    // SAFETY: `T` is one of the plain-old-data `#[repr(C)]` ABI structs of this module (integers only, every bit
    // pattern valid); the byte view covers exactly its storage and lives no longer than `value`.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut((&raw mut value).cast::<u8>(), core::mem::size_of::<T>())
    };
    mem.read(paddr, bytes)?;
    Ok(value)
}

impl BootInfo {
    /// Parses a PVH `hvm_start_info` at `paddr`.
    pub fn from_pvh<M: PhysRead>(mem: &M, paddr: u64) -> Result<Self, BootError> {
        let si: HvmStartInfo = read_pod(mem, paddr)?;
        if si.magic != HVM_START_MAGIC {
            return Err(BootError::BadMagic(si.magic));
        }
        let mut info = Self::default();
        if si.version >= 1 {
            for i in 0..u64::from(si.memmap_entries) {
                let e: HvmMemmapEntry = read_pod(mem, si.memmap_paddr + i * 24)?;
                info.push_region(MemRegion {
                    base: e.addr,
                    len: e.size,
                    kind: e.kind,
                });
            }
        }
        for i in 0..u64::from(si.nr_modules) {
            let m: HvmModlistEntry = read_pod(mem, si.modlist_paddr + i * 32)?;
            info.push_module(Module {
                base: m.paddr,
                len: m.size,
                cmdline_paddr: m.cmdline_paddr,
            });
        }
        if si.cmdline_paddr != 0 {
            info.read_cmdline(mem, si.cmdline_paddr)?;
        }
        Ok(info)
    }

    /// Parses a multiboot2 information structure at `paddr`.
    pub fn from_multiboot2<M: PhysRead>(mem: &M, paddr: u64) -> Result<Self, BootError> {
        let total: u32 = read_pod(mem, paddr)?;
        let mut info = Self::default();
        let mut off = 8u64;
        while off + 8 <= u64::from(total) {
            let tag_type: u32 = read_pod(mem, paddr + off)?;
            let size: u32 = read_pod(mem, paddr + off + 4)?;
            if size < 8 {
                return Err(BootError::BadTag(tag_type));
            }
            let tag = paddr + off;
            match tag_type {
                0 => break,
                1 => info.read_cmdline(mem, tag + 8)?,
                3 => {
                    let start: u32 = read_pod(mem, tag + 8)?;
                    let end: u32 = read_pod(mem, tag + 12)?;
                    if end < start {
                        return Err(BootError::BadTag(tag_type));
                    }
                    let cmdline_paddr = if size > 17 { tag + 16 } else { 0 };
                    info.push_module(Module {
                        base: u64::from(start),
                        len: u64::from(end - start),
                        cmdline_paddr,
                    });
                }
                6 => {
                    let entry_size: u32 = read_pod(mem, tag + 8)?;
                    if entry_size < 24 {
                        return Err(BootError::BadTag(tag_type));
                    }
                    let mut e = tag + 16;
                    while e + u64::from(entry_size) <= tag + u64::from(size) {
                        let r: HvmMemmapEntry = read_pod(mem, e)?;
                        info.push_region(MemRegion {
                            base: r.addr,
                            len: r.size,
                            kind: r.kind,
                        });
                        e += u64::from(entry_size);
                    }
                }
                _ => {}
            }
            off += u64::from(size).next_multiple_of(8);
        }
        Ok(info)
    }

    /// Reads a flattened device tree (aarch64): RAM from the `memory` nodes, the command line from
    /// `/chosen/bootargs`, and one module from `/chosen/linux,initrd-start` / `linux,initrd-end`.
    pub fn from_fdt(dtb: &[u8]) -> Result<Self, BootError> {
        use xen_abi::fdt::{read_cells, Fdt};
        let t = Fdt::new(dtb).map_err(BootError::Fdt)?;
        let mut info = Self::default();
        t.memory(|base, len| {
            info.push_region(MemRegion {
                base,
                len,
                kind: memmap_type::RAM,
            })
        });
        let cell = |name| {
            t.property("/chosen", name)
                .and_then(|v| read_cells(v, (v.len() / 4).min(2) as u32))
        };
        if let (Some(start), Some(end)) = (cell("linux,initrd-start"), cell("linux,initrd-end")) {
            if end < start {
                return Err(BootError::BadAddress(end));
            }
            info.push_module(Module {
                base: start,
                len: end - start,
                cmdline_paddr: 0,
            });
        }
        if let Some(args) = t.property("/chosen", "bootargs") {
            let args = args.split(|&c| c == 0).next().unwrap_or(&[]);
            let n = args.len().min(MAX_CMDLINE);
            info.cmdline[..n].copy_from_slice(&args[..n]);
            info.cmdline_len = n;
        }
        Ok(info)
    }

    fn push_region(&mut self, r: MemRegion) {
        if self.memmap_len < MAX_MEMMAP {
            self.memmap[self.memmap_len] = r;
            self.memmap_len += 1;
        }
    }

    fn push_module(&mut self, m: Module) {
        if self.modules_len < MAX_MODULES {
            self.modules[self.modules_len] = m;
            self.modules_len += 1;
        }
    }

    fn read_cmdline<M: PhysRead>(&mut self, mem: &M, paddr: u64) -> Result<(), BootError> {
        let mut len = 0;
        while len < MAX_CMDLINE {
            let mut b = [0u8];
            mem.read(paddr + len as u64, &mut b)?;
            if b[0] == 0 {
                break;
            }
            self.cmdline[len] = b[0];
            len += 1;
        }
        self.cmdline_len = len;
        Ok(())
    }

    /// The memory map.
    pub fn memmap(&self) -> &[MemRegion] {
        &self.memmap[..self.memmap_len]
    }

    /// The boot modules, in the order the loader listed them.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.modules_len]
    }

    /// The hypervisor's command line (invalid UTF-8 reads as empty).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Total usable RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.memmap()
            .iter()
            .filter(|r| r.kind == memmap_type::RAM)
            .map(|r| r.len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<u8>);

    impl PhysRead for Mem {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootError> {
            let start = usize::try_from(paddr).map_err(|_| BootError::BadAddress(paddr))?;
            let src = self
                .0
                .get(start..start + buf.len())
                .ok_or(BootError::BadAddress(paddr))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn put(mem: &mut [u8], at: usize, bytes: &[u8]) {
        mem[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn parses_a_device_tree() {
        let mut w = xen_abi::fdt::Writer::new();
        w.begin_node("");
        w.prop_cells("#address-cells", &[2]);
        w.prop_cells("#size-cells", &[2]);
        w.begin_node("chosen");
        w.prop_str("bootargs", "console=com1 nosmp");
        w.prop_cells("linux,initrd-start", &[0x4400_0000]);
        w.prop_cells("linux,initrd-end", &[0, 0x4400_1000]);
        w.end_node();
        w.begin_node("memory@40000000");
        w.prop_str("device_type", "memory");
        w.prop_cells("reg", &[0, 0x4000_0000, 0, 0x2000_0000]);
        w.end_node();
        w.end_node();
        let mut dtb = [0u8; 1024];
        let n = w.finish(&mut dtb).unwrap();
        let info = BootInfo::from_fdt(&dtb[..n]).expect("parses");
        assert_eq!(info.cmdline(), "console=com1 nosmp");
        assert_eq!(info.ram_bytes(), 512 << 20);
        assert_eq!(info.memmap()[0].base, 0x4000_0000);
        assert_eq!(info.modules().len(), 1);
        assert_eq!(info.modules()[0].base, 0x4400_0000);
        assert_eq!(info.modules()[0].len, 0x1000);
        assert!(matches!(
            BootInfo::from_fdt(&dtb[..8]),
            Err(BootError::Fdt(_))
        ));
    }

    #[test]
    fn parses_pvh_start_info() {
        let mut m = vec![0u8; 4096];
        put(&mut m, 0, &HVM_START_MAGIC.to_le_bytes());
        put(&mut m, 4, &1u32.to_le_bytes());
        put(&mut m, 12, &1u32.to_le_bytes()); // one module
        put(&mut m, 16, &0x200u64.to_le_bytes());
        put(&mut m, 24, &0x300u64.to_le_bytes());
        put(&mut m, 40, &0x400u64.to_le_bytes());
        put(&mut m, 48, &2u32.to_le_bytes());
        put(&mut m, 0x200, &0x10_0000u64.to_le_bytes());
        put(&mut m, 0x208, &0x2000u64.to_le_bytes());
        put(&mut m, 0x300, b"console=com1 dom0_mem=512M\0");
        put(&mut m, 0x400, &0u64.to_le_bytes());
        put(&mut m, 0x408, &0x9fc00u64.to_le_bytes());
        put(&mut m, 0x410, &1u32.to_le_bytes());
        put(&mut m, 0x418, &0x10_0000u64.to_le_bytes());
        put(&mut m, 0x420, &0x700_0000u64.to_le_bytes());
        put(&mut m, 0x428, &1u32.to_le_bytes());
        let info = BootInfo::from_pvh(&Mem(m), 0).unwrap();
        assert_eq!(info.cmdline(), "console=com1 dom0_mem=512M");
        assert_eq!(
            info.modules(),
            &[Module {
                base: 0x10_0000,
                len: 0x2000,
                cmdline_paddr: 0
            }]
        );
        assert_eq!(info.memmap().len(), 2);
        assert_eq!(info.ram_bytes(), 0x9fc00 + 0x700_0000);
    }

    #[test]
    fn rejects_bad_magic_and_wild_pointers() {
        let m = vec![0u8; 128];
        assert_eq!(
            BootInfo::from_pvh(&Mem(m), 0).unwrap_err(),
            BootError::BadMagic(0)
        );
        let mut m = vec![0u8; 128];
        put(&mut m, 0, &HVM_START_MAGIC.to_le_bytes());
        put(&mut m, 12, &1u32.to_le_bytes());
        put(&mut m, 16, &0xdead_0000u64.to_le_bytes());
        assert_eq!(
            BootInfo::from_pvh(&Mem(m), 0).unwrap_err(),
            BootError::BadAddress(0xdead_0000)
        );
    }

    #[test]
    fn parses_multiboot2() {
        let mut m = vec![0u8; 512];
        // cmdline tag
        put(&mut m, 8, &1u32.to_le_bytes());
        put(&mut m, 12, &(8u32 + 9).to_le_bytes());
        put(&mut m, 16, b"loglvl=4\0");
        // module tag at 32
        put(&mut m, 32, &3u32.to_le_bytes());
        put(&mut m, 36, &(16u32 + 6).to_le_bytes());
        put(&mut m, 40, &0x40_0000u32.to_le_bytes());
        put(&mut m, 44, &0x40_1000u32.to_le_bytes());
        put(&mut m, 48, b"guest\0");
        // mmap tag at 56
        put(&mut m, 56, &6u32.to_le_bytes());
        put(&mut m, 60, &(16u32 + 24).to_le_bytes());
        put(&mut m, 64, &24u32.to_le_bytes());
        put(&mut m, 72, &0x10_0000u64.to_le_bytes());
        put(&mut m, 80, &0x100_0000u64.to_le_bytes());
        put(&mut m, 88, &1u32.to_le_bytes());
        // end tag at 96
        put(&mut m, 96, &0u32.to_le_bytes());
        put(&mut m, 100, &8u32.to_le_bytes());
        put(&mut m, 0, &104u32.to_le_bytes());
        let info = BootInfo::from_multiboot2(&Mem(m), 0).unwrap();
        assert_eq!(info.cmdline(), "loglvl=4");
        assert_eq!(info.modules()[0].len, 0x1000);
        assert_eq!(info.modules()[0].cmdline_paddr, 48);
        assert_eq!(info.ram_bytes(), 0x100_0000);
    }
}
