//! Application processor bring-up: a real-mode trampoline copied below 1 MiB, started with INIT-SIPI-SIPI, that
//! switches to long mode on the boot page tables, takes a ticket (its CPU index) and a stack, and calls
//! [`hv_ap_entry`](crate::hv_ap_entry).

use core::sync::atomic::{AtomicU32, Ordering};

use super::percpu::MAX_CPUS;

/// Physical address the trampoline runs at (STARTUP vector 0x08).
pub const TRAMPOLINE: u64 = 0x8000;
/// Bytes of stack per AP.
pub const AP_STACK: usize = 64 * 1024;

/// CPUs that finished their set-up (the boot CPU counts itself).
pub static ONLINE: AtomicU32 = AtomicU32::new(1);

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_tramp_start
ap_tramp_start:
    .code16
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (ap_gdt_ptr - ap_tramp_start + 0x8000)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(ap_pm32 - ap_tramp_start + 0x8000)

    .code32
ap_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (ap_cr3 - ap_tramp_start + 0x8000), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ljmp $0x18, $(ap_lm64 - ap_tramp_start + 0x8000)

    .code64
ap_lm64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    movabs $ap_next_ticket, %rbx
    mov $1, %eax
    lock xadd %eax, (%rbx)
    cmp ${maxidx}, %eax
    ja 1f
    mov %eax, %edi
    mov %rax, %rcx
    shl $16, %rcx
    movabs $ap_stacks, %rsp
    add %rcx, %rsp
    movabs ${entry}, %rax
    call *%rax
1:
    cli
    hlt
    jmp 1b

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdt_end:
ap_gdt_ptr:
    .short ap_gdt_end - ap_gdt - 1
    .long ap_gdt - ap_tramp_start + 0x8000
    .balign 4
    .global ap_cr3
ap_cr3:
    .long 0
    .global ap_tramp_end
ap_tramp_end:

    .section .data
    .balign 4
ap_next_ticket:
    .long 1

    .section .bss
    .balign 16
    .global ap_stacks
ap_stacks:
    .fill {stacks}, 1, 0
    "#,
    entry = sym crate::hv_ap_entry,
    stacks = const MAX_CPUS * AP_STACK,
    maxidx = const MAX_CPUS - 1,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static ap_cr3: u8;
    static boot_pml4: u8;
}

/// Copies the trampoline to [`TRAMPOLINE`] and starts every other CPU; `delay_ticks` waits for timer ticks.
/// Returns once the CPUs that answered within a few ticks are online.
pub fn start_aps(delay_ticks: impl FnMut(u64)) -> u32 {
    let start = core::ptr::addr_of!(ap_tramp_start) as usize;
    let end = core::ptr::addr_of!(ap_tramp_end) as usize;
    let cr3_off = core::ptr::addr_of!(ap_cr3) as usize - start;
    let pml4 = core::ptr::addr_of!(boot_pml4) as u64;
    // SAFETY: the first MiB is reserved from the frame allocator and identity-mapped; the trampoline is a few
    // hundred bytes; CR3 must fit the 32-bit field (the image lives below 4 GiB).
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            TRAMPOLINE as usize as *mut u8,
            end - start,
        );
        core::ptr::write_volatile((TRAMPOLINE as usize + cr3_off) as *mut u32, pml4 as u32);
    }
    let mut delay = delay_ticks;
    super::lapic::start_aps((TRAMPOLINE >> 12) as u8, &mut delay);
    // Wait for as many CPUs as CPUID announces (0x80000008 ECX[7:0] + 1 on AMD; one more tick at least), for
    // two seconds at most: a busy host can be slow to run an emulated CPU.
    let announced = (core::arch::x86_64::__cpuid(0x8000_0008).ecx & 0xff) + 1;
    let expected = announced.clamp(1, MAX_CPUS as u32);
    delay(1);
    for _ in 0..200 {
        if ONLINE.load(Ordering::Acquire) >= expected {
            break;
        }
        delay(1);
    }
    ONLINE.load(Ordering::Acquire)
}
