//! Time on aarch64: the generic timer's physical count for system time, and the EL2 physical timer (CNTHP)
//! as the scheduling tick.

use core::sync::atomic::{AtomicU64, Ordering};

/// The tick period.
pub const PERIOD_NS: u64 = 10_000_000;

/// Ticks seen by each CPU (indexed by [`super::cpu_index`]).
pub static TICKS: [AtomicU64; super::MAX_CPUS] = [const { AtomicU64::new(0) }; super::MAX_CPUS];

/// The counter frequency in Hz (CNTFRQ_EL0, set by firmware or QEMU).
pub fn frequency() -> u64 {
    let f: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack)) };
    f.max(1)
}

/// The physical count (CNTPCT_EL0).
pub fn count() -> u64 {
    let c: u64;
    // SAFETY: reading CNTPCT_EL0 after an ISB has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) c, options(nomem, nostack)) };
    c
}

/// System time in nanoseconds since the counter started.
pub fn now_ns() -> u64 {
    (u128::from(count()) * 1_000_000_000 / u128::from(frequency())) as u64
}

/// Arms CNTHP one period from now (enabled, unmasked).
pub fn arm() {
    let tval = frequency() * PERIOD_NS / 1_000_000_000;
    // SAFETY: programming the EL2 physical timer, owned by the hypervisor.
    unsafe {
        core::arch::asm!(
            "msr cnthp_tval_el2, {t}",
            "msr cnthp_ctl_el2, {one}",
            "isb",
            t = in(reg) tval,
            one = in(reg) 1u64,
            options(nomem, nostack)
        );
    }
}

/// Handles every pending physical interrupt: a CNTHP expiry counts a tick and re-arms the timer. Returns true
/// when the virtual timer (the running guest's) fired; its owner masks it and gets the virtual interrupt.
pub fn handle_interrupts() -> bool {
    let mut vtimer = false;
    while let Some(intid) = super::gic::ack() {
        match intid {
            super::gic::HYP_TIMER_INTID => {
                TICKS[super::cpu_index()].fetch_add(1, Ordering::AcqRel);
                arm();
            }
            super::gic::VTIMER_INTID => {
                // Level-triggered: silence it until the guest's state is saved with IMASK set.
                // SAFETY: masks the EL1 virtual timer's output; the caller saved the guest's CNTV_CTL_EL0 first.
                unsafe {
                    core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 3u64, options(nomem, nostack))
                };
                vtimer = true;
            }
            _ => {}
        }
        super::gic::eoi(intid);
    }
    vtimer
}

/// System time in nanoseconds at counter value `count`.
pub fn count_to_ns(count: u64) -> u64 {
    (u128::from(count) * 1_000_000_000 / u128::from(frequency())) as u64
}
