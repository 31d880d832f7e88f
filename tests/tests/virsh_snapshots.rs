//! virsh's snapshot commands against `virtxend` (no hypervisor attached): shut-off domains with qcow2 disks made
//! by qemu-img get internal disk snapshots, and the bytes qemu-io writes come back on revert.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::virtxend::Daemon;

/// A PV guest with one disk per `(target, image, format)`.
fn guest_xml(name: &str, disks: &[(&str, &Path, &str)]) -> String {
    let mut devs = String::new();
    for (target, image, format) in disks {
        devs.push_str(&format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{format}'/>\n      <source file='{}'/>\n      <target dev='{target}' bus='xen'/>\n    </disk>\n",
            image.display()
        ));
    }
    format!(
        "<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='xenpv'>xen</type>\n  </os>\n  <devices>\n{devs}  </devices>\n</domain>\n"
    )
}

fn qemu_img(args: &[&str]) -> String {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("running qemu-img");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The internal snapshot tags `qemu-img snapshot -l` lists.
fn image_tags(image: &Path) -> Vec<String> {
    qemu_img(&["snapshot", "-l", image.to_str().unwrap()])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

fn qemu_io(image: &Path, cmd: &str) -> String {
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd, image.to_str().unwrap()])
        .output()
        .expect("running qemu-io");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether the first 64 KiB of the image hold `pattern`.
fn holds(image: &Path, pattern: u8) -> bool {
    let out = qemu_io(image, &format!("read -P 0x{pattern:02x} 0 64k"));
    assert!(out.contains("read 65536/65536"), "{out}");
    !out.contains("Pattern verification failed")
}

fn write(image: &Path, pattern: u8) {
    let out = qemu_io(image, &format!("write -P 0x{pattern:02x} 0 64k"));
    assert!(out.contains("wrote 65536/65536"), "{out}");
}

/// The names in a `snapshot-list` table, in order.
fn names(list: &str) -> Vec<String> {
    list.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn validate_snapshot_xml(d: &Daemon, xml: &str) {
    let p = d.write("dump.xml", xml);
    let o = Command::new("xmllint")
        .args([
            "--noout",
            "--relaxng",
            "/usr/share/libvirt/schemas/domainsnapshot.rng",
        ])
        .arg(&p)
        .output()
        .expect("running xmllint");
    assert!(
        o.status.success(),
        "snapshot XML fails libvirt's domainsnapshot schema: {}\n{xml}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn shut_off_qcow2_domain_snapshots_revert_delete_and_survive_a_restart() {
    let mut d = Daemon::start_with("virsh-snapshots", &["--hypervisor", "none"], &[]);
    let image = d.dir.join("disk.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        image.to_str().unwrap(),
        "16M",
    ]);
    let f = d.write("g.xml", &guest_xml("snap1", &[("xvda", &image, "qcow2")]));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    let events = Command::new("virsh")
        .args([
            "-c",
            &d.uri(),
            "event",
            "--loop",
            "--event",
            "lifecycle",
            "--timeout",
            "12",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting virsh event");
    std::thread::sleep(Duration::from_millis(1000));

    // s1 (zeros), s2 from an XML file (0x5a), s3 (0xa5): a chain.
    let out = d.virsh_ok(&[
        "snapshot-create-as",
        "snap1",
        "s1",
        "--description",
        "before the first write",
    ]);
    assert!(out.contains("Domain snapshot s1 created"), "{out}");
    write(&image, 0x5a);
    let x = d.write(
        "s2.xml",
        "<domainsnapshot>\n  <name>s2</name>\n  <description>from a file</description>\n</domainsnapshot>\n",
    );
    let out = d.virsh_ok(&["snapshot-create", "snap1", x.to_str().unwrap()]);
    assert!(out.contains("Domain snapshot s2 created from"), "{out}");
    write(&image, 0xa5);
    d.virsh_ok(&["snapshot-create-as", "snap1", "s3"]);
    assert_eq!(image_tags(&image), ["s1", "s2", "s3"]);

    let list = d.virsh_ok(&["snapshot-list", "snap1"]);
    assert_eq!(names(&list), ["s1", "s2", "s3"], "{list}");
    assert!(
        list.lines()
            .skip(2)
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.trim_end().ends_with("shutoff")),
        "{list}"
    );
    let tree = d.virsh_ok(&["snapshot-list", "snap1", "--tree"]);
    let tree_lines: Vec<&str> = tree
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        tree_lines,
        ["s1", "  |", "  +- s2", "      |", "      +- s3"],
        "{tree}"
    );
    let parents = d.virsh_ok(&["snapshot-list", "snap1", "--parent"]);
    let row = parents
        .lines()
        .find(|l| l.trim_start().starts_with("s3"))
        .expect("s3 row");
    assert!(row.trim_end().ends_with("s2"), "{parents}");
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--roots"])),
        ["s1"]
    );
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--leaves"])),
        ["s3"]
    );
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--from", "s1"])),
        ["s2"]
    );
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--from", "s1", "--descendants"])),
        ["s2", "s3"]
    );
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--internal", "--inactive"])),
        ["s1", "s2", "s3"]
    );
    assert!(names(&d.virsh_ok(&["snapshot-list", "snap1", "--external"])).is_empty());
    assert!(names(&d.virsh_ok(&["snapshot-list", "snap1", "--active"])).is_empty());
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap1", "--name"]).trim(),
        "s3"
    );
    assert_eq!(d.virsh_ok(&["snapshot-parent", "snap1", "s3"]).trim(), "s2");
    let err = d.virsh_err(&["snapshot-parent", "snap1", "s1"]);
    assert!(err.contains("has no parent"), "{err}");

    let xml = d.virsh_ok(&["snapshot-dumpxml", "snap1", "s1"]);
    for want in [
        "<name>s1</name>",
        "<description>before the first write</description>",
        "<state>shutoff</state>",
        "<memory snapshot='no'/>",
        "<disk name='xvda' snapshot='internal'/>",
        "<domain type='xen'>",
        "<name>snap1</name>",
    ] {
        assert!(xml.contains(want), "dumpxml lacks {want}:\n{xml}");
    }
    validate_snapshot_xml(&d, &xml);
    let xml2 = d.virsh_ok(&["snapshot-dumpxml", "snap1", "s2"]);
    assert!(
        xml2.contains("<parent>\n    <name>s1</name>\n  </parent>"),
        "{xml2}"
    );
    validate_snapshot_xml(&d, &xml2);
    let info = d.virsh_ok(&["snapshot-info", "snap1", "s2"]);
    for want in [
        "Name:           s2",
        "Domain:         snap1",
        "Current:        no",
        "State:          shutoff",
        "Location:       internal",
        "Parent:         s1",
        "Children:       1",
        "Descendants:    1",
        "Metadata:       yes",
    ] {
        assert!(info.contains(want), "snapshot-info lacks {want:?}:\n{info}");
    }
    assert!(d
        .virsh_ok(&["snapshot-info", "snap1", "--current"])
        .contains("Current:        yes"));

    // Revert brings the bytes of each snapshot back and moves "current".
    assert!(holds(&image, 0xa5));
    let out = d.virsh_ok(&["snapshot-revert", "snap1", "s1"]);
    assert!(out.contains("Domain snapshot s1 reverted"), "{out}");
    assert!(holds(&image, 0x00) && !holds(&image, 0x5a));
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap1", "--name"]).trim(),
        "s1"
    );
    d.virsh_ok(&["snapshot-revert", "snap1", "--snapshotname", "s2"]);
    assert!(holds(&image, 0x5a));
    assert_eq!(d.virsh_ok(&["domstate", "snap1"]).trim(), "shut off");

    // Metadata survives a restart, with the current snapshot. The restart also ends the event stream: each
    // revert replaced the definition from the snapshot, DEFINED with detail FROM_SNAPSHOT.
    d.restart();
    let out = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    assert_eq!(
        out.matches("event 'lifecycle' for domain 'snap1': Defined Snapshot")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(d.virsh_ok(&["snapshot-list", "snap1", "--tree"]), tree);
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap1", "--name"]).trim(),
        "s2"
    );
    assert!(d
        .virsh_ok(&["list", "--all", "--with-snapshot"])
        .contains("snap1"));
    assert!(!d
        .virsh_ok(&["list", "--all", "--without-snapshot"])
        .contains("snap1"));

    // A new snapshot is a child of the current one: s2 now has s3 and s4.
    d.virsh_ok(&["snapshot-create-as", "snap1", "s4"]);
    assert_eq!(
        names(&d.virsh_ok(&["snapshot-list", "snap1", "--leaves"])),
        ["s3", "s4"]
    );
    // Deleting s2 moves its children up to s1 and removes s2 from the image.
    let out = d.virsh_ok(&["snapshot-delete", "snap1", "s2"]);
    assert!(out.contains("Domain snapshot s2 deleted"), "{out}");
    assert_eq!(image_tags(&image), ["s1", "s3", "s4"]);
    assert_eq!(d.virsh_ok(&["snapshot-parent", "snap1", "s4"]).trim(), "s1");
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap1", "--name"]).trim(),
        "s4"
    );
    // --children-only keeps s1 (now current); --children takes s1 and everything under it.
    let out = d.virsh_ok(&["snapshot-delete", "snap1", "s1", "--children-only"]);
    assert!(out.contains("children deleted"), "{out}");
    assert_eq!(names(&d.virsh_ok(&["snapshot-list", "snap1"])), ["s1"]);
    assert_eq!(image_tags(&image), ["s1"]);
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap1", "--name"]).trim(),
        "s1"
    );
    d.virsh_ok(&["snapshot-create-as", "snap1", "s5"]);
    d.virsh_ok(&["snapshot-delete", "snap1", "s1", "--children"]);
    assert!(names(&d.virsh_ok(&["snapshot-list", "snap1"])).is_empty());
    assert!(image_tags(&image).is_empty());
    let err = d.virsh_err(&["snapshot-current", "snap1"]);
    assert!(err.contains("has no current snapshot"), "{err}");
    // --metadata forgets the snapshot and leaves its data in the image.
    d.virsh_ok(&["snapshot-create-as", "snap1", "s6"]);
    d.virsh_ok(&["snapshot-delete", "snap1", "s6", "--metadata"]);
    assert!(names(&d.virsh_ok(&["snapshot-list", "snap1"])).is_empty());
    assert_eq!(image_tags(&image), ["s6"]);

    // undefine refuses a domain with snapshots unless told to drop their metadata.
    d.virsh_ok(&["snapshot-create-as", "snap1", "s7"]);
    let err = d.virsh_err(&["undefine", "snap1"]);
    assert!(
        err.contains("cannot delete inactive domain with 1 snapshots"),
        "{err}"
    );
    assert!(d.virsh_ok(&["list", "--all"]).contains("snap1"));
    let meta = d.dir.join("snapshot/snap1/s7.xml");
    assert!(meta.exists());
    d.virsh_ok(&["undefine", "snap1", "--snapshots-metadata"]);
    assert!(!meta.exists());
    assert!(!d.virsh_ok(&["list", "--all"]).contains("snap1"));
    assert_eq!(image_tags(&image), ["s6", "s7"]);
}

#[test]
fn bad_input_is_refused_cleanly_and_loses_nothing() {
    let d = Daemon::start_with("virsh-snapshots-bad", &["--hypervisor", "none"], &[]);
    let image = d.dir.join("a.qcow2");
    let raw = d.dir.join("b.raw");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "8M"]);
    qemu_img(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), "1M"]);
    let f = d.write(
        "g.xml",
        &guest_xml("snap2", &[("xvda", &image, "qcow2"), ("xvdb", &raw, "raw")]),
    );
    d.virsh_ok(&["define", f.to_str().unwrap()]);

    // A raw disk cannot hold an internal snapshot: refused, and nothing is left in the qcow2 image either.
    let err = d.virsh_err(&["snapshot-create-as", "snap2", "r1"]);
    assert!(
        err.contains("internal snapshot for disk xvdb unsupported for storage type raw"),
        "{err}"
    );
    assert!(image_tags(&image).is_empty());
    assert!(names(&d.virsh_ok(&["snapshot-list", "snap2"])).is_empty());
    // Leaving it out of the snapshot works.
    d.virsh_ok(&[
        "snapshot-create-as",
        "snap2",
        "r1",
        "--diskspec",
        "xvdb,snapshot=no",
    ]);
    let xml = d.virsh_ok(&["snapshot-dumpxml", "snap2", "r1"]);
    assert!(
        xml.contains("<disk name='xvda' snapshot='internal'/>")
            && xml.contains("<disk name='xvdb' snapshot='no'/>"),
        "{xml}"
    );
    validate_snapshot_xml(&d, &xml);
    assert_eq!(image_tags(&image), ["r1"]);
    write(&image, 0x33);

    for (args, want) in [
        (
            vec!["snapshot-revert", "snap2", "nosuch"],
            "Domain snapshot not found: no domain snapshot with matching name 'nosuch'",
        ),
        (
            vec!["snapshot-delete", "snap2", "nosuch"],
            "Domain snapshot not found: no domain snapshot with matching name 'nosuch'",
        ),
        (
            vec!["snapshot-dumpxml", "snap2", "nosuch"],
            "Domain snapshot not found",
        ),
        (
            vec![
                "snapshot-create-as",
                "snap2",
                "r1",
                "--diskspec",
                "xvdb,snapshot=no",
            ],
            "domain snapshot 'r1' already exists",
        ),
        (
            vec![
                "snapshot-create-as",
                "snap2",
                "m1",
                "--memspec",
                "snapshot=internal",
            ],
            "memory state cannot be saved with offline or disk-only snapshot",
        ),
        (
            vec![
                "snapshot-create-as",
                "snap2",
                "e1",
                "--diskspec",
                "xvda,snapshot=external",
                "--diskspec",
                "xvdb,snapshot=no",
            ],
            "Operation not supported",
        ),
        (
            vec![
                "snapshot-create-as",
                "snap2",
                "n1",
                "--diskspec",
                "xvdz,snapshot=no",
            ],
            "no disk named 'xvdz'",
        ),
    ] {
        let err = d.virsh_err(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    for (file, xml) in [
        (
            "malformed.xml",
            "<domainsnapshot><name>x</nam></domainsnapshot>",
        ),
        (
            "unknown.xml",
            "<domainsnapshot><name>x</name><bogus/></domainsnapshot>",
        ),
        (
            "slash.xml",
            "<domainsnapshot><name>a/b</name></domainsnapshot>",
        ),
    ] {
        let p = d.write(file, xml);
        let err = d.virsh_err(&["snapshot-create", "snap2", p.to_str().unwrap()]);
        assert!(err.contains("XML error"), "{file}: {err}");
    }
    // --validate checks against libvirt's schema before anything else.
    let p = d.write(
        "invalid.xml",
        "<domainsnapshot><name>v</name><state>bogus</state></domainsnapshot>",
    );
    let err = d.virsh_err(&[
        "snapshot-create",
        "snap2",
        p.to_str().unwrap(),
        "--validate",
    ]);
    assert!(err.contains("failed to validate against schema"), "{err}");

    // Nothing was lost: the daemon answers, r1 is intact and current, the data written after it is still there.
    assert_eq!(names(&d.virsh_ok(&["snapshot-list", "snap2"])), ["r1"]);
    assert_eq!(
        d.virsh_ok(&["snapshot-current", "snap2", "--name"]).trim(),
        "r1"
    );
    assert_eq!(image_tags(&image), ["r1"]);
    assert!(holds(&image, 0x33));

    // REDEFINE replaces the metadata and touches no disk; snapshot-edit's path (REDEFINE | CURRENT).
    let edited = xml.replace(
        "<name>r1</name>",
        "<name>r1</name>\n  <description>edited</description>",
    );
    let p = d.write("r1.xml", &edited);
    d.virsh_ok(&[
        "snapshot-create",
        "snap2",
        p.to_str().unwrap(),
        "--redefine",
        "--current",
    ]);
    assert!(d
        .virsh_ok(&["snapshot-dumpxml", "snap2", "r1"])
        .contains("<description>edited</description>"));
    assert_eq!(image_tags(&image), ["r1"]);
    assert!(holds(&image, 0x33));
    // A redefinition whose parent does not exist is refused.
    let orphan = edited
        .replace("<name>r1</name>", "<name>r2</name>")
        .replace(
            "<state>shutoff</state>",
            "<state>shutoff</state>\n  <parent>\n    <name>ghost</name>\n  </parent>",
        );
    let p = d.write("r2.xml", &orphan);
    let err = d.virsh_err(&[
        "snapshot-create",
        "snap2",
        p.to_str().unwrap(),
        "--redefine",
    ]);
    assert!(
        err.contains("parent ghost for snapshot r2 not found"),
        "{err}"
    );

    // The revert still works after all that.
    d.virsh_ok(&["snapshot-revert", "snap2", "r1"]);
    assert!(holds(&image, 0x00));
}
