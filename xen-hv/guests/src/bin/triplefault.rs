//! Test guest `triplefault`: loads an empty IDT and raises an exception, so the CPU shuts down. The hypervisor
//! must destroy only this domain.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("triplefault is a bare-metal PVH guest: run it with `scripts/hv-boot triplefault`");
    std::process::exit(2);
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod guest {
    use xen_test_guests::println;

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        println!("PASS triplefault: reached long mode");
        println!("EXPECT-CRASH triplefault: loading an empty IDT and raising #BP");
        let idtr = [0u16; 5];
        // SAFETY: deliberately fatal: with a zero-limit IDT the breakpoint becomes a triple fault.
        unsafe {
            core::arch::asm!("lidt ({})", "int3", in(reg) idtr.as_ptr(), options(att_syntax))
        };
        println!("FAIL triplefault: survived a triple fault");
        xen_test_guests::halt_forever()
    }
}

/// On aarch64 this guest only says why it cannot run there.
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod guest {
    #[no_mangle]
    extern "C" fn guest_main(_dtb: u64) -> ! {
        xen_test_guests::println!(
            "FAIL triplefault: a triple fault is an x86 event; aarch64 has no equivalent"
        );
        xen_test_guests::shutdown(xen_abi::hypercall::schedop::SHUTDOWN_POWEROFF);
        xen_test_guests::halt_forever()
    }
}
