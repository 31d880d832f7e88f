//! x86_64 support: boot, console, descriptor tables, LAPIC timer, SVM, and platform exit.

pub mod boot;
pub mod build;
pub mod com2;
pub mod cpu;
pub mod guest;
pub mod lapic;
pub mod percpu;
pub mod serial;
pub mod smp;
pub mod svm;

use core::sync::atomic::Ordering;
use x86_64::instructions::port::Port;

pub use self::build::{boot_memory_map, plan_domain, write_domain};
pub use self::com2::Com2 as CtlPort;

/// The hardware vCPU.
pub type HwVcpu = svm::SvmVcpu;
/// The nested tables' format.
pub const NESTED_FORMAT: xen_hv::paging::Format = xen_hv::paging::Format::Npt;
/// Nested-table flags of guest RAM.
pub const GUEST_RAM_FLAGS: u64 = xen_hv::paging::NPT_RWX;
/// Guest-physical address where a domain's RAM starts.
pub const GUEST_RAM_BASE: u64 = 0;
/// Where a domain's PV console ring page appears: x86 domains get none from the hypervisor yet (the sandbox
/// toolstack sets one up in guest RAM).
pub const CONSOLE_RING_GPA: Option<u64> = None;
/// `HVM_PARAM_CALLBACK_IRQ` type whose low byte the upcall delivers: 2, a vector.
pub const UPCALL_CALLBACK_TYPE: u64 = 2;
/// `HVM_PARAM_CALLBACK_IRQ` of a new domain: none until the guest sets one.
pub const DEFAULT_CALLBACK_IRQ: u64 = 0;

/// The per-domain SVM permission maps.
pub struct DomainHw {
    maps: svm::Maps,
}

impl DomainHw {
    /// Allocates and fills the I/O (3 frames) and MSR (2 frames) permission maps.
    pub fn new(frames: &mut xen_hv::frames::FrameAllocator) -> Option<Self> {
        let iopm = frames.alloc(3 * 4096, 4096)?;
        let Some(msrpm) = frames.alloc(2 * 4096, 4096) else {
            frames.free(iopm, 3 * 4096);
            return None;
        };
        Some(Self {
            maps: svm::build_maps(iopm, msrpm),
        })
    }

    /// Returns the maps' frames.
    pub fn release(&self, frames: &mut xen_hv::frames::FrameAllocator) {
        frames.free(self.maps.iopm, 3 * 4096);
        frames.free(self.maps.msrpm, 2 * 4096);
    }
}

/// A vCPU of a domain in its start state (the PVH entry with `ebx` = `arg`) with its VMCB in `state_frame`;
/// `tag` is its ASID (the vCPU's index within the domain reaches the guest through CPUID instead).
pub fn new_vcpu(
    state_frame: u64,
    dom: &DomainHw,
    root: u64,
    (tag, _vcpu_id, _nr_vcpus): (u32, u32, u32),
    entry: u64,
    arg: u64,
) -> HwVcpu {
    HwVcpu::new_pvh(state_frame, dom.maps, root, tag, entry, arg)
}

/// System time in nanoseconds.
pub fn now_ns() -> u64 {
    lapic::now_ns()
}

/// This CPU's index (0 = the boot CPU).
pub fn cpu_index() -> usize {
    percpu::current().idx.load(Ordering::Relaxed) as usize
}

/// Would make CPU `cpu` leave its guest; x86 sends no IPI for this yet, so a running vCPU sees new events at
/// its next exit (at the latest the next LAPIC tick).
pub fn kick(_cpu: usize) {}

/// Timer ticks this CPU has seen (a new tick ends a time slice).
pub fn cpu_ticks() -> u64 {
    percpu::current().ticks.load(Ordering::Acquire)
}

/// Sleeps until the next interrupt.
pub fn idle() {
    // SAFETY: the IDT handles the timer; interrupts are disabled again after the wake-up.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// True (once) when the control channel signalled received bytes since the last call.
pub fn take_ctl_irq() -> bool {
    com2::take_irq()
}

/// One byte typed on the console, if any.
pub fn console_read_byte() -> Option<u8> {
    serial::try_read_byte()
}

/// The pvclock record every vCPU gets: system time is a linear function of the TSC (see `lapic::now_ns`), so
/// one record stays valid for good.
pub fn time_info() -> xen_abi::xen::VcpuTimeInfo {
    let tsc_hz = lapic::tsc_per_tick() * (1_000_000_000 / lapic::PERIOD_NS);
    let (mul, shift) = xen_hv::time::scale(tsc_hz);
    xen_abi::xen::VcpuTimeInfo {
        version: 2,
        pad0: 0,
        tsc_timestamp: lapic::tsc0(),
        system_time: 0,
        tsc_to_system_mul: mul,
        tsc_shift: shift,
        flags: xen_hv::time::PVCLOCK_TSC_STABLE,
        pad1: [0; 2],
    }
}

/// Ends the machine. Under QEMU with `isa-debug-exit` at port 0xf4, QEMU exits with status `(code << 1) | 1`;
/// on real hardware the CPU halts.
pub fn exit(code: u8) -> ! {
    // SAFETY: port 0xf4 is QEMU's debug-exit device in the test machine and unused on real hardware; a write
    // there has no memory-safety effect.
    unsafe { Port::<u32>::new(0xf4).write(u32::from(code)) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Reads `len` bytes of physical memory at `paddr`, identity-mapped by the boot page tables.
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
