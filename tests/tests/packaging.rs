//! The Debian packages: built with dpkg-buildpackage and checked by lintian (`packaging/build-debs` fails on any
//! lintian error or warning), then installed into a fresh Debian 12 tree made by debootstrap
//! (`packaging/test-install`), where every file must be in place, the systemd units must pass
//! `systemd-analyze verify`, the sockets must be enabled and update-grub's script must offer an xen-hv entry.

use std::process::Command;

use e2e::system_bus::is_root;

fn run(script: &str, args: &[&str]) -> String {
    let root = xtask::workspace_root();
    let out = Command::new(root.join(script))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("running a packaging script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn debs_build_lintian_clean_and_install_into_debian_12() {
    if !is_root() {
        eprintln!("SKIP: debootstrap and chroot need root");
        return;
    }
    let debs = run("packaging/build-debs", &[]);
    let debs = debs
        .lines()
        .last()
        .expect("build-debs prints the output directory")
        .trim()
        .to_string();
    let report = run("packaging/test-install", &[&debs]);
    for (package, file) in [
        ("xen-rs-hypervisor", "/boot/xenhv-0.1.0.elf"),
        ("xen-rs-hypervisor", "/etc/grub.d/21_xen-hv"),
        ("xen-rs-hypervisor", "/etc/default/grub.d/xen-hv.cfg"),
        ("xen-rs-utils", "/usr/sbin/xl"),
        ("xen-rs-utils", "/usr/share/man/man1/xl.1.gz"),
        ("xen-rs-utils", "/usr/share/man/man5/xl.cfg.5.gz"),
        (
            "xen-rs-utils",
            "/usr/share/man/man7/xen-hv-command-line.7.gz",
        ),
        ("xen-rs-virtxend", "/usr/sbin/virtxend"),
        ("xen-rs-virtxend", "/etc/libvirt/virtxend.conf"),
        ("xen-rs-virtxend", "/lib/systemd/system/virtxend.socket"),
        ("xen-rs-virtxend", "/lib/systemd/system/virtxend-ro.socket"),
        ("xen-rs-virtxend", "/lib/systemd/system/virtxend.service"),
        (
            "xen-rs-virtxend",
            "/usr/share/polkit-1/actions/org.libvirt.unix.policy",
        ),
        (
            "xen-rs-virtxend",
            "/usr/share/polkit-1/rules.d/60-virtxend.rules",
        ),
        ("xen-rs-virtxend", "/usr/share/man/man8/virtxend.8.gz"),
    ] {
        let line = format!("{package}: {file}\n");
        assert!(
            report.contains(&line),
            "{package} does not install {file}:\n{report}"
        );
    }
    assert!(report.contains("verify: ok"), "{report}");
    assert!(
        report.contains("virtxend.socket") && report.contains("virtxend-ro.socket"),
        "{report}"
    );
    assert!(
        report.contains("with xen-hv 0.1.0 and Linux 6.1.0-99-amd64"),
        "{report}"
    );
    assert!(
        report.contains("multiboot2\t/boot/xenhv-0.1.0.elf"),
        "{report}"
    );
    assert!(report.contains("virtxend 0.1.0"), "{report}");
}
