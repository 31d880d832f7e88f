//! Test guest `failing`: reports a failure and powers off, so the hypervisor's verdict can be seen to fail.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("failing is a bare-metal PVH guest: run it with `scripts/hv-boot failing`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_test_guests::Checks;

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        let mut c = Checks::new("failing");
        c.check(
            "deliberately",
            false,
            format_args!("this guest always fails"),
        );
        c.finish_with_poweroff()
    }
}
