//! Debian's virt-install against `virtxend`.
//!
//! `virt-install --import --noreboot` has no install phase and does not boot, so it only calls defineXML: the
//! guest is defined. A plain `--import` calls createXML first; while no hypervisor is attached the daemon
//! refuses it with a libvirt error, virt-install reports the failure, and nothing is defined or left running.

use std::process::{Command, Output};

use e2e::virtxend::Daemon;

fn virt_install(d: &Daemon, extra: &[&str]) -> Output {
    Command::new("virt-install")
        .args([
            "--connect",
            &d.uri(),
            "--memory",
            "256",
            "--vcpus",
            "1",
            "--import",
            "--disk",
            "none",
        ])
        .args([
            "--network",
            "none",
            "--osinfo",
            "linux2022",
            "--noautoconsole",
        ])
        .args(extra)
        .output()
        .expect("running virt-install")
}

#[test]
fn virt_install_defines_a_guest_without_booting_it() {
    let d = Daemon::start("virt-install-define");
    let o = virt_install(&d, &["--name", "vi1", "--noreboot"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "virt-install failed: {err}\n{}",
        d.log()
    );
    let xml = d.virsh_ok(&["dumpxml", "vi1"]);
    assert!(
        xml.contains("<type arch='x86_64' machine='xenpv'>xen</type>"),
        "{xml}"
    );
    assert!(
        xml.contains("<console type='pty'>") || xml.contains("<console type='pty'/>"),
        "{xml}"
    );
    assert!(
        xml.contains("libosinfo"),
        "virt-install's metadata is kept: {xml}"
    );
    let meta = d.virsh_ok(&[
        "metadata",
        "vi1",
        "http://libosinfo.org/xmlns/libvirt/domain/1.0",
    ]);
    assert!(meta.contains("http://libosinfo.org/linux/2022"), "{meta}");
    assert_eq!(d.virsh_ok(&["domstate", "vi1"]).trim(), "shut off");
    assert!(d.config_dir().join("vi1.xml").exists());
    // The name is now taken: virt-install's lookup finds it and refuses.
    let o = virt_install(&d, &["--name", "vi1", "--noreboot"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is already in use"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn virt_install_boot_fails_honestly_without_a_hypervisor() {
    let d = Daemon::start("virt-install-boot");
    let o = virt_install(&d, &["--name", "vi2"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("no hypervisor connection"), "{all}");
    assert!(
        !d.virsh_ok(&["list", "--all"]).contains("vi2"),
        "nothing is defined or running"
    );
}

#[test]
fn virt_install_creates_its_disk_in_a_pool() {
    let d = Daemon::start("virt-install-disk");
    let t = d.dir.join("images");
    d.virsh_ok(&[
        "pool-define-as",
        "default",
        "dir",
        "--target",
        t.to_str().unwrap(),
    ]);
    d.virsh_ok(&["pool-build", "default"]);
    d.virsh_ok(&["pool-start", "default"]);
    let o = Command::new("virt-install")
        .args([
            "--connect",
            &d.uri(),
            "--name",
            "vi3",
            "--memory",
            "256",
            "--vcpus",
            "1",
            "--import",
        ])
        .args([
            "--noreboot",
            "--disk",
            "size=1",
            "--network",
            "none",
            "--osinfo",
            "linux2022",
            "--noautoconsole",
        ])
        .output()
        .expect("running virt-install");
    assert!(
        o.status.success(),
        "virt-install failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    let img = t.join("vi3.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 30);
    let xml = d.virsh_ok(&["dumpxml", "vi3"]);
    assert!(
        xml.contains(&format!("<source file='{}'/>", img.display())),
        "{xml}"
    );
    assert!(d.virsh_ok(&["vol-list", "default"]).contains("vi3.img"));
}
