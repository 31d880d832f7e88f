//! The xl.cfg reader and writer over libvirt's xlconfigdata files: every file parses, every disk and vif entry
//! parses, and writing gives back libvirt's text byte for byte (the files are libvirt's own output, except
//! hand-written cfg-to-xml inputs with free spacing).

use std::path::PathBuf;

use libxl_rs::xlcfg::{DiskSpec, Value, VifSpec, XlConfig};

#[test]
fn corpus_cfg_files_parse_and_write_back() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/libvirt-9.9.0/xlconfigdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    files.sort();
    assert!(files.len() >= 30);
    let (mut exact, mut total) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let c = XlConfig::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for key in ["disk", "vif"] {
            if let Some(s) = c.get(key) {
                let Value::List(items) = &s.value else {
                    panic!("{}: {key} is not a list", f.display())
                };
                for it in items {
                    let Value::Str(spec) = it else { panic!() };
                    if key == "disk" {
                        DiskSpec::parse(spec, key, s.line)
                            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    } else {
                        VifSpec::parse(spec, key, s.line)
                            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    }
                }
            }
        }
        total += 1;
        if c.to_text() == text {
            exact += 1;
        } else {
            // Only hand-written inputs may differ, and only in spacing.
            let squash = |t: &str| t.split_whitespace().collect::<String>();
            assert_eq!(squash(&c.to_text()), squash(&text), "{}", f.display());
        }
    }
    println!("xl.cfg corpus: {exact}/{total} written back byte for byte");
    assert!(exact >= total - 1, "{exact}/{total}");
}
