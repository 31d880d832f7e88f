//! Guest `idle`: the smallest domain that stays up. It prints `idle: up` once and then blocks in
//! `SCHEDOP_block` with no timer and no event channel, so it costs the hypervisor nothing until it is stopped
//! from outside. The scale benchmark (`scripts/bench-domain-scale`) runs hundreds of them at once.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("idle is a bare-metal PVH guest: start it with xl or virsh on the sandbox");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_test_guests::println;

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        println!("idle: up");
        loop {
            // SCHEDOP_block: nothing is bound, so only the control domain (pause, destroy) ends this.
            xen_test_guests::hypercall(
                xen_abi::hypercall::SCHED_OP,
                [xen_abi::hypercall::schedop::BLOCK, 0, 0, 0, 0],
            );
        }
    }
}
