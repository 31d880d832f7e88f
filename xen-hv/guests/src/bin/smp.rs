//! Test guest `smp`: a two-vCPU domain. vCPU 0 starts vCPU 1 with VCPUOP_initialise + VCPUOP_up, then both
//! increment one shared counter with atomic instructions; the total must be exact and the increments must
//! interleave, which only happens when both vCPUs run at the same time (or are preempted in turn).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("smp is a bare-metal PVH guest: run it with `scripts/hv-boot smp`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    use xen_abi::errno::Errno;
    use xen_abi::hypercall::{schedop, SCHED_OP, VCPU_OP};
    use xen_abi::xen::vcpuop;
    use xen_test_guests::{ap_context, hypercall, println, start_vcpu, Checks};

    const N: u64 = 2_000_000;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static AP_ID: AtomicU32 = AtomicU32::new(u32::MAX);
    static AP_DONE: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);

    fn ap() -> ! {
        let id = core::arch::x86_64::__cpuid(0x4000_0004).ebx;
        AP_ID.store(id, Ordering::Release);
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        for _ in 0..N {
            COUNTER.fetch_add(1, Ordering::AcqRel);
        }
        AP_DONE.store(true, Ordering::Release);
        xen_test_guests::halt_forever()
    }

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        let mut c = Checks::new("smp");
        let up = hypercall(VCPU_OP, [vcpuop::IS_UP, 1, 0, 0, 0]);
        c.check("vCPU 1 starts down", up == 0, format_args!("is_up {up:#x}"));
        let r = hypercall(VCPU_OP, [vcpuop::UP, 1, 0, 0, 0]);
        c.check(
            "VCPUOP_up before VCPUOP_initialise -> EINVAL",
            Errno::from_ret(r as i64) == Some(Errno::Einval),
            format_args!("{r:#x}"),
        );
        let started = start_vcpu(1, ap);
        c.check(
            "VCPUOP_initialise + VCPUOP_up of vCPU 1",
            started.is_ok(),
            format_args!("{started:x?}"),
        );
        let again = ap_context();
        let r = hypercall(
            VCPU_OP,
            [vcpuop::INITIALISE, 1, &again as *const _ as u64, 0, 0],
        );
        c.check(
            "a second VCPUOP_initialise -> EEXIST",
            Errno::from_ret(r as i64) == Some(Errno::Eexist),
            format_args!("{r:#x}"),
        );
        let up = hypercall(VCPU_OP, [vcpuop::IS_UP, 1, 0, 0, 0]);
        c.check("vCPU 1 is up", up == 1, format_args!("is_up {up:#x}"));
        // Count alongside vCPU 1 from before it starts until after it is done: its N increments all fall between
        // two of ours, so at least one gap between our consecutive increments shows them, however the vCPUs are
        // scheduled (in parallel on two CPUs, or preempting each other on one).
        let mut interleaved = 0u64;
        let mut mine = 1u64;
        let mut last = COUNTER.fetch_add(1, Ordering::AcqRel);
        GO.store(true, Ordering::Release);
        loop {
            let done = AP_DONE.load(Ordering::Acquire);
            let now = COUNTER.fetch_add(1, Ordering::AcqRel);
            mine += 1;
            if now != last + 1 {
                interleaved += 1;
            }
            last = now;
            if done || mine >= 50 * N {
                break;
            }
        }
        let mut waits = 0u64;
        while !AP_DONE.load(Ordering::Acquire) && waits < 1_000_000 {
            hypercall(SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]);
            waits += 1;
        }
        let total = COUNTER.load(Ordering::Acquire);
        let id = AP_ID.load(Ordering::Acquire);
        println!("smp: vCPU 1 is CPUID vCPU id {id}; {interleaved} interleavings; total {total}");
        c.check(
            "vCPU 1 ran and finished",
            AP_DONE.load(Ordering::Acquire),
            format_args!("after {waits} yields"),
        );
        c.check(
            "vCPU 1 sees its own id in CPUID 0x40000004",
            id == 1,
            format_args!("{id}"),
        );
        c.check(
            "atomic increments from both vCPUs add up",
            total == N + mine,
            format_args!("{total} != {}", N + mine),
        );
        c.check(
            "the two vCPUs' increments interleaved",
            interleaved > 0,
            format_args!("no interleaving seen"),
        );
        c.finish()
    }
}
