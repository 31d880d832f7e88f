//! The local APIC in xAPIC (MMIO) mode: the periodic timer that drives preemption, and system time.

use core::sync::atomic::{AtomicU64, Ordering};

const BASE: usize = 0xfee0_0000;
const SVR: usize = 0xf0;
const EOI: usize = 0xb0;
const LVT_TIMER: usize = 0x320;
const TIMER_INIT: usize = 0x380;
const TIMER_CUR: usize = 0x390;
const TIMER_DIV: usize = 0x3e0;

/// Timer ticks since start.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// Timer period in nanoseconds.
pub const PERIOD_NS: u64 = 10_000_000;
/// Nanoseconds per timer count: QEMU's APIC runs at 1 GHz, divided by 16. Real hardware would calibrate this
/// against the PIT or the TSC; that is not done yet.
const NS_PER_COUNT: u64 = 16;
const INIT_COUNT: u32 = (PERIOD_NS / NS_PER_COUNT) as u32;

fn write(reg: usize, v: u32) {
    // SAFETY: the xAPIC page is identity-mapped by the boot tables and `reg` is one of its registers.
    unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, v) };
}

fn read(reg: usize) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((BASE + reg) as *const u32) }
}

/// Enables the APIC and starts the periodic timer on `vector`; masks the legacy 8259 PICs, whose vectors would
/// collide with exceptions.
pub fn init(vector: u8, spurious: u8) {
    // SAFETY: writing the interrupt mask registers of both 8259s only stops legacy interrupts.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
    // SAFETY: IA32_APIC_BASE: set the global enable bit, keep the base.
    unsafe {
        let mut msr = x86_64::registers::model_specific::Msr::new(0x1b);
        let v = msr.read();
        msr.write(v | (1 << 11));
    }
    write(SVR, 0x100 | u32::from(spurious));
    write(TIMER_DIV, 0x3);
    write(LVT_TIMER, (1 << 17) | u32::from(vector));
    write(TIMER_INIT, INIT_COUNT);
}

/// Acknowledges the interrupt being handled.
pub fn eoi() {
    write(EOI, 0);
}

/// Monotonic system time in nanoseconds.
pub fn now_ns() -> u64 {
    loop {
        let t0 = TICKS.load(Ordering::Acquire);
        let cur = read(TIMER_CUR);
        if TICKS.load(Ordering::Acquire) == t0 {
            let elapsed = u64::from(INIT_COUNT.saturating_sub(cur)) * NS_PER_COUNT;
            return t0 * PERIOD_NS + elapsed;
        }
    }
}

/// Called by the timer vector's stub.
#[no_mangle]
extern "C" fn hv_timer_interrupt() {
    TICKS.fetch_add(1, Ordering::AcqRel);
    eoi();
}
