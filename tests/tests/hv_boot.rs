//! QEMU boot tests of the hypervisor image: the real image, booted by QEMU's PVH loader under TCG, observed
//! through its serial console and debug-exit status.

use std::time::Duration;

use e2e::{boot_hv, Arch};

#[test]
fn x86_64_boots_and_parses_boot_information() {
    let out = boot_hv(
        Arch::X86_64,
        "console=com1 loglvl=debug dom0_mem=256M",
        Duration::from_secs(120),
    );
    assert!(
        out.passed(),
        "xen-hv did not report success (status {:?}):\n{}",
        out.status,
        out.log
    );
    assert!(
        out.log.contains("xen-hv 4.17 (x86_64) starting"),
        "{}",
        out.log
    );
    assert!(out.log.contains("(XEN) boot protocol: PVH"), "{}", out.log);
    assert!(
        out.log
            .contains("(XEN) command line: console=com1 loglvl=debug dom0_mem=256M"),
        "{}",
        out.log
    );
    // QEMU's e820 for 512 MiB: the RAM above 1 MiB ends below 512 MiB, so 511 MiB are usable.
    assert!(out.log.contains("(XEN) 511 MiB RAM"), "{}", out.log);
}

#[test]
fn x86_64_reports_unknown_options() {
    let out = boot_hv(
        Arch::X86_64,
        "console=com1 frobnicate=1 loglvl=bogus",
        Duration::from_secs(120),
    );
    assert!(out.passed(), "{}", out.log);
    assert!(
        out.log
            .contains("(XEN) 2 unrecognised command line option(s) ignored"),
        "{}",
        out.log
    );
}

/// Builds the guest pack and boots xen-hv with it.
fn boot_with_guests(guests: &[&str]) -> e2e::qemu::BootOutcome {
    boot_with_guests_append(guests, "console=com1 loglvl=info")
}

fn boot_with_guests_append(guests: &[&str], append: &str) -> e2e::qemu::BootOutcome {
    let names: Vec<String> = guests.iter().map(|s| s.to_string()).collect();
    let (pack, _) = xtask::build::build_guest_pack(&names)
        .unwrap_or_else(|e| panic!("building the guest pack: {e}"));
    let mut m = e2e::qemu::Machine::new(Arch::X86_64, e2e::hv_image(Arch::X86_64));
    m.initrd = Some(pack);
    m.append = append.to_string();
    e2e::qemu::run(&m, Duration::from_secs(120), false)
        .unwrap_or_else(|e| panic!("running QEMU: {e}"))
}

#[test]
fn x86_64_runs_every_test_guest_under_svm() {
    let out = boot_with_guests(&[]);
    let log = &out.log;
    assert!(out.passed(), "status {:?}, expected 33:\n{log}", out.status);
    assert!(
        log.contains("(XEN) SVM with nested paging enabled"),
        "{log}"
    );
    // Each guest's own report, prefixed with its domain id by the hypervisor.
    assert!(log.contains("(d1) PASS hypercalls (38 checks)"), "{log}");
    assert!(!log.contains(") FAIL "), "{log}");
    for d in ["d2", "d3"] {
        assert!(log.contains(&format!("({d}) PASS counter")), "{log}");
        assert!(
            log.contains(&format!("({d}) counter: ok   xmm5 survived preemption")),
            "{log}"
        );
    }
    // The two CPU-bound counters were interleaved: d3 finished a round before d2 finished all of them.
    let d2_done = log
        .find("(d2) counter: round 8 of 8 done")
        .expect("d2 finished");
    let d3_first = log
        .find("(d3) counter: round 1 of 8 done")
        .expect("d3 started");
    assert!(
        d3_first < d2_done,
        "counters did not run concurrently:\n{log}"
    );
    // The two-vCPU domain started its second vCPU through VCPUOP_initialise/up and both counted together.
    assert!(log.contains("(XEN) d4: created \"smp\": 8 MiB"), "{log}");
    assert!(log.contains("3 vCPU(s)"), "{log}");
    assert!(
        log.contains("(d4) smp: ok   vCPU 2 started from a 64-bit vcpu_hvm_context"),
        "{log}"
    );
    assert!(
        log.contains("(d4) smp: ok   the vCPUs' increments interleaved"),
        "{log}"
    );
    assert!(log.contains("(d4) PASS smp (10 checks)"), "{log}");
    // The hostile guests were contained and the others kept running after them.
    assert!(
        log.contains("(XEN) d5v0: access to unmapped guest-physical address 0x30000000"),
        "{log}"
    );
    assert!(log.contains("(XEN) d6v0: triple fault at rip"), "{log}");
    let crash = log
        .find("(XEN) d5 (hostile) destroyed after a crash")
        .expect("d5 destroyed");
    let last_pass = log.rfind("PASS counter").expect("counter passed");
    assert!(crash < last_pass, "{log}");
    for line in [
        "(XEN) d1 (hypercalls) shut down (poweroff)",
        "(XEN) result d1 hypercalls: PASS",
        "(XEN) result d4 smp: PASS",
        "(XEN) result d5 hostile: PASS (contained)",
        "(XEN) result d6 triplefault: PASS (contained)",
        "(XEN) d7: every vCPU is blocked with nothing left that could wake it: domain destroyed",
        "(XEN) result d7 sleeper: PASS (contained)",
        "(XEN) all guests passed",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    // Memory accounting: everything the domains took (RAM, nested tables, VMCBs, maps, shared_info) came back.
    let line = log
        .lines()
        .find(|l| l.contains("KiB free before the domains were built"))
        .expect("accounting line");
    let before_kib = number_after(line, "(XEN)");
    let after_kib = number_after(line, "built,");
    assert!(before_kib > 0 && before_kib == after_kib, "{line}");
}

#[test]
fn x86_64_dom0_options_shape_the_boot_domain() {
    // dom0_mem= and dom0_max_vcpus= apply to the first guest, as Xen applies them to dom0.
    let out = boot_with_guests_append(
        &["hypercalls"],
        "console=com1 dom0_mem=12M dom0_max_vcpus=1",
    );
    assert!(out.passed(), "{}", out.log);
    assert!(
        out.log
            .contains("(XEN) d1: created \"hypercalls\": 12 MiB at"),
        "{}",
        out.log
    );
    assert!(out.log.contains("(d1) PASS hypercalls"), "{}", out.log);
}

#[test]
fn x86_64_hypervisor_exception_prints_a_register_dump_and_fails() {
    let out = boot_hv(
        Arch::X86_64,
        "console=com1 xenrs_selftest=trap",
        Duration::from_secs(60),
    );
    assert_eq!(out.status, Some(xtask::qemu::EXIT_FAILURE), "{}", out.log);
    for line in [
        "(XEN) FATAL hypervisor exception 6 (#UD invalid opcode), error code 0x0",
        "(XEN) rip 0x",
        "(XEN) rax 0x",
        "(XEN) r13 0x",
    ] {
        assert!(out.log.contains(line), "missing {line:?}:\n{}", out.log);
    }
}

#[test]
fn x86_64_verdict_fails_a_guest_that_reports_failure() {
    // `failing` reports FAIL and powers off cleanly: the run must fail, naming it.
    let out = boot_with_guests(&["failing", "triplefault"]);
    assert_eq!(out.status, Some(xtask::qemu::EXIT_FAILURE), "{}", out.log);
    assert!(out.log.contains("(XEN) running 2 domain(s)"), "{}", out.log);
    assert!(
        out.log.contains("(d1) FAIL failing: deliberately"),
        "{}",
        out.log
    );
    assert!(
        out.log.contains("(XEN) result d1 failing: FAIL"),
        "{}",
        out.log
    );
    assert!(
        out.log
            .contains("(XEN) result d2 triplefault: PASS (contained)"),
        "{}",
        out.log
    );
    assert!(out.log.contains("(XEN) some guests failed"), "{}", out.log);
}

/// The first number after `key` on the line that contains it.
fn number_after(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no line with {key:?}:\n{log}"));
    let rest = &line[line.find(key).map_or(0, |i| i + key.len())..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn x86_64_timer_preempts_cpu_bound_guests_on_one_cpu() {
    // Two counters that never yield inside a round share one physical CPU: each must see the other run for about
    // a whole timer tick in the middle of a round (only possible through INTR-intercept preemption).
    let out = boot_with_guests_append(&["counter"], "console=com1 nosmp");
    let log = &out.log;
    assert!(out.passed(), "{log}");
    assert!(
        log.contains("(XEN) running 2 domain(s) on 1 CPU(s)"),
        "{log}"
    );
    let per_tick = number_after(log, "measured against the PIT),");
    for d in ["(d1)", "(d2)"] {
        let gap = number_after(
            log,
            &format!("{d} counter: longest gap between two TSC reads:"),
        );
        assert!(
            gap > per_tick / 2,
            "{d}: longest gap {gap} cycles, a tick is {per_tick}:\n{log}"
        );
    }
    for d in ["d1 (counter-1)", "d2 (counter-2)"] {
        let line = log
            .lines()
            .find(|l| l.contains(d) && l.contains("interrupts"))
            .expect("summary");
        let n = number_after(line, "hypercalls,");
        assert!(n > 0, "{d} was never interrupted: {line}");
    }
}

#[test]
fn x86_64_debian_kernel_boots_as_a_pvh_domu_and_runs_init() {
    // The unmodified Debian kernel as a PVH guest built by the hypervisor itself from the boot pack (the
    // toolstack path, with a shell on hvc0, is tests/tests/linux_sandbox.rs): it discovers Xen through CPUID,
    // uses raw vmmcall hypercalls, maps shared_info, registers vcpu_info, reads the pvclock, prints through
    // console_io (earlyprintk=xen), finds its x2APIC through the ACPI tables, runs on the Xen per-vCPU timer
    // bound to an event channel delivered through the callback vector, maps its grant table frames, unpacks the
    // initramfs and starts /init.
    // There is no console ring in a pack domain, so user space output is not visible here; the run ends there.
    let (vmlinux, initramfs) = e2e::guest_kernel();
    let image = std::fs::read(&vmlinux).expect("reading vmlinux");
    let module = std::fs::read(&initramfs).expect("reading the initramfs");
    // The domain name doubles as its command line.
    let pack = xtask::build::pack(&[xtask::build::PackGuest {
        name: "earlyprintk=xen keep_bootcon".into(),
        vcpus: 1,
        mem_mib: 160,
        image,
        module: Some(module),
    }])
    .expect("packing");
    let path = xtask::build::target_dir().join("xen-hv-linux-test.pack");
    std::fs::write(&path, pack).expect("writing the pack");
    let mut m = e2e::qemu::Machine::new(Arch::X86_64, e2e::hv_image(Arch::X86_64));
    m.initrd = Some(path);
    let mut s = e2e::console::Session::spawn(m.command()).expect("starting QEMU");
    let mut at = 0;
    // In boot order.
    for line in [
        "(XEN) d1: created \"earlyprintk=xen keep_bootcon\": 160 MiB",
        "Linux version 6.1",
        "Hypervisor detected: Xen HVM",
        "x2apic: enabled by BIOS, switching to x2apic ops",
        "RAMDISK: [mem ",
        "ACPI: RSDP 0x0000000000002000",
        "Booting kernel on Xen PVH",
        "xen:events: Using 2-level ABI",
        "xen:events: Xen HVM callback vector for event delivery is enabled",
        "installing Xen timer for CPU 0",
        "Grant table initialized",
        "clocksource: Switched to clocksource xen",
        "Trying to unpack rootfs image as initramfs",
        "Run /init as init process",
    ] {
        match s.expect_from(at, line, Duration::from_secs(180)) {
            Some(end) => at = end,
            None => panic!("missing {line:?} (in order):\n{}", s.output()),
        }
    }
    let log = s.output();
    assert!(!log.contains("Kernel panic"), "{log}");
    assert!(!log.contains("FATAL"), "{log}");
}

#[test]
fn x86_64_console_io_read_delivers_typed_input_to_a_guest() {
    let (pack, _) = xtask::build::build_guest_pack(&["echo".to_string()])
        .unwrap_or_else(|e| panic!("building the guest pack: {e}"));
    let mut m = e2e::qemu::Machine::new(Arch::X86_64, e2e::hv_image(Arch::X86_64));
    m.initrd = Some(pack);
    let mut s = e2e::console::Session::spawn(m.command()).expect("starting QEMU");
    assert!(
        s.expect("(d1) echo: ready", Duration::from_secs(60))
            .is_some(),
        "{}",
        s.output()
    );
    s.send_raw(b"hello xen-hv\r").expect("typing");
    assert!(
        s.expect("(d1) echo: hello xen-hv", Duration::from_secs(30))
            .is_some(),
        "{}",
        s.output()
    );
    s.send_raw(b"quit\r").expect("typing");
    assert!(
        s.expect("(d1) PASS echo", Duration::from_secs(30))
            .is_some(),
        "{}",
        s.output()
    );
    assert_eq!(
        s.wait_exit(Duration::from_secs(30)),
        Some(e2e::qemu::EXIT_SUCCESS),
        "{}",
        s.output()
    );
}
