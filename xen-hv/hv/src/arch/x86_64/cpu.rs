//! Descriptor tables and exception handling: a GDT with a TSS (IST1 for double faults), an IDT whose exception
//! vectors print a register dump and stop the machine with the failure code, and the timer and spurious
//! interrupt vectors.

use core::fmt::Write as _;

/// The hypervisor's code selector.
pub const CS: u16 = 0x08;
/// The hypervisor's data selector.
pub const DS: u16 = 0x10;
/// The TSS selector of CPU 0; CPU `i` uses `TSS_SEL + 16 * i`.
pub const TSS_SEL: u16 = 0x18;
const NCPU: usize = super::percpu::MAX_CPUS;
const GDT_LEN: usize = 3 + 2 * NCPU;
/// The LAPIC timer vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The LAPIC spurious vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

#[repr(C, align(16))]
struct Aligned<T>(T);

static mut GDT: Aligned<[u64; GDT_LEN]> = Aligned({
    let mut g = [0; GDT_LEN];
    g[1] = 0x00af_9a00_0000_ffff;
    g[2] = 0x00cf_9200_0000_ffff;
    g
});
static mut TSS: Aligned<[[u32; 26]; NCPU]> = Aligned([[0; 26]; NCPU]);
static mut IDT: Aligned<[[u64; 2]; 256]> = Aligned([[0; 2]; 256]);
static mut DF_STACK: Aligned<[[u8; 16384]; NCPU]> = Aligned([[0; 16384]; NCPU]);

/// The registers saved by the exception entry stubs.
#[repr(C)]
pub struct Frame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

core::arch::global_asm!(
    r#"
    .macro isr_noerr n
    .global isr_\n
isr_\n:
    push $0
    push $\n
    jmp isr_common
    .endm
    .macro isr_err n
isr_\n:
    push $\n
    jmp isr_common
    .endm

    .section .text
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    isr_noerr \n
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    isr_err \n
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call hv_exception
2:
    cli
    hlt
    jmp 2b

/* An interrupt handler: saves the caller-saved registers around a call to a Rust function. */
    .macro irq_stub name, handler
    .global \name
\name:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    call \handler
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq
    .endm

    irq_stub isr_timer, hv_timer_interrupt
    irq_stub isr_com2, hv_com2_interrupt

    .global isr_spurious
isr_spurious:
    iretq

    .section .rodata
    .balign 8
    .global isr_table
isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_\n
    .endr
    "#,
    options(att_syntax)
);

extern "C" {
    static isr_table: [u64; 32];
    fn isr_timer();
    fn isr_com2();
    fn isr_spurious();
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

/// Prints the register dump of a hypervisor exception and stops the machine with the failure code.
#[no_mangle]
extern "C" fn hv_exception(f: &Frame) -> ! {
    let mut con = super::serial::Serial::init();
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("unknown");
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov %cr2, {}", out(reg) cr2, options(att_syntax, nomem, nostack)) };
    let _ = writeln!(
        con,
        "(XEN) FATAL hypervisor exception {} ({name}), error code {:#x}",
        f.vector, f.error
    );
    let _ = writeln!(
        con,
        "(XEN) rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {cr2:#x}",
        f.rip, f.cs, f.rflags, f.rsp, f.ss
    );
    let _ = writeln!(
        con,
        "(XEN) rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx
    );
    let _ = writeln!(
        con,
        "(XEN) rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}",
        f.rsi, f.rdi, f.rbp, f.r8
    );
    let _ = writeln!(
        con,
        "(XEN) r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}",
        f.r9, f.r10, f.r11, f.r12
    );
    let _ = writeln!(
        con,
        "(XEN) r13 {:#018x} r14 {:#018x} r15 {:#018x}",
        f.r13, f.r14, f.r15
    );
    super::exit(0x11);
}

fn gate(handler: u64, ist: u64) -> [u64; 2] {
    let lo = (handler & 0xffff)
        | (u64::from(CS) << 16)
        | (ist << 32)
        | (0x8e << 40)
        | ((handler >> 16) & 0xffff) << 48;
    [lo, handler >> 32]
}

/// Loads the GDT (with this CPU's TSS) and the IDT on CPU `idx`; the boot CPU (0) also fills the IDT.
pub fn init(idx: usize) {
    let idx = idx % NCPU;
    // SAFETY: each CPU only writes its own TSS and GDT slots, before loading them; the IDT is filled once by the
    // boot CPU before any other CPU starts. The raw pointers are only used to fill and load the tables.
    unsafe {
        let tss = core::ptr::addr_of_mut!(TSS.0[idx]);
        let df_top = core::ptr::addr_of!(DF_STACK.0[idx]) as u64 + 16384;
        // IST1 lives at byte offset 0x24 of the 64-bit TSS.
        (*tss)[9] = df_top as u32;
        (*tss)[10] = (df_top >> 32) as u32;
        // No I/O permission bitmap: its base points past the limit.
        (*tss)[25] = 104 << 16;
        let base = tss as u64;
        let limit = 103u64;
        let gdt = core::ptr::addr_of_mut!(GDT.0);
        (*gdt)[3 + 2 * idx] =
            limit | ((base & 0xff_ffff) << 16) | (0x89 << 40) | (((base >> 24) & 0xff) << 56);
        (*gdt)[4 + 2 * idx] = base >> 32;
        let idt = core::ptr::addr_of_mut!(IDT.0);
        if idx == 0 {
            let table = core::ptr::addr_of!(isr_table);
            for v in 0..32 {
                (*idt)[v] = gate((*table)[v], if v == 8 { 1 } else { 0 });
            }
            (*idt)[TIMER_VECTOR as usize] =
                gate(isr_timer as unsafe extern "C" fn() as usize as u64, 0);
            (*idt)[SPURIOUS_VECTOR as usize] =
                gate(isr_spurious as unsafe extern "C" fn() as usize as u64, 0);
            (*idt)[super::com2::VECTOR as usize] =
                gate(isr_com2 as unsafe extern "C" fn() as usize as u64, 0);
        }

        #[repr(C, packed)]
        struct Ptr {
            limit: u16,
            base: u64,
        }
        let gp = Ptr {
            limit: (GDT_LEN * 8 - 1) as u16,
            base: gdt as u64,
        };
        let ip = Ptr {
            limit: (256 * 16 - 1) as u16,
            base: idt as u64,
        };
        core::arch::asm!(
            "lgdt ({gp})",
            "lidt ({ip})",
            // Reload CS with a far return (an AP arrives with the trampoline's selectors).
            "push $0x08",
            "lea 2f(%rip), {tmp}",
            "push {tmp}",
            "lretq",
            "2:",
            "mov {ds:e}, %ds",
            "mov {ds:e}, %es",
            "mov {ds:e}, %ss",
            "ltr {tr:x}",
            gp = in(reg) &gp,
            ip = in(reg) &ip,
            ds = in(reg) u32::from(DS),
            tr = in(reg) TSS_SEL + 16 * idx as u16,
            tmp = out(reg) _,
            options(att_syntax)
        );
    }
}

/// Sets CR4.OSFXSR and OSXMMEXCPT so FXSAVE/FXRSTOR move guest SSE state too.
pub fn enable_fxsave() {
    // SAFETY: setting OSFXSR/OSXMMEXCPT only changes what FXSAVE saves and how SIMD exceptions are reported; the
    // hypervisor itself is built without SIMD.
    unsafe {
        core::arch::asm!(
            "mov %cr4, {t}",
            "or $0x600, {t}",
            "mov {t}, %cr4",
            t = out(reg) _,
            options(att_syntax, nomem, nostack)
        );
    }
}
