//! PVH boot structures (`public/arch-x86/hvm/start_info.h`, `public/elfnote.h`).

/// `XEN_HVM_START_MAGIC_VALUE` ("xEn3").
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// The ELF note type of the 32-bit physical PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
pub const ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Memory map entry types of [`HvmMemmapEntry::kind`].
pub mod memmap_type {
    /// Usable RAM.
    pub const RAM: u32 = 1;
    /// Reserved.
    pub const RESERVED: u32 = 2;
    /// ACPI reclaimable.
    pub const ACPI: u32 = 3;
    /// ACPI NVS.
    pub const NVS: u32 = 4;
    /// Unusable.
    pub const UNUSABLE: u32 = 5;
    /// Disabled.
    pub const DISABLED: u32 = 6;
    /// Persistent memory.
    pub const PMEM: u32 = 7;
}

/// `struct hvm_start_info`: what a PVH kernel finds at `ebx` on entry (version 1, 56 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmStartInfo {
    /// Must be [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Structure version; 1 adds the memory map.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of entries in the module list.
    pub nr_modules: u32,
    /// Physical address of an array of [`HvmModlistEntry`].
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, 0 when absent.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, 0 when absent.
    pub rsdp_paddr: u64,
    /// Physical address of an array of [`HvmMemmapEntry`] (version 1).
    pub memmap_paddr: u64,
    /// Number of memory map entries (version 1).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `struct hvm_modlist_entry` (32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of the module's command line, 0 when absent.
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

/// `struct hvm_memmap_table_entry` (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmMemmapEntry {
    /// Base address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// One of [`memmap_type`].
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<HvmStartInfo>() == 56);
    assert!(offset_of!(HvmStartInfo, modlist_paddr) == 16);
    assert!(offset_of!(HvmStartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(HvmStartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == 40);
    assert!(offset_of!(HvmStartInfo, memmap_entries) == 48);
    assert!(size_of::<HvmModlistEntry>() == 32);
    assert!(size_of::<HvmMemmapEntry>() == 24);
    assert!(offset_of!(HvmMemmapEntry, kind) == 16);
};
