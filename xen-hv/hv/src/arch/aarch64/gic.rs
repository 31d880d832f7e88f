//! The GICv3 of the QEMU virt machine: the distributor and the boot CPU's redistributor (addresses from the
//! device tree), the physical CPU interface through the ICC system registers at EL2, and the list registers
//! of the virtual CPU interface through which guests get their interrupts.

use core::sync::atomic::{AtomicU64, Ordering};

/// The EL2 physical timer's PPI (CNTHP), the hypervisor's tick.
pub const HYP_TIMER_INTID: u32 = 26;
/// The EL1 virtual timer's PPI (CNTV), the guests' timer: taken at EL2 and forwarded to the running vCPU.
pub const VTIMER_INTID: u32 = 27;
/// The SGI one CPU sends another to make the vCPU running there exit (and see new interrupts).
pub const KICK_SGI: u32 = 1;
/// Highest INTID that is not special (1020..1023 are).
const SPURIOUS: u32 = 1020;

static GICD: AtomicU64 = AtomicU64::new(0);
static GICR: AtomicU64 = AtomicU64::new(0);

fn w32(addr: u64, v: u32) {
    // SAFETY: `addr` is a register of the GIC the device tree describes, mapped as device memory by the boot
    // tables; writing it only affects interrupt routing.
    unsafe { core::ptr::write_volatile(addr as usize as *mut u32, v) };
}

fn r32(addr: u64) -> u32 {
    // SAFETY: as in `w32`; reads of these registers have no side effects.
    unsafe { core::ptr::read_volatile(addr as usize as *const u32) }
}

/// Why the GIC cannot be used.
#[derive(Debug, Clone, Copy)]
pub enum GicError {
    /// The device tree has no `arm,gic-v3` node with distributor and redistributor ranges.
    NotFound,
    /// The boot CPU's redistributor did not wake up.
    RedistributorAsleep,
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotFound => f.write_str("no GICv3 in the device tree"),
            Self::RedistributorAsleep => f.write_str("the GICv3 redistributor stays asleep"),
        }
    }
}

/// Sets the GIC up for the boot CPU: affinity routing and group 1 on, then [`init_cpu`]. Interrupts stay
/// masked in PSTATE: they are taken as guest exits or polled while idle.
pub fn init(gicd: u64, gicr: u64) -> Result<(), GicError> {
    if gicd == 0 || gicr == 0 {
        return Err(GicError::NotFound);
    }
    GICD.store(gicd, Ordering::Release);
    GICR.store(gicr, Ordering::Release);
    // GICD_CTLR: ARE (bit 4), EnableGrp1 (bit 1), EnableGrp0 (bit 0); the virt machine's GIC has one security
    // state.
    w32(gicd, (1 << 4) | (1 << 1) | 1);
    init_cpu()
}

/// The redistributor frame of the calling CPU: the one whose GICR_TYPER affinity is this CPU's MPIDR.
fn my_redistributor() -> Option<u64> {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    let aff = (mpidr & 0xff_ffff) | ((mpidr >> 8) & 0xff00_0000);
    let mut frame = GICR.load(Ordering::Acquire);
    for _ in 0..64 {
        let typer = u64::from(r32(frame + 8)) | (u64::from(r32(frame + 12)) << 32);
        if typer >> 32 == aff {
            return Some(frame);
        }
        if typer & (1 << 4) != 0 {
            return None;
        }
        // RD_base and SGI_base, 64 KiB each (no virtual LPI frames on GICv3).
        frame += 0x2_0000;
    }
    None
}

/// Sets up the calling CPU's redistributor (awake, SGIs/PPIs in group 1 with priority 0x80, the CNTHP and
/// virtual timer PPIs enabled) and its ICC system register interface at EL2 with all priorities unmasked.
pub fn init_cpu() -> Result<(), GicError> {
    let gicr = my_redistributor().ok_or(GicError::NotFound)?;
    // GICR_WAKER: clear ProcessorSleep, wait for ChildrenAsleep to clear.
    let waker = gicr + 0x14;
    w32(waker, r32(waker) & !(1 << 1));
    let mut spins = 0u32;
    while r32(waker) & (1 << 2) != 0 {
        spins += 1;
        if spins > 1_000_000 {
            return Err(GicError::RedistributorAsleep);
        }
    }
    let sgi = gicr + 0x1_0000;
    // Every SGI/PPI in group 1, priority 0x80; enable the hypervisor timer.
    w32(sgi + 0x80, u32::MAX);
    for i in 0..8 {
        w32(sgi + 0x400 + 4 * i, 0x8080_8080);
    }
    w32(
        sgi + 0x100,
        (1 << HYP_TIMER_INTID) | (1 << VTIMER_INTID) | (1 << KICK_SGI),
    );
    // SAFETY: ICC_SRE_EL2 = SRE | DFB | DIB | Enable (EL1 may use its system register interface); then
    // priority mask open, group 1 enabled. Only the GIC CPU interface state changes.
    unsafe {
        core::arch::asm!(
            "msr icc_sre_el2, {sre}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            sre = in(reg) 0xfu64,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nostack)
        );
    }
    Ok(())
}

/// Acknowledges one pending physical interrupt, returning its INTID (None when nothing is pending).
pub fn ack() -> Option<u32> {
    let intid: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority pending group-1 interrupt.
    unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nomem, nostack)) };
    let intid = intid as u32 & 0xff_ffff;
    (intid < SPURIOUS).then_some(intid)
}

/// Ends (priority drop and deactivation) an acknowledged interrupt.
pub fn eoi(intid: u32) {
    // SAFETY: writing ICC_EOIR1_EL1 with an INTID this CPU acknowledged.
    unsafe {
        core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nomem, nostack))
    };
}

/// List register state bit: pending.
pub const LR_PENDING: u64 = 1 << 62;

/// Sends the kick SGI to the CPU whose MPIDR affinity 0 is `aff0` (affinity levels above 0 are 0 on the virt
/// machine's first cluster).
pub fn kick(aff0: u64) {
    if aff0 >= 16 {
        return;
    }
    let v = (u64::from(KICK_SGI) << 24) | (1 << aff0);
    // SAFETY: ICC_SGI1R_EL1 sends a group-1 SGI to the named CPU; it only makes that CPU take an interrupt.
    unsafe { core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) v, options(nomem, nostack)) };
}

/// A list register value: virtual INTID `intid` pending, group 1, priority 0xa0.
pub fn lr_pending(intid: u32) -> u64 {
    LR_PENDING | (1 << 60) | (0xa0 << 48) | u64::from(intid)
}

/// True when a list register value no longer holds an interrupt (state inactive).
pub fn lr_free(lr: u64) -> bool {
    (lr >> 62) & 3 == 0
}
