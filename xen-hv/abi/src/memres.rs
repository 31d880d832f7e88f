//! `XENMEM_populate_physmap` and friends (`public/memory.h`), the toolstack's way to give a new domain RAM, and
//! the guest-visible pages it sets up for a domain (`public/hvm/params.h`, `public/io/console.h`).

use crate::plain::Plain;

/// `XENMEM_increase_reservation`.
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
/// `XENMEM_decrease_reservation`.
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// `XENMEM_populate_physmap`.
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// `XENMEM_set_memory_map`: the toolstack sets the e820 map a domain's `XENMEM_memory_map` returns.
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
/// Most e820 entries a domain's map may have here.
pub const MAX_E820: usize = 16;

/// `struct xen_foreign_memory_map` (24 bytes): `buffer` is a guest handle to `nr_entries` packed
/// [`crate::xen::E820Entry`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ForeignMemoryMap {
    /// Target domain.
    pub domid: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// Entries in `buffer`.
    pub nr_entries: u32,
    /// Padding.
    pub pad2: u32,
    /// Guest handle of the entries.
    pub buffer: u64,
}

/// Byte offset of `buffer` in [`ForeignMemoryMap`].
pub const FOREIGN_MEMORY_MAP_BUFFER_OFFSET: usize = 16;

/// `HVMOP_set_param` (`public/hvm/hvm_op.h`).
pub const HVMOP_SET_PARAM: u64 = 0;
/// `HVMOP_get_param`.
pub const HVMOP_GET_PARAM: u64 = 1;
/// `HVM_PARAM_STORE_PFN`.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN`.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// `VIRQ_DOM_EXC`: a domain shut down, crashed or died (delivered to the control domain).
pub const VIRQ_DOM_EXC: u32 = 3;

/// `struct xen_memory_reservation` (x86-64, 32 bytes): `extent_start` is a guest handle to an array of frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryReservation {
    /// Guest handle of the frame array (IN: frames to populate; OUT: for increase_reservation, the frames).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `1 << extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// Target domain.
    pub domid: u16,
    /// Tail padding.
    pub pad: [u16; 3],
}

/// Byte offset of `extent_start` in [`MemoryReservation`].
pub const RESERVATION_EXTENT_START_OFFSET: usize = 0;

/// `struct xencons_interface` (`public/io/console.h`): the console ring page shared by a guest and the console
/// daemon; the guest writes `out`, the daemon writes `in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct XenconsInterface {
    /// Daemon -> guest bytes.
    pub input: [u8; CONS_IN_SIZE],
    /// Guest -> daemon bytes.
    pub output: [u8; CONS_OUT_SIZE],
    /// Consumer index of `input` (guest).
    pub in_cons: u32,
    /// Producer index of `input` (daemon).
    pub in_prod: u32,
    /// Consumer index of `output` (daemon).
    pub out_cons: u32,
    /// Producer index of `output` (guest).
    pub out_prod: u32,
}

/// Size of [`XenconsInterface::input`].
pub const CONS_IN_SIZE: usize = 1024;
/// Size of [`XenconsInterface::output`].
pub const CONS_OUT_SIZE: usize = 2048;
/// Byte offset of `in_cons` in the console page.
pub const CONS_IN_CONS: usize = CONS_IN_SIZE + CONS_OUT_SIZE;
/// Byte offset of `in_prod`.
pub const CONS_IN_PROD: usize = CONS_IN_CONS + 4;
/// Byte offset of `out_cons`.
pub const CONS_OUT_CONS: usize = CONS_IN_CONS + 8;
/// Byte offset of `out_prod`.
pub const CONS_OUT_PROD: usize = CONS_IN_CONS + 12;

// SAFETY: `#[repr(C)]`, integer fields and explicit padding only; size checked below.
unsafe impl Plain for MemoryReservation {}
// SAFETY: `#[repr(C)]`, integer fields and explicit padding only; size checked below.
unsafe impl Plain for ForeignMemoryMap {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MemoryReservation>() == 32);
    assert!(offset_of!(MemoryReservation, nr_extents) == 8);
    assert!(offset_of!(MemoryReservation, extent_order) == 16);
    assert!(offset_of!(MemoryReservation, mem_flags) == 20);
    assert!(offset_of!(MemoryReservation, domid) == 24);
    assert!(size_of::<ForeignMemoryMap>() == 24);
    assert!(offset_of!(ForeignMemoryMap, nr_entries) == 8);
    assert!(offset_of!(ForeignMemoryMap, buffer) == FOREIGN_MEMORY_MAP_BUFFER_OFFSET);
    assert!(size_of::<XenconsInterface>() == 3088);
    assert!(offset_of!(XenconsInterface, in_cons) == CONS_IN_CONS);
    assert!(offset_of!(XenconsInterface, out_prod) == CONS_OUT_PROD);
};
