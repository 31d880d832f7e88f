//! Throughput of domain XML parse/format and of the xl.cfg translations over libvirt's xlconfigdata corpus.
//! Prints numbers; asserts nothing about time. Run: `cargo bench -p xen-conv`.

use std::path::PathBuf;
use std::time::Instant;

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpora/libvirt-9.9.0/xlconfigdata");
    let mut xmls = Vec::new();
    let mut cfgs = Vec::new();
    for e in std::fs::read_dir(&dir).expect("corpus") {
        let p = e.expect("entry").path();
        let text = std::fs::read_to_string(&p).expect("read");
        match p.extension().and_then(|x| x.to_str()) {
            Some("xml") => xmls.push(text),
            Some("cfg") => cfgs.push(text),
            _ => {}
        }
    }
    let xml_bytes: usize = xmls.iter().map(String::len).sum();
    let cfg_bytes: usize = cfgs.iter().map(String::len).sum();
    let rounds = 200;

    let run = |name: &str, bytes: usize, docs: usize, f: &dyn Fn()| {
        f(); // warm-up
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        let secs = t.elapsed().as_secs_f64();
        let n = (docs * rounds) as f64;
        println!(
            "{name:<28} {:>9.1} us/doc {:>8.1} MB/s ({docs} docs x {rounds})",
            secs * 1e6 / n,
            (bytes * rounds) as f64 / secs / 1e6
        );
    };

    run("domain XML parse", xml_bytes, xmls.len(), &|| {
        for x in &xmls {
            std::hint::black_box(Domain::parse(x).expect("parse"));
        }
    });
    let parsed: Vec<Domain> = xmls
        .iter()
        .map(|x| Domain::parse(x).expect("parse"))
        .collect();
    run("domain XML format", xml_bytes, parsed.len(), &|| {
        for d in &parsed {
            std::hint::black_box(d.to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE));
        }
    });
    run("xl.cfg -> domain XML", cfg_bytes, cfgs.len(), &|| {
        for c in &cfgs {
            std::hint::black_box(xen_conv::xl_cfg_to_domain_xml(c).expect("to xml"));
        }
    });
    run("domain XML -> xl.cfg", xml_bytes, xmls.len(), &|| {
        for x in &xmls {
            let _ = std::hint::black_box(xen_conv::domain_xml_to_xl_cfg(x));
        }
    });
}
