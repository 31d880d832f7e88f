//! Test guest `suspender`: counts on its console, then suspends itself with `SCHEDOP_shutdown(SHUTDOWN_suspend)`
//! as a Linux guest does when its toolstack saves it, and reports what the hypercall returned once it runs again:
//! 0 when it was restored into a new domain, 1 when the suspend was cancelled (a checkpoint, the same domain
//! going on). Its memory and registers must be as they were: a pattern on its stack and in a callee-saved
//! register are checked after the return, and the count goes on from where it stopped.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("suspender is a bare-metal PVH guest: start it with xl and save it with `xl save`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_abi::hypercall::schedop;
    use xen_test_guests::{println, Checks};

    const BEFORE: u32 = 3;
    const AFTER: u32 = 3;

    #[inline(never)]
    fn spin() {
        for i in 0..2_000_000u64 {
            core::hint::black_box(i);
        }
    }

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        let mut c = Checks::new("suspender");
        let mut stack = [0u64; 64];
        for (i, w) in stack.iter_mut().enumerate() {
            *w = 0x5eed_0000_0000_0000 | i as u64;
        }
        let mut count = 0u32;
        while count < BEFORE {
            count += 1;
            println!("suspender: count {count}");
            spin();
        }
        println!("suspender: suspending");
        let ret = core::hint::black_box(xen_test_guests::shutdown(schedop::SHUTDOWN_SUSPEND));
        println!("suspender: suspend returned {ret}");
        c.check(
            "the suspend hypercall returned 0 (new domain) or 1 (cancelled)",
            ret <= 1,
            format_args!("{ret:#x}"),
        );
        let intact = stack
            .iter()
            .enumerate()
            .all(|(i, w)| core::hint::black_box(*w) == 0x5eed_0000_0000_0000 | i as u64);
        c.check("the stack survived", intact, format_args!("pattern lost"));
        while count < BEFORE + AFTER {
            count += 1;
            println!("suspender: count {count}");
            spin();
        }
        c.check(
            "the count went on from where it stopped",
            count == BEFORE + AFTER,
            format_args!("{count}"),
        );
        c.finish()
    }
}
