//! The boot stub and the EL2 exception vectors.
//!
//! QEMU's `-kernel` loads the image as a Linux arm64 `Image` (the 64-byte header below) at 0x40200000 and enters
//! it at EL2 (`virtualization=on`) with x0 = the device tree's address, the MMU and caches off. The stub checks
//! the exception level, clears the BSS, identity-maps the first 4 GiB for EL2 with 1 GiB blocks (device memory
//! below 1 GiB where the virt machine's devices live, normal write-back memory above, where its RAM starts),
//! turns on the MMU and caches, installs the vectors and calls `hv_main(dtb)` on the boot stack.
//!
//! The vectors for exceptions from a lower level (the guests) save the guest's general-purpose and FP/SIMD
//! registers into the frame whose address `hv_guest_run` left in TPIDR_EL2, restore the host's callee-saved
//! registers and return from `hv_guest_run` with the kind of exception (0 synchronous, 1 IRQ, 2 FIQ, 3 SError).

/// Offsets into [`super::vcpu::GuestFrame`], checked there.
pub const FRAME_ELR: usize = 248;
/// SPSR_EL2.
pub const FRAME_SPSR: usize = 256;
/// The host stack pointer while the guest runs.
pub const FRAME_HOST_SP: usize = 264;
/// FPSR.
pub const FRAME_FPSR: usize = 272;
/// FPCR.
pub const FRAME_FPCR: usize = 280;
/// q0..q31.
pub const FRAME_Q: usize = 288;

core::arch::global_asm!(
    r#"
    .section .head, "ax"
    .global _start
_start:
    b 1f
    .long 0
    .quad 0x200000
    .quad __image_size
    .quad 0
    .quad 0
    .quad 0
    .quad 0
    .long 0x644d5241
    .long 0
1:
    mov x19, x0
    mrs x1, CurrentEL
    lsr x1, x1, #2
    cmp x1, #2
    b.eq 2f
    /* Not at EL2: report failure to QEMU through semihosting (SYS_EXIT, status 35). */
    adr x1, hv_not_el2_block
    mov x0, #0x18
    hlt #0xf000
    b .
2:
    ldr x1, =__bss_start
    ldr x2, =__bss_end
3:
    cmp x1, x2
    b.hs 4f
    str xzr, [x1], #8
    b 3b
4:
    ldr x1, =hv_boot_l1
    ldr x2, =0x0040000000000401
    str x2, [x1, #0]
    ldr x2, =0x0000000040000705
    str x2, [x1, #8]
    ldr x2, =0x0000000080000705
    str x2, [x1, #16]
    ldr x2, =0x00000000c0000705
    str x2, [x1, #24]
    dsb ish
    ldr x2, =0xff00
    msr mair_el2, x2
    ldr x2, =0x80813520
    msr tcr_el2, x2
    msr ttbr0_el2, x1
    isb
    tlbi alle2
    dsb ish
    isb
    ldr x2, =0x30c51835
    msr sctlr_el2, x2
    isb
    ldr x1, =hv_boot_stack_top
    mov sp, x1
    ldr x1, =hv_vectors
    msr vbar_el2, x1
    /* No traps of FP/SIMD or trace registers to EL2; EL1 may use the physical counter and timer. */
    ldr x1, =0x33ff
    msr cptr_el2, x1
    mov x1, #3
    msr cnthctl_el2, x1
    msr cntvoff_el2, xzr
    /* EL1 is AArch64; nothing else is trapped until a guest runs. */
    mov x1, #(1 << 31)
    msr hcr_el2, x1
    isb
    mov x0, x19
    bl hv_main
    b .
    .ltorg

    .balign 8
hv_not_el2_block:
    .quad 0x20026
    .quad 35

    /* A secondary CPU, started by PSCI CPU_ON at EL2 with the MMU off and x0 = its stack top: the boot CPU's
       translation tables, then the same EL2 set-up as above. */
    .section .text
    .global hv_secondary_entry
hv_secondary_entry:
    mov x19, x0
    ldr x2, =0xff00
    msr mair_el2, x2
    ldr x2, =0x80813520
    msr tcr_el2, x2
    ldr x1, =hv_boot_l1
    msr ttbr0_el2, x1
    isb
    tlbi alle2
    dsb ish
    isb
    ldr x2, =0x30c51835
    msr sctlr_el2, x2
    isb
    mov sp, x19
    ldr x1, =hv_vectors
    msr vbar_el2, x1
    ldr x1, =0x33ff
    msr cptr_el2, x1
    mov x1, #3
    msr cnthctl_el2, x1
    msr cntvoff_el2, xzr
    mov x1, #(1 << 31)
    msr hcr_el2, x1
    isb
    bl hv_secondary_main
    b .
    .ltorg

    .section .text.hv_vectors, "ax"
    .balign 0x800
    .global hv_vectors
hv_vectors:
    /* Current EL with SP_EL0: never used. */
    .balign 0x80
    mov x3, #0
    b hv_el2_trap
    .balign 0x80
    mov x3, #1
    b hv_el2_trap
    .balign 0x80
    mov x3, #2
    b hv_el2_trap
    .balign 0x80
    mov x3, #3
    b hv_el2_trap
    /* Current EL with SP_EL2: a fault in the hypervisor. */
    .balign 0x80
    mov x3, #4
    b hv_el2_trap
    .balign 0x80
    mov x3, #5
    b hv_el2_trap
    .balign 0x80
    mov x3, #6
    b hv_el2_trap
    .balign 0x80
    mov x3, #7
    b hv_el2_trap
    /* Lower EL, AArch64: a guest exit. */
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x1, #0
    b hv_guest_exit
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x1, #1
    b hv_guest_exit
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x1, #2
    b hv_guest_exit
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x1, #3
    b hv_guest_exit
    /* Lower EL, AArch32: guests never run AArch32 (HCR_EL2.RW is set). */
    .balign 0x80
    mov x3, #12
    b hv_el2_trap
    .balign 0x80
    mov x3, #13
    b hv_el2_trap
    .balign 0x80
    mov x3, #14
    b hv_el2_trap
    .balign 0x80
    mov x3, #15
    b hv_el2_trap

    .section .text
hv_el2_trap:
    mrs x0, esr_el2
    mrs x1, elr_el2
    mrs x2, far_el2
    bl hv_el2_fault
    b .

    .global hv_guest_run
hv_guest_run:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x1, sp
    str x1, [x0, #{host_sp}]
    msr tpidr_el2, x0
    ldr x1, [x0, #{elr}]
    msr elr_el2, x1
    ldr x1, [x0, #{spsr}]
    msr spsr_el2, x1
    ldr x1, [x0, #{fpsr}]
    msr fpsr, x1
    ldr x1, [x0, #{fpcr}]
    msr fpcr, x1
    add x1, x0, #{q}
    ldp q0, q1, [x1, #0]
    ldp q2, q3, [x1, #32]
    ldp q4, q5, [x1, #64]
    ldp q6, q7, [x1, #96]
    ldp q8, q9, [x1, #128]
    ldp q10, q11, [x1, #160]
    ldp q12, q13, [x1, #192]
    ldp q14, q15, [x1, #224]
    ldp q16, q17, [x1, #256]
    ldp q18, q19, [x1, #288]
    ldp q20, q21, [x1, #320]
    ldp q22, q23, [x1, #352]
    ldp q24, q25, [x1, #384]
    ldp q26, q27, [x1, #416]
    ldp q28, q29, [x1, #448]
    ldp q30, q31, [x1, #480]
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    eret

hv_guest_exit:
    mrs x0, tpidr_el2
    stp x2, x3, [x0, #16]
    stp x4, x5, [x0, #32]
    stp x6, x7, [x0, #48]
    stp x8, x9, [x0, #64]
    stp x10, x11, [x0, #80]
    stp x12, x13, [x0, #96]
    stp x14, x15, [x0, #112]
    stp x16, x17, [x0, #128]
    stp x18, x19, [x0, #144]
    stp x20, x21, [x0, #160]
    stp x22, x23, [x0, #176]
    stp x24, x25, [x0, #192]
    stp x26, x27, [x0, #208]
    stp x28, x29, [x0, #224]
    str x30, [x0, #240]
    ldp x2, x3, [sp], #16
    stp x2, x3, [x0, #0]
    mrs x2, elr_el2
    str x2, [x0, #{elr}]
    mrs x2, spsr_el2
    str x2, [x0, #{spsr}]
    mrs x2, fpsr
    str x2, [x0, #{fpsr}]
    mrs x2, fpcr
    str x2, [x0, #{fpcr}]
    add x2, x0, #{q}
    stp q0, q1, [x2, #0]
    stp q2, q3, [x2, #32]
    stp q4, q5, [x2, #64]
    stp q6, q7, [x2, #96]
    stp q8, q9, [x2, #128]
    stp q10, q11, [x2, #160]
    stp q12, q13, [x2, #192]
    stp q14, q15, [x2, #224]
    stp q16, q17, [x2, #256]
    stp q18, q19, [x2, #288]
    stp q20, q21, [x2, #320]
    stp q22, q23, [x2, #352]
    stp q24, q25, [x2, #384]
    stp q26, q27, [x2, #416]
    stp q28, q29, [x2, #448]
    stp q30, q31, [x2, #480]
    ldr x2, [x0, #{host_sp}]
    mov sp, x2
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    mov x0, x1
    ret

    .section .bss.hv_boot, "aw", @nobits
    .balign 4096
    .global hv_boot_l1
hv_boot_l1:
    .fill 512, 8, 0
    .balign 16
hv_boot_stack:
    .fill 131072, 1, 0
hv_boot_stack_top:
    "#,
    host_sp = const FRAME_HOST_SP,
    elr = const FRAME_ELR,
    spsr = const FRAME_SPSR,
    fpsr = const FRAME_FPSR,
    fpcr = const FRAME_FPCR,
    q = const FRAME_Q,
);

extern "C" {
    /// Enters the guest whose frame is at `frame` and returns the kind of exception that ended it.
    fn hv_guest_run(frame: *mut super::vcpu::GuestFrame) -> u64;
    /// Where secondary CPUs start (x0 = their stack top).
    fn hv_secondary_entry();
}

/// The physical address secondary CPUs start at (the image is identity-mapped).
pub fn secondary_entry() -> u64 {
    hv_secondary_entry as unsafe extern "C" fn() as usize as u64
}

/// Runs the guest of `frame` until its next exception to EL2; returns the exception kind (0 synchronous, 1 IRQ,
/// 2 FIQ, 3 SError).
///
/// # Safety
///
/// The frame must hold a valid guest state (ELR_EL2/SPSR_EL2 naming EL1 or EL0 code) and the EL1 system
/// registers, HCR_EL2 and VTTBR_EL2 must be those of the same guest.
pub unsafe fn guest_run(frame: &mut super::vcpu::GuestFrame) -> u64 {
    // SAFETY: the caller guarantees the guest state; `hv_guest_run` saves and restores every register the
    // calling convention asks it to keep, and the frame outlives the call.
    unsafe { hv_guest_run(frame) }
}

/// Called by the vectors for an exception taken at EL2 itself: prints the syndrome and stops the machine.
#[no_mangle]
extern "C" fn hv_el2_fault(esr: u64, elr: u64, far: u64, kind: u64) -> ! {
    use core::fmt::Write as _;
    if super::EXITING.load(core::sync::atomic::Ordering::SeqCst) {
        loop {
            // SAFETY: waiting for an event only stops this CPU.
            unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
        }
    }
    let mut con = super::pl011::Serial::init();
    let _ = writeln!(
        con,
        "(XEN) hypervisor exception (vector {kind}): ESR_EL2 {esr:#x} (class {:#x}), ELR_EL2 {elr:#x}, FAR_EL2 {far:#x}",
        esr >> 26
    );
    super::exit(0x11)
}
