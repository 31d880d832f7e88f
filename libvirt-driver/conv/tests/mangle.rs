//! Malformed input never panics: every corpus document, truncated at many points and with bytes replaced,
//! either converts or is rejected with an error.

use std::path::PathBuf;

use domain_xml::domain::Domain;
use xen_conv::{domain_xml_to_xl_cfg, xl_cfg_to_domain_xml};

fn corpus_files() -> Vec<(String, String)> {
    let base =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/libvirt-9.9.0");
    let mut out = Vec::new();
    for sub in ["xlconfigdata", "libxlxml2domconfigdata"] {
        for e in std::fs::read_dir(base.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".xml") || name.ends_with(".cfg") {
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn exercise(name: &str, text: &str) {
    if name.ends_with(".xml") {
        let _ = Domain::parse(text);
        let _ = domain_xml_to_xl_cfg(text);
    } else {
        let _ = xl_cfg_to_domain_xml(text);
    }
}

#[test]
fn truncated_and_corrupted_input_never_panics() {
    let files = corpus_files();
    assert!(files.len() > 60);
    let mut cases = 0usize;
    for (name, text) in &files {
        let bytes = text.as_bytes();
        for cut in (0..bytes.len()).step_by(37) {
            if let Ok(t) = std::str::from_utf8(&bytes[..cut]) {
                exercise(name, t);
                cases += 1;
            }
        }
        for pos in (0..bytes.len()).step_by(61) {
            for repl in [b'<', b'\'', b'=', b',', b'9', b':'] {
                let mut m = bytes.to_vec();
                m[pos] = repl;
                if let Ok(t) = String::from_utf8(m) {
                    exercise(name, &t);
                    cases += 1;
                }
            }
        }
    }
    println!("mangle: {cases} mangled documents handled without a panic");
}
