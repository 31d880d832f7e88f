//! Conformance with libvirt's xlconfigdata: every case in its direction, byte for byte.

use std::path::PathBuf;

use xen_conv::xl::FIRMWARE_DIR;
use xen_conv::{domain_xml_to_xl_cfg, xl_cfg_to_domain_xml};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpora/libvirt-9.9.0/xlconfigdata")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(corpus().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// First differing line of two texts, for readable failures.
fn first_diff(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}: want `{w}`, got `{g}`", i + 1);
        }
    }
    format!(
        "length differs: want {} lines, got {} lines",
        want.lines().count(),
        got.lines().count()
    )
}

#[test]
fn xlconfigdata_conformance() {
    let cases = read("cases.tsv");
    let (mut to_xml_total, mut to_xml_pass) = (0, 0);
    let (mut to_cfg_total, mut to_cfg_pass) = (0, 0);
    let mut failures = Vec::new();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let (name, dir) = line
            .split_once('\t')
            .expect("cases.tsv: NAME<TAB>DIRECTION");
        let cfg = read(&format!("test-{name}.cfg"));
        let mut xml = read(&format!("test-{name}.xml"));
        if dir == "both-replace-vars" {
            xml = xml.replace("/LIBXL_FIRMWARE_DIR", FIRMWARE_DIR);
        }
        let both = dir.starts_with("both");
        if both || dir == "cfg-to-xml" {
            to_xml_total += 1;
            match xl_cfg_to_domain_xml(&cfg) {
                Ok(out) if out == xml => to_xml_pass += 1,
                Ok(out) => failures.push(format!("{name} cfg->xml: {}", first_diff(&xml, &out))),
                Err(e) => failures.push(format!("{name} cfg->xml: error: {e}: {:?}", e)),
            }
        }
        if both || dir == "xml-to-cfg" {
            to_cfg_total += 1;
            match domain_xml_to_xl_cfg(&xml) {
                Ok(out) if out == cfg => to_cfg_pass += 1,
                Ok(out) => failures.push(format!("{name} xml->cfg: {}", first_diff(&cfg, &out))),
                Err(e) => failures.push(format!("{name} xml->cfg: error: {e}: {:?}", e)),
            }
        }
    }
    println!(
        "xlconfig: {to_xml_pass}/{to_xml_total} cfg->xml, {to_cfg_pass}/{to_cfg_total} xml->cfg"
    );
    assert!(to_xml_total > 0 && to_cfg_total > 0);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
