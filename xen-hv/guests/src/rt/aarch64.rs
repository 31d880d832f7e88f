//! The aarch64 part of the runtime: the entry at EL1 (x0 = the device tree, MMU off), which turns on FP/SIMD,
//! installs the exception vectors and identity-maps the first 2 GiB (device memory below 1 GiB, the RAM at
//! 1 GiB as normal memory) before calling `guest_main(dtb)`; Xen's Arm hypercall convention (`hvc #0xEA1`, number
//! in x16, arguments in x0..x4, result in x0); the event-channel PPI counted by the IRQ vector.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global guest_entry
guest_entry:
    mov x19, x0
    ldr x1, =guest_stack_top
    mov sp, x1
    mov x1, #(3 << 20)
    msr cpacr_el1, x1
    isb
    ldr x1, =guest_vectors
    msr vbar_el1, x1
    ldr x1, =guest_l1
    ldr x2, =0x0060000000000401
    str x2, [x1, #0]
    ldr x2, =0x0000000040000705
    str x2, [x1, #8]
    dsb ish
    ldr x2, =0xff00
    msr mair_el1, x2
    ldr x2, =0x100803520
    msr tcr_el1, x2
    msr ttbr0_el1, x1
    isb
    tlbi vmalle1
    dsb ish
    isb
    ldr x2, =0x30d01805
    msr sctlr_el1, x2
    isb
    mov x0, x19
    bl guest_main
1:
    wfi
    b 1b
    .ltorg

    /* Secondary vCPUs (PSCI CPU_ON with x0 = their index) start here with the MMU off: own stack, FP/SIMD,
       vectors, then vCPU 0's translation tables. */
    .section .text
    .global guest_secondary_entry
guest_secondary_entry:
    mov x19, x0
    ldr x1, =guest_ap_stacks
    add x2, x0, #1
    lsl x2, x2, #14
    add x1, x1, x2
    mov sp, x1
    mov x1, #(3 << 20)
    msr cpacr_el1, x1
    isb
    ldr x1, =guest_vectors
    msr vbar_el1, x1
    ldr x2, =0xff00
    msr mair_el1, x2
    ldr x2, =0x100803520
    msr tcr_el1, x2
    ldr x1, =guest_l1
    msr ttbr0_el1, x1
    isb
    tlbi vmalle1
    dsb ish
    isb
    ldr x2, =0x30d01805
    msr sctlr_el1, x2
    isb
    mov x0, x19
    bl guest_ap_rust
2:
    wfi
    b 2b
    .ltorg

    .section .text.vectors, "ax"
    .balign 0x800
guest_vectors:
    .balign 0x80
    b guest_bad_vector
    .balign 0x80
    b guest_bad_vector
    .balign 0x80
    b guest_bad_vector
    .balign 0x80
    b guest_bad_vector
    /* Current EL with SP_EL1: synchronous, IRQ, FIQ, SError. */
    .balign 0x80
    b guest_sync
    .balign 0x80
    b guest_irq
    .balign 0x80
    b guest_bad_vector
    .balign 0x80
    b guest_bad_vector
    .rept 8
    .balign 0x80
    b guest_bad_vector
    .endr

    .section .text
/* The virtual timer (PPI 27) is masked and counted, as Linux's handler does; anything else (the event-channel
   PPI) counts as an upcall. */
guest_irq:
    stp x0, x1, [sp, #-16]!
    stp x2, x3, [sp, #-16]!
    mrs x0, icc_iar1_el1
    cmp x0, #27
    b.ne 1f
    mov x1, #3
    msr cntv_ctl_el0, x1
    ldr x1, =guest_vtimer_count
    b 2f
1:
    ldr x1, =guest_callback_count
2:
    ldr x2, [x1]
    add x2, x2, #1
    str x2, [x1]
    msr icc_eoir1_el1, x0
    isb
    ldp x2, x3, [sp], #16
    ldp x0, x1, [sp], #16
    eret
    .ltorg

/* A synchronous exception is fatal unless `expect_undefined` armed the runtime for one Unknown-reason
   exception (class 0): then it is counted and the faulting instruction skipped. */
guest_sync:
    stp x0, x1, [sp, #-16]!
    ldr x0, =guest_expect_undef
    ldr x1, [x0]
    cbz x1, 1f
    mrs x1, esr_el1
    lsr x1, x1, #26
    cbnz x1, 1f
    str xzr, [x0]
    ldr x0, =guest_undef_count
    ldr x1, [x0]
    add x1, x1, #1
    str x1, [x0]
    mrs x0, elr_el1
    add x0, x0, #4
    msr elr_el1, x0
    ldp x0, x1, [sp], #16
    eret
1:
    ldp x0, x1, [sp], #16
    b guest_bad_vector
    .ltorg

guest_bad_vector:
    mrs x0, esr_el1
    mrs x1, elr_el1
    mrs x2, far_el1
    bl guest_exception
    b .

    .section .data
    .balign 8
    .global guest_callback_count
guest_callback_count:
    .quad 0
    .global guest_vtimer_count
guest_vtimer_count:
    .quad 0
    .global guest_expect_undef
guest_expect_undef:
    .quad 0
    .global guest_undef_count
guest_undef_count:
    .quad 0

    .section .bss
    .balign 4096
    .global guest_l1
guest_l1:
    .fill 512, 8, 0
    .balign 16
guest_stack:
    .fill 65536, 1, 0
guest_stack_top:
    /* 16 KiB for each of up to 4 secondary vCPUs. */
    .balign 16
guest_ap_stacks:
    .fill 65536, 1, 0
    "#
);

extern "C" {
    static guest_callback_count: u64;
    static guest_vtimer_count: u64;
    static mut guest_expect_undef: u64;
    static guest_undef_count: u64;
    fn guest_secondary_entry();
}

/// PSCI `CPU_ON` (SMC64 function id).
const PSCI_CPU_ON: u64 = 0xc400_0003;

/// What the secondary vCPUs run once their MMU is on.
static AP_MAIN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

#[no_mangle]
extern "C" fn guest_ap_rust(_id: u64) -> ! {
    let f = AP_MAIN.load(core::sync::atomic::Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `start_vcpu` stores into AP_MAIN, and it stores a `fn() -> !`.
        let f: fn() -> ! = unsafe { core::mem::transmute::<usize, fn() -> !>(f) };
        f();
    }
    halt_forever()
}

/// A PSCI call through `hvc #0` (the conduit the device tree's `/psci` node names): function id in x0,
/// arguments in x1..x3, result in x0.
pub fn psci(function: u64, args: [u64; 3]) -> i64 {
    let ret: u64;
    // SAFETY: `hvc #0` traps to the hypervisor's PSCI, which only changes x0 (and starts or stops vCPUs).
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inlateout("x0") function => ret,
            in("x1") args[0],
            in("x2") args[1],
            in("x3") args[2],
            options(nostack)
        );
    }
    ret as i64
}

/// Starts secondary vCPU `id` (1..=4) running `f` through PSCI `CPU_ON`; returns the PSCI error.
pub fn start_vcpu(id: u32, f: fn() -> !) -> Result<(), i64> {
    AP_MAIN.store(f as usize, core::sync::atomic::Ordering::Release);
    let entry = guest_secondary_entry as unsafe extern "C" fn() as usize as u64;
    match psci(PSCI_CPU_ON, [u64::from(id), entry, u64::from(id)]) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// This vCPU's index (MPIDR_EL1 affinity 0, which the hypervisor sets per vCPU).
pub fn vcpu_index() -> u32 {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    (mpidr & 0xff) as u32
}

/// Xen's hypercall immediate on Arm.
pub const XEN_HVC_IMM: u16 = 0xea1;

/// A guest-physical address inside the identity map (so the guest's own translation succeeds) that the
/// hypervisor does not back with memory.
pub const UNBACKED: u64 = 0x7000_0000;

/// A hypercall with Xen's Arm convention: `hvc #0xEA1`, number in x16, arguments in x0..x4, result in x0.
pub fn hypercall_raw(nr: u64, a: [u64; 5]) -> u64 {
    let ret: u64;
    // SAFETY: `hvc` traps to the hypervisor, which only changes x0 and the memory the arguments name.
    unsafe {
        core::arch::asm!(
            "hvc #0xea1",
            in("x16") nr,
            inlateout("x0") a[0] => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            options(nostack)
        );
    }
    ret
}

/// A hypercall (Arm has no hypercall page: always the instruction).
pub fn hypercall(nr: u64, a: [u64; 5]) -> u64 {
    hypercall_raw(nr, a)
}

/// Unmasks IRQs at the GIC's virtual CPU interface (priority mask open, group 1 on) and in PSTATE, so
/// event-channel upcalls (the PPI in the device tree's `/hypervisor` node) reach the IRQ vector.
pub fn enable_upcalls() {
    // SAFETY: only this vCPU's interrupt state changes; the IRQ vector is installed by the entry code.
    unsafe {
        core::arch::asm!(
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            "msr daifclr, #2",
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nomem, nostack)
        );
    }
}

/// Masks IRQs in PSTATE again.
pub fn disable_upcalls() {
    // SAFETY: only masks interrupts on this vCPU.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
}

/// How many upcalls the IRQ vector took.
pub fn callback_count() -> u64 {
    // SAFETY: an aligned 8-byte read of a counter only the IRQ handler writes.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(guest_callback_count)) }
}

/// How many virtual timer interrupts (PPI 27) the IRQ vector took.
pub fn vtimer_count() -> u64 {
    // SAFETY: an aligned 8-byte read of a counter only the IRQ handler writes.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(guest_vtimer_count)) }
}

/// Runs `f`, which must raise exactly one undefined-instruction (Unknown-reason) exception, and returns
/// whether it did: the runtime's synchronous vector counts it and skips the faulting instruction.
pub fn expect_undefined(f: impl FnOnce()) -> bool {
    // SAFETY: aligned 8-byte accesses to flags shared only with this vCPU's exception vector.
    unsafe {
        let before = core::ptr::read_volatile(core::ptr::addr_of!(guest_undef_count));
        core::ptr::write_volatile(core::ptr::addr_of_mut!(guest_expect_undef), 1);
        f();
        let armed = core::ptr::read_volatile(core::ptr::addr_of!(guest_expect_undef));
        core::ptr::write_volatile(core::ptr::addr_of_mut!(guest_expect_undef), 0);
        armed == 0 && core::ptr::read_volatile(core::ptr::addr_of!(guest_undef_count)) == before + 1
    }
}

/// Arms the EL1 virtual timer to fire `ticks` counter ticks from now (enabled, unmasked).
pub fn arm_vtimer(ticks: u64) {
    // SAFETY: programming this vCPU's own virtual timer.
    unsafe {
        core::arch::asm!(
            "msr cntv_tval_el0, {t}",
            "msr cntv_ctl_el0, {one}",
            "isb",
            t = in(reg) ticks,
            one = in(reg) 1u64,
            options(nomem, nostack)
        );
    }
}

/// Waits for an interrupt (WFI), with IRQs unmasked by the caller.
pub fn wait_for_interrupt() {
    // SAFETY: WFI only suspends this vCPU until an interrupt.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// The virtual counter (the generic timer's count as the guest sees it).
pub fn counter() -> u64 {
    let c: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) c, options(nomem, nostack)) };
    c
}

/// The counter's frequency in Hz.
pub fn counter_hz() -> u64 {
    let f: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack)) };
    f
}

/// The device tree the hypervisor passed in x0, as a byte slice (empty when it is not one).
pub fn device_tree(dtb: u64) -> &'static [u8] {
    // SAFETY: the hypervisor placed the tree in our RAM (identity-mapped); the header is read first to learn
    // its size, capped at one page as the domain builder writes it.
    unsafe {
        let head = core::slice::from_raw_parts(dtb as usize as *const u8, xen_abi::fdt::HEADER);
        match xen_abi::fdt::Fdt::total_size(head) {
            Ok(n) if n <= 4096 => core::slice::from_raw_parts(dtb as usize as *const u8, n),
            _ => &[],
        }
    }
}

/// The command line (`/chosen/bootargs`) of the device tree at `dtb`: the domain's name.
pub fn boot_args(dtb: u64) -> &'static str {
    let Ok(t) = xen_abi::fdt::Fdt::new(device_tree(dtb)) else {
        return "";
    };
    t.property("/chosen", "bootargs")
        .and_then(|v| core::str::from_utf8(v.split(|&c| c == 0).next().unwrap_or(&[])).ok())
        .unwrap_or("")
}

#[no_mangle]
extern "C" fn guest_exception(esr: u64, elr: u64, far: u64) -> ! {
    crate::println!(
        "FAIL guest exception: ESR_EL1 {esr:#x} (class {:#x}) at {elr:#x}, FAR {far:#x}",
        esr >> 26
    );
    crate::shutdown(xen_abi::hypercall::schedop::SHUTDOWN_CRASH);
    halt_forever()
}

/// Stops this vCPU for good (WFI with every exception masked).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: masking exceptions and waiting only stops this vCPU.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi", options(nomem, nostack)) };
    }
}
