//! The aarch64 vCPU: an EL1 guest under stage-2 translation, entered with ERET from EL2.

/// The registers the exception vectors save and restore around a guest run (see `boot.rs`).
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy)]
pub struct GuestFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL2: where the guest continues.
    pub elr: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub spsr: u64,
    /// The host stack pointer during the run.
    pub host_sp: u64,
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
    /// q0..q31.
    pub q: [u128; 32],
}

const _: () = {
    use super::boot::{FRAME_ELR, FRAME_FPCR, FRAME_FPSR, FRAME_HOST_SP, FRAME_Q, FRAME_SPSR};
    use core::mem::offset_of;
    assert!(offset_of!(GuestFrame, elr) == FRAME_ELR);
    assert!(offset_of!(GuestFrame, spsr) == FRAME_SPSR);
    assert!(offset_of!(GuestFrame, host_sp) == FRAME_HOST_SP);
    assert!(offset_of!(GuestFrame, fpsr) == FRAME_FPSR);
    assert!(offset_of!(GuestFrame, fpcr) == FRAME_FPCR);
    assert!(offset_of!(GuestFrame, q) == FRAME_Q);
};

use xen_hv::paging::WalkError;
use xen_hv::vcpu::{Exit, Reg, Vcpu};

/// HCR_EL2 while a guest runs: stage-2 translation (VM), set/way invalidation as clean+invalidate (SWIO),
/// physical FIQ/IRQ/SError to EL2 and the virtual ones to the guest (FMO, IMO, AMO), WFI trapped (TWI), ID
/// group 3 registers trapped (TID3, to hide what guests cannot use), SMC trapped (TSC), EL1 in AArch64 (RW).
const HCR_GUEST: u64 =
    1 | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 13) | (1 << 18) | (1 << 19) | (1 << 31);
/// SPSR for the first entry: EL1 with SP_EL1, D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// SCTLR_EL1's reset value: RES1 bits only, MMU and caches off.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// Xen's hypercall immediate: `hvc #0xEA1`.
const XEN_HVC_IMM: u64 = 0xea1;
/// ESR exception classes.
const EC_WFX: u64 = 0x01;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_SYSREG: u64 = 0x18;
const EC_SVE: u64 = 0x19;
const EC_SME: u64 = 0x1d;
const EC_IABT_LOW: u64 = 0x20;
const EC_DABT_LOW: u64 = 0x24;
/// CNTV_CTL_EL0: enable.
const CNTV_ENABLE: u64 = 1;
/// CNTV_CTL_EL0: interrupt mask.
const CNTV_IMASK: u64 = 2;
/// List registers used (QEMU's GICv3 implements 4).
const NR_LRS: usize = 4;

/// Reads ID register `S3_0_C0_C<crm>_<op2>` (the ID_AA64* and AArch32 ID space), 0 where none is allocated.
fn read_id(crm: u64, op2: u64) -> u64 {
    macro_rules! ids {
        ($($m:literal, $o:literal);* $(;)?) => {
            match (crm, op2) {
                $(
                    ($m, $o) => {
                        let v: u64;
                        // SAFETY: reading an ID register has no side effects.
                        unsafe {
                            core::arch::asm!(
                                concat!("mrs {}, S3_0_C0_C", $m, "_", $o),
                                out(reg) v,
                                options(nomem, nostack)
                            )
                        };
                        v
                    }
                )*
                _ => 0,
            }
        };
    }
    ids!(
        1, 0; 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 1, 7;
        2, 0; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6; 2, 7;
        3, 0; 3, 1; 3, 2; 3, 4; 3, 5; 3, 6;
        4, 0; 4, 1; 4, 4; 4, 5;
        5, 0; 5, 1; 5, 4; 5, 5;
        6, 0; 6, 1; 6, 2;
        7, 0; 7, 1; 7, 2;
    )
}

/// Hides from guests the features whose state this hypervisor does not switch (see `emulate_sysreg`).
fn sanitise_id(crm: u64, op2: u64, v: u64) -> u64 {
    let clear = |v: u64, fields: &[u32]| fields.iter().fold(v, |v, &lsb| v & !(0xf << lsb));
    match (crm, op2) {
        // ID_AA64PFR0_EL1: SVE, MPAM, AMU.
        (4, 0) => clear(v, &[32, 40, 44]),
        // ID_AA64PFR1_EL1: MTE, MPAM_frac, SME.
        (4, 1) => clear(v, &[8, 16, 24]),
        // ID_AA64ZFR0_EL1, ID_AA64SMFR0_EL1: no SVE or SME.
        (4, 4) | (4, 5) => 0,
        // ID_AA64DFR0_EL1: PMUVer, PMSVer (SPE), TraceBuffer.
        (5, 0) => clear(v, &[8, 32, 44]),
        // ID_AA64ISAR1_EL1: APA, API, GPA, GPI.
        (6, 1) => clear(v, &[4, 8, 24, 28]),
        // ID_AA64ISAR2_EL1: GPA3, APA3.
        (6, 2) => clear(v, &[8, 12]),
        _ => v,
    }
}

macro_rules! el1_sysregs {
    ($($r:ident),* $(,)?) => {
        /// The EL1 (and EL0) system registers switched with the vCPU.
        const NR_EL1: usize = [$(stringify!($r)),*].len();

        fn save_el1(out: &mut [u64; NR_EL1]) {
            let mut i = 0;
            $(
                // SAFETY: reading an EL1 register from EL2 has no side effects.
                unsafe { core::arch::asm!(concat!("mrs {}, ", stringify!($r)), out(reg) out[i], options(nomem, nostack)) };
                i += 1;
            )*
            let _ = i;
        }

        fn restore_el1(v: &[u64; NR_EL1]) {
            let mut i = 0;
            $(
                // SAFETY: the EL1 registers belong to the guest about to run; EL2 does not depend on them.
                unsafe { core::arch::asm!(concat!("msr ", stringify!($r), ", {}"), in(reg) v[i], options(nomem, nostack)) };
                i += 1;
            )*
            let _ = i;
        }

        /// Index of SCTLR_EL1 etc. in the saved array.
        #[allow(non_upper_case_globals, dead_code)]
        mod idx {
            el1_sysregs!(@idx 0usize, $($r),*);
        }
    };
    (@idx $n:expr, $r:ident $(, $rest:ident)*) => {
        pub const $r: usize = $n;
        el1_sysregs!(@idx $n + 1usize $(, $rest)*);
    };
    (@idx $n:expr) => {};
}

el1_sysregs!(
    sctlr_el1,
    ttbr0_el1,
    ttbr1_el1,
    tcr_el1,
    mair_el1,
    amair_el1,
    vbar_el1,
    contextidr_el1,
    tpidr_el0,
    tpidrro_el0,
    tpidr_el1,
    sp_el0,
    sp_el1,
    elr_el1,
    spsr_el1,
    esr_el1,
    far_el1,
    afsr0_el1,
    afsr1_el1,
    par_el1,
    cpacr_el1,
    cntkctl_el1,
    cntv_ctl_el0,
    cntv_cval_el0,
    csselr_el1,
);

/// An EL1 guest vCPU. Its general-purpose and FP/SIMD registers live in its state frame (written by the exit
/// vectors on every exit), its EL1 system registers and virtual-GIC state in this structure, loaded into the
/// CPU for every run.
pub struct Arm64Vcpu {
    frame_pa: u64,
    el1: [u64; NR_EL1],
    vttbr: u64,
    vmpidr: u64,
    lrs: [u64; NR_LRS],
    vmcr: u64,
    ap1r0: u64,
    /// Interrupts (INTID bit) waiting for a list register: upcalls and SGIs.
    upcall: u32,
    /// An SGI for other vCPUs, reported as the next exit.
    send_ipi: Option<Exit>,
    /// The virtual timer fired and its PPI waits for a list register.
    vtimer: bool,
    flush: bool,
    /// Address of the instruction that caused the last exit.
    last_pc: u64,
    /// The emulated distributor and redistributor.
    vgic: xen_hv::vgic::Vgic,
}

impl Arm64Vcpu {
    /// A vCPU at `entry` in EL1h with all exceptions masked and x0 = `x0`, on the stage-2 tables at `root`
    /// tagged with `vmid`; its frame (4 KiB, zeroed here) is `frame_pa`.
    pub fn new(frame_pa: u64, root: u64, vmid: u16, vcpu_id: u32, entry: u64, x0: u64) -> Self {
        // SAFETY: the frame was just allocated for this vCPU, is identity-mapped and 4 KiB large.
        unsafe { core::ptr::write_bytes(frame_pa as usize as *mut u8, 0, 4096) };
        let mut v = Self {
            frame_pa,
            el1: [0; NR_EL1],
            vttbr: (u64::from(vmid) << 48) | root,
            vmpidr: (1 << 31) | u64::from(vcpu_id),
            lrs: [0; NR_LRS],
            vmcr: 0,
            ap1r0: 0,
            upcall: 0,
            send_ipi: None,
            vtimer: false,
            flush: true,
            last_pc: entry,
            vgic: xen_hv::vgic::Vgic::new(vcpu_id, 1),
        };
        v.el1[idx::sctlr_el1] = SCTLR_EL1_RESET;
        let f = v.frame();
        f.x[0] = x0;
        f.elr = entry;
        f.spsr = SPSR_EL1H_MASKED;
        v
    }

    /// Replaces the emulated GIC state (the domain builder knows the vCPU count).
    pub fn set_vgic(&mut self, vgic: xen_hv::vgic::Vgic) {
        self.vgic = vgic;
    }

    /// Emulates a data abort on the virtual GIC's registers from its syndrome (ISV set: a single load or
    /// store of `SAS` bytes to or from register `SRT`); false when the access is elsewhere or not decodable.
    fn emulate_mmio(&mut self, esr: u64, gpa: u64) -> bool {
        if esr & (1 << 24) == 0 || !self.vgic.claims(gpa) {
            return false;
        }
        let size = 1u64 << ((esr >> 22) & 3);
        let rt = ((esr >> 16) & 0x1f) as usize;
        if esr & (1 << 6) != 0 {
            let v = if rt < 31 { self.frame_ref().x[rt] } else { 0 };
            self.vgic.write(gpa, size, v);
        } else {
            let v = self.vgic.read(gpa, size);
            if rt < 31 {
                self.frame().x[rt] = v;
            }
        }
        true
    }

    fn frame(&mut self) -> &mut GuestFrame {
        // SAFETY: the frame is owned by this vCPU (allocated for it, 4 KiB, 16-byte aligned as a page) and only
        // reached through `&mut self` or, while the guest runs, by the exit vectors of the same call.
        unsafe { &mut *(self.frame_pa as usize as *mut GuestFrame) }
    }

    fn frame_ref(&self) -> &GuestFrame {
        // SAFETY: as in `frame`, shared.
        unsafe { &*(self.frame_pa as usize as *const GuestFrame) }
    }

    fn load(&mut self) {
        restore_el1(&self.el1);
        // SAFETY: the stage-2 root, HCR and GIC virtual-interface values describe this vCPU; the hypervisor's
        // own EL2 translation does not depend on them.
        unsafe {
            core::arch::asm!(
                "msr vttbr_el2, {vttbr}",
                "msr vmpidr_el2, {vmpidr}",
                "msr hcr_el2, {hcr}",
                "msr ich_lr0_el2, {lr0}",
                "msr ich_lr1_el2, {lr1}",
                "msr ich_lr2_el2, {lr2}",
                "msr ich_lr3_el2, {lr3}",
                "msr ich_vmcr_el2, {vmcr}",
                "msr ich_ap1r0_el2, {ap1r0}",
                "msr ich_hcr_el2, {one}",
                "isb",
                vttbr = in(reg) self.vttbr,
                vmpidr = in(reg) self.vmpidr,
                hcr = in(reg) HCR_GUEST,
                lr0 = in(reg) self.lrs[0],
                lr1 = in(reg) self.lrs[1],
                lr2 = in(reg) self.lrs[2],
                lr3 = in(reg) self.lrs[3],
                vmcr = in(reg) self.vmcr,
                ap1r0 = in(reg) self.ap1r0,
                one = in(reg) 1u64,
                options(nostack)
            );
        }
        if self.flush {
            // SAFETY: invalidates the stage-1 and stage-2 TLB entries of the VMID just loaded.
            unsafe { core::arch::asm!("tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
            self.flush = false;
        }
    }

    fn save(&mut self) {
        save_el1(&mut self.el1);
        let (lr0, lr1, lr2, lr3, vmcr, ap1r0): (u64, u64, u64, u64, u64, u64);
        // SAFETY: reading the virtual interface state and switching it off has no effect on the host.
        unsafe {
            core::arch::asm!(
                "mrs {lr0}, ich_lr0_el2",
                "mrs {lr1}, ich_lr1_el2",
                "mrs {lr2}, ich_lr2_el2",
                "mrs {lr3}, ich_lr3_el2",
                "mrs {vmcr}, ich_vmcr_el2",
                "mrs {ap1r0}, ich_ap1r0_el2",
                "msr ich_hcr_el2, xzr",
                "isb",
                lr0 = out(reg) lr0,
                lr1 = out(reg) lr1,
                lr2 = out(reg) lr2,
                lr3 = out(reg) lr3,
                vmcr = out(reg) vmcr,
                ap1r0 = out(reg) ap1r0,
                options(nostack)
            );
        }
        self.lrs = [lr0, lr1, lr2, lr3];
        self.vmcr = vmcr;
        self.ap1r0 = ap1r0;
    }

    /// Moves a queued upcall and a fired virtual timer into free list registers (unless already listed).
    fn place_upcall(&mut self) {
        for intid in 0..32 {
            if self.upcall & (1 << intid) != 0 && self.list(intid) {
                self.upcall &= !(1 << intid);
            }
        }
        if self.vtimer && self.list(super::gic::VTIMER_INTID) {
            self.vtimer = false;
        }
    }

    /// Puts virtual INTID `intid` in a list register, or makes the one already holding it (perhaps active in
    /// the guest's handler) pending again; false when all are busy.
    fn list(&mut self, intid: u32) -> bool {
        if let Some(lr) = self
            .lrs
            .iter_mut()
            .find(|lr| !super::gic::lr_free(**lr) && **lr as u32 == intid)
        {
            *lr |= super::gic::LR_PENDING;
            return true;
        }
        match self.lrs.iter_mut().find(|lr| super::gic::lr_free(**lr)) {
            Some(lr) => {
                *lr = super::gic::lr_pending(intid);
                true
            }
            None => false,
        }
    }

    /// Emulates a trapped MRS/MSR (ESR class 0x18): reads of the ID registers (sanitised: no SVE, SME, MTE,
    /// pointer authentication, AMU, MPAM, PMU, SPE or trace buffer, whose state is not switched between
    /// guests) and writes of ICC_SGI1R_EL1 (an SGI to this vCPU is listed at once, one to others becomes an
    /// `Exit::SendIpi` for the common code).
    /// False when the access is not one of those.
    fn emulate_sysreg(&mut self, esr: u64) -> bool {
        let read = esr & 1 != 0;
        let crm = (esr >> 1) & 0xf;
        let rt = ((esr >> 5) & 0x1f) as usize;
        let crn = (esr >> 10) & 0xf;
        let op1 = (esr >> 14) & 7;
        let op2 = (esr >> 17) & 7;
        let op0 = (esr >> 20) & 3;
        match (op0, op1, crn, crm, op2, read) {
            (3, 0, 0, 1..=7, _, true) => {
                let v = sanitise_id(crm, op2, read_id(crm, op2));
                if rt < 31 {
                    self.frame().x[rt] = v;
                }
                true
            }
            (3, 0, 12, 11, 5, false) => {
                let v = if rt < 31 { self.frame_ref().x[rt] } else { 0 };
                let intid = ((v >> 24) & 0xf) as u8;
                let me = self.vmpidr & 0xff;
                let aff1 = (v >> 16) & 0xff;
                let all_but_self = v & (1 << 40) != 0;
                let mut targets = if aff1 == 0 { v & 0xffff } else { 0 };
                if !all_but_self && me < 16 && targets & (1 << me) != 0 {
                    let _ = self.list(u32::from(intid));
                    targets &= !(1 << me);
                }
                if all_but_self || targets != 0 {
                    self.send_ipi = Some(Exit::SendIpi {
                        intid,
                        targets,
                        all_but_self,
                    });
                }
                true
            }
            _ => false,
        }
    }

    fn syndrome() -> (u64, u64, u64) {
        let (esr, far, hpfar): (u64, u64, u64);
        // SAFETY: reading the exception syndrome registers has no side effects.
        unsafe {
            core::arch::asm!(
                "mrs {0}, esr_el2",
                "mrs {1}, far_el2",
                "mrs {2}, hpfar_el2",
                out(reg) esr,
                out(reg) far,
                out(reg) hpfar,
                options(nomem, nostack)
            );
        }
        (esr, far, hpfar)
    }
}

impl Vcpu for Arm64Vcpu {
    fn run(&mut self) -> Exit {
        loop {
            self.place_upcall();
            self.load();
            let frame = self.frame();
            // SAFETY: the frame holds this guest's state and the EL1 registers, HCR_EL2 and VTTBR_EL2 loaded
            // just above are the same guest's.
            let kind = unsafe { super::boot::guest_run(frame) };
            self.save();
            let (esr, far, hpfar) = Self::syndrome();
            let elr = self.frame_ref().elr;
            self.last_pc = elr;
            match kind {
                1 | 2 => {
                    if super::timer::handle_interrupts() {
                        // The guest's virtual timer fired: keep it masked (the guest unmasks it when it
                        // re-arms, as Linux does) and deliver its PPI through a list register.
                        self.el1[idx::cntv_ctl_el0] |= CNTV_IMASK;
                        self.vtimer = true;
                    }
                    return Exit::Interrupt;
                }
                3 => return Exit::Unhandled(esr),
                _ => {}
            }
            let ec = esr >> 26;
            return match ec {
                EC_HVC64 if esr & 0xffff != 0 => {
                    // ELR already points past the HVC.
                    self.last_pc = elr.wrapping_sub(4);
                    if esr & 0xffff == XEN_HVC_IMM {
                        Exit::Hypercall
                    } else {
                        Exit::Forbidden("an HVC other than hvc #0xEA1 (Xen) or hvc #0 (PSCI)")
                    }
                }
                EC_SMC64 | EC_HVC64 if esr & 0xffff == 0 => {
                    // PSCI: a trapped SMC returns to itself, an HVC past itself.
                    if ec == EC_SMC64 {
                        self.frame().elr = elr.wrapping_add(4);
                    }
                    let x = &self.frame_ref().x;
                    Exit::Firmware {
                        function: x[0],
                        args: [x[1], x[2], x[3]],
                    }
                }
                EC_SMC64 => Exit::Forbidden("an SMC other than smc #0"),
                // Trapped system registers (such as ICC_SGI1R_EL1 under HCR_EL2.IMO) are not emulated; SVE and
                // SME state is not switched between guests (CPTR_EL2 traps it).
                EC_SYSREG => {
                    if self.emulate_sysreg(esr) {
                        self.frame().elr = elr.wrapping_add(4);
                        match self.send_ipi.take() {
                            Some(exit) => return exit,
                            None => continue,
                        }
                    }
                    Exit::Forbidden("a trapped system register access")
                }
                EC_SVE | EC_SME => Exit::Forbidden("SVE/SME"),
                EC_WFX if esr & 1 == 0 => Exit::Halt,
                EC_WFX => {
                    // WFE: nothing to wait for here; continue after it.
                    self.frame().elr = elr.wrapping_add(4);
                    continue;
                }
                EC_DABT_LOW | EC_IABT_LOW => {
                    let gpa = ((hpfar >> 4) << 12) | (far & 0xfff);
                    if ec == EC_DABT_LOW && self.emulate_mmio(esr, gpa) {
                        self.frame().elr = elr.wrapping_add(4);
                        continue;
                    }
                    Exit::NestedFault { gpa, code: esr }
                }
                _ => Exit::Unhandled(esr),
            };
        }
    }

    fn reg(&self, r: Reg) -> u64 {
        self.frame_ref().x[r as usize]
    }

    fn set_reg(&mut self, r: Reg, v: u64) {
        self.frame().x[r as usize] = v;
    }

    fn rip(&self) -> u64 {
        self.frame_ref().elr
    }

    fn set_rip(&mut self, rip: u64) {
        self.frame().elr = rip;
    }

    fn skip_instruction(&mut self, exit: &Exit) {
        // HVC already returns past itself; a trapped WFI returns to the WFI.
        if matches!(exit, Exit::Halt) {
            let f = self.frame();
            f.elr = f.elr.wrapping_add(4);
        }
    }

    fn inject_undefined(&mut self) {
        // Enter the guest's EL1 synchronous vector as the CPU would for an Unknown-reason exception (EC 0,
        // IL set) at the instruction that exited.
        let pc = self.last_pc;
        let spsr = self.frame_ref().spsr;
        let offset = match spsr & 0xf {
            0b0101 => 0x200,
            0b0100 => 0x000,
            _ => 0x400,
        };
        self.el1[idx::esr_el1] = 1 << 25;
        self.el1[idx::elr_el1] = pc;
        self.el1[idx::spsr_el1] = spsr;
        let vbar = self.el1[idx::vbar_el1];
        let f = self.frame();
        f.spsr = SPSR_EL1H_MASKED;
        f.elr = vbar + offset;
    }

    fn inject_exception(&mut self, _vector: u8, _error_code: Option<u32>) {
        self.inject_undefined();
    }

    fn guest_to_gpa(
        &self,
        gva: u64,
        write: bool,
        _read: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<u64, WalkError> {
        // The guest's EL1 registers are still in the CPU (nothing runs between its exit and the handling), so
        // the hardware walks its stage-1 tables; PAR_EL1 is the guest's and is restored before it runs again.
        let par: u64;
        // SAFETY: an address translation instruction only writes PAR_EL1.
        unsafe {
            if write {
                core::arch::asm!("at s1e1w, {0}", "isb", "mrs {1}, par_el1", in(reg) gva, out(reg) par, options(nostack));
            } else {
                core::arch::asm!("at s1e1r, {0}", "isb", "mrs {1}, par_el1", in(reg) gva, out(reg) par, options(nostack));
            }
        }
        if par & 1 != 0 {
            return Err(WalkError::NotMapped(gva));
        }
        Ok((par & 0x000f_ffff_ffff_f000) | (gva & 0xfff))
    }

    fn hypercall_args(&self) -> (u64, [u64; 5]) {
        let x = &self.frame_ref().x;
        (x[16], [x[0], x[1], x[2], x[3], x[4]])
    }

    fn set_hypercall_result(&mut self, v: u64) {
        self.frame().x[0] = v;
    }

    fn long_mode(&self) -> bool {
        true
    }

    fn read_state_msr(&self, _msr: u32) -> Option<u64> {
        None
    }

    fn write_state_msr(&mut self, _msr: u32, _v: u64) -> bool {
        false
    }

    fn start_at(&mut self, entry: u64, arg: u64) -> bool {
        // PSCI CPU_ON: EL1h with exceptions masked, MMU and caches off, x0 = the context id, everything else
        // as after reset.
        self.el1 = [0; NR_EL1];
        self.el1[idx::sctlr_el1] = SCTLR_EL1_RESET;
        self.lrs = [0; NR_LRS];
        self.vmcr = 0;
        self.ap1r0 = 0;
        self.upcall = 0;
        self.send_ipi = None;
        self.vtimer = false;
        self.flush = true;
        self.last_pc = entry;
        let f = self.frame();
        f.x = [0; 31];
        f.q = [0; 32];
        f.fpsr = 0;
        f.fpcr = 0;
        f.x[0] = arg;
        f.elr = entry;
        f.spsr = SPSR_EL1H_MASKED;
        true
    }

    fn start_from(&mut self, _start: &xen_abi::xen::VcpuStart) -> bool {
        // Secondary vCPUs of Arm guests start through PSCI CPU_ON, not an x86 register context.
        false
    }

    fn timer_deadline(&self) -> Option<u64> {
        let ctl = self.el1[idx::cntv_ctl_el0];
        // Enabled and not masked: it will fire at CVAL (the virtual count equals the physical count).
        (ctl & CNTV_ENABLE != 0 && ctl & CNTV_IMASK == 0)
            .then(|| super::timer::count_to_ns(self.el1[idx::cntv_cval_el0]))
    }

    fn queue_upcall(&mut self, vector: u8) {
        self.upcall |= 1 << (vector % 32);
    }

    fn upcall_queued(&self) -> bool {
        // One bit per interrupt: queueing another never replaces one not yet taken.
        false
    }

    fn flush_guest_tlb(&mut self) {
        self.flush = true;
    }

    fn load_guest_fpu(&mut self) {
        // FP/SIMD registers are switched by the exit vectors on every exit (the hypervisor uses them too).
    }

    fn save_guest_fpu(&mut self) {}

    fn state_frame(&self) -> u64 {
        self.frame_pa
    }
}
