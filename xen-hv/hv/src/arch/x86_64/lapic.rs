//! The local APIC in xAPIC (MMIO) mode: the periodic timer that drives preemption, and system time.

use core::sync::atomic::{AtomicU64, Ordering};

const BASE: usize = 0xfee0_0000;
const SVR: usize = 0xf0;
const EOI: usize = 0xb0;
const LVT_TIMER: usize = 0x320;
const TIMER_INIT: usize = 0x380;
const TIMER_DIV: usize = 0x3e0;

/// Timer ticks of the boot CPU since start.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
static TSC0: AtomicU64 = AtomicU64::new(0);
static TSC_PER_TICK: AtomicU64 = AtomicU64::new(0);
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

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measures the TSC rate against the timer over a few ticks (boot CPU, interrupts off on entry and exit).
pub fn calibrate() {
    let wait_tick = || {
        let t = TICKS.load(Ordering::Acquire);
        while TICKS.load(Ordering::Acquire) == t {
            // SAFETY: the IDT handles the timer; interrupts are disabled again after the wake-up.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        }
    };
    wait_tick();
    let t0 = rdtsc();
    for _ in 0..4 {
        wait_tick();
    }
    let per_tick = ((rdtsc() - t0) / 4).max(1);
    TSC0.store(t0, Ordering::Release);
    TSC_PER_TICK.store(per_tick, Ordering::Release);
}

/// TSC cycles per timer period, as calibrated.
pub fn tsc_per_tick() -> u64 {
    TSC_PER_TICK.load(Ordering::Acquire)
}

/// Monotonic system time in nanoseconds, the same on every CPU (from the TSC calibrated by [`calibrate`]).
pub fn now_ns() -> u64 {
    let per_tick = TSC_PER_TICK.load(Ordering::Acquire).max(1);
    let delta = rdtsc().wrapping_sub(TSC0.load(Ordering::Acquire));
    (u128::from(delta) * u128::from(PERIOD_NS) / u128::from(per_tick)) as u64
}

/// Sends INIT then two STARTUP IPIs to every other CPU, starting them at `vector << 12`.
pub fn start_aps(vector: u8, mut delay_ticks: impl FnMut(u64)) {
    const ICR_LO: usize = 0x300;
    let wait_idle = || while read(ICR_LO) & (1 << 12) != 0 {};
    // All excluding self, INIT, level assert.
    write(ICR_LO, 0x000c_4500);
    wait_idle();
    delay_ticks(1);
    for _ in 0..2 {
        write(ICR_LO, 0x000c_4600 | u32::from(vector));
        wait_idle();
        delay_ticks(1);
    }
}

/// Called by the timer vector's stub.
#[no_mangle]
extern "C" fn hv_timer_interrupt() {
    let cpu = super::percpu::current();
    cpu.ticks.fetch_add(1, Ordering::AcqRel);
    if cpu.idx.load(Ordering::Relaxed) == 0 {
        TICKS.fetch_add(1, Ordering::AcqRel);
    }
    eoi();
}
