//! Storage pool XML conformance: every `storagepoolxml2xmlin` case of libvirt's corpus parses and formats to
//! the `storagepoolxml2xmlout` file (or the input where there is none), and the output satisfies libvirt's
//! `storagepool` RelaxNG schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use domain_xml::storage::StoragePool;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/libvirt-9.9.0")
}

fn validate(xml: &str, schema: &str, name: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("xenrs-pool-{}", std::process::id()));
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
fn storagepoolxml2xml_corpus() {
    let inputs = corpus().join("storagepoolxml2xmlin");
    let outputs = corpus().join("storagepoolxml2xmlout");
    let mut names: Vec<String> = std::fs::read_dir(&inputs)
        .expect("corpus")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for n in &names {
        let input = std::fs::read_to_string(inputs.join(n)).unwrap();
        let out_path = outputs.join(n);
        let expected = if Path::new(&out_path).exists() {
            std::fs::read_to_string(&out_path).unwrap()
        } else {
            input.clone()
        };
        match StoragePool::parse(&input) {
            Ok(p) => {
                let got = p.to_xml();
                if got != expected {
                    failures.push(format!(
                        "{n}: output differs\n--- expected\n{expected}--- got\n{got}"
                    ));
                    continue;
                }
                // The formatted form parses back to the same model.
                assert_eq!(StoragePool::parse(&got).unwrap(), p, "{n}");
                if let Err(e) = validate(&got, "storagepool", n) {
                    failures.push(format!("{n}: schema: {e}"));
                }
            }
            Err(e) => failures.push(format!("{n}: {e}")),
        }
    }
    eprintln!(
        "storagepoolxml2xml: {}/{} cases equal libvirt's output",
        names.len() - failures.len(),
        names.len()
    );
    assert_eq!(names.len(), 26);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
