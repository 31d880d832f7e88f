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
