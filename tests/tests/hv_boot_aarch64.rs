//! QEMU boot tests of the aarch64 hypervisor image: the real image, loaded by QEMU's `-kernel` as an arm64
//! `Image` on the `virt,virtualization=on,gic-version=3` machine with `-cpu max` under TCG, entered at EL2,
//! observed through its PL011 console and the semihosting exit status (`xtask::qemu` builds the command line).

use std::time::Duration;

use e2e::{boot_hv, Arch};

/// Builds the aarch64 guest pack with `guests` (the default set when empty) and boots xen-hv with it.
fn boot_with_guests(guests: &[&str], append: &str) -> e2e::qemu::BootOutcome {
    let names: Vec<String> = guests.iter().map(|s| s.to_string()).collect();
    let (pack, _) = xtask::build::build_guest_pack_for(Arch::Aarch64, &names)
        .unwrap_or_else(|e| panic!("building the guest pack: {e}"));
    let mut m = e2e::qemu::Machine::new(Arch::Aarch64, e2e::hv_image(Arch::Aarch64));
    m.initrd = Some(pack);
    m.append = append.to_string();
    e2e::qemu::run(&m, Duration::from_secs(60), false)
        .unwrap_or_else(|e| panic!("running QEMU: {e}"))
}

fn number_after(log: &str, key: &str) -> u64 {
    let at = log
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} missing:\n{log}"));
    log[at + key.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?}:\n{log}"))
}

#[test]
fn aarch64_boots_at_el2_and_reads_the_device_tree() {
    let out = boot_hv(
        Arch::Aarch64,
        "console=com1 loglvl=debug frobnicate=1",
        Duration::from_secs(60),
    );
    let log = &out.log;
    // No boot module: nothing to run, which is success.
    assert!(out.passed(), "status {:?}, expected 33:\n{log}", out.status);
    assert!(
        log.contains("xen-hv 4.17 (aarch64) starting at EL2"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) boot protocol: device tree at 0x"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) command line: console=com1 loglvl=debug frobnicate=1"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) 1 unrecognised command line option(s) ignored"),
        "{log}"
    );
    // The virt machine's RAM (512 MiB at 1 GiB) from the /memory node, its GICv3 from the arm,gic-v3 node.
    assert!(
        log.contains("(XEN)  0000000040000000 - 0000000060000000 type 1"),
        "{log}"
    );
    assert!(log.contains("(XEN) 512 MiB RAM, 0 boot module(s)"), "{log}");
    assert!(
        log.contains("(XEN) GICv3 distributor 0x8000000, redistributor 0x80a0000"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) stage-2 translation: 4 KiB granule, 48-bit IPA"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) no guest domains to run; halting"),
        "{log}"
    );
}

#[test]
fn aarch64_hypervisor_exception_prints_the_syndrome_and_fails() {
    let out = boot_hv(
        Arch::Aarch64,
        "console=com1 xenrs_selftest=trap",
        Duration::from_secs(60),
    );
    let log = &out.log;
    assert_eq!(out.status, Some(xtask::qemu::EXIT_FAILURE), "{log}");
    assert!(
        log.contains("(XEN) self-test: raising an undefined instruction in the hypervisor"),
        "{log}"
    );
    // UDF is an Unknown-reason exception (class 0) taken at EL2 itself.
    assert!(
        log.contains("(XEN) hypervisor exception (vector 4): ESR_EL2 0x2000000 (class 0x0)"),
        "{log}"
    );
}

#[test]
fn aarch64_runs_the_test_guests_in_el1_domains() {
    let out = boot_with_guests(&[], "console=com1 loglvl=info");
    let log = &out.log;
    assert!(out.passed(), "status {:?}, expected 33:\n{log}", out.status);
    assert!(!log.contains(") FAIL "), "{log}");
    // Both CPUs of the machine (the second started through the firmware's PSCI CPU_ON) ran vCPUs.
    assert!(log.contains("(XEN) 2 CPU(s) online"), "{log}");
    assert!(
        log.contains("(XEN) running 6 domain(s) on 2 CPU(s)"),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("ran on pCPU mask"))
            .any(|l| l.ends_with("0x2") || l.ends_with("0x3")),
        "no vCPU ran on CPU 1:\n{log}"
    );
    // Each domain has its RAM at guest-physical 1 GiB and enters the image at 0x40080000.
    assert!(
        log.contains("(XEN) d1: created \"hypercalls\": 8 MiB at 0x"),
        "{log}"
    );
    assert!(log.contains("1 vCPU(s), entry 0x40080000"), "{log}");
    // The hypercall guest: the device tree it got in x0, the hypercalls through hvc #0xEA1 (pointers
    // translated through its own stage-1 tables and the stage-2 tables), the timer upcall as a virtual PPI
    // through the GIC list registers, its own virtual timer's PPI 27 and a WFI that sleeps until it.
    for check in [
        "device tree in x0",
        "/hypervisor is compatible with xen,xen",
        "/hypervisor names the event-channel PPI 31",
        "/chosen/bootargs is the domain name",
        "memory node: RAM at 0x40000000",
        "xen_version(XENVER_version)",
        "bad pointer (no nested mapping) -> EFAULT",
        "bad pointer (no guest mapping) -> EFAULT",
        "console_io(CONSOLEIO_write) returns 0",
        "memory_op(XENMEM_memory_map) matches the boot memory map",
        "add_to_physmap(shared_info) replaces the frame",
        "hvm_op set_param/get_param round trip",
        "vcpu_op(register_vcpu_info)",
        "set_timer_op + SCHEDOP_block: woken with evtchn_upcall_pending in vcpu_info",
        "EVTCHNOP_bind_virq(VIRQ_TIMER): the timer sets the port pending and its selector bit",
        "timer upcall delivered through the callback (interrupt injection)",
        "virtual timer interrupt (PPI 27) delivered through the virtual GIC",
        "WFI sleeps until the virtual timer fires",
        "undefined hypercall 99 -> ENOSYS",
    ] {
        assert!(
            log.contains(&format!("(d1) hypercalls: ok   {check}")),
            "missing {check:?}:\n{log}"
        );
    }
    assert!(log.contains("(d1) PASS hypercalls (34 checks)"), "{log}");
    // Two CPU-bound counters, preempted by the EL2 timer, interleaved, FP/SIMD state intact.
    for d in ["d2", "d3"] {
        assert!(log.contains(&format!("({d}) PASS counter")), "{log}");
        assert!(
            log.contains(&format!(
                "({d}) counter: ok   d20 survived preemption and other domains"
            )),
            "{log}"
        );
    }
    let d2_done = log
        .find("(d2) counter: round 8 of 8 done")
        .expect("d2 finished");
    let d3_first = log
        .find("(d3) counter: round 1 of 8 done")
        .expect("d3 started");
    assert!(d3_first < d2_done, "counters did not interleave:\n{log}");
    // Each counter was preempted by timer interrupts (guest exits for the EL2 timer).
    for name in ["counter-1", "counter-2"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("({name}) shut down (poweroff)")))
            .unwrap_or_else(|| panic!("{name} summary:\n{log}"));
        let interrupts = number_after(line, "hypercalls, ");
        assert!(interrupts > 10, "{line}");
    }
    // The three-vCPU domain started its secondary vCPUs through PSCI CPU_ON (hvc #0) and they counted
    // together with vCPU 0.
    assert!(
        log.contains("(XEN) d4: created \"smp\": 8 MiB at 0x"),
        "{log}"
    );
    for check in [
        "the device tree lists 3 vCPUs started through PSCI",
        "PSCI_VERSION is 1.0",
        "CPU_ON of a vCPU that does not exist -> INVALID_PARAMETERS",
        "a second CPU_ON of vCPU 1 -> ALREADY_ON",
        "vCPUs 1 and 2 see their own ids in MPIDR_EL1",
        "atomic increments from all vCPUs add up",
        "the vCPUs' increments interleaved",
    ] {
        assert!(
            log.contains(&format!("(d4) smp: ok   {check}")),
            "missing {check:?}:\n{log}"
        );
    }
    assert!(log.contains("(d4) PASS smp (13 checks)"), "{log}");
    // The hostile guest: every bad hypercall refused, then its write to unbacked memory is a stage-2 data
    // abort that ends only that domain.
    assert!(
        log.contains("(d5) PASS hostile: every undefined or malformed hypercall was refused"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) d5v0: access to unmapped guest-physical address 0x70000000"),
        "{log}"
    );
    assert!(
        log.contains("(XEN) d5 (hostile) destroyed after a crash"),
        "{log}"
    );
    // Foreign HVC/SMC immediates come back to the guest as undefined instructions.
    assert!(
        log.contains("(d5) hostile: hvc #0x1234 refused: true, smc #7 refused: true"),
        "{log}"
    );
    // The sleeper's WFI with nothing to wake it: destroyed once nothing else can run.
    assert!(
        log.contains("(XEN) d6: every vCPU is blocked with nothing left that could wake it"),
        "{log}"
    );
    for (d, name, verdict) in [
        ("d1", "hypercalls", "PASS"),
        ("d2", "counter-1", "PASS"),
        ("d3", "counter-2", "PASS"),
        ("d4", "smp", "PASS"),
        ("d5", "hostile", "PASS (contained)"),
        ("d6", "sleeper", "PASS (contained)"),
    ] {
        assert!(
            log.contains(&format!("(XEN) result {d} {name}: {verdict}\n")),
            "{d} {name}:\n{log}"
        );
    }
    // Every frame of every domain came back.
    let line = log
        .lines()
        .find(|l| l.contains("KiB free before the domains were built"))
        .expect("memory summary");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(nums.len() >= 2 && nums[0] == nums[1], "{line}");
    eprintln!("aarch64 guests: {:.1}s", out.elapsed.as_secs_f64());
}

#[test]
fn aarch64_maxcpus_1_runs_everything_on_the_boot_cpu() {
    let out = boot_with_guests(&["counter", "smp"], "console=com1 maxcpus=1");
    let log = &out.log;
    assert!(out.passed(), "status {:?}, expected 33:\n{log}", out.status);
    assert!(log.contains("(XEN) 1 CPU(s) online"), "{log}");
    // Preempted by the EL2 timer, the two counters and the three smp vCPUs share CPU 0.
    assert!(log.contains("(d3) PASS smp (13 checks)"), "{log}");
    assert_eq!(
        log.matches("ran on pCPU mask 0x1\n").count(),
        3,
        "every domain on CPU 0 only:\n{log}"
    );
}

#[test]
fn aarch64_console_io_read_delivers_typed_input_to_a_guest() {
    let (pack, _) = xtask::build::build_guest_pack_for(Arch::Aarch64, &["echo".to_string()])
        .unwrap_or_else(|e| panic!("building the guest pack: {e}"));
    let mut m = e2e::qemu::Machine::new(Arch::Aarch64, e2e::hv_image(Arch::Aarch64));
    m.initrd = Some(pack);
    let mut s = e2e::console::Session::spawn(m.command()).expect("starting QEMU");
    assert!(
        s.expect("(d1) echo: ready", Duration::from_secs(60))
            .is_some(),
        "{}",
        s.output()
    );
    // Typed on the PL011, read by the hypervisor under the machine lock, handed over by console_io read.
    s.send_raw(b"hello arm\r").expect("typing");
    assert!(
        s.expect("(d1) echo: hello arm", Duration::from_secs(30))
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
        Some(xtask::qemu::EXIT_SUCCESS),
        "{}",
        s.output()
    );
}

#[test]
fn aarch64_debian_kernel_boots_smp_to_a_shell_on_the_pv_console() {
    // The unmodified Debian arm64 kernel (its Image) with an arm64 busybox initramfs as boot module: it finds
    // Xen in the device tree, prints through console_io (earlycon=xenboot) and then through the PV console ring
    // the hypervisor serves (hvc0), uses PSCI, the emulated GICv3 distributor and redistributor, the virtual
    // timer through the list registers, maps shared_info, registers vcpu_info and its runstate area, binds
    // event channels, starts its second vCPU through PSCI CPU_ON (IPIs are SGIs through the trapped
    // ICC_SGI1R_EL1), unpacks the initramfs and runs a shell. Typed input reaches the shell through the ring;
    // its PASS line and `poweroff` (PSCI SYSTEM_OFF) end the run as a passing guest.
    let (image, initramfs) = e2e::guest_kernel_arm64();
    let image = std::fs::read(&image).expect("reading the Image");
    let module = std::fs::read(&initramfs).expect("reading the initramfs");
    // The domain name doubles as its command line.
    let pack = xtask::build::pack(&[xtask::build::PackGuest {
        name: "earlycon=xenboot console=hvc0".into(),
        vcpus: 2,
        mem_mib: 256,
        image,
        module: Some(module),
    }])
    .expect("packing");
    let path = xtask::build::target_dir().join("xen-hv-linux-arm64-test.pack");
    std::fs::write(&path, pack).expect("writing the pack");
    let mut m = e2e::qemu::Machine::new(Arch::Aarch64, e2e::hv_image(Arch::Aarch64));
    m.initrd = Some(path);
    m.mem_mib = 1024;
    let mut s = e2e::console::Session::spawn(m.command()).expect("starting QEMU");
    assert!(
        s.expect(
            "(d1) xenrs-guest: init running on hvc0, kernel 6.1",
            Duration::from_secs(150)
        )
        .is_some(),
        "{}",
        s.output()
    );
    assert!(
        s.expect(
            "(d1) Enter 'help' for a list of built-in commands.",
            Duration::from_secs(30)
        )
        .is_some(),
        "{}",
        s.output()
    );
    // The shell may still be settling its terminal: type until it answers.
    let mut answered = false;
    for _ in 0..3 {
        s.send_raw(b"echo PASS linux-cpus-$(grep -c ^processor /proc/cpuinfo)\r")
            .expect("typing");
        if s.expect("(d1) PASS linux-cpus-2", Duration::from_secs(30))
            .is_some()
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "{}", s.output());
    s.send_raw(b"poweroff\r").expect("typing");
    let status = s.wait_exit(Duration::from_secs(60));
    let log = s.output();
    let mut at = 0;
    // In boot order.
    for line in [
        "(XEN) d1: created \"earlycon=xenboot console=hvc0\": 256 MiB",
        "2 vCPU(s)",
        "Linux version 6.1",
        "Machine model: xen,xenvm-4.17",
        "Xen 4.17 support found",
        "psci: PSCIv1.0 detected in firmware.",
        "GICv3: CPU0: found redistributor 0 region 0:0x0000000003020000",
        "arch_timer: cp15 timer(s) running at 62.50MHz (virt).",
        "printk: console [hvc0] enabled",
        "xen:events: Using 2-level ABI",
        "Xen: initializing cpu0",
        "GICv3: CPU1: found redistributor 1 region 0:0x0000000003040000",
        "smp: Brought up 1 node, 2 CPUs",
        "Trying to unpack rootfs image as initramfs",
        "Run /init as init process",
        "(d1) xenrs-guest: init running on hvc0",
        "(d1) PASS linux-cpus-2",
        "reboot: Power down",
        "(XEN) d1 (earlycon=xenboot console=hvc0) shut down (poweroff)",
        "(XEN) result d1 earlycon=xenboot console=hvc0: PASS",
        "(XEN) all guests passed",
    ] {
        match log[at..].find(line) {
            Some(i) => at += i + line.len(),
            None => panic!("missing {line:?} (in order):\n{log}"),
        }
    }
    assert!(!log.contains("Kernel panic"), "{log}");
    assert!(!log.contains("Oops"), "{log}");
    assert_eq!(status, Some(xtask::qemu::EXIT_SUCCESS), "{log}");
    eprintln!(
        "arm64 Linux to a shell and back: {:.1}s",
        s.elapsed().as_secs_f64()
    );
}

#[test]
fn aarch64_verdict_fails_a_guest_that_reports_failure() {
    let out = boot_with_guests(&["failing", "sleeper"], "console=com1");
    let log = &out.log;
    assert_eq!(out.status, Some(xtask::qemu::EXIT_FAILURE), "{log}");
    assert!(
        log.contains("(d1) FAIL failing: deliberately: this guest always fails"),
        "{log}"
    );
    assert!(log.contains("(XEN) result d1 failing: FAIL"), "{log}");
    assert!(
        log.contains("(XEN) result d2 sleeper: PASS (contained)"),
        "{log}"
    );
    assert!(log.contains("(XEN) some guests failed"), "{log}");
}
