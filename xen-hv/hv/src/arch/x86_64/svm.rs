//! AMD SVM: enabling it, the VMCB of each vCPU, the VMRUN loop and the decoding of exits into the neutral
//! [`Exit`]. Written for what QEMU TCG emulates as well as for hardware: no next-RIP (instruction lengths are
//! known per exit), a non-zero ASID, the VMRUN intercept set, EFER.SVME set in the guest, and exit codes compared
//! on their low 32 bits.

use xen_hv::paging::{guest_walk, GuestPaging, WalkError};
use xen_hv::vcpu::{fixed_length, x86_hypercall_args, Exit, Reg, Vcpu};

// Control area offsets.
const INTERCEPT_MISC1: usize = 0x00c;
const INTERCEPT_MISC2: usize = 0x010;
const IOPM_BASE: usize = 0x040;
const MSRPM_BASE: usize = 0x048;
const GUEST_ASID: usize = 0x058;
const TLB_CONTROL: usize = 0x05c;
const VINTR: usize = 0x060;
const VINTR_VECTOR: usize = 0x064;
const EXITCODE: usize = 0x070;
const EXITINFO1: usize = 0x078;
const EXITINFO2: usize = 0x080;
const NP_ENABLE: usize = 0x090;
const EVENTINJ: usize = 0x0a8;
const N_CR3: usize = 0x0b0;
// State save area offsets.
const ES: usize = 0x400;
const CS_SEG: usize = 0x410;
const SS: usize = 0x420;
const DS: usize = 0x430;
const FS: usize = 0x440;
const GS: usize = 0x450;
const GDTR: usize = 0x460;
const LDTR: usize = 0x470;
const IDTR: usize = 0x480;
const TR: usize = 0x490;
const EFER: usize = 0x4d0;
const CR4: usize = 0x548;
const CR3: usize = 0x550;
const CR0: usize = 0x558;
const DR7: usize = 0x560;
const DR6: usize = 0x568;
const RFLAGS: usize = 0x570;
const RIP: usize = 0x578;
const RSP: usize = 0x5d8;
const RAX: usize = 0x5f8;
const STAR: usize = 0x600;
const LSTAR: usize = 0x608;
const CSTAR: usize = 0x610;
const SFMASK: usize = 0x618;
const KERNEL_GS_BASE: usize = 0x620;
const SYSENTER_CS: usize = 0x628;
const SYSENTER_ESP: usize = 0x630;
const SYSENTER_EIP: usize = 0x638;
const CR2: usize = 0x640;
const G_PAT: usize = 0x668;
const CPL: usize = 0x4cb;
const INT_STATE: usize = 0x068;

// Intercept bits.
const I1_INTR: u32 = 1 << 0;
const I1_NMI: u32 = 1 << 1;
const I1_CPUID: u32 = 1 << 18;
const I1_HLT: u32 = 1 << 24;
const I1_IOIO: u32 = 1 << 27;
const I1_MSR: u32 = 1 << 28;
const I1_SHUTDOWN: u32 = 1 << 31;
const I2_VMRUN: u32 = 1 << 0;
const I2_VMMCALL: u32 = 1 << 1;
const I2_VMLOAD: u32 = 1 << 2;
const I2_VMSAVE: u32 = 1 << 3;
const I2_STGI: u32 = 1 << 4;
const I2_CLGI: u32 = 1 << 5;
const I2_SKINIT: u32 = 1 << 6;
const I2_XSETBV: u32 = 1 << 13;

// Exit codes (low 32 bits).
const EXIT_INTR: u32 = 0x60;
const EXIT_NMI: u32 = 0x61;
const EXIT_CPUID: u32 = 0x72;
const EXIT_HLT: u32 = 0x78;
const EXIT_IOIO: u32 = 0x7b;
const EXIT_MSR: u32 = 0x7c;
const EXIT_SHUTDOWN: u32 = 0x7f;
const EXIT_VMRUN: u32 = 0x80;
const EXIT_VMMCALL: u32 = 0x81;
const EXIT_VMLOAD: u32 = 0x82;
const EXIT_VMSAVE: u32 = 0x83;
const EXIT_STGI: u32 = 0x84;
const EXIT_CLGI: u32 = 0x85;
const EXIT_SKINIT: u32 = 0x86;
const EXIT_XSETBV: u32 = 0x8d;
const EXIT_NPF: u32 = 0x400;
const EXIT_INVALID: u32 = 0xffff_ffff;

const EFER_SVME: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
/// EFER bits a guest may set: SCE, LME, LMA, NXE (SVME is forced on and hidden).
const EFER_GUEST_OK: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);
const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;

/// Why SVM cannot be used.
#[derive(Debug, Clone, Copy)]
pub enum SvmError {
    /// The CPU has no SVM.
    NoSvm,
    /// The CPU has SVM but no nested paging.
    NoNpt,
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSvm => "the CPU does not offer AMD SVM",
            Self::NoNpt => "the CPU offers SVM without nested paging",
        })
    }
}

core::arch::global_asm!(
    r#"
    .section .text
    .global svm_vmrun
/* rdi = VMCB physical address, rsi = guest GPR block, rdx = host VMSAVE area */
svm_vmrun:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdx
    push %rsi
    push %rdi
    mov %rdi, %rax
    mov 0x08(%rsi), %rbx
    mov 0x10(%rsi), %rcx
    mov 0x18(%rsi), %rdx
    mov 0x28(%rsi), %rdi
    mov 0x30(%rsi), %rbp
    mov 0x38(%rsi), %r8
    mov 0x40(%rsi), %r9
    mov 0x48(%rsi), %r10
    mov 0x50(%rsi), %r11
    mov 0x58(%rsi), %r12
    mov 0x60(%rsi), %r13
    mov 0x68(%rsi), %r14
    mov 0x70(%rsi), %r15
    mov 0x20(%rsi), %rsi
    clgi
    sti
    vmload %rax
    vmrun %rax
    vmsave %rax
    cli
    push %rsi
    mov 16(%rsp), %rsi
    mov %rbx, 0x08(%rsi)
    mov %rcx, 0x10(%rsi)
    mov %rdx, 0x18(%rsi)
    mov %rdi, 0x28(%rsi)
    mov %rbp, 0x30(%rsi)
    mov %r8, 0x38(%rsi)
    mov %r9, 0x40(%rsi)
    mov %r10, 0x48(%rsi)
    mov %r11, 0x50(%rsi)
    mov %r12, 0x58(%rsi)
    mov %r13, 0x60(%rsi)
    mov %r14, 0x68(%rsi)
    mov %r15, 0x70(%rsi)
    pop %rax
    mov %rax, 0x20(%rsi)
    mov 16(%rsp), %rax
    vmload %rax
    stgi
    pop %rdi
    pop %rsi
    pop %rdx
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    "#,
    options(att_syntax)
);

extern "C" {
    fn svm_vmrun(vmcb: u64, gprs: *mut [u64; 16], host_save: u64);
}

/// Checks for SVM with nested paging, sets EFER.SVME on this CPU, points VM_HSAVE_PA at `hsave` and saves the
/// host's VMLOAD state (GS base, TR, ...) into `vmsave`; both are zeroed 4 KiB frames owned by this CPU from now
/// on. Call after the CPU's GDT, TSS and GS base are final.
pub fn enable(hsave: u64, vmsave: u64) -> Result<(), SvmError> {
    let ext = core::arch::x86_64::__cpuid(0x8000_0001);
    if ext.ecx & (1 << 2) == 0 {
        return Err(SvmError::NoSvm);
    }
    let feat = core::arch::x86_64::__cpuid(0x8000_000a);
    if feat.edx & 1 == 0 {
        return Err(SvmError::NoNpt);
    }
    // SAFETY: setting EFER.SVME on a CPU that has SVM only enables the SVM instructions; VM_HSAVE_PA gets a
    // page-aligned frame owned by this CPU; VMSAVE writes the current host state into another owned frame.
    unsafe {
        let mut efer = x86_64::registers::model_specific::Msr::new(MSR_EFER);
        let v = efer.read();
        efer.write(v | EFER_SVME);
        x86_64::registers::model_specific::Msr::new(0xc001_0117).write(hsave);
        core::arch::asm!("vmsave %rax", in("rax") vmsave, options(att_syntax, nostack));
    }
    let cpu = super::percpu::current();
    cpu.hsave
        .store(hsave, core::sync::atomic::Ordering::Release);
    cpu.vmsave
        .store(vmsave, core::sync::atomic::Ordering::Release);
    Ok(())
}

/// A VMCB, addressed through the identity map.
#[derive(Debug, Clone, Copy)]
struct Vmcb(u64);

impl Vmcb {
    fn r64(&self, off: usize) -> u64 {
        // SAFETY: the VMCB is an owned, identity-mapped 4 KiB frame and `off + 8 <= 4096` for every offset used.
        unsafe { core::ptr::read_volatile((self.0 as usize + off) as *const u64) }
    }
    fn w64(&self, off: usize, v: u64) {
        // SAFETY: as for `r64`; only this vCPU's code touches its VMCB while it is not running.
        unsafe { core::ptr::write_volatile((self.0 as usize + off) as *mut u64, v) }
    }
    fn w32(&self, off: usize, v: u32) {
        // SAFETY: as for `r64`.
        unsafe { core::ptr::write_volatile((self.0 as usize + off) as *mut u32, v) }
    }
    fn w8(&self, off: usize, v: u8) {
        // SAFETY: as for `r64`.
        unsafe { core::ptr::write_volatile((self.0 as usize + off) as *mut u8, v) }
    }
    /// A segment register's (selector, attributes, limit, base).
    fn read_seg(&self, off: usize) -> (u16, u16, u32, u64) {
        let lo = self.r64(off);
        (
            lo as u16,
            (lo >> 16) as u16,
            (lo >> 32) as u32,
            self.r64(off + 8),
        )
    }
    fn seg(&self, off: usize, sel: u16, attr: u16, limit: u32, base: u64) {
        self.w64(
            off,
            u64::from(sel) | (u64::from(attr) << 16) | (u64::from(limit) << 32),
        );
        self.w64(off + 8, base);
    }
}

/// Segment registers in the order of `hvm_hw_cpu` (cs, ds, es, fs, gs, ss, tr, ldtr), as VMCB offsets.
const SAVE_SEGS: [usize; 8] = [CS_SEG, DS, ES, FS, GS, SS, TR, LDTR];

/// Where each `hvm_hw_cpu` general register (rax, rbx, rcx, rdx, rbp, rsi, rdi, rsp, r8..r15) lives in the
/// vCPU's GPR block; `None` for rsp, which the VMCB holds.
const SAVE_GPRS: [Option<usize>; 16] = [
    Some(0),
    Some(1),
    Some(2),
    Some(3),
    Some(6),
    Some(4),
    Some(5),
    None,
    Some(7),
    Some(8),
    Some(9),
    Some(10),
    Some(11),
    Some(12),
    Some(13),
    Some(14),
];

/// 512-byte FXSAVE area.
#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// An SVM vCPU.
pub struct SvmVcpu {
    vmcb: Vmcb,
    gprs: [u64; 16],
    fx: FxArea,
    fx_valid: bool,
}

/// The per-domain permission maps shared by its vCPUs.
#[derive(Debug, Clone, Copy)]
pub struct Maps {
    /// I/O permission map (12 KiB, all ports intercepted).
    pub iopm: u64,
    /// MSR permission map (8 KiB).
    pub msrpm: u64,
}

/// Builds the I/O map (every port intercepted) and the MSR map (everything intercepted except the MSRs that
/// VMLOAD/VMSAVE switch per guest). `iopm` must be 3 contiguous frames, `msrpm` 2.
pub fn build_maps(iopm: u64, msrpm: u64) -> Maps {
    // SAFETY: the caller hands over owned, identity-mapped, contiguous frames of the documented sizes.
    unsafe {
        core::ptr::write_bytes(iopm as usize as *mut u8, 0xff, 3 * 4096);
        core::ptr::write_bytes(msrpm as usize as *mut u8, 0xff, 2 * 4096);
    }
    let pass = |msr: u32| {
        let (base, idx) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
            _ => return,
        };
        let byte = base + (idx as usize * 2) / 8;
        let bit = (idx * 2) % 8;
        // SAFETY: `byte` is inside the 8 KiB map.
        unsafe {
            let p = (msrpm as usize + byte) as *mut u8;
            *p &= !(3 << bit);
        }
    };
    // FS/GS/kernel GS base, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*: part of the VMLOAD/VMSAVE state.
    for msr in [
        0xc000_0100,
        0xc000_0101,
        0xc000_0102,
        0xc000_0081,
        0xc000_0082,
        0xc000_0083,
        0xc000_0084,
        0x174,
        0x175,
        0x176,
    ] {
        pass(msr);
    }
    Maps { iopm, msrpm }
}

impl SvmVcpu {
    /// A vCPU in the PVH entry state: 32-bit protected mode, paging off, flat segments, `ebx` = start info.
    pub fn new_pvh(
        vmcb: u64,
        maps: Maps,
        npt_root: u64,
        asid: u32,
        entry: u64,
        start_info: u64,
    ) -> Self {
        let v = Vmcb(vmcb);
        // SAFETY: the VMCB frame is owned by this vCPU and identity-mapped.
        unsafe { core::ptr::write_bytes(vmcb as usize as *mut u8, 0, 4096) };
        v.w32(
            INTERCEPT_MISC1,
            I1_INTR | I1_NMI | I1_CPUID | I1_HLT | I1_IOIO | I1_MSR | I1_SHUTDOWN,
        );
        v.w32(
            INTERCEPT_MISC2,
            I2_VMRUN
                | I2_VMMCALL
                | I2_VMLOAD
                | I2_VMSAVE
                | I2_STGI
                | I2_CLGI
                | I2_SKINIT
                | I2_XSETBV,
        );
        v.w64(IOPM_BASE, maps.iopm);
        v.w64(MSRPM_BASE, maps.msrpm);
        v.w32(GUEST_ASID, asid);
        // V_INTR_MASKING: physical interrupts follow the host's IF, so a guest with IF clear is still preempted.
        v.w64(VINTR, 1 << 24);
        v.w64(NP_ENABLE, 1);
        v.w64(N_CR3, npt_root);
        let code32 = 0xc9b;
        let data32 = 0xc93;
        v.seg(CS_SEG, 0x10, code32, 0xffff_ffff, 0);
        for off in [ES, SS, DS, FS, GS] {
            v.seg(off, 0x18, data32, 0xffff_ffff, 0);
        }
        v.seg(TR, 0x20, 0x8b, 0x67, 0);
        v.seg(LDTR, 0, 0x82, 0, 0);
        v.seg(GDTR, 0, 0, 0, 0);
        v.seg(IDTR, 0, 0, 0, 0);
        v.w64(EFER, EFER_SVME);
        v.w64(CR0, 0x11);
        v.w64(CR4, 0);
        v.w64(CR3, 0);
        v.w64(DR6, 0xffff_0ff0);
        v.w64(DR7, 0x400);
        v.w64(RFLAGS, 0x2);
        v.w64(RIP, entry);
        v.w64(RSP, 0);
        v.w64(RAX, 0);
        v.w64(G_PAT, 0x0007_0406_0007_0406);
        v.w32(TLB_CONTROL, 1);
        let mut gprs = [0u64; 16];
        gprs[Reg::Rbx as usize] = start_info;
        Self {
            vmcb: v,
            gprs,
            fx: FxArea([0; 512]),
            fx_valid: false,
        }
    }

    /// Replaces the start state with a `vcpu_hvm_x86_32` context (`VCPUOP_initialise`); false when the context
    /// is not a protected-mode state this hypervisor accepts.
    fn set_context_32(&mut self, c: &xen_abi::xen::VcpuHvmX86_32) -> bool {
        let cr0 = u64::from(c.cr0);
        // Protected mode is required; paging needs PAE or plain 32-bit tables the guest provides.
        if cr0 & 1 == 0 || c.eflags & (1 << 17) != 0 || c.efer & !EFER_GUEST_OK != 0 {
            return false;
        }
        let v = self.vmcb;
        v.seg(CS_SEG, 0x10, c.cs_ar, c.cs_limit, u64::from(c.cs_base));
        v.seg(DS, 0x18, c.ds_ar, c.ds_limit, u64::from(c.ds_base));
        v.seg(ES, 0x18, c.es_ar, c.es_limit, u64::from(c.es_base));
        v.seg(SS, 0x18, c.ss_ar, c.ss_limit, u64::from(c.ss_base));
        v.seg(TR, 0x20, c.tr_ar, c.tr_limit, u64::from(c.tr_base));
        v.w64(CR0, cr0 | 0x10);
        v.w64(CR3, u64::from(c.cr3));
        v.w64(CR4, u64::from(c.cr4));
        v.w64(EFER, c.efer | EFER_SVME);
        v.w64(RFLAGS, u64::from(c.eflags) | 2);
        v.w64(RIP, u64::from(c.eip));
        v.w64(RSP, u64::from(c.esp));
        self.gprs = [0; 16];
        self.gprs[Reg::Rax as usize] = u64::from(c.eax);
        self.gprs[Reg::Rbx as usize] = u64::from(c.ebx);
        self.gprs[Reg::Rcx as usize] = u64::from(c.ecx);
        self.gprs[Reg::Rdx as usize] = u64::from(c.edx);
        self.gprs[Reg::Rsi as usize] = u64::from(c.esi);
        self.gprs[Reg::Rdi as usize] = u64::from(c.edi);
        self.gprs[Reg::Rbp as usize] = u64::from(c.ebp);
        self.fx_valid = false;
        self.flush_tlb();
        true
    }

    /// The state a start-up IPI leaves an application processor in: real mode at `vector << 12` (CS = vector <<
    /// 8, IP = 0), paging and protection off, as the INIT-SIPI sequence of an x86 guest expects.
    pub fn start_sipi(&mut self, vector: u8) {
        let v = self.vmcb;
        let code16 = 0x9b;
        let data16 = 0x93;
        v.seg(
            CS_SEG,
            u16::from(vector) << 8,
            code16,
            0xffff,
            u64::from(vector) << 12,
        );
        for off in [ES, SS, DS, FS, GS] {
            v.seg(off, 0, data16, 0xffff, 0);
        }
        v.seg(TR, 0, 0x8b, 0xffff, 0);
        v.seg(LDTR, 0, 0x82, 0xffff, 0);
        v.seg(GDTR, 0, 0, 0xffff, 0);
        v.seg(IDTR, 0, 0, 0xffff, 0);
        v.w64(EFER, EFER_SVME);
        v.w64(CR0, 0x10);
        v.w64(CR3, 0);
        v.w64(CR4, 0);
        v.w64(DR6, 0xffff_0ff0);
        v.w64(DR7, 0x400);
        v.w64(RFLAGS, 0x2);
        v.w64(RIP, 0);
        v.w64(RSP, 0);
        v.w64(RAX, 0);
        v.w64(EVENTINJ, 0);
        v.w64(VINTR, 1 << 24);
        self.gprs = [0; 16];
        self.fx_valid = false;
        self.flush_tlb();
    }

    /// Queues a virtual interrupt with `vector` (V_IRQ): the CPU delivers it when the guest's IF allows, with no
    /// end-of-interrupt needed (Xen's callback-vector upcall).
    fn set_virq(&mut self, vector: u8) {
        let ctl = self.vmcb.r64(VINTR) as u32;
        // V_IRQ, priority 15, ignore V_TPR.
        self.vmcb
            .w32(VINTR, ctl | (1 << 8) | (0xf << 16) | (1 << 20));
        self.vmcb.w32(VINTR_VECTOR, u32::from(vector));
    }

    /// The VMCB's physical address (to free it with the vCPU).
    fn vmcb_pa(&self) -> u64 {
        self.vmcb.0
    }

    /// Replaces the start state with a `vcpu_hvm_x86_64` context: long mode with flat 64-bit code and data
    /// segments; false unless paging, PAE and EFER.LME are set.
    fn set_context_64(&mut self, c: &xen_abi::xen::VcpuHvmX86_64) -> bool {
        const CR0_PG_PE: u64 = (1 << 31) | 1;
        const EFER_LME: u64 = 1 << 8;
        if c.cr0 & CR0_PG_PE != CR0_PG_PE
            || c.cr4 & (1 << 5) == 0
            || c.efer & EFER_LME == 0
            || c.efer & !EFER_GUEST_OK != 0
            || c.rflags & (1 << 17) != 0
        {
            return false;
        }
        let v = self.vmcb;
        v.seg(CS_SEG, 0x10, 0xa9b, 0xffff_ffff, 0);
        for off in [DS, ES, SS] {
            v.seg(off, 0x18, 0xc93, 0xffff_ffff, 0);
        }
        v.seg(TR, 0x20, 0x8b, 0x67, 0);
        v.w64(CR0, c.cr0 | 0x10);
        v.w64(CR3, c.cr3);
        v.w64(CR4, c.cr4);
        v.w64(EFER, c.efer | EFER_LMA | EFER_SVME);
        v.w64(RFLAGS, c.rflags | 2);
        v.w64(RIP, c.rip);
        v.w64(RSP, c.rsp);
        self.gprs = [0; 16];
        self.gprs[Reg::Rax as usize] = c.rax;
        self.gprs[Reg::Rbx as usize] = c.rbx;
        self.gprs[Reg::Rcx as usize] = c.rcx;
        self.gprs[Reg::Rdx as usize] = c.rdx;
        self.gprs[Reg::Rsi as usize] = c.rsi;
        self.gprs[Reg::Rdi as usize] = c.rdi;
        self.gprs[Reg::Rbp as usize] = c.rbp;
        self.fx_valid = false;
        self.flush_tlb();
        true
    }

    /// Flushes the guest's TLB entries at the next entry (after its nested tables changed).
    fn flush_tlb(&mut self) {
        self.vmcb.w32(TLB_CONTROL, 1);
    }

    /// Loads the guest's x87/SSE state into the CPU (before a run slice).
    fn load_fpu(&mut self) {
        if self.fx_valid {
            // SAFETY: the area holds an image FXSAVE wrote; CR4.OSFXSR is set.
            unsafe {
                core::arch::asm!("fxrstor64 ({})", in(reg) self.fx.0.as_ptr(), options(att_syntax, nostack))
            };
        } else {
            // SAFETY: FNINIT resets the x87 state; the hypervisor itself uses no FPU/SSE.
            unsafe { core::arch::asm!("fninit", options(att_syntax, nomem, nostack)) };
        }
    }

    /// Saves the guest's x87/SSE state (after a run slice, before another vCPU runs).
    fn save_fpu(&mut self) {
        // SAFETY: FXSAVE writes 512 bytes to a 16-byte aligned area owned by this vCPU.
        unsafe {
            core::arch::asm!("fxsave64 ({})", in(reg) self.fx.0.as_mut_ptr(), options(att_syntax, nostack))
        };
        self.fx_valid = true;
    }

    fn exit_code(&self) -> u32 {
        self.vmcb.r64(EXITCODE) as u32
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self) -> Exit {
        self.vmcb.w64(RAX, self.gprs[0]);
        let host_save = super::percpu::current()
            .vmsave
            .load(core::sync::atomic::Ordering::Acquire);
        // SAFETY: the VMCB, permission maps and nested tables were set up by `new_pvh` and stay owned by this
        // domain; the GPR block is ours; the host VMSAVE area belongs to this CPU. Host state is restored by
        // #VMEXIT plus VMLOAD of the host area inside `svm_vmrun`.
        unsafe { svm_vmrun(self.vmcb.0, &mut self.gprs, host_save) };
        self.gprs[0] = self.vmcb.r64(RAX);
        self.vmcb.w32(TLB_CONTROL, 0);
        // Let a pending host interrupt (the timer) be taken now that the host state is back.
        // SAFETY: enabling interrupts for one instruction window with the IDT loaded.
        unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
        let info1 = self.vmcb.r64(EXITINFO1);
        let info2 = self.vmcb.r64(EXITINFO2);
        match self.exit_code() {
            EXIT_INTR | EXIT_NMI => Exit::Interrupt,
            EXIT_CPUID => Exit::Cpuid {
                leaf: self.gprs[0] as u32,
                subleaf: self.gprs[Reg::Rcx as usize] as u32,
            },
            EXIT_MSR => {
                let msr = self.gprs[Reg::Rcx as usize] as u32;
                if info1 & 1 == 0 {
                    Exit::MsrRead(msr)
                } else {
                    let v = (self.gprs[0] & 0xffff_ffff) | (self.gprs[Reg::Rdx as usize] << 32);
                    Exit::MsrWrite(msr, v)
                }
            }
            EXIT_IOIO => Exit::Io {
                port: (info1 >> 16) as u16,
                size: match (info1 >> 4) & 7 {
                    1 => 1,
                    2 => 2,
                    _ => 4,
                },
                write: info1 & 1 == 0,
                string: info1 & 0xc != 0,
                next_rip: info2,
            },
            EXIT_HLT => Exit::Halt,
            EXIT_VMMCALL => Exit::Hypercall,
            EXIT_NPF => Exit::NestedFault {
                gpa: info2,
                code: info1,
            },
            EXIT_SHUTDOWN => Exit::TripleFault,
            EXIT_VMRUN | EXIT_VMLOAD | EXIT_VMSAVE | EXIT_STGI | EXIT_CLGI | EXIT_SKINIT => {
                Exit::Forbidden("SVM instruction")
            }
            EXIT_XSETBV => Exit::Forbidden("XSETBV"),
            EXIT_INVALID => Exit::InvalidState,
            other => Exit::Unhandled(u64::from(other)),
        }
    }

    fn reg(&self, r: Reg) -> u64 {
        self.gprs[r as usize]
    }

    fn set_reg(&mut self, r: Reg, v: u64) {
        self.gprs[r as usize] = v;
    }

    fn rip(&self) -> u64 {
        self.vmcb.r64(RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb.w64(RIP, rip);
    }

    fn skip_instruction(&mut self, exit: &Exit) {
        match exit {
            Exit::Io { next_rip, .. } => self.set_rip(*next_rip),
            other => {
                let len = fixed_length(other);
                let rip = self.rip().wrapping_add(len);
                let rip = if self.long_mode() {
                    rip
                } else {
                    rip & 0xffff_ffff
                };
                self.set_rip(rip);
            }
        }
    }

    fn inject_undefined(&mut self) {
        self.inject_exception(6, None);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut ev = u64::from(vector) | (3 << 8) | (1 << 31);
        if let Some(code) = error_code {
            ev |= (1 << 11) | (u64::from(code) << 32);
        }
        self.vmcb.w64(EVENTINJ, ev);
    }

    fn guest_to_gpa(
        &self,
        gva: u64,
        write: bool,
        read: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<u64, WalkError> {
        let paging = GuestPaging {
            cr0: self.vmcb.r64(CR0),
            cr3: self.vmcb.r64(CR3),
            cr4: self.vmcb.r64(CR4),
            efer: self.vmcb.r64(EFER),
        };
        guest_walk(&paging, gva, write, read)
    }

    fn hypercall_args(&self) -> (u64, [u64; 5]) {
        x86_hypercall_args(self)
    }

    fn set_hypercall_result(&mut self, v: u64) {
        self.set_reg(Reg::Rax, v);
    }

    fn long_mode(&self) -> bool {
        // EFER.LMA and CS.L (attribute bit 9 of the compressed form).
        let cs_attr = (self.vmcb.r64(CS_SEG) >> 16) & 0xffff;
        self.vmcb.r64(EFER) & EFER_LMA != 0 && cs_attr & (1 << 9) != 0
    }

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        match msr {
            MSR_EFER => Some(self.vmcb.r64(EFER) & !EFER_SVME),
            MSR_PAT => Some(self.vmcb.r64(G_PAT)),
            _ => None,
        }
    }

    fn start_from(&mut self, start: &xen_abi::xen::VcpuStart) -> bool {
        match start {
            xen_abi::xen::VcpuStart::Mode32(c) => self.set_context_32(c),
            xen_abi::xen::VcpuStart::Mode64(c) => self.set_context_64(c),
        }
    }

    fn start_at(&mut self, _entry: u64, _arg: u64) -> bool {
        // x86 vCPUs start from a vcpu_hvm_context (`start_from`), not a firmware call.
        false
    }

    fn timer_deadline(&self) -> Option<u64> {
        // No LAPIC timer is emulated for guests.
        None
    }

    fn queue_upcall(&mut self, vector: u8) {
        self.set_virq(vector);
    }

    fn upcall_queued(&self) -> bool {
        // V_IRQ stays set until the processor takes the virtual interrupt.
        self.vmcb.r64(VINTR) & (1 << 8) != 0
    }

    fn flush_guest_tlb(&mut self) {
        self.flush_tlb();
    }

    fn load_guest_fpu(&mut self) {
        self.load_fpu();
    }

    fn save_guest_fpu(&mut self) {
        self.save_fpu();
    }

    fn state_frame(&self) -> u64 {
        self.vmcb_pa()
    }

    fn save_hvm_cpu(&self) -> Option<xen_abi::hvmsave::HvmHwCpu> {
        use xen_abi::hvmsave as hs;
        let v = self.vmcb;
        let mut c = hs::HvmHwCpu::default();
        if self.fx_valid {
            c.fpu_regs = self.fx.0;
            c.flags = hs::FPU_INITIALISED;
        }
        for (i, slot) in SAVE_GPRS.iter().enumerate() {
            c.gprs[i] = match slot {
                Some(g) => self.gprs[*g],
                None => v.r64(RSP),
            };
        }
        c.rip = v.r64(RIP);
        c.rflags = v.r64(RFLAGS);
        c.cr0 = v.r64(CR0);
        c.cr2 = v.r64(CR2);
        c.cr3 = v.r64(CR3);
        c.cr4 = v.r64(CR4);
        c.dr6 = v.r64(DR6);
        c.dr7 = v.r64(DR7);
        for (i, off) in SAVE_SEGS.iter().enumerate() {
            let (sel, attr, limit, base) = v.read_seg(*off);
            c.sel[i] = u32::from(sel);
            c.arbytes[i] = hs::svm_to_arbytes(attr);
            c.limit[i] = limit;
            c.base[i] = base;
        }
        for (i, off) in [(hs::SEG_IDTR, IDTR), (hs::SEG_GDTR, GDTR)] {
            let (_, _, limit, base) = v.read_seg(off);
            c.limit[i] = limit;
            c.base[i] = base;
        }
        c.sysenter_cs = v.r64(SYSENTER_CS);
        c.sysenter_esp = v.r64(SYSENTER_ESP);
        c.sysenter_eip = v.r64(SYSENTER_EIP);
        c.shadow_gs = v.r64(KERNEL_GS_BASE);
        c.msr_lstar = v.r64(LSTAR);
        c.msr_star = v.r64(STAR);
        c.msr_cstar = v.r64(CSTAR);
        c.msr_syscall_mask = v.r64(SFMASK);
        c.msr_efer = v.r64(EFER) & !EFER_SVME;
        // Guests read the host's TSC (no offset is applied).
        // SAFETY: RDTSC only reads the time-stamp counter.
        c.tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let ev = v.r64(EVENTINJ);
        if ev & (1 << 31) != 0 {
            c.pending_event = ev as u32;
            c.error_code = (ev >> 32) as u32;
        }
        Some(c)
    }

    fn load_hvm_cpu(&mut self, c: &xen_abi::hvmsave::HvmHwCpu) -> bool {
        use xen_abi::hvmsave as hs;
        const CR0_PE: u64 = 1;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LME: u64 = 1 << 8;
        let long = c.msr_efer & EFER_LME != 0 && c.cr0 & CR0_PG != 0;
        let cs_attr = hs::arbytes_to_svm(c.arbytes[hs::SEG_CS]);
        // Only states the hypervisor runs elsewhere: no virtual-8086 mode, paging only with protection, long
        // mode only with PAE and a present code segment, EFER bits a guest may set.
        if c.msr_efer & !EFER_GUEST_OK != 0
            || c.rflags & (1 << 17) != 0
            || (c.cr0 & CR0_PG != 0 && c.cr0 & CR0_PE == 0)
            || (long && c.cr4 & CR4_PAE == 0)
            || (c.cr0 & CR0_PE != 0 && cs_attr & 0x80 == 0)
            || (c.pending_event & (1 << 31) != 0 && (c.pending_event >> 8) & 7 == 1)
        {
            return false;
        }
        let v = self.vmcb;
        for (i, slot) in SAVE_GPRS.iter().enumerate() {
            match slot {
                Some(g) => self.gprs[*g] = c.gprs[i],
                None => v.w64(RSP, c.gprs[i]),
            }
        }
        v.w64(RAX, self.gprs[0]);
        v.w64(RIP, c.rip);
        v.w64(RFLAGS, c.rflags | 2);
        v.w64(CR0, c.cr0 | 0x10);
        v.w64(CR2, c.cr2);
        v.w64(CR3, c.cr3);
        v.w64(CR4, c.cr4);
        v.w64(DR6, c.dr6);
        v.w64(DR7, c.dr7);
        for (i, off) in SAVE_SEGS.iter().enumerate() {
            v.seg(
                *off,
                c.sel[i] as u16,
                hs::arbytes_to_svm(c.arbytes[i]),
                c.limit[i],
                c.base[i],
            );
        }
        v.seg(IDTR, 0, 0, c.limit[hs::SEG_IDTR], c.base[hs::SEG_IDTR]);
        v.seg(GDTR, 0, 0, c.limit[hs::SEG_GDTR], c.base[hs::SEG_GDTR]);
        // The current privilege level is the stack segment's DPL.
        let ss_attr = hs::arbytes_to_svm(c.arbytes[hs::SEG_SS]);
        v.w8(CPL, ((ss_attr >> 5) & 3) as u8);
        v.w64(SYSENTER_CS, c.sysenter_cs);
        v.w64(SYSENTER_ESP, c.sysenter_esp);
        v.w64(SYSENTER_EIP, c.sysenter_eip);
        v.w64(KERNEL_GS_BASE, c.shadow_gs);
        v.w64(LSTAR, c.msr_lstar);
        v.w64(STAR, c.msr_star);
        v.w64(CSTAR, c.msr_cstar);
        v.w64(SFMASK, c.msr_syscall_mask);
        let lma = if long { EFER_LMA } else { 0 };
        v.w64(EFER, (c.msr_efer & !EFER_LMA) | lma | EFER_SVME);
        v.w64(
            EVENTINJ,
            if c.pending_event & (1 << 31) != 0 {
                u64::from(c.pending_event) | (u64::from(c.error_code) << 32)
            } else {
                0
            },
        );
        v.w64(INT_STATE, 0);
        if c.flags & hs::FPU_INITIALISED != 0 {
            self.fx.0 = c.fpu_regs;
            self.fx_valid = true;
        } else {
            self.fx_valid = false;
        }
        self.flush_tlb();
        true
    }

    fn write_state_msr(&mut self, msr: u32, v: u64) -> bool {
        match msr {
            MSR_EFER => {
                if v & !EFER_GUEST_OK != 0 {
                    return false;
                }
                let lma = self.vmcb.r64(EFER) & EFER_LMA;
                self.vmcb.w64(EFER, (v & !EFER_LMA) | lma | EFER_SVME);
                true
            }
            MSR_PAT => {
                // Each byte must be a valid memory type (0, 1, 4, 5, 6, 7).
                let ok = (0..8).all(|i| matches!((v >> (i * 8)) & 0xff, 0 | 1 | 4..=7));
                if ok {
                    self.vmcb.w64(G_PAT, v);
                }
                ok
            }
            _ => false,
        }
    }
}
