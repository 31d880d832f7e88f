//! Test guest `sleeper`: halts with interrupts off and no timer, so nothing can ever wake it. The hypervisor
//! must notice once nothing else can run and destroy it rather than idle forever.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("sleeper is a bare-metal PVH guest: run it with `scripts/hv-boot sleeper`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_test_guests::println;

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        println!("PASS sleeper: reached guest_main");
        println!("EXPECT-CRASH sleeper: halting with interrupts off and no timer");
        xen_test_guests::halt_forever()
    }
}
