//! Snapshot XML conformance: the `qemudomainsnapshotxml2xml` cases of libvirt's corpus, read with the
//! parameters libvirt's own test passes (new snapshot or redefinition, the mocked creation time, the domain
//! UUID the formatter is given), format to the `out` file or to the input where there is none; the output is
//! valid against libvirt's `domainsnapshot` schema.

use std::path::PathBuf;
use std::process::Command;

use domain_xml::snapshot::{DomainSnapshot, SnapshotDomain, SnapshotParse};
use domain_xml::FormatFlags;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/libvirt-9.9.0")
}

const UUID: &str = "9d37b878-a7cc-9f9a-b78f-49b3abad25a8";

/// (case, parse mode, domain UUID given to the formatter).
const CASES: &[(&str, SnapshotParse, bool)] = &[
    (
        "empty",
        SnapshotParse::New {
            now: Some(1386166249),
        },
        true,
    ),
    ("noparent", SnapshotParse::Redefine, true),
    (
        "external_vm",
        SnapshotParse::New {
            now: Some(1555419243),
        },
        false,
    ),
    (
        "disk_driver_name_null",
        SnapshotParse::New {
            now: Some(1555419243),
        },
        false,
    ),
    (
        "disk-seclabel",
        SnapshotParse::New {
            now: Some(581484660),
        },
        true,
    ),
    ("name_only", SnapshotParse::New { now: None }, false),
    ("description_only", SnapshotParse::New { now: None }, false),
];

fn validate(xml: &str, name: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("xenrs-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&f)
        .arg("domainsnapshot")
        .output()
        .map_err(|e| format!("virt-xml-validate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn qemudomainsnapshotxml2xml_corpus() {
    let mut failures = Vec::new();
    for (name, mode, uuid) in CASES {
        let file = format!("{name}.xml");
        let input =
            std::fs::read_to_string(corpus().join("qemudomainsnapshotxml2xmlin").join(&file))
                .unwrap();
        let out = corpus().join("qemudomainsnapshotxml2xmlout").join(&file);
        let expected = if out.exists() {
            std::fs::read_to_string(out).unwrap()
        } else {
            input.clone()
        };
        let mut snap = match DomainSnapshot::parse(&input, *mode) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if *uuid {
            snap.domain = Some(SnapshotDomain::Uuid(UUID.into()));
        }
        let got = snap.to_xml(FormatFlags::SECURE);
        if got != expected {
            failures.push(format!(
                "{name}: differs\n--- expected\n{expected}--- got\n{got}"
            ));
            continue;
        }
        let again = DomainSnapshot::parse(&got, SnapshotParse::Redefine);
        if snap.name.is_some() {
            assert_eq!(
                again.unwrap(),
                snap,
                "{name}: redefinition of the output differs"
            );
        }
        if let Err(e) = validate(&got, &file) {
            failures.push(format!("{name}: schema: {e}"));
        }
    }
    eprintln!(
        "qemudomainsnapshotxml2xml: {}/{} cases equal",
        CASES.len() - failures.len(),
        CASES.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_snapshots_are_rejected_with_paths() {
    let input =
        std::fs::read_to_string(corpus().join("qemudomainsnapshotxml2xmlin/disk-invalid.xml"))
            .unwrap();
    let e = DomainSnapshot::parse(&input, SnapshotParse::New { now: Some(1) }).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown attribute /domainsnapshot/disks/disk/source/@startupPolicy"
    );
    let e = DomainSnapshot::parse(
        "<domainsnapshot><state>bogus</state></domainsnapshot>",
        SnapshotParse::Redefine,
    )
    .unwrap_err();
    assert!(e.to_string().contains("/domainsnapshot/state"), "{e}");
    // A redefinition needs a name.
    assert!(DomainSnapshot::parse("<domainsnapshot/>", SnapshotParse::Redefine).is_err());
    assert!(DomainSnapshot::parse("<domain/>", SnapshotParse::Redefine).is_err());
}

#[test]
fn redefinition_keeps_the_full_domain() {
    let xml =
        "<domainsnapshot><name>s1</name><state>shutoff</state><parent><name>s0</name></parent>\
               <creationTime>5</creationTime><domain type='xen'><name>g</name><memory>1024</memory>\
               <os><type>hvm</type></os></domain></domainsnapshot>";
    let s = DomainSnapshot::parse(xml, SnapshotParse::Redefine).unwrap();
    assert_eq!(s.parent.as_deref(), Some("s0"));
    let Some(SnapshotDomain::Full(d)) = &s.domain else {
        panic!("full domain expected")
    };
    assert_eq!(d.name, "g");
    let out = s.to_xml(FormatFlags::SECURE);
    assert!(out.contains("  <domain type='xen'>\n"), "{out}");
    assert_eq!(
        DomainSnapshot::parse(&out, SnapshotParse::Redefine).unwrap(),
        s
    );
    // A new snapshot request ignores what libvirt fills in itself.
    let n = DomainSnapshot::parse(xml, SnapshotParse::New { now: Some(9) }).unwrap();
    assert_eq!(
        (n.state, n.parent, n.creation_time, n.domain.is_none()),
        (None, None, Some(9), true)
    );
}
