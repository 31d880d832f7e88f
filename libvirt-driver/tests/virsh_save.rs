//! Debian's virsh (libvirt 9.0) driving save, restore and managed save against the daemon over a test backend
//! that saves guests through the image files (the same backend as the protocol tests): what virsh prints, the
//! states it reports and the files it leaves.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::{start, TempDir, TestBackend};

struct Virsh {
    uri: String,
    dir: PathBuf,
}

impl Virsh {
    fn new(dir: &Path, sock: &Path) -> Virsh {
        Virsh {
            uri: format!("xen:///system?socket={}", sock.display()),
            dir: dir.to_path_buf(),
        }
    }
    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .env_remove("VISUAL")
            .envs(envs.iter().copied())
            .output()
            .expect("running virsh")
    }
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[])
    }
    fn ok_with(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let o = self.run(args, envs);
        assert!(
            o.status.success(),
            "virsh {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn err(&self, args: &[&str]) -> String {
        let o = self.run(args, &[]);
        assert!(
            !o.status.success(),
            "virsh {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
    fn state(&self, dom: &str) -> String {
        self.ok(&["domstate", dom, "--reason"]).trim().to_string()
    }
}

fn guest_xml(name: &str) -> String {
    format!(
        "<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='xenpv'>xen</type>\n  </os>\n</domain>\n"
    )
}

/// The row of `virsh list` for a domain, split into its columns.
fn row(list: &str, dom: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.get(1).map(String::as_str) == Some(dom))
        .unwrap_or_default()
}

#[test]
fn virsh_save_restore_and_save_image_commands() {
    let t = TempDir::new("virsh-save");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let v = Virsh::new(&t.0, &sock);
    let f = v.write("g.xml", &guest_xml("vs1"));
    v.ok(&["define", &f]);
    v.ok(&["start", "vs1"]);
    let img = t.0.join("vs1.save");
    let img_s = img.to_str().unwrap();

    let out = v.ok(&["save", "vs1", img_s]);
    assert!(
        out.contains(&format!("Domain 'vs1' saved to {img_s}")),
        "{out}"
    );
    assert_eq!(v.state("vs1"), "shut off (saved)");
    assert!(row(&v.ok(&["list", "--all"]), "vs1").ends_with(&["shut".into(), "off".into()]));

    let xml = v.ok(&["save-image-dumpxml", img_s]);
    assert!(
        xml.contains("<name>vs1</name>") && xml.contains("<domain type='xen'>"),
        "{xml}"
    );

    // save-image-define with a title, then save-image-edit (through $EDITOR) changing it again.
    let titled = v.write(
        "t.xml",
        &xml.replace(
            "<name>vs1</name>",
            "<name>vs1</name>\n  <title>first</title>",
        ),
    );
    let out = v.ok(&["save-image-define", img_s, &titled]);
    assert!(
        out.contains(&format!("State file {img_s} updated")),
        "{out}"
    );
    assert!(v
        .ok(&["save-image-dumpxml", img_s])
        .contains("<title>first</title>"));
    let out = v.ok_with(
        &["save-image-edit", img_s],
        &[("EDITOR", "sed -i s/first/second/")],
    );
    assert!(out.contains(&format!("State file {img_s} edited")), "{out}");
    assert!(v
        .ok(&["save-image-dumpxml", img_s])
        .contains("<title>second</title>"));
    let bad = v.write(
        "bad.xml",
        &xml.replace(
            "<memory unit='KiB'>262144</memory>",
            "<memory unit='KiB'>524288</memory>",
        ),
    );
    let err = v.err(&["save-image-define", img_s, &bad]);
    assert!(
        err.contains("Target domain max memory 524288 does not match source 262144"),
        "{err}"
    );

    let out = v.ok(&["restore", img_s]);
    assert!(
        out.contains(&format!("Domain restored from {img_s}")),
        "{out}"
    );
    assert_eq!(v.state("vs1"), "running (restored)");
    assert!(v.ok(&["dumpxml", "vs1"]).contains("<title>second</title>"));
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    let err = v.err(&["restore", img_s]);
    assert!(err.contains("domain 'vs1' is already active"), "{err}");

    // --paused on save and on restore.
    v.ok(&["save", "vs1", img_s, "--paused"]);
    v.ok(&["restore", img_s]);
    assert_eq!(v.state("vs1"), "paused (user)");
    v.ok(&["save", "vs1", img_s, "--running"]);
    v.ok(&["restore", img_s, "--paused"]);
    assert_eq!(v.state("vs1"), "paused (user)");
    v.ok(&["save", "vs1", img_s]);
    v.ok(&["save-image-define", img_s, &titled, "--paused"]);
    v.ok(&["restore", img_s, "--running"]);
    assert_eq!(v.state("vs1"), "running (restored)");

    // A file that is not an image: a clean error, nothing created, the daemon goes on.
    let garbage = v.write("garbage.save", &"x".repeat(1000));
    for cmd in ["restore", "save-image-dumpxml"] {
        let err = v.err(&[cmd, &garbage]);
        assert!(err.contains("image magic is incorrect"), "{cmd}: {err}");
    }
    let err = v.err(&["restore", t.0.join("missing.save").to_str().unwrap()]);
    assert!(err.contains("No such file or directory"), "{err}");
    let err = v.err(&["save", "vs1", t.0.join("no/dir/x.save").to_str().unwrap()]);
    assert!(err.contains("Failed to save domain"), "{err}");
    assert_eq!(v.state("vs1"), "running (restored)");
    assert_eq!(v.ok(&["list", "--all", "--name"]).trim(), "vs1");
    // `--running --paused` is refused by the client library before any call (the daemon's own check is in
    // protocol.rs); virsh 9.0 sometimes hangs in its job watcher on such an instant failure, so it is not run
    // here.
}

#[test]
fn virsh_managedsave_start_and_undefine() {
    let t = TempDir::new("virsh-managed");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let v = Virsh::new(&t.0, &sock);
    let f = v.write("g.xml", &guest_xml("vm1"));
    v.ok(&["define", &f]);
    v.ok(&["start", "vm1"]);
    assert!(v.ok(&["dominfo", "vm1"]).contains("Managed save:   no"));

    let out = v.ok(&["managedsave", "vm1"]);
    assert!(out.contains("Domain 'vm1' state saved by libvirt"), "{out}");
    assert!(t.0.join("save/vm1.save").exists());
    assert_eq!(v.state("vm1"), "shut off (saved)");
    assert!(v.ok(&["dominfo", "vm1"]).contains("Managed save:   yes"));
    assert_eq!(
        row(&v.ok(&["list", "--all", "--managed-save"]), "vm1")[2],
        "saved"
    );
    assert!(v
        .ok(&["list", "--all", "--with-managed-save"])
        .contains("vm1"));
    assert!(!v
        .ok(&["list", "--all", "--without-managed-save"])
        .contains("vm1"));

    let xml = v.ok(&["managedsave-dumpxml", "vm1"]);
    assert!(xml.contains("<name>vm1</name>"), "{xml}");
    let titled = v.write(
        "t.xml",
        &xml.replace(
            "<name>vm1</name>",
            "<name>vm1</name>\n  <title>managed</title>",
        ),
    );
    let out = v.ok(&["managedsave-define", "vm1", &titled, "--paused"]);
    assert!(
        out.contains("Managed save state file of domain 'vm1' updated"),
        "{out}"
    );
    assert!(v
        .ok(&["managedsave-dumpxml", "vm1"])
        .contains("<title>managed</title>"));
    let out = v.ok_with(
        &["managedsave-edit", "vm1"],
        &[("EDITOR", "sed -i s/managed/edited/")],
    );
    assert!(out.contains("edited"), "{out}");
    assert!(v
        .ok(&["managedsave-dumpxml", "vm1"])
        .contains("<title>edited</title>"));

    let err = v.err(&["undefine", "vm1"]);
    assert!(
        err.contains("Refusing to undefine while domain managed save image exists"),
        "{err}"
    );
    assert!(v.ok(&["list", "--all", "--name"]).contains("vm1"));

    // start restores the image (paused, as redefined) and removes it.
    let out = v.ok(&["start", "vm1"]);
    assert!(out.contains("Domain 'vm1' started"), "{out}");
    assert_eq!(v.state("vm1"), "paused (user)");
    assert!(v.ok(&["dumpxml", "vm1"]).contains("<title>edited</title>"));
    assert!(v.ok(&["dominfo", "vm1"]).contains("Managed save:   no"));
    assert!(!t.0.join("save/vm1.save").exists());
    assert_eq!(be.restored.lock().unwrap().len(), 1);

    // start --force-boot discards an image and boots.
    v.ok(&["managedsave", "vm1"]);
    v.ok(&["start", "vm1", "--force-boot"]);
    assert_eq!(v.state("vm1"), "running (booted)");
    assert!(!t.0.join("save/vm1.save").exists());
    assert_eq!(be.restored.lock().unwrap().len(), 1);

    // managedsave-remove; then undefine --managed-save takes the image with the definition.
    v.ok(&["managedsave", "vm1"]);
    let out = v.ok(&["managedsave-remove", "vm1"]);
    assert!(
        out.contains("Removed managedsave image for domain 'vm1'"),
        "{out}"
    );
    let out = v.ok(&["managedsave-remove", "vm1"]);
    assert!(out.contains("has no manage save image"), "{out}");
    let err = v.err(&["managedsave-dumpxml", "vm1"]);
    assert!(
        err.contains("domain does not have managed save image"),
        "{err}"
    );
    v.ok(&["start", "vm1"]);
    v.ok(&["managedsave", "vm1"]);
    let out = v.ok(&["undefine", "vm1", "--managed-save"]);
    assert!(out.contains("Domain 'vm1' has been undefined"), "{out}");
    assert!(!t.0.join("save/vm1.save").exists());
    assert!(v.ok(&["list", "--all", "--name"]).trim().is_empty());

    // A transient domain cannot be managed-saved.
    let f = v.write("tr.xml", &guest_xml("vt1"));
    v.ok(&["create", &f]);
    let err = v.err(&["managedsave", "vt1"]);
    assert!(
        err.contains("cannot do managed save for transient domain"),
        "{err}"
    );
    assert_eq!(v.state("vt1"), "running (booted)");
}
