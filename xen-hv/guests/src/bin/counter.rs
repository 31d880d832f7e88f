//! Test guest `counter`: a long CPU-bound computation that never yields, so it only finishes alongside other
//! domains if the hypervisor preempts it; its SSE registers must survive every switch to other domains.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("counter is a bare-metal PVH guest: run it with `scripts/hv-boot counter`");
    std::process::exit(2);
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod guest {
    use xen_abi::start_info::HvmStartInfo;
    use xen_test_guests::{println, Checks};

    const ROUNDS: u64 = 8;
    const SPINS: u64 = 3_000_000;

    fn rdtsc() -> u64 {
        // SAFETY: RDTSC only reads the time stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[no_mangle]
    extern "C" fn guest_main(start_info: u64) -> ! {
        let mut c = Checks::new("counter");
        // SAFETY: the hypervisor put hvm_start_info at `start_info` in our identity-mapped RAM.
        let si: HvmStartInfo =
            unsafe { core::ptr::read_volatile(start_info as usize as *const HvmStartInfo) };
        // A pattern unique to this domain, from its command line's last byte.
        // SAFETY: the command line is a NUL-terminated string in our RAM.
        let tag = unsafe { core::ptr::read_volatile((si.cmdline_paddr + 8) as usize as *const u8) };
        let pattern = 0x0101_0101_0101_0101u64 * u64::from(tag);
        // SAFETY: CR4.OSFXSR is set by the entry code; xmm5 is not used by this soft-float program.
        unsafe {
            core::arch::asm!("movq {p}, %xmm5", p = in(reg) pattern, options(att_syntax, nomem, nostack))
        };
        let mut x = 1u64;
        let mut max_gap = 0u64;
        for round in 0..ROUNDS {
            let mut last = rdtsc();
            for i in 0..SPINS {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                let now = rdtsc();
                max_gap = max_gap.max(now.wrapping_sub(last));
                last = now;
            }
            println!("counter: round {} of {ROUNDS} done", round + 1);
        }
        let back: u64;
        // SAFETY: reads xmm5 back.
        unsafe {
            core::arch::asm!("movq %xmm5, {p}", p = out(reg) back, options(att_syntax, nomem, nostack))
        };
        c.check(
            "xmm5 survived preemption and other domains",
            back == pattern,
            format_args!("{back:#x} != {pattern:#x}"),
        );
        c.check("computation finished", x != 0, format_args!("{x}"));
        println!("counter: longest gap between two TSC reads: {max_gap} cycles");
        c.finish()
    }
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod guest {
    use xen_test_guests::{println, Checks};

    const ROUNDS: u64 = 8;
    const SPINS: u64 = 3_000_000;

    #[no_mangle]
    extern "C" fn guest_main(dtb: u64) -> ! {
        let mut c = Checks::new("counter");
        // A pattern unique to this domain, from its name's last byte.
        let tag = xen_test_guests::boot_args(dtb).bytes().last().unwrap_or(0);
        let pattern = 0x0101_0101_0101_0101u64 * u64::from(tag);
        let mut x = 1u64;
        let mut max_gap = 0u64;
        let mut survived = true;
        for round in 0..ROUNDS {
            let mut back: u64;
            // One round inside one asm block, so the compiler cannot use d20 meanwhile: the pattern in d20 must
            // survive every preemption by the hypervisor and every other domain's use of the FP registers.
            // SAFETY: only registers named here change.
            unsafe {
                core::arch::asm!(
                    "fmov d20, {p}",
                    "mrs {last}, cntvct_el0",
                    "mov {i}, #0",
                    "2:",
                    "mrs {t}, cntvct_el0",
                    "sub {d}, {t}, {last}",
                    "cmp {d}, {gap}",
                    "csel {gap}, {d}, {gap}, hi",
                    "mov {last}, {t}",
                    "madd {x}, {x}, {m}, {i}",
                    "add {i}, {i}, #1",
                    "cmp {i}, {n}",
                    "b.lo 2b",
                    "fmov {back}, d20",
                    p = in(reg) pattern,
                    n = in(reg) SPINS,
                    m = in(reg) 6364136223846793005u64,
                    x = inout(reg) x,
                    gap = inout(reg) max_gap,
                    back = out(reg) back,
                    last = out(reg) _,
                    i = out(reg) _,
                    t = out(reg) _,
                    d = out(reg) _,
                    out("v20") _,
                    options(nomem, nostack)
                );
            }
            survived &= back == pattern;
            if back != pattern {
                println!("counter: d20 is {back:#x}, not {pattern:#x}");
            }
            println!("counter: round {} of {ROUNDS} done", round + 1);
        }
        c.check(
            "d20 survived preemption and other domains",
            survived,
            format_args!("pattern {pattern:#x}"),
        );
        c.check("computation finished", x != 0, format_args!("{x}"));
        println!(
            "counter: longest gap between two counter reads: {max_gap} ticks of {} Hz",
            xen_test_guests::counter_hz()
        );
        c.finish()
    }
}
