//! Domain XML -> libxl domain config conformance: every case of libvirt's `libxlxml2domconfigdata`, compared as
//! JSON values after both sides go through the libxl JSON model (as libvirt's test normalises both through
//! libxl).

use std::path::PathBuf;

use libxl_rs::config::DomainConfig;
use serde_json::Value;
use xen_conv::libxl::{
    domain_config_from_xml, domain_config_from_xml_with, required_shadow_memkb, Options,
};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpora/libvirt-9.9.0/libxlxml2domconfigdata")
}

/// libvirt's test replaces `libxl_get_required_shadow_memory` with a mock returning 1234 KiB.
const MOCK_SHADOW_MEMKB: u64 = 1234;

#[test]
fn libxlxml2domconfig_corpus() {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .expect("corpus directory")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "xml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in &names {
        let xml = std::fs::read_to_string(corpus().join(format!("{name}.xml"))).unwrap();
        let json = std::fs::read_to_string(corpus().join(format!("{name}.json"))).unwrap();
        let opts = Options {
            legacy_nested_hvm: name.ends_with("legacy-nest"),
        };
        let mut cfg = match domain_config_from_xml_with(&xml, opts) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // Our value is libxl's real estimate; the corpus holds the mock's.
        let want_shadow = required_shadow_memkb(
            cfg.b_info.max_memkb,
            u32::try_from(cfg.b_info.max_vcpus).unwrap(),
        );
        assert_eq!(cfg.b_info.shadow_memkb, want_shadow, "{name}");
        cfg.b_info.shadow_memkb = MOCK_SHADOW_MEMKB;
        let expected = DomainConfig::from_json_str(&json).unwrap().to_json_value();
        let actual = cfg.to_json_value();
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected {}\n  actual   {}",
                serde_json::to_string(&expected).unwrap(),
                serde_json::to_string(&actual).unwrap()
            ));
        }
    }
    let pass = names.len() - failures.len();
    eprintln!("libxlxml2domconfigdata: {pass}/{} cases equal", names.len());
    assert_eq!(names.len(), 10, "expected 10 cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn hvm(devices: &str) -> String {
    format!(
        "<domain type='xen'><name>t</name><uuid>2147d599-9cc6-c0dc-92ab-4064b5446e9b</uuid>\
         <memory>524288</memory><vcpu>2</vcpu><os><type>hvm</type></os><devices>{devices}</devices></domain>"
    )
}

#[test]
fn rejects_what_libxl_cannot_express() {
    let e = domain_config_from_xml(&hvm("<parallel type='pty'/>")).unwrap_err();
    assert!(e.to_string().contains("Parallel"), "{e}");
    let xml = hvm("").replace("type='xen'", "type='kvm'");
    assert!(domain_config_from_xml(&xml).is_err());
    // SPICE is an HVM device-model feature; a PV guest cannot have it.
    let pv = hvm("<graphics type='spice'/>").replace("<type>hvm</type>", "<type>xen</type>");
    let e = domain_config_from_xml(&pv).unwrap_err();
    assert!(e.to_string().contains("spice"), "{e}");
    assert!(domain_config_from_xml("<domain").is_err());
}

#[test]
fn devices_map_to_libxl() {
    let cfg = domain_config_from_xml(&hvm(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a.qcow2'/>\
         <target dev='xvda' bus='xen'/><readonly/></disk>\
         <disk type='file' device='cdrom'><driver name='qemu'/><target dev='hdc'/></disk>\
         <interface type='bridge'><mac address='00:16:3e:00:00:01'/><source bridge='xenbr0'/>\
         <model type='e1000'/></interface>\
         <serial type='pty'/><serial type='file'><source path='/tmp/s'/></serial>\
         <channel type='unix'><source mode='bind' path='/run/c.sock'/><target type='xen' name='org.qemu.guest_agent.0'/></channel>\
         <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1' keymap='de'/>",
    ))
    .unwrap();
    let v = cfg.to_json_value();
    assert_eq!(v["disks"][0]["format"], "qcow2");
    assert!(v["disks"][0].get("readwrite").is_none());
    assert_eq!(v["disks"][1]["format"], "empty");
    assert_eq!(v["disks"][1]["is_cdrom"], 1);
    assert_eq!(v["nics"][0]["model"], "e1000");
    assert_eq!(v["nics"][0]["nictype"], "vif_ioemu");
    assert_eq!(v["nics"][0]["bridge"], "xenbr0");
    assert_eq!(
        v["b_info"]["type.hvm"]["serial_list"],
        serde_json::json!(["pty", "file:/tmp/s"])
    );
    assert_eq!(v["channels"][0]["name"], "org.qemu.guest_agent.0");
    assert_eq!(v["channels"][0]["connection.socket"]["path"], "/run/c.sock");
    assert_eq!(v["vfbs"][0]["vnc"]["display"], 1);
    assert_eq!(v["vfbs"][0]["keymap"], "de");
    assert_eq!(v["b_info"]["type.hvm"]["vnc"]["listen"], "127.0.0.1");
    assert_eq!(v["b_info"]["type.hvm"]["keymap"], "de");
    // And the JSON reads back into the same configuration.
    assert_eq!(DomainConfig::from_json_value(&v).unwrap(), cfg);
    let _: Value = v;
}

#[test]
fn pvh_direct_kernel_boot() {
    let xml = "<domain type='xen'><name>pvh</name><uuid>c7a5fdb2-cdaf-9455-926a-d65c16db1809</uuid>\
               <memory>262144</memory><currentMemory>131072</currentMemory>\
               <vcpu placement='static' cpuset='0-1' current='1'>2</vcpu>\
               <cputune><vcpupin vcpu='1' cpuset='1'/></cputune>\
               <os><type>xenpvh</type><kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd.img</initrd>\
               <cmdline>console=hvc0</cmdline></os>\
               <clock offset='variable' adjustment='-60' basis='localtime'/>\
               <on_crash>preserve</on_crash><devices/></domain>";
    let cfg = domain_config_from_xml(xml).unwrap();
    let v = cfg.to_json_value();
    assert_eq!(v["c_info"]["type"], "pvh");
    assert_eq!(v["b_info"]["type.pvh"], serde_json::json!({}));
    assert_eq!(v["b_info"]["kernel"], "/boot/vmlinuz");
    assert_eq!(v["b_info"]["ramdisk"], "/boot/initrd.img");
    assert_eq!(v["b_info"]["cmdline"], "console=hvc0");
    assert_eq!(v["b_info"]["max_vcpus"], 2);
    assert_eq!(v["b_info"]["avail_vcpus"], serde_json::json!([0]));
    assert_eq!(v["b_info"]["cpumap"], serde_json::json!([0, 1]));
    assert_eq!(
        v["b_info"]["vcpu_hard_affinity"],
        serde_json::json!([[], [1]])
    );
    assert_eq!(v["b_info"]["max_memkb"], 262144);
    assert_eq!(v["b_info"]["target_memkb"], 131072);
    assert_eq!(v["b_info"]["localtime"], "True");
    // -60 s as libxl's uint32 offset.
    assert_eq!(v["b_info"]["rtc_timeoffset"], 4294967236u64);
    assert_eq!(v["on_crash"], "preserve");
    assert!(v["b_info"].get("bootloader").is_none());
    assert!(v.get("vfbs").is_none());
}
