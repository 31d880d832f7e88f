//! Parse + format throughput over libvirt's whole XML corpus: domain XML (xlconfigdata and
//! libxlxml2domconfigdata), storage pools, storage volumes and snapshots. Prints documents per second; asserts
//! nothing about time. Run: `cargo bench -p domain-xml --bench corpus`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use domain_xml::domain::Domain;
use domain_xml::snapshot::{DomainSnapshot, SnapshotParse};
use domain_xml::storage::{StoragePool, StorageVolume};
use domain_xml::FormatFlags;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/libvirt-9.9.0")
}

fn xml_files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "xml").then(|| {
                let name = p.file_name()?.to_str()?.to_string();
                Some((name, std::fs::read_to_string(&p).ok()?))
            })?
        })
        .collect();
    v.sort();
    v
}

fn bench(label: &str, docs: &[String], f: &dyn Fn(&str) -> usize) {
    if docs.is_empty() {
        println!("{label:<12} no documents");
        return;
    }
    let bytes: usize = docs.iter().map(String::len).sum();
    for d in docs {
        f(d); // warm-up
    }
    let rounds = 300;
    let t = Instant::now();
    let mut out = 0usize;
    for _ in 0..rounds {
        for d in docs {
            out = out.wrapping_add(f(d));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let n = (docs.len() * rounds) as f64;
    println!(
        "{label:<12} {:>10.0} docs/s {:>8.1} MB/s  ({} docs x {rounds}, {out} bytes out)",
        n / secs,
        (bytes * rounds) as f64 / secs / 1e6,
        docs.len()
    );
}

fn main() {
    let c = corpus();
    let mut domains: Vec<String> = Vec::new();
    for sub in ["xlconfigdata", "libxlxml2domconfigdata"] {
        domains.extend(
            xml_files(&c.join(sub))
                .into_iter()
                .map(|(_, t)| t)
                .filter(|t| Domain::parse(t).is_ok()),
        );
    }
    let pools: Vec<String> = xml_files(&c.join("storagepoolxml2xmlin"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let vols: Vec<String> = xml_files(&c.join("storagevolxml2xmlin"))
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| StorageVolume::parse(t, "dir").is_ok())
        .collect();
    let snaps: Vec<String> = xml_files(&c.join("qemudomainsnapshotxml2xmlin"))
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| DomainSnapshot::parse(t, SnapshotParse::New { now: Some(1) }).is_ok())
        .collect();

    bench("domain", &domains, &|t| {
        Domain::parse(t)
            .map(|d| d.to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE).len())
            .unwrap_or(0)
    });
    bench("pool", &pools, &|t| {
        StoragePool::parse(t).map(|p| p.to_xml().len()).unwrap_or(0)
    });
    bench("volume", &vols, &|t| {
        StorageVolume::parse(t, "dir")
            .map(|v| v.to_xml().len())
            .unwrap_or(0)
    });
    bench("snapshot", &snaps, &|t| {
        DomainSnapshot::parse(t, SnapshotParse::New { now: Some(1) })
            .map(|s| s.to_xml(FormatFlags::SECURE).len())
            .unwrap_or(0)
    });
    let all: Vec<String> = domains
        .iter()
        .chain(&pools)
        .chain(&vols)
        .chain(&snaps)
        .cloned()
        .collect();
    println!("whole corpus: {} documents", all.len());
}
