//! Every formatted domain XML of the corpus validates against libvirt's RelaxNG domain schema
//! (`virt-xml-validate` from libvirt-clients).

use std::path::{Path, PathBuf};
use std::process::Command;

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/libvirt-9.9.0")
}

fn validate(path: &Path) -> Result<(), String> {
    let out = Command::new("virt-xml-validate")
        .arg(path)
        .arg("domain")
        .output()
        .map_err(|e| format!("cannot run virt-xml-validate (libvirt-clients): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn formatted_corpus_xml_validates_against_libvirt_schema() {
    let dir = std::env::temp_dir().join(format!("xen-conv-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flags = FormatFlags::INACTIVE | FormatFlags::SECURE;
    let mut outputs: Vec<(String, String)> = Vec::new();
    for sub in ["xlconfigdata", "libxlxml2domconfigdata"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&f).unwrap();
            if name.ends_with(".xml") {
                let mut d = Domain::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                outputs.push((format!("{sub}-{name}"), d.to_xml(flags)));
                // What the daemon stores for it: the libxl driver's defaults applied.
                xen_conv::apply_libxl_defaults(&mut d);
                outputs.push((format!("{sub}-defaults-{name}"), d.to_xml(flags)));
            } else if name.ends_with(".cfg") {
                let xml = xen_conv::xl_cfg_to_domain_xml(&text)
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
                outputs.push((format!("{sub}-{name}.xml"), xml));
            }
        }
    }
    // XML as virt-install and virt-manager write it (test data of the domain-xml crate).
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../domain-xml/tests/data");
    for name in [
        "virt-install-hvm.xml",
        "virt-manager-pv.xml",
        "libvirt-hvm-full.xml",
    ] {
        let text = std::fs::read_to_string(data.join(name)).unwrap();
        let d = Domain::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        outputs.push((format!("data-{name}"), d.to_xml(flags)));
    }
    let mut failures = Vec::new();
    for (name, xml) in &outputs {
        let p = dir.join(name);
        std::fs::write(&p, xml).unwrap();
        if let Err(e) = validate(&p) {
            failures.push(e);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "schema: {}/{} formatted documents validate",
        outputs.len() - failures.len(),
        outputs.len()
    );
    assert!(outputs.len() > 100, "corpus not found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn validator_rejects_invalid_xml() {
    // The check above must be able to fail: an element the schema does not allow is reported.
    let dir = std::env::temp_dir().join(format!("xen-conv-schema-neg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.xml");
    std::fs::write(&p, "<domain type='xen'><nme>x</nme></domain>\n").unwrap();
    let r = validate(&p);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.is_err());
}
