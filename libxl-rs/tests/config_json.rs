//! libxl JSON conformance: every `libxlxml2domconfigdata/*.json` of libvirt's corpus reads into the model and
//! writes back as the same JSON value, except for members at their libxl default, which libxl leaves out.

use std::path::PathBuf;

use libxl_rs::config::{BuildType, Defbool, DomainConfig, DomainType};
use serde_json::Value;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/libvirt-9.9.0/libxlxml2domconfigdata")
}

/// Checks that every member of `out` is in `orig` with the same value; returns the members of `orig` that
/// `out` leaves out.
fn subset(out: &Value, orig: &Value, path: &str, dropped: &mut Vec<(String, Value)>) {
    match (out, orig) {
        (Value::Object(o), Value::Object(i)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match i.get(k) {
                    Some(iv) => subset(v, iv, &p, dropped),
                    // Structs are always written, so a struct absent from the input comes out empty.
                    None => assert!(empty_aggregate(v), "{p} = {v} written but not in the input"),
                }
            }
            for (k, v) in i {
                if !o.contains_key(k) {
                    dropped.push((format!("{path}.{k}"), v.clone()));
                }
            }
        }
        (Value::Array(o), Value::Array(i)) => {
            assert_eq!(o.len(), i.len(), "{path}: array length");
            for (n, (a, b)) in o.iter().zip(i).enumerate() {
                subset(a, b, &format!("{path}[{n}]"), dropped);
            }
        }
        _ => assert_eq!(out, orig, "{path}"),
    }
}

fn empty_aggregate(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(empty_aggregate))
}

#[test]
fn corpus_round_trips() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus()).expect("corpus directory") {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let orig: Value = serde_json::from_str(&text).unwrap();
        let cfg = DomainConfig::from_json_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = cfg.to_json_value();
        let mut dropped = Vec::new();
        subset(&out, &orig, "$", &mut dropped);
        // The only members libxl leaves out are those at their IDL default.
        for (p, v) in &dropped {
            let ok = (p.ends_with(".devid") && v == -1)
                || (p.ends_with(".rdm_policy") && v == "invalid");
            assert!(ok, "{}: {p} = {v} was dropped", path.display());
        }
        // Reading our own output gives the same model.
        let again = DomainConfig::from_json_str(&cfg.to_json_string()).unwrap();
        assert_eq!(again, cfg, "{}", path.display());
        n += 1;
    }
    eprintln!("libxl JSON corpus: {n}/{n} documents round-trip");
    assert_eq!(n, 10, "expected the 10 libxlxml2domconfigdata documents");
}

#[test]
fn defaults_are_omitted_and_aggregates_kept() {
    let mut c = DomainConfig::new(DomainType::Pvh);
    c.c_info.name = Some("g".into());
    c.b_info.acpi = Defbool::False;
    let v = c.to_json_value();
    assert_eq!(v["c_info"]["type"], "pvh");
    assert_eq!(v["b_info"]["acpi"], "False");
    assert!(v["b_info"].get("max_memkb").is_none());
    assert!(v["b_info"].get("apic").is_none());
    assert_eq!(v["b_info"]["type.pvh"], serde_json::json!({}));
    assert_eq!(v["b_info"]["sched_params"], serde_json::json!({}));
    assert!(v.get("disks").is_none());
    assert!(v.get("on_poweroff").is_none());
    assert!(matches!(c.b_info.type_, BuildType::Pvh(_)));
}

#[test]
fn errors_name_the_path() {
    let e = DomainConfig::from_json_str(r#"{"b_info": {"type.hvm": {"vga": {"kind": "bogus"}}}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("$.b_info.type.hvm.vga.kind"), "{e}");
    let e = DomainConfig::from_json_str(r#"{"nics": [{"devid": 0}, {"frobnicate": 1}]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key $.nics[1].frobnicate"), "{e}");
    let e = DomainConfig::from_json_str(r#"{"b_info": {"max_vcpus": 4294967296}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("$.b_info.max_vcpus"), "{e}");
    let e = DomainConfig::from_json_str(r#"{"c_info": {"uuid": "nope"}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("$.c_info.uuid"), "{e}");
    assert!(DomainConfig::from_json_str("[").is_err());
    assert!(DomainConfig::from_json_str(r#"{"b_info": {"type.hvm": {}, "type.pv": {}}}"#).is_err());
}

#[test]
fn unions_and_special_types() {
    let text = r#"{
        "c_info": {"type": "hvm", "uuid": "2147d599-9cc6-c0dc-92ab-4064b5446e9b", "xsdata": {"a": "b", "c": null}},
        "b_info": {"avail_vcpus": [0, 3], "cpuid": {"cpuid": [{"leaf": 7, "subleaf": 0, "ebx": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1"}],
                   "msr": [{"index": 16, "policy": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0"}]}},
        "nics": [{"mac": "00:16:3e:00:00:01"}],
        "channels": [{"name": "org.qemu.guest_agent.0", "connection.socket": {"path": "/run/x.sock"}}],
        "usbdevs": [{"ctrl": 0, "port": 1, "type.hostdev": {"hostbus": 1, "hostaddr": 2}}],
        "on_crash": "coredump_restart"
    }"#;
    let c = DomainConfig::from_json_str(text).unwrap();
    assert_eq!(
        c.c_info.uuid.to_string(),
        "2147d599-9cc6-c0dc-92ab-4064b5446e9b"
    );
    assert_eq!(c.b_info.avail_vcpus.0.len(), 2);
    assert_eq!(c.b_info.cpuid.msr.len(), 1);
    let v = c.to_json_value();
    let orig: Value = serde_json::from_str(text).unwrap();
    // No default-valued members in this input: the round trip is exact (as values).
    let mut want = orig.clone();
    want["b_info"]["type.hvm"] = v["b_info"]["type.hvm"].clone();
    for k in ["sched_params", "arch_arm", "arch_x86"] {
        want["b_info"][k] = serde_json::json!({});
    }
    assert_eq!(v, want);
}
