//! The x86_64 part of the runtime: the 32-bit PVH entry that switches to long mode, secondary vCPUs, the
//! callback-vector IDT and hypercalls through the hypercall page or `vmmcall`.

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry
    .balign 4

    .section .boot32, "ax"
    .code32
    .global pvh_entry
pvh_entry:
    cli
    cld
    mov $guest_stack_top, %esp
    /* Identity-map the first GiB with 2 MiB pages. */
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, guest_pd(,%ecx,8)
    movl $0, guest_pd+4(,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jne 1b
    mov $guest_pd, %eax
    or $3, %eax
    mov %eax, guest_pdpt
    mov $guest_pdpt, %eax
    or $3, %eax
    mov %eax, guest_pml4
    mov $guest_pml4, %eax
    mov %eax, %cr3
    /* PAE, OSFXSR, OSXMMEXCPT. */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    /* EFER.LME (the hypervisor emulates this MSR). */
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    /* Paging, protected mode, write protect; clear EM, set MP for SSE. */
    mov %cr0, %eax
    and $0xfffffffb, %eax
    or $0x80010003, %eax
    mov %eax, %cr0
    lgdt guest_gdt_ptr
    ljmp $0x08, $guest_long_mode

    .code64
guest_long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $guest_stack_top, %rsp
    mov %ebx, %edi
    call guest_main
2:
    hlt
    jmp 2b

    .section .boot32, "ax"
    .code32
    .global pvh_ap_entry
/* Secondary vCPUs start here (VCPUOP_initialise, 32-bit flat state) and reuse vCPU 0's page tables. */
pvh_ap_entry:
    cli
    cld
    mov $guest_ap_stack_top, %esp
    mov $guest_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    and $0xfffffffb, %eax
    or $0x80010003, %eax
    mov %eax, %cr0
    lgdt guest_gdt_ptr
    ljmp $0x08, $guest_ap_long

    .code64
guest_ap_long:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $guest_ap_stack_top, %rsp
    call guest_ap_rust
3:
    hlt
    jmp 3b

    .section .text
    .global guest_callback_isr
/* The Xen callback vector: count the upcall and return (no EOI with the global callback). */
guest_callback_isr:
    lock incq guest_callback_count(%rip)
    iretq

    .section .data
    .balign 8
    .global guest_callback_count
guest_callback_count:
    .quad 0

    .section .text
    .global guest_ap64_entry
/* Secondary vCPUs started with a 64-bit vcpu_hvm_context land here in long mode on their own stack. */
guest_ap64_entry:
    lgdt guest_gdt_ptr
    push $0x08
    lea 4f(%rip), %rax
    push %rax
    lretq
4:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    call guest_ap_rust
5:
    hlt
    jmp 5b

    .section .rodata
    .balign 8
guest_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
guest_gdt_end:
guest_gdt_ptr:
    .short guest_gdt_end - guest_gdt - 1
    .long guest_gdt

    .section .bss
    .balign 4096
    .global guest_pml4
guest_pml4:
    .fill 512, 8, 0
guest_pdpt:
    .fill 512, 8, 0
guest_pd:
    .fill 512, 8, 0
    .balign 16
guest_stack:
    .fill 65536, 1, 0
guest_stack_top:
    .balign 16
guest_ap_stack:
    .fill 65536, 1, 0
guest_ap_stack_top:
    .balign 16
    .global guest_ap64_stack_top
guest_ap64_stack:
    .fill 65536, 1, 0
guest_ap64_stack_top:
    "#,
    options(att_syntax)
);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

extern "C" {
    fn pvh_ap_entry();
    fn guest_ap64_entry();
    static guest_ap64_stack_top: u8;
    static guest_pml4: u8;
}

extern "C" {
    fn guest_callback_isr();
    static guest_callback_count: u64;
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

/// Loads an IDT whose only entry is `vector`, counting upcalls (see [`callback_count`]). Any other interrupt or
/// exception then escalates to a triple fault, which the hypervisor reports.
pub fn install_callback_idt(vector: u8) {
    let h = guest_callback_isr as unsafe extern "C" fn() as usize as u64;
    let lo = (h & 0xffff) | (0x08 << 16) | (0x8e << 40) | (((h >> 16) & 0xffff) << 48);
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    // SAFETY: the IDT is a static only this function writes, before loading it on this vCPU.
    unsafe {
        let idt = core::ptr::addr_of_mut!(IDT.0);
        (*idt)[vector as usize] = [lo, h >> 32];
        let p = Ptr {
            limit: (256 * 16 - 1) as u16,
            base: idt as u64,
        };
        core::arch::asm!("lidt ({})", in(reg) &p, options(att_syntax, nostack));
    }
}

/// How many callback-vector upcalls arrived.
pub fn callback_count() -> u64 {
    // SAFETY: an aligned 8-byte read of a counter only the interrupt handler writes (atomically).
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(guest_callback_count)) }
}

/// What the secondary vCPU runs once in long mode.
static AP_MAIN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

#[no_mangle]
extern "C" fn guest_ap_rust() -> ! {
    let f = AP_MAIN.load(core::sync::atomic::Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `start_vcpu` stores into AP_MAIN, and it stores a `fn() -> !`.
        let f: fn() -> ! = unsafe { core::mem::transmute::<usize, fn() -> !>(f) };
        f();
    }
    halt_forever()
}

/// The `vcpu_hvm_context` that starts a secondary vCPU at the runtime's 32-bit AP entry.
pub fn ap_context() -> xen_abi::xen::VcpuHvmContext {
    let r = xen_abi::xen::VcpuHvmX86_32 {
        eip: pvh_ap_entry as unsafe extern "C" fn() as usize as u32,
        eflags: 2,
        cr0: 1,
        cs_limit: 0xffff_ffff,
        ds_limit: 0xffff_ffff,
        ss_limit: 0xffff_ffff,
        es_limit: 0xffff_ffff,
        tr_limit: 0x67,
        cs_ar: 0xc9b,
        ds_ar: 0xc93,
        ss_ar: 0xc93,
        es_ar: 0xc93,
        tr_ar: 0x8b,
        ..Default::default()
    };
    xen_abi::xen::VcpuHvmContext {
        mode: xen_abi::xen::VCPU_HVM_MODE_32B,
        pad: 0,
        x86_32: r,
    }
}

/// The `vcpu_hvm_context` that starts a secondary vCPU directly in long mode (64-bit context) on the
/// runtime's second AP stack, with vCPU 0's page tables.
pub fn ap_context_64() -> xen_abi::xen::VcpuHvmContext {
    use xen_abi::plain::Plain;
    let r = xen_abi::xen::VcpuHvmX86_64 {
        rip: guest_ap64_entry as unsafe extern "C" fn() as usize as u64,
        rsp: core::ptr::addr_of!(guest_ap64_stack_top) as u64,
        rflags: 2,
        cr0: 0x8001_0033,
        cr3: core::ptr::addr_of!(guest_pml4) as u64,
        cr4: 0x620,
        efer: 0x100,
        ..Default::default()
    };
    let mut c = xen_abi::xen::VcpuHvmContext {
        mode: xen_abi::xen::VCPU_HVM_MODE_64B,
        ..Default::default()
    };
    let bytes = r.as_bytes();
    let mut raw = [0u8; 120];
    raw[..bytes.len()].copy_from_slice(bytes);
    if let Some(regs) = xen_abi::xen::VcpuHvmX86_32::read_from(&raw) {
        c.x86_32 = regs;
    }
    c
}

/// Starts secondary vCPU `id` running `f` (VCPUOP_initialise then VCPUOP_up); returns the first error. The
/// 32-bit context uses the runtime's first AP stack and the 64-bit one its second, so one vCPU of each kind can
/// be started.
pub fn start_vcpu(id: u32, f: fn() -> !) -> Result<(), u64> {
    start_vcpu_with(id, f, &ap_context())
}

/// Like [`start_vcpu`] with an explicit start context.
pub fn start_vcpu_with(id: u32, f: fn() -> !, c: &xen_abi::xen::VcpuHvmContext) -> Result<(), u64> {
    use xen_abi::hypercall::VCPU_OP;
    use xen_abi::xen::vcpuop;
    AP_MAIN.store(f as usize, core::sync::atomic::Ordering::Release);
    let r = hypercall(
        VCPU_OP,
        [
            vcpuop::INITIALISE,
            u64::from(id),
            c as *const _ as u64,
            0,
            0,
        ],
    );
    if r != 0 {
        return Err(r);
    }
    let r = hypercall(VCPU_OP, [vcpuop::UP, u64::from(id), 0, 0, 0]);
    if r != 0 {
        return Err(r);
    }
    Ok(())
}

/// A guest-physical address inside the identity map (the first GiB, so the guest's own translation succeeds)
/// that the hypervisor does not back with memory.
pub const UNBACKED: u64 = 0x3000_0000;

/// The page the hypervisor fills with hypercall stubs.
static mut HYPERCALL_PAGE: Page = Page([0; 4096]);
static mut PAGE_READY: bool = false;

/// A raw `vmmcall` hypercall with the 64-bit convention.
pub fn hypercall_raw(nr: u64, a: [u64; 5]) -> u64 {
    let ret: u64;
    // SAFETY: `vmmcall` traps to the hypervisor, which only changes rax and the memory the arguments name.
    unsafe {
        core::arch::asm!(
            "vmmcall",
            inlateout("rax") nr => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            options(nostack)
        );
    }
    ret
}

/// The address of the hypercall page.
pub fn hypercall_page() -> u64 {
    core::ptr::addr_of!(HYPERCALL_PAGE) as u64
}

/// Asks the hypervisor (CPUID leaf base+2, then WRMSR) to fill the hypercall page; returns the MSR used.
pub fn setup_hypercall_page() -> u32 {
    let r = core::arch::x86_64::__cpuid(0x4000_0002);
    let msr = r.ebx;
    let addr = hypercall_page();
    // SAFETY: writing the hypercall MSR makes the hypervisor fill our own page; nothing else changes.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") addr as u32, in("edx") (addr >> 32) as u32,
            options(nostack));
        *core::ptr::addr_of_mut!(PAGE_READY) = true;
    }
    msr
}

/// A hypercall through the hypercall page once it is set up, a raw `vmmcall` before.
pub fn hypercall(nr: u64, a: [u64; 5]) -> u64 {
    // SAFETY: a plain read of a flag only this vCPU writes.
    if !unsafe { *core::ptr::addr_of!(PAGE_READY) } || nr >= 128 {
        return hypercall_raw(nr, a);
    }
    let target = hypercall_page() + nr * 32;
    let ret: u64;
    // SAFETY: the hypervisor filled the page with `mov $nr, %eax; vmmcall; ret` stubs; the call only changes
    // rax (declared) and the memory the arguments name.
    unsafe {
        core::arch::asm!(
            "call *{t}",
            t = in(reg) target,
            lateout("rax") ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            options(att_syntax)
        );
    }
    ret
}

/// Stops this vCPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off only stops this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
