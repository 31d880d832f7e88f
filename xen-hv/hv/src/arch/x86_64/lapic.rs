//! The local APIC in xAPIC (MMIO) mode: the periodic timer that drives preemption, and system time.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::port::Port;

const BASE: usize = 0xfee0_0000;
const SVR: usize = 0xf0;
const EOI: usize = 0xb0;
const LVT_TIMER: usize = 0x320;
const TIMER_INIT: usize = 0x380;
const TIMER_CUR: usize = 0x390;
const TIMER_DIV: usize = 0x3e0;

/// Timer ticks of the boot CPU since start.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
static TSC0: AtomicU64 = AtomicU64::new(0);
static TSC_PER_TICK: AtomicU64 = AtomicU64::new(0);
/// Timer period in nanoseconds.
pub const PERIOD_NS: u64 = 10_000_000;
/// Timer counts per period (divide-by-16 clock), measured against the PIT by [`calibrate_timer`].
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);
/// The PIT's input clock in Hz.
const PIT_HZ: u64 = 1_193_182;

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
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    // SAFETY: IA32_APIC_BASE: set the global enable bit, keep the base.
    unsafe {
        let mut msr = x86_64::registers::model_specific::Msr::new(0x1b);
        let v = msr.read();
        msr.write(v | (1 << 11));
    }
    write(SVR, 0x100 | u32::from(spurious));
    write(TIMER_DIV, 0x3);
    if INIT_COUNT.load(Ordering::Acquire) == 0 {
        calibrate_timer();
    }
    write(LVT_TIMER, (1 << 17) | u32::from(vector));
    write(TIMER_INIT, INIT_COUNT.load(Ordering::Acquire));
}

/// Measures how far the APIC timer counts during one period timed by PIT channel 2 (boot CPU, timer masked).
/// Falls back to QEMU's nominal 1 GHz APIC clock when the PIT does not answer.
fn calibrate_timer() {
    let pit_count = (PIT_HZ * PERIOD_NS / 1_000_000_000) as u16;
    write(LVT_TIMER, 1 << 16);
    write(TIMER_INIT, u32::MAX);
    // SAFETY: programs PIT channel 2 (the speaker timer, gate via port 0x61 bit 0, speaker output off) for one
    // one-shot countdown; nothing else uses it.
    let measured = unsafe {
        let mut ctl = Port::<u8>::new(0x61);
        let gate = (ctl.read() & 0xfc) | 1;
        ctl.write(gate & !1);
        Port::<u8>::new(0x43).write(0xb0);
        let mut data = Port::<u8>::new(0x42);
        data.write(pit_count as u8);
        data.write((pit_count >> 8) as u8);
        let start = read(TIMER_CUR);
        ctl.write(gate);
        let mut spins = 0u64;
        while ctl.read() & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let end = read(TIMER_CUR);
        ctl.write(gate & !1);
        (spins < 100_000_000).then(|| start.wrapping_sub(end))
    };
    write(TIMER_INIT, 0);
    let counts = match measured {
        Some(c) if c > 1000 => c,
        // QEMU's APIC clock is 1 GHz: 16 ns per count after the divider.
        _ => (PERIOD_NS / 16) as u32,
    };
    INIT_COUNT.store(counts, Ordering::Release);
}

/// Timer counts per period, as calibrated.
pub fn counts_per_tick() -> u32 {
    INIT_COUNT.load(Ordering::Acquire)
}

/// This CPU's local APIC ID.
pub fn id() -> u32 {
    read(0x20) >> 24
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

/// The TSC value at system time 0.
pub fn tsc0() -> u64 {
    TSC0.load(Ordering::Acquire)
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
