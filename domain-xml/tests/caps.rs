//! Capabilities models: libvirt's libxl domain capabilities (`domaincapsdata`) parse and format back byte for
//! byte and satisfy the `domaincaps` schema; unknown nodes are errors naming their path.

use std::path::PathBuf;
use std::process::Command;

use domain_xml::domcaps::DomainCaps;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/libvirt-9.9.0/domaincapsdata")
}

fn validate(xml: &str, schema: &str, name: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("xenrs-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&f)
        .arg(schema)
        .output()
        .map_err(|e| format!("virt-xml-validate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn libxl_domain_capabilities_round_trip() {
    let mut n = 0;
    for name in ["libxl-xenfv.xml", "libxl-xenpv.xml"] {
        let text = std::fs::read_to_string(corpus().join(name)).unwrap();
        let caps = DomainCaps::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = caps.to_xml();
        assert_eq!(out, text, "{name}");
        validate(&out, "domaincaps", name).unwrap_or_else(|e| panic!("{name}: {e}"));
        n += 1;
    }
    let fv = DomainCaps::parse(&std::fs::read_to_string(corpus().join("libxl-xenfv.xml")).unwrap())
        .unwrap();
    assert_eq!(fv.machine.as_deref(), Some("xenfv"));
    assert_eq!(fv.vcpu_max, Some(128));
    let loader = fv.os.as_ref().and_then(|o| o.loader.as_ref()).unwrap();
    assert!(loader.1.contains(&"/usr/lib/xen/boot/ovmf.bin".to_string()));
    let disk = fv.devices.iter().find(|d| d.name == "disk").unwrap();
    assert_eq!(disk.enums[1].values, ["ide", "scsi", "xen"]);
    eprintln!("domaincapsdata: {n}/2 equal");
}

#[test]
fn domcaps_errors_name_paths() {
    let base = "<domainCapabilities><path>/x</path><domain>xen</domain><arch>x86_64</arch>";
    let e = DomainCaps::parse(&format!(
        "{base}<devices><frob supported='no'/></devices></domainCapabilities>"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown element /domainCapabilities/devices/frob"
    );
    let e = DomainCaps::parse(&format!(
        "{base}<cpu><mode name='weird' supported='no'/></cpu></domainCapabilities>"
    ))
    .unwrap_err();
    assert!(
        e.to_string().contains("/domainCapabilities/cpu/mode/@name"),
        "{e}"
    );
    let e = DomainCaps::parse(&format!(
        "{base}<features><gic/></features></domainCapabilities>"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("@supported"), "{e}");
    assert!(DomainCaps::parse("<domainCapabilities/>").is_err());
}
