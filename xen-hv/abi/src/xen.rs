//! Shared structures of the x86_64 Xen guest ABI (`public/xen.h`, `public/memory.h`, `public/sched.h`,
//! `public/vcpu.h`, `public/hvm/hvm_op.h`, `public/arch-x86/cpuid.h`), with the layouts of a 64-bit guest.

/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: u16 = 0x7ff0;
/// Number of `vcpu_info` slots embedded in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: usize = 32;

/// Xen's CPUID leaves (`public/arch-x86/cpuid.h`).
pub mod cpuid {
    /// The first hypervisor leaf.
    pub const BASE: u32 = 0x4000_0000;
    /// The highest leaf offered (`BASE + 5`).
    pub const MAX_LEAF: u32 = BASE + 5;
    /// "XenVMMXenVMM" in ebx, ecx, edx.
    pub const SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
    /// The MSR a guest writes with the address of the page it wants filled with hypercall stubs.
    pub const HYPERCALL_MSR: u32 = 0x4000_0000;
    /// Leaf 4 eax: the vCPU id is in ebx.
    pub const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
    /// Leaf 4 eax: the domain id is in ecx.
    pub const HVM_DOMID_PRESENT: u32 = 1 << 4;
}

/// `memory_op` sub-operations and map spaces.
pub mod xenmem {
    /// `XENMEM_add_to_physmap`.
    pub const ADD_TO_PHYSMAP: u64 = 7;
    /// `XENMEM_memory_map`.
    pub const MEMORY_MAP: u64 = 9;
    /// `XENMAPSPACE_shared_info`.
    pub const MAPSPACE_SHARED_INFO: u32 = 0;
    /// `XENMAPSPACE_grant_table` (`idx` is the frame number; bit 31 asks for a v2 status frame).
    pub const MAPSPACE_GRANT_TABLE: u32 = 1;
}

/// `hvm_op` sub-operations and parameter indices.
pub mod hvmop {
    /// `HVMOP_set_param`.
    pub const SET_PARAM: u64 = 0;
    /// `HVMOP_get_param`.
    pub const GET_PARAM: u64 = 1;
    /// Number of HVM parameters (`HVM_NR_PARAMS`).
    pub const NR_PARAMS: u32 = 39;
    /// `HVM_PARAM_CALLBACK_IRQ`.
    pub const PARAM_CALLBACK_IRQ: u32 = 0;
    /// `HVM_PARAM_STORE_PFN`.
    pub const PARAM_STORE_PFN: u32 = 1;
    /// `HVM_PARAM_STORE_EVTCHN`.
    pub const PARAM_STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_CONSOLE_PFN`.
    pub const PARAM_CONSOLE_PFN: u32 = 17;
    /// `HVM_PARAM_CONSOLE_EVTCHN`.
    pub const PARAM_CONSOLE_EVTCHN: u32 = 18;
}

/// `vcpu_op` sub-operations.
pub mod vcpuop {
    /// `VCPUOP_initialise` (for HVM/PVH: a `vcpu_hvm_context`).
    pub const INITIALISE: u64 = 0;
    /// `VCPUOP_up`.
    pub const UP: u64 = 1;
    /// `VCPUOP_down`.
    pub const DOWN: u64 = 2;
    /// `VCPUOP_is_up`.
    pub const IS_UP: u64 = 3;
    /// `VCPUOP_register_runstate_memory_area`.
    pub const REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
    /// `VCPUOP_register_vcpu_info`.
    pub const REGISTER_VCPU_INFO: u64 = 10;
}

/// `RUNSTATE_*`: what a vCPU is doing.
pub mod runstate {
    /// Running on a physical CPU.
    pub const RUNNING: u32 = 0;
    /// Ready to run.
    pub const RUNNABLE: u32 = 1;
    /// Waiting for an event.
    pub const BLOCKED: u32 = 2;
    /// Not running and not able to (down).
    pub const OFFLINE: u32 = 3;
}

/// `struct vcpu_runstate_info` (48 bytes): the current state, when it was entered, and the time spent in
/// each state (system time, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: u32,
    /// Padding.
    pub pad: u32,
    /// System time the state was entered.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each state.
    pub time: [u64; 4],
}

/// `struct vcpu_time_info` (32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Odd while the hypervisor updates the record.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns) at the last update.
    pub system_time: u64,
    /// TSC to nanoseconds multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// TSC shift applied before the multiplication.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}

/// `struct arch_vcpu_info` on x86_64 (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// The guest's CR2.
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}

/// `struct vcpu_info` (64 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an event is pending for the vCPU.
    pub evtchn_upcall_pending: u8,
    /// Set by the guest to mask upcalls.
    pub evtchn_upcall_mask: u8,
    /// Padding up to the selector word.
    pub pad0: [u8; 6],
    /// Which words of `evtchn_pending` have bits set.
    pub evtchn_pending_sel: u64,
    /// Architecture state.
    pub arch: ArchVcpuInfo,
    /// The vCPU's pvclock record.
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` on x86_64 (48 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Highest guest frame number (PV only).
    pub max_pfn: u64,
    /// PV only.
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason bits.
    pub nmi_reason: u64,
    /// PV only.
    pub p2m_cr3: u64,
    /// PV only.
    pub p2m_vaddr: u64,
    /// PV only.
    pub p2m_generation: u64,
}

/// `struct shared_info` (3136 bytes on x86_64, placed in one 4 KiB frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SharedInfo {
    /// The legacy per-vCPU records.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// 2-level event channel pending bits.
    pub evtchn_pending: [u64; 64],
    /// 2-level event channel mask bits.
    pub evtchn_mask: [u64; 64],
    /// Wallclock version (odd while updated).
    pub wc_version: u32,
    /// Wallclock seconds at system time 0.
    pub wc_sec: u32,
    /// Wallclock nanoseconds.
    pub wc_nsec: u32,
    /// Upper 32 bits of the wallclock seconds.
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

/// `struct xen_add_to_physmap` (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// Target domain (`DOMID_SELF`).
    pub domid: u16,
    /// Number of pages for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// One of the `XENMAPSPACE_*` values.
    pub space: u32,
    /// Index into the space.
    pub idx: u64,
    /// Guest frame to map it at.
    pub gpfn: u64,
}

/// `struct xen_memory_map` (16 bytes): `nr_entries` is in/out, `buffer` points at `e820entry` records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XenMemoryMap {
    /// On entry the buffer capacity in entries; on return the number written.
    pub nr_entries: u32,
    /// Padding.
    pub pad: u32,
    /// Guest virtual address of the buffer.
    pub buffer: u64,
}

/// `struct e820entry` as `XENMEM_memory_map` writes it: packed, 20 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Base address.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// Type (1 = RAM).
    pub kind: u32,
}

/// `struct xen_hvm_param` (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XenHvmParam {
    /// Target domain (`DOMID_SELF`).
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// Parameter index.
    pub index: u32,
    /// Value.
    pub value: u64,
}

/// `struct vcpu_register_vcpu_info` (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Guest frame holding the record.
    pub mfn: u64,
    /// Offset of the record inside the frame.
    pub offset: u32,
    /// Reserved.
    pub rsvd: u32,
}

/// `struct sched_shutdown` (4 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SchedShutdown {
    /// One of the `SHUTDOWN_*` reasons.
    pub reason: u32,
}

/// `VCPU_HVM_MODE_32B` of [`VcpuHvmContext::mode`].
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `VCPU_HVM_MODE_64B`.
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// `struct vcpu_hvm_x86_32` (`public/hvm/hvm_vcpu.h`, 120 bytes): a vCPU's start state in 32-bit mode. The
/// `*_ar` fields use the compressed descriptor-attribute layout (type, S, DPL, P, AVL, L, D/B, G).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuHvmX86_32 {
    /// eax.
    pub eax: u32,
    /// ecx.
    pub ecx: u32,
    /// edx.
    pub edx: u32,
    /// ebx.
    pub ebx: u32,
    /// esp.
    pub esp: u32,
    /// ebp.
    pub ebp: u32,
    /// esi.
    pub esi: u32,
    /// edi.
    pub edi: u32,
    /// eip.
    pub eip: u32,
    /// eflags.
    pub eflags: u32,
    /// cr0.
    pub cr0: u32,
    /// cr3.
    pub cr3: u32,
    /// cr4.
    pub cr4: u32,
    /// Padding.
    pub pad1: u32,
    /// EFER (NXE, or LME/LMA for compatibility mode).
    pub efer: u64,
    /// CS base.
    pub cs_base: u32,
    /// DS base.
    pub ds_base: u32,
    /// SS base.
    pub ss_base: u32,
    /// ES base.
    pub es_base: u32,
    /// TR base.
    pub tr_base: u32,
    /// CS limit.
    pub cs_limit: u32,
    /// DS limit.
    pub ds_limit: u32,
    /// SS limit.
    pub ss_limit: u32,
    /// ES limit.
    pub es_limit: u32,
    /// TR limit.
    pub tr_limit: u32,
    /// CS attributes.
    pub cs_ar: u16,
    /// DS attributes.
    pub ds_ar: u16,
    /// SS attributes.
    pub ss_ar: u16,
    /// ES attributes.
    pub es_ar: u16,
    /// TR attributes.
    pub tr_ar: u16,
    /// Padding.
    pub pad2: [u16; 3],
}

/// `struct vcpu_hvm_context` (128 bytes): `mode`, padding, then the register union (the 32-bit form is the
/// larger member, so it is used for the layout; a 64-bit context is read from the same bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuHvmContext {
    /// `VCPU_HVM_MODE_32B` or `VCPU_HVM_MODE_64B`.
    pub mode: u32,
    /// Padding.
    pub pad: u32,
    /// The registers.
    pub x86_32: VcpuHvmX86_32,
}

/// `struct vcpu_hvm_x86_64` (112 bytes): a vCPU's start state in 64-bit mode (flat segments implied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuHvmX86_64 {
    /// rax.
    pub rax: u64,
    /// rcx.
    pub rcx: u64,
    /// rdx.
    pub rdx: u64,
    /// rbx.
    pub rbx: u64,
    /// rsp.
    pub rsp: u64,
    /// rbp.
    pub rbp: u64,
    /// rsi.
    pub rsi: u64,
    /// rdi.
    pub rdi: u64,
    /// rip.
    pub rip: u64,
    /// rflags.
    pub rflags: u64,
    /// cr0 (PE and PG set).
    pub cr0: u64,
    /// cr3.
    pub cr3: u64,
    /// cr4 (PAE set).
    pub cr4: u64,
    /// EFER (LME set).
    pub efer: u64,
}

/// A decoded `vcpu_hvm_context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStart {
    /// `VCPU_HVM_MODE_32B`.
    Mode32(VcpuHvmX86_32),
    /// `VCPU_HVM_MODE_64B`.
    Mode64(VcpuHvmX86_64),
}

impl VcpuHvmContext {
    /// The register state by mode; `None` for an unknown mode.
    pub fn decode(&self) -> Option<VcpuStart> {
        use crate::plain::Plain;
        match self.mode {
            VCPU_HVM_MODE_32B => Some(VcpuStart::Mode32(self.x86_32)),
            VCPU_HVM_MODE_64B => {
                VcpuHvmX86_64::read_from(self.x86_32.as_bytes()).map(VcpuStart::Mode64)
            }
            _ => None,
        }
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<VcpuHvmX86_64>() == 112);
    assert!(offset_of!(VcpuHvmX86_64, rip) == 64);
    assert!(offset_of!(VcpuHvmX86_64, cr0) == 80);
    assert!(offset_of!(VcpuHvmX86_64, efer) == 104);
    assert!(size_of::<VcpuHvmX86_32>() == 120);
    assert!(offset_of!(VcpuHvmX86_32, eip) == 32);
    assert!(offset_of!(VcpuHvmX86_32, cr0) == 40);
    assert!(offset_of!(VcpuHvmX86_32, efer) == 56);
    assert!(offset_of!(VcpuHvmX86_32, cs_base) == 64);
    assert!(offset_of!(VcpuHvmX86_32, cs_limit) == 84);
    assert!(offset_of!(VcpuHvmX86_32, cs_ar) == 104);
    assert!(offset_of!(VcpuHvmX86_32, tr_ar) == 112);
    assert!(size_of::<VcpuHvmContext>() == 128);
    assert!(offset_of!(VcpuHvmContext, x86_32) == 8);
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(offset_of!(VcpuTimeInfo, system_time) == 16);
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == 28);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch) == 16);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, arch) == 3088);
    assert!(size_of::<SharedInfo>() == 3136);
    assert!(size_of::<XenAddToPhysmap>() == 24);
    assert!(offset_of!(XenAddToPhysmap, idx) == 8);
    assert!(offset_of!(XenAddToPhysmap, gpfn) == 16);
    assert!(size_of::<XenMemoryMap>() == 16);
    assert!(offset_of!(XenMemoryMap, buffer) == 8);
    assert!(size_of::<E820Entry>() == 20);
    assert!(size_of::<XenHvmParam>() == 16);
    assert!(offset_of!(XenHvmParam, index) == 4);
    assert!(offset_of!(XenHvmParam, value) == 8);
    assert!(size_of::<VcpuRegisterVcpuInfo>() == 16);
    assert!(offset_of!(VcpuRegisterVcpuInfo, offset) == 8);
    assert!(size_of::<SchedShutdown>() == 4);
    assert!(size_of::<VcpuRunstateInfo>() == 48);
    assert!(offset_of!(VcpuRunstateInfo, state_entry_time) == 8);
    assert!(offset_of!(VcpuRunstateInfo, time) == 16);
};
