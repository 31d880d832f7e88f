//! aarch64 support: boot at EL2 on the QEMU virt machine, the PL011 console, the GICv3 and the generic timer,
//! EL1 guests under stage-2 translation, and platform exit.

pub mod boot;
pub mod build;
pub mod ctlport;
pub mod gic;
pub mod pl011;
pub mod timer;
pub mod vcpu;

pub use self::build::{boot_memory_map, plan_domain, write_domain, GUEST_RAM_BASE};
pub use self::ctlport::NoCtlPort as CtlPort;

/// The hardware vCPU.
pub type HwVcpu = vcpu::Arm64Vcpu;
/// The nested tables' format.
pub const NESTED_FORMAT: xen_hv::paging::Format = xen_hv::paging::Format::Stage2;
/// Stage-2 attributes of guest RAM.
pub const GUEST_RAM_FLAGS: u64 = xen_hv::paging::S2_RAM;
/// Where a domain's PV console ring page appears (Xen's `GUEST_MAGIC_BASE`, outside guest RAM).
pub const CONSOLE_RING_GPA: Option<u64> = Some(0x3900_0000);
/// `HVM_PARAM_CALLBACK_IRQ` type whose low byte the upcall delivers: 3, a PPI.
pub const UPCALL_CALLBACK_TYPE: u64 = 3;
/// `HVM_PARAM_CALLBACK_IRQ` of a new domain: the event-channel PPI, as Xen on Arm sets it.
pub const DEFAULT_CALLBACK_IRQ: u64 = (UPCALL_CALLBACK_TYPE << 56) | build::EVTCHN_PPI as u64;

/// Per-domain hardware state: none on aarch64 (the stage-2 root and VMID are per vCPU).
pub struct DomainHw;

impl DomainHw {
    /// Nothing to allocate.
    pub fn new(_frames: &mut xen_hv::frames::FrameAllocator) -> Option<Self> {
        Some(Self)
    }

    /// Nothing to free.
    pub fn release(&self, _frames: &mut xen_hv::frames::FrameAllocator) {}
}

/// vCPU `vcpu_id` of `nr_vcpus` (its MPIDR affinity, its redistributor) at the domain's entry with x0 = `arg` (the device tree) on the stage-2
/// tables at `root`; `tag` (never 0, below 256) is its VMID.
pub fn new_vcpu(
    state_frame: u64,
    _dom: &DomainHw,
    root: u64,
    (tag, vcpu_id, nr_vcpus): (u32, u32, u32),
    entry: u64,
    arg: u64,
) -> HwVcpu {
    let mut v = HwVcpu::new(state_frame, root, tag as u16, vcpu_id, entry, arg);
    v.set_vgic(xen_hv::vgic::Vgic::new(vcpu_id, nr_vcpus));
    v
}

/// Stage-2 translation control, set once: 48-bit IPA space (T0SZ 16) walked from level 0 (SL0 2), 4 KiB
/// granule, write-back inner-shareable table walks, 48-bit physical addresses.
pub fn init_stage2() {
    let vtcr: u64 = 16 | (2 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16) | (1 << 31);
    // SAFETY: VTCR_EL2 only affects stage-2 translation of guests, none of which runs yet.
    unsafe { core::arch::asm!("msr vtcr_el2, {}", "isb", in(reg) vtcr, options(nomem, nostack)) };
}

/// The physical address size the CPU supports, in bits (ID_AA64MMFR0_EL1.PARange).
pub fn pa_bits() -> u32 {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack))
    };
    match mmfr0 & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// System time in nanoseconds.
pub fn now_ns() -> u64 {
    timer::now_ns()
}

/// Most physical CPUs used.
pub const MAX_CPUS: usize = 8;

/// This CPU's index: MPIDR_EL1 affinity 0 (the virt machine numbers its CPUs 0..n there), below [`MAX_CPUS`].
pub fn cpu_index() -> usize {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    (mpidr & 0xff) as usize % MAX_CPUS
}

/// Makes CPU `cpu` leave the guest it runs (an SGI), so the vCPU there sees interrupts just queued for it.
pub fn kick(cpu: usize) {
    gic::kick(cpu as u64);
}

/// Timer ticks this CPU has seen (a new tick ends a time slice).
pub fn cpu_ticks() -> u64 {
    timer::TICKS[cpu_index()].load(core::sync::atomic::Ordering::Acquire)
}

/// Secondary CPUs that finished their set-up.
pub static ONLINE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// Starts CPU `mpidr` at the secondary entry on the stack ending at `stack_top` through the platform's PSCI
/// (`smc` or `hvc` as the device tree's `/psci` method says; from EL2 only SMC reaches the firmware); returns
/// the PSCI result.
pub fn cpu_on(mpidr: u64, stack_top: u64, smc: bool) -> i64 {
    let ret: u64;
    let entry = boot::secondary_entry();
    // SAFETY: PSCI CPU_ON starts another CPU at our secondary entry with its own stack; this CPU continues.
    unsafe {
        if smc {
            core::arch::asm!("smc #0", inlateout("x0") xen_hv::psci::CPU_ON_64 => ret,
                in("x1") mpidr, in("x2") entry, in("x3") stack_top, options(nostack));
        } else {
            core::arch::asm!("hvc #0", inlateout("x0") xen_hv::psci::CPU_ON_64 => ret,
                in("x1") mpidr, in("x2") entry, in("x3") stack_top, options(nostack));
        }
    }
    ret as i64
}

/// Sleeps until an interrupt is pending (WFI wakes with interrupts masked), then handles it.
pub fn idle() {
    // SAFETY: waiting for an interrupt only stops this CPU until one is pending.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    // No guest is loaded while idle: a virtual timer cannot be pending (the last guest's was saved).
    let _ = timer::handle_interrupts();
}

/// True (once) when the control channel signalled received bytes since the last call; the aarch64 machine has
/// no control channel, so never.
pub fn take_ctl_irq() -> bool {
    false
}

/// One byte typed on the console, if any.
pub fn console_read_byte() -> Option<u8> {
    pl011::try_read_byte()
}

/// The time record every vCPU gets: system time is the generic counter scaled to nanoseconds (the "TSC" of
/// the record is the virtual count, equal to the physical count since CNTVOFF_EL2 is 0).
pub fn time_info() -> xen_abi::xen::VcpuTimeInfo {
    let (mul, shift) = xen_hv::time::scale(timer::frequency());
    xen_abi::xen::VcpuTimeInfo {
        version: 2,
        pad0: 0,
        tsc_timestamp: 0,
        system_time: 0,
        tsc_to_system_mul: mul,
        tsc_shift: shift,
        flags: xen_hv::time::PVCLOCK_TSC_STABLE,
        pad1: [0; 2],
    }
}

/// Set once [`exit`] runs, so a failing exit does not recurse through the fault handler.
pub static EXITING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Ends the machine with xen-hv's result `code` (0x10 success, 0x11 failure). Under QEMU with semihosting
/// (`xtask::qemu` enables it), QEMU exits with status `(code << 1) | 1`, the same status the x86
/// `isa-debug-exit` device gives. Without semihosting the HLT is undefined, the fault handler sees [`EXITING`]
/// and the CPU stops.
pub fn exit(code: u8) -> ! {
    EXITING.store(true, core::sync::atomic::Ordering::SeqCst);
    let block: [u64; 2] = [0x20026, (u64::from(code) << 1) | 1];
    // SAFETY: semihosting SYS_EXIT (0x18) with an ADP_Stopped_ApplicationExit block ends QEMU; the block lives on
    // this stack for the duration of the call.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
    }
    loop {
        // SAFETY: waiting for an event with interrupts masked only stops this CPU.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

/// Reads `len` bytes of physical memory at `paddr`, identity-mapped by the boot tables.
///
/// # Safety
///
/// `paddr..paddr + len` must lie in the identity-mapped first 4 GiB and hold memory the boot information points
/// at, which nothing writes while the returned slice lives.
pub unsafe fn phys_slice(paddr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the caller guarantees the range is identity-mapped, readable and not concurrently written.
    unsafe { core::slice::from_raw_parts(paddr as usize as *const u8, len) }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The physical range the hypervisor image occupies (identity-mapped, so addresses are physical).
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}
