//! Guest `ticker`: runs until it is stopped from outside, printing `ticker: tick N` on its console about every
//! 100 million TSC cycles. The toolstack and virsh tests use it to watch a domain run, pause, resume and stop.
//! Not part of `scripts/hv-boot`'s default set (it never finishes on its own); `scripts/hv-boot ticker` runs it.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ticker is a bare-metal PVH guest: start it with xl or virsh on the sandbox");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_test_guests::println;

    #[cfg(target_arch = "x86_64")]
    const CYCLES_PER_TICK: u64 = 100_000_000;
    /// About the same wall time with the generic timer's 62.5 MHz counter (QEMU virt).
    #[cfg(target_arch = "aarch64")]
    const CYCLES_PER_TICK: u64 = 62_500_000;

    #[cfg(target_arch = "x86_64")]
    fn rdtsc() -> u64 {
        // SAFETY: RDTSC only reads the time stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[cfg(target_arch = "aarch64")]
    fn rdtsc() -> u64 {
        xen_test_guests::counter()
    }

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        println!("ticker: started");
        let mut tick = 0u64;
        loop {
            let start = rdtsc();
            while rdtsc().wrapping_sub(start) < CYCLES_PER_TICK {
                core::hint::spin_loop();
            }
            tick += 1;
            println!("ticker: tick {tick}");
        }
    }
}
