//! The x86_64 boot path: the PVH ELF note and multiboot2 header, and the 32-bit stub that builds identity page
//! tables for the first 4 GiB, enters long mode and calls [`crate::hv_main`] with the boot protocol and the
//! physical address of its information structure.

/// Boot protocol value passed to the Rust entry: PVH (`ebx` = `hvm_start_info`).
pub const PROTOCOL_PVH: u32 = 1;
/// Boot protocol value passed to the Rust entry: multiboot2 (`ebx` = multiboot2 information).
pub const PROTOCOL_MULTIBOOT2: u32 = 2;

core::arch::global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    /* entry address tag: start in 32-bit protected mode at mb2_start32 */
    .short 3
    .short 0
    .long 12
    .long mb2_start32
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .boot32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov $1, %esi
    mov %ebx, %edi
    jmp common32

mb2_start32:
    cli
    cld
    mov $2, %esi
    mov %ebx, %edi
    jmp common32

common32:
    mov $boot_stack_top, %esp

    /* 2048 two-MiB pages in four page directories: identity map of 0..4 GiB. */
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt+4(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 2b

    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    movl $0, boot_pml4+4

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    /* Upper register halves are undefined after the mode switch: zero-extend both arguments. */
    mov %esi, %eax
    mov %edi, %esi
    mov %eax, %edi
    call {entry}
3:
    cli
    hlt
    jmp 3b

    .section .rodata
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .data.boot_pagetables, "aw"
    .balign 4096
    .global boot_pml4
boot_pml4:
    .fill 512, 8, 0
boot_pdpt:
    .fill 512, 8, 0
boot_pd:
    .fill 2048, 8, 0

    .section .bss
    .balign 16
boot_stack:
    .fill 262144, 1, 0
boot_stack_top:
    "#,
    entry = sym crate::hv_main,
    options(att_syntax)
);
