//! The Debian kernel and test initramfs booted directly by QEMU's own PVH loader: proves the guest artifacts the
//! xen-hv Linux tests use (vmlinux extracted from Debian's package, busybox initramfs) and gives the
//! no-hypervisor baseline for boot-time comparisons.

use std::time::Duration;

use e2e::console::Session;
use e2e::{guest_kernel, qemu, Arch};

#[test]
fn debian_kernel_boots_to_a_shell_under_qemu_pvh() {
    let (vmlinux, initramfs) = guest_kernel();
    let mut m = qemu::Machine::new(Arch::X86_64, vmlinux);
    m.smp = 1;
    m.initrd = Some(initramfs);
    m.append = "console=ttyS0 quiet".to_string();
    let mut s = Session::spawn(m.command()).expect("starting QEMU");
    let boot = s.expect(
        "xenrs-guest: init running on ttyS0",
        Duration::from_secs(180),
    );
    assert!(boot.is_some(), "no init banner:\n{}", s.output());
    let prompt = s.expect("xenrs-guest# ", Duration::from_secs(60));
    assert!(prompt.is_some(), "no shell prompt:\n{}", s.output());
    println!(
        "native QEMU PVH boot: shell prompt after {:.2} s",
        s.elapsed().as_secs_f64()
    );
    s.send_line("echo hello-$((6*7))").expect("typing");
    let answer = s.expect("hello-42", Duration::from_secs(30));
    assert!(
        answer.is_some(),
        "the shell did not run the command:\n{}",
        s.output()
    );
    s.send_line("poweroff").expect("typing");
    assert!(
        s.expect("reboot: Power down", Duration::from_secs(60))
            .is_some(),
        "no power-down:\n{}",
        s.output()
    );
    assert_eq!(
        s.wait_exit(Duration::from_secs(30)),
        Some(0),
        "QEMU did not exit after poweroff"
    );
}
