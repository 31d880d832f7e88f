//! Test guest `smp`: a three-vCPU domain. vCPU 0 starts vCPU 1 from a 32-bit and vCPU 2 from a 64-bit
//! `vcpu_hvm_context` (VCPUOP_initialise + VCPUOP_up; on aarch64 both through PSCI CPU_ON), then all three
//! increment one shared counter with atomic instructions; the total must be exact and the increments must
//! interleave.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("smp is a bare-metal PVH guest: run it with `scripts/hv-boot smp`");
    std::process::exit(2);
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    use xen_abi::errno::Errno;
    use xen_abi::hypercall::{schedop, SCHED_OP, VCPU_OP};
    use xen_abi::xen::vcpuop;
    use xen_test_guests::{
        ap_context, ap_context_64, hypercall, println, start_vcpu, start_vcpu_with, Checks,
    };

    const N: u64 = 2_000_000;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static AP_IDS: AtomicU32 = AtomicU32::new(0);
    static AP_DONE: AtomicU32 = AtomicU32::new(0);
    static GO: AtomicBool = AtomicBool::new(false);

    fn ap() -> ! {
        let id = core::arch::x86_64::__cpuid(0x4000_0004).ebx;
        AP_IDS.fetch_or(1 << (id % 32), Ordering::AcqRel);
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        for _ in 0..N {
            COUNTER.fetch_add(1, Ordering::AcqRel);
        }
        AP_DONE.fetch_add(1, Ordering::AcqRel);
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
        let started = start_vcpu_with(2, ap, &ap_context_64());
        c.check(
            "vCPU 2 started from a 64-bit vcpu_hvm_context",
            started.is_ok(),
            format_args!("{started:x?}"),
        );
        // Count alongside vCPU 1 from before it starts until after it is done: its N increments all fall between
        // two of ours, so at least one gap between our consecutive increments shows them, however the vCPUs are
        // scheduled (in parallel on two CPUs, or preempting each other on one).
        let mut interleaved = 0u64;
        let mut mine = 1u64;
        let mut last = COUNTER.fetch_add(1, Ordering::AcqRel);
        GO.store(true, Ordering::Release);
        loop {
            let done = AP_DONE.load(Ordering::Acquire) == 2;
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
        while AP_DONE.load(Ordering::Acquire) < 2 && waits < 1_000_000 {
            hypercall(SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]);
            waits += 1;
        }
        let total = COUNTER.load(Ordering::Acquire);
        let ids = AP_IDS.load(Ordering::Acquire);
        let done = AP_DONE.load(Ordering::Acquire);
        println!("smp: CPUID vCPU ids seen {ids:#b}; {interleaved} interleavings; total {total}");
        c.check(
            "vCPUs 1 and 2 ran and finished",
            done == 2,
            format_args!("{done} done after {waits} yields"),
        );
        c.check(
            "vCPUs 1 and 2 see their own ids in CPUID 0x40000004",
            ids == 0b110,
            format_args!("{ids:#b}"),
        );
        c.check(
            "atomic increments from all vCPUs add up",
            total == 2 * N + mine,
            format_args!("{total} != {}", 2 * N + mine),
        );
        c.check(
            "the vCPUs' increments interleaved",
            interleaved > 0,
            format_args!("no interleaving seen"),
        );
        c.finish()
    }
}

/// On aarch64 the secondary vCPUs start through PSCI CPU_ON (the Arm way) instead of VCPUOP_initialise.
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    use xen_abi::hypercall::{schedop, SCHED_OP};
    use xen_test_guests::{hypercall, println, psci, start_vcpu, vcpu_index, Checks};

    const N: u64 = 2_000_000;
    const PSCI_VERSION: u64 = 0x8400_0000;
    const PSCI_AFFINITY_INFO: u64 = 0xc400_0004;
    const PSCI_FEATURES: u64 = 0x8400_000a;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static AP_IDS: AtomicU32 = AtomicU32::new(0);
    static AP_DONE: AtomicU32 = AtomicU32::new(0);
    static GO: AtomicBool = AtomicBool::new(false);

    fn ap() -> ! {
        AP_IDS.fetch_or(1 << (vcpu_index() % 32), Ordering::AcqRel);
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        for _ in 0..N {
            COUNTER.fetch_add(1, Ordering::AcqRel);
        }
        AP_DONE.fetch_add(1, Ordering::AcqRel);
        xen_test_guests::halt_forever()
    }

    #[no_mangle]
    extern "C" fn guest_main(dtb: u64) -> ! {
        let mut c = Checks::new("smp");
        let mut cpus = 0;
        if let Ok(t) = xen_abi::fdt::Fdt::new(xen_test_guests::device_tree(dtb)) {
            let _ = t.for_each_prop(|p| {
                if p.name == "enable-method" && p.value == b"psci\0" {
                    cpus += 1;
                }
            });
        }
        c.check(
            "the device tree lists 3 vCPUs started through PSCI",
            cpus == 3,
            format_args!("{cpus}"),
        );
        let v = psci(PSCI_VERSION, [0; 3]);
        c.check("PSCI_VERSION is 1.0", v == 0x1_0000, format_args!("{v:#x}"));
        let f = psci(PSCI_FEATURES, [0xc400_0003, 0, 0]);
        c.check("PSCI_FEATURES(CPU_ON) is 0", f == 0, format_args!("{f}"));
        let off = psci(PSCI_AFFINITY_INFO, [1, 0, 0]);
        c.check("vCPU 1 starts off", off == 1, format_args!("{off}"));
        let bad = start_vcpu(7, ap);
        c.check(
            "CPU_ON of a vCPU that does not exist -> INVALID_PARAMETERS",
            bad == Err(-2),
            format_args!("{bad:?}"),
        );
        let started = start_vcpu(1, ap);
        c.check(
            "PSCI CPU_ON of vCPU 1",
            started.is_ok(),
            format_args!("{started:?}"),
        );
        let again = start_vcpu(1, ap);
        c.check(
            "a second CPU_ON of vCPU 1 -> ALREADY_ON",
            again == Err(-4),
            format_args!("{again:?}"),
        );
        let on = psci(PSCI_AFFINITY_INFO, [1, 0, 0]);
        c.check("vCPU 1 is on", on == 0, format_args!("{on}"));
        let started = start_vcpu(2, ap);
        c.check(
            "PSCI CPU_ON of vCPU 2",
            started.is_ok(),
            format_args!("{started:?}"),
        );
        // As on x86: count alongside the others until they are done; their increments fall between two of ours.
        let mut interleaved = 0u64;
        let mut mine = 1u64;
        let mut last = COUNTER.fetch_add(1, Ordering::AcqRel);
        GO.store(true, Ordering::Release);
        loop {
            let done = AP_DONE.load(Ordering::Acquire) == 2;
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
        while AP_DONE.load(Ordering::Acquire) < 2 && waits < 1_000_000 {
            hypercall(SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]);
            waits += 1;
        }
        let total = COUNTER.load(Ordering::Acquire);
        let ids = AP_IDS.load(Ordering::Acquire);
        let done = AP_DONE.load(Ordering::Acquire);
        println!("smp: MPIDR vCPU ids seen {ids:#b}; {interleaved} interleavings; total {total}");
        c.check(
            "vCPUs 1 and 2 ran and finished",
            done == 2,
            format_args!("{done} done after {waits} yields"),
        );
        c.check(
            "vCPUs 1 and 2 see their own ids in MPIDR_EL1",
            ids == 0b110,
            format_args!("{ids:#b}"),
        );
        c.check(
            "atomic increments from all vCPUs add up",
            total == 2 * N + mine,
            format_args!("{total} != {}", 2 * N + mine),
        );
        c.check(
            "the vCPUs' increments interleaved",
            interleaved > 0,
            format_args!("no interleaving seen"),
        );
        c.finish()
    }
}
