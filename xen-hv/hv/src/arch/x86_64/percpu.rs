//! Per-CPU data, reached through the GS base (which VMLOAD of the host area restores after every guest exit).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most physical CPUs brought up.
pub const MAX_CPUS: usize = 8;

/// One CPU's data.
#[repr(C, align(64))]
pub struct PerCpu {
    /// CPU index (0 = boot CPU).
    pub idx: AtomicU32,
    /// LAPIC timer ticks seen by this CPU.
    pub ticks: AtomicU64,
    /// This CPU's host save area (VM_HSAVE_PA).
    pub hsave: AtomicU64,
    /// This CPU's host VMSAVE area.
    pub vmsave: AtomicU64,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            idx: AtomicU32::new(0),
            ticks: AtomicU64::new(0),
            hsave: AtomicU64::new(0),
            vmsave: AtomicU64::new(0),
        }
    }
}

static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

const MSR_GS_BASE: u32 = 0xc000_0101;

/// The data of CPU `idx` (for set-up by another CPU).
pub fn of(idx: usize) -> &'static PerCpu {
    &PERCPU[idx % MAX_CPUS]
}

/// Points this CPU's GS base at its data.
pub fn init(idx: usize) {
    let p = of(idx);
    p.idx.store(idx as u32, Ordering::Relaxed);
    // SAFETY: the GS base is only used by this module; the target is a static that lives forever.
    unsafe {
        x86_64::registers::model_specific::Msr::new(MSR_GS_BASE).write(p as *const PerCpu as u64)
    };
}

/// The current CPU's data.
pub fn current() -> &'static PerCpu {
    // SAFETY: reading the GS base MSR has no side effects.
    let base = unsafe { x86_64::registers::model_specific::Msr::new(MSR_GS_BASE).read() };
    let start = PERCPU.as_ptr() as u64;
    let size = core::mem::size_of::<PerCpu>() as u64;
    let idx = base.wrapping_sub(start) / size;
    // Falls back to CPU 0 when GS is not set up yet (early boot), instead of trusting the value.
    &PERCPU[if idx < MAX_CPUS as u64 {
        idx as usize
    } else {
        0
    }]
}
