//! Round trips of libvirt's own domain XML test data and negative cases.

use std::path::PathBuf;

use domain_xml::domain::Domain;
use domain_xml::{Error, FormatFlags};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/libvirt-9.9.0")
}

fn xml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap_or_else(|e| panic!("corpus {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    v.sort();
    v
}

const FLAGS: FormatFlags = FormatFlags::INACTIVE.union(FormatFlags::SECURE);

/// libvirt's xlconfigdata XML files are libvirt's own output: parse then format must give them back exactly.
#[test]
fn xlconfigdata_round_trip_is_exact() {
    let files = xml_files("xlconfigdata");
    let mut failed = Vec::new();
    for f in &files {
        let input = std::fs::read_to_string(f).unwrap();
        match Domain::parse(&input) {
            Ok(d) => {
                let out = d.to_xml(FLAGS);
                if out != input {
                    failed.push(format!("{}: output differs:\n{out}", f.display()));
                }
            }
            Err(e) => failed.push(format!("{}: {e}", f.display())),
        }
    }
    println!(
        "xlconfigdata round trip: {}/{} exact",
        files.len() - failed.len(),
        files.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// libxlxml2domconfigdata XML files are hand-written inputs (not libvirt's canonical output): they must parse,
/// and format must be a fixed point (format, parse, format gives the same text).
#[test]
fn libxlxml2domconfigdata_parses_and_formats_stably() {
    let files = xml_files("libxlxml2domconfigdata");
    assert!(files.len() >= 10);
    for f in &files {
        let input = std::fs::read_to_string(f).unwrap();
        let d = Domain::parse(&input).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let once = d.to_xml(FLAGS);
        let again = Domain::parse(&once)
            .unwrap_or_else(|e| panic!("{}: reparse: {e}\n{once}", f.display()))
            .to_xml(FLAGS);
        assert_eq!(once, again, "{}", f.display());
        assert_eq!(
            Domain::parse(&once).unwrap(),
            d,
            "{}: model changed",
            f.display()
        );
    }
}

const MINIMAL: &str = "<domain type='xen'>\n  <name>g</name>\n  <memory unit='MiB'>64</memory>\n  <os>\n    <type>xen</type>\n  </os>\n  <devices>\n    <disk type='file' device='disk'>\n      <source file='/a'/>\n      <target dev='xvda' bus='xen'/>\n    </disk>\n    <disk type='file' device='disk'>\n      <source file='/b'/>\n      <target dev='xvdb' bus='xen'/>\n    </disk>\n  </devices>\n</domain>\n";

#[test]
fn minimal_gets_libvirt_defaults() {
    let d = Domain::parse(MINIMAL).unwrap();
    assert_eq!(d.memory_kib, 65536);
    assert_eq!(d.current_memory_kib, 65536);
    let out = d.to_xml(FLAGS);
    assert!(out.contains("  <memory unit='KiB'>65536</memory>\n  <currentMemory unit='KiB'>65536</currentMemory>\n  <vcpu placement='static'>1</vcpu>\n"), "{out}");
}

#[test]
fn unknown_element_names_its_path() {
    let xml = MINIMAL.replace("<name>g</name>", "<name>g</name>\n  <bogus/>");
    let e = Domain::parse(&xml).unwrap_err();
    assert_eq!(e.to_string(), "unknown element /domain/bogus");
    let xml = MINIMAL.replace("<source file='/b'/>", "<source file='/b'/><frob/>");
    let e = Domain::parse(&xml).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown element /domain/devices/disk[2]/frob"
    );
}

#[test]
fn unknown_attribute_names_its_path() {
    let xml = MINIMAL.replace("dev='xvdb' bus='xen'", "dev='xvdb' bus='xen' speed='9'");
    let e = Domain::parse(&xml).unwrap_err();
    assert_eq!(
        e,
        Error::UnknownAttribute {
            path: "/domain/devices/disk[2]/target/@speed".into()
        }
    );
}

#[test]
fn invalid_attribute_value_names_its_path() {
    let xml = MINIMAL.replace("dev='xvdb' bus='xen'", "dev='xvdb' bus='carrier-pigeon'");
    let e = Domain::parse(&xml).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid value 'carrier-pigeon' at /domain/devices/disk[2]/target/@bus"),
        "{e}"
    );
}

#[test]
fn malformed_xml_is_rejected() {
    let e = Domain::parse("<domain type='xen'><name>x</domain>").unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e}");
    let e = Domain::parse("not xml at all").unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e}");
}

#[test]
fn bad_memory_unit_is_rejected() {
    let xml = MINIMAL.replace("unit='MiB'", "unit='parsecs'");
    let e = Domain::parse(&xml).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid value 'parsecs' at /domain/memory/@unit"),
        "{e}"
    );
}

#[test]
fn secure_flag_controls_passwords() {
    let f = corpus().join("xlconfigdata/test-spice-features.xml");
    let d = Domain::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
    assert!(d.to_xml(FLAGS).contains("passwd='thebeast'"));
    assert!(!d.to_xml(FormatFlags::INACTIVE).contains("passwd"));
}

#[test]
fn escaping_matches_libvirt() {
    let xml = MINIMAL.replace(
        "<name>g</name>",
        "<name>g</name>\n  <description>a &lt;b&gt; &amp; 'c' \"d\"</description>",
    );
    let d = Domain::parse(&xml).unwrap();
    assert_eq!(d.description.as_deref(), Some("a <b> & 'c' \"d\""));
    assert!(d
        .to_xml(FLAGS)
        .contains("<description>a &lt;b&gt; &amp; &apos;c&apos; &quot;d&quot;</description>"));
}

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A hand-written document in libvirt's canonical form that uses most of the model: parse and format must give
/// it back byte for byte.
#[test]
fn canonical_hvm_document_round_trips_exactly() {
    let input = data("libvirt-hvm-full.xml");
    let d = Domain::parse(&input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.to_xml(FLAGS), input);
    assert_eq!(d.devices.disks[0].auth.as_ref().unwrap().username, "admin");
    assert!(d.devices.disks[0].auth_in_disk);
    assert_eq!(d.devices.interfaces[0].vlan_tags, vec![10, 20]);
    assert_eq!(d.vcpus.len(), 4);
}

/// XML as virt-install and virt-manager write it (double quotes, units, elements in their own order) parses,
/// and its formatting is libvirt's canonical form: a fixed point of parse and format.
#[test]
fn virt_install_and_virt_manager_xml() {
    for name in ["virt-install-hvm.xml", "virt-manager-pv.xml"] {
        let d = Domain::parse(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = d.to_xml(FLAGS);
        let again = Domain::parse(&out).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
        assert_eq!(again, d, "{name}");
        assert_eq!(again.to_xml(FLAGS), out, "{name}");
    }
    let pv = Domain::parse(&data("virt-manager-pv.xml")).unwrap();
    assert_eq!(pv.memory_kib, 1024 * 1024);
    assert_eq!(pv.current_memory_kib, 512 * 1024);
    assert_eq!(
        pv.devices.interfaces[0].mac.as_deref(),
        Some("00:16:3e:12:34:56")
    );
    assert_eq!(pv.xen_commandline, vec!["-no-shutdown".to_string()]);
    let out = pv.to_xml(FLAGS);
    assert!(out.starts_with(
        "<domain type='xen' xmlns:xen='http://libvirt.org/schemas/domain/xen/1.0'>\n"
    ));
    assert!(
        out.contains("      <libosinfo:os id='http://debian.org/debian/12'/>\n"),
        "{out}"
    );
    assert!(out.contains("        <auth username='libvirt'>\n          <secret type='ceph' usage='client.libvirt secret'/>\n"), "{out}");
    let hvm = Domain::parse(&data("virt-install-hvm.xml")).unwrap();
    assert_eq!(hvm.vcpu.current(), 2);
    assert_eq!(hvm.vcpu.count, 4);
    assert_eq!(hvm.devices.redirdevs.len(), 2);
    let out = hvm.to_xml(FLAGS);
    assert!(
        out.contains("  <pm>\n    <suspend-to-mem enabled='no'/>\n"),
        "{out}"
    );
    assert!(out.contains("    <vmport state='off'/>\n"), "{out}");
    // virt-install's legacy "-1" ports mean automatic allocation, which a definition does not keep.
    assert!(
        out.contains("    <graphics type='spice' autoport='yes' listen='127.0.0.1'>\n"),
        "{out}"
    );
    let vnc = MINIMAL.replace("  </devices>", "    <graphics type='vnc'/>\n  </devices>");
    let out = Domain::parse(&vnc).unwrap().to_xml(FLAGS);
    assert!(
        out.contains("    <graphics type='vnc' port='-1' autoport='yes'/>\n"),
        "{out}"
    );
    let live = MINIMAL.replace(
        "  </devices>",
        "    <graphics type='vnc' port='5903' autoport='yes'/>\n  </devices>",
    );
    let d = Domain::parse(&live).unwrap();
    assert!(d
        .to_xml(FormatFlags::empty())
        .contains("port='5903' autoport='yes'"));
    assert!(d.to_xml(FLAGS).contains("port='-1' autoport='yes'"));
}

#[test]
fn per_device_boot_order_excludes_os_boot() {
    let hvm = "<domain type='xen'><name>h</name><memory>1024</memory><os><type>hvm</type>BOOT</os><devices><disk type='file' device='disk'><source file='/a'/><target dev='hda' bus='ide'/><boot order='1'/></disk></devices></domain>";
    let d = Domain::parse(&hvm.replace("BOOT", "")).unwrap();
    assert!(d.os.boot.is_empty());
    assert!(d.to_xml(FLAGS).contains("      <boot order='1'/>\n"));
    let e = Domain::parse(&hvm.replace("BOOT", "<boot dev='hd'/>")).unwrap_err();
    assert!(e.to_string().contains("/domain/os/boot"), "{e}");
    // Without any boot element an HVM guest boots from disk.
    let d = Domain::parse(&hvm.replace("BOOT", "").replace("<boot order='1'/>", "")).unwrap();
    assert_eq!(d.os.boot, vec!["hd".to_string()]);
}

#[test]
fn efi_firmware_features() {
    let xml = "<domain type='xen'>\n  <name>efi</name>\n  <memory unit='KiB'>1024</memory>\n  <currentMemory unit='KiB'>1024</currentMemory>\n  <vcpu placement='static'>1</vcpu>\n  <os firmware='efi'>\n    <type arch='x86_64' machine='xenfv'>hvm</type>\n    <firmware>\n      <feature enabled='no' name='secure-boot'/>\n    </firmware>\n    <boot dev='hd'/>\n  </os>\n  <clock offset='utc'/>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    <memballoon model='xen'/>\n  </devices>\n</domain>\n";
    let d = Domain::parse(xml).unwrap();
    assert_eq!(
        d.os.firmware_features,
        vec![(false, "secure-boot".to_string())]
    );
    assert_eq!(d.to_xml(FLAGS), xml);
}

#[test]
fn pty_tty_is_runtime_state() {
    let xml = MINIMAL.replace(
        "  </devices>",
        "    <console type='pty' tty='/dev/pts/4'>\n      <source path='/dev/pts/4'/>\n      <target type='xen' port='0'/>\n    </console>\n  </devices>",
    );
    let d = Domain::parse(&xml).unwrap();
    let live = d.to_xml(FormatFlags::SECURE);
    assert!(
        live.contains("<console type='pty' tty='/dev/pts/4'>\n      <source path='/dev/pts/4'/>\n"),
        "{live}"
    );
    let inactive = d.to_xml(FLAGS);
    assert!(
        inactive.contains("<console type='pty'>\n      <target type='xen' port='0'/>\n"),
        "{inactive}"
    );
}

#[test]
fn volume_disks() {
    let xml = MINIMAL.replace(
        "<disk type='file' device='disk'>\n      <source file='/b'/>",
        "<disk type='volume' device='disk'>\n      <source pool='default' volume='b.qcow2'/>",
    );
    let d = Domain::parse(&xml).unwrap();
    assert_eq!(d.devices.disks[1].source_pool.as_deref(), Some("default"));
    assert!(d.to_xml(FLAGS).contains(
        "    <disk type='volume' device='disk'>\n      <source pool='default' volume='b.qcow2'/>\n"
    ));
    let bad = xml.replace("pool='default' ", "");
    let e = Domain::parse(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing attribute /domain/devices/disk[2]/source/@pool"
    );
}

#[test]
fn libvirt_validity_rules() {
    let e = Domain::parse(&MINIMAL.replace("<name>g</name>", "<name>a/b</name>")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid value 'a/b' at /domain/name"),
        "{e}"
    );
    let e = Domain::parse(&MINIMAL.replace("<name>g</name>", "<name>g</name><title>a\nb</title>"))
        .unwrap_err();
    assert!(e.to_string().contains("at /domain/title"), "{e}");
    let e = Domain::parse(&MINIMAL.replace(">64<", ">0<")).unwrap_err();
    assert!(e.to_string().contains("at /domain/memory"), "{e}");
    let e = Domain::parse(&MINIMAL.replace("<name>g</name>", "<name>g</name><uuid>1234</uuid>"))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid value '1234' at /domain/uuid"),
        "{e}"
    );
}
