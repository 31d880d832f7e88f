//! x86_64 support: boot, console, descriptor tables, LAPIC timer, SVM, and platform exit.

pub mod boot;
pub mod com2;
pub mod cpu;
pub mod lapic;
pub mod percpu;
pub mod serial;
pub mod smp;
pub mod svm;

use x86_64::instructions::port::Port;

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
