//! The other libvirt XML objects a client sends (storage pool, storage volume, snapshot, network) and the
//! capabilities documents: parse, format, and the formatted form must parse back to the same output.
#![no_main]

use domain_xml::caps::Capabilities;
use domain_xml::domcaps::DomainCaps;
use domain_xml::network::Network;
use domain_xml::snapshot::{DomainSnapshot, SnapshotParse};
use domain_xml::storage::{StoragePool, StorageVolume};
use domain_xml::FormatFlags;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = StoragePool::parse(text) {
        let x = p.to_xml();
        assert_eq!(StoragePool::parse(&x).expect("pool output parses").to_xml(), x);
    }
    for pool in ["dir", "disk", "logical", "gluster"] {
        if let Ok(v) = StorageVolume::parse(text, pool) {
            let x = v.to_xml();
            assert_eq!(StorageVolume::parse(&x, pool).expect("volume output parses").to_xml(), x);
        }
    }
    if let Ok(s) = DomainSnapshot::parse(text, SnapshotParse::Redefine) {
        let x = s.to_xml(FormatFlags::SECURE);
        let again = DomainSnapshot::parse(&x, SnapshotParse::Redefine).expect("snapshot output parses");
        assert_eq!(again.to_xml(FormatFlags::SECURE), x);
    }
    if let Ok(n) = Network::parse(text) {
        let x = n.to_xml();
        assert_eq!(Network::parse(&x).expect("network output parses").to_xml(), x);
    }
    if let Ok(c) = DomainCaps::parse(text) {
        let x = c.to_xml();
        assert_eq!(DomainCaps::parse(&x).expect("domcaps output parses").to_xml(), x);
    }
    if let Ok(c) = Capabilities::parse(text) {
        let x = c.to_xml();
        assert_eq!(Capabilities::parse(&x).expect("capabilities output parses").to_xml(), x);
    }
});
