//! Bad input is rejected with errors that say where; behaviour outside the corpus round-trips.

use std::error::Error as _;

use xen_conv::{domain_xml_to_xl_cfg, xl_cfg_to_domain, xl_cfg_to_domain_xml, Error};

fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

const HVM: &str = "name = \"g\"\nuuid = \"c7a5fdb2-cdaf-9455-926a-d65c16db1809\"\nmemory = 512\nbuilder = \"hvm\"\n";

#[test]
fn cfg_syntax_error_names_line_and_key() {
    let e = xl_cfg_to_domain_xml("name = \"g\"\n\nmemory = 51 2\n").unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 3, key 'memory': unexpected '2' after the value"
    );
    let e = xl_cfg_to_domain_xml("name = \"g\"\nvif = [ \"mac=00:16:3e:00:00:01\"\n").unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 2, key 'vif': unterminated list"
    );
}

#[test]
fn cfg_value_errors_name_line_and_key() {
    let e = xl_cfg_to_domain_xml(&format!("{HVM}disk = [ \"/a,qcow9,hda,w\" ]\n")).unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 5, key 'disk': unknown disk format 'qcow9'"
    );
    let e = xl_cfg_to_domain_xml(&format!(
        "{HVM}vif = [ \"mac=00:16:3e:00:00:01,rate=fast\" ]\n"
    ))
    .unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 5, key 'vif': invalid rate 'fast'"
    );
    let e = xl_cfg_to_domain_xml("memory = 512\n").unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 0, key 'name': the domain name is missing"
    );
    let e = xl_cfg_to_domain_xml(&format!("{HVM}on_crash = \"explode\"\n")).unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 5, key 'on_crash': unexpected value 'explode'"
    );
    let e = xl_cfg_to_domain_xml(&format!("{HVM}pci = [ \"0000:zz:00.0\" ]\n")).unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid xl.cfg: line 5, key 'pci': malformed PCI address '0000:zz:00.0'"
    );
}

#[test]
fn xml_errors_name_the_path() {
    let xml = "<domain type='xen'><name>g</name><memory>1</memory><os><type>xen</type></os><devices><disk type='file'><target dev='xvda' speed='9'/></disk></devices></domain>";
    let e = domain_xml_to_xl_cfg(xml).unwrap_err();
    assert_eq!(
        chain(&e),
        "invalid domain XML: unknown attribute /domain/devices/disk/target/@speed"
    );
}

#[test]
fn unsupported_translation_is_an_error() {
    let xml = "<domain type='xen'><name>g</name><uuid>c7a5fdb2-cdaf-9455-926a-d65c16db1809</uuid><memory>1024</memory><os><type>xen</type></os><devices><interface type='direct'><mac address='00:16:3e:00:00:01'/><source dev='eth0'/></interface></devices></domain>";
    let e = domain_xml_to_xl_cfg(xml).unwrap_err();
    assert_eq!(
        chain(&e),
        "unsupported configuration: unsupported net type 'direct'"
    );
}

#[test]
fn hvm_serial_and_parallel_kinds_round_trip() {
    for serial in [
        "pty",
        "file:/var/log/serial.log",
        "tcp:127.0.0.1:4555,server,nowait",
        "telnet::4556",
        "udp:10.0.0.1:9000@:9001",
        "unix:/run/serial.sock,server,nowait",
        "/dev/ttyS0",
        "null",
    ] {
        let cfg = format!("{HVM}serial = \"{serial}\"\nparallel = \"file:/tmp/lp\"\n");
        let xml = xl_cfg_to_domain_xml(&cfg).unwrap_or_else(|e| panic!("{serial}: {}", chain(&e)));
        let back = domain_xml_to_xl_cfg(&xml).unwrap_or_else(|e| panic!("{serial}: {}", chain(&e)));
        assert!(
            back.contains(&format!("serial = \"{serial}\"\n")),
            "{serial}:\n{xml}\n{back}"
        );
        assert!(back.contains("parallel = \"file:/tmp/lp\"\n"), "{back}");
    }
}

#[test]
fn pv_vfb_usb_and_vlan_trunks_round_trip() {
    let cfg = "name = \"pv\"\nuuid = \"45b60f51-88a9-47a8-a3b3-5e66d71b2283\"\nmemory = 256\n\
               vfb = [ \"type=vnc,vncunused=0,vncdisplay=3,vnclisten=0.0.0.0,keymap=de\" ]\n\
               vif = [ \"mac=00:16:3e:00:00:02,bridge=ovsbr0:10:20,script=vif-openvswitch\" ]\n\
               e820_host = 1\n";
    let d = xl_cfg_to_domain(cfg).unwrap();
    assert_eq!(d.devices.graphics[0].port, Some(5903));
    assert_eq!(d.devices.interfaces[0].vlan_tags, vec![10, 20]);
    assert!(d.devices.interfaces[0].vlan_trunk);
    let xml = xl_cfg_to_domain_xml(cfg).unwrap();
    let back = domain_xml_to_xl_cfg(&xml).unwrap();
    assert!(back.contains("e820_host = 1\n"), "{back}");
    assert!(
        back.contains(
            "vfb = [ \"type=vnc,vncunused=0,vncdisplay=3,vnclisten=0.0.0.0,keymap=de\" ]\n"
        ),
        "{back}"
    );
    assert!(
        back.contains(
            "vif = [ \"mac=00:16:3e:00:00:02,bridge=ovsbr0:10:20,script=vif-openvswitch\" ]\n"
        ),
        "{back}"
    );
}

#[test]
fn missing_uuid_and_mac_are_generated() {
    let d = xl_cfg_to_domain("name = \"g\"\nvif = [ \"bridge=xenbr0\" ]\n").unwrap();
    let uuid = d.uuid.unwrap();
    assert_eq!(uuid.len(), 36);
    let mac = d.devices.interfaces[0].mac.clone().unwrap();
    assert!(mac.starts_with("00:16:3e:"), "{mac}");
    assert_eq!(d.memory_kib, 128 * 1024);
}

#[test]
fn network_interfaces_need_their_bridge() {
    let xml = "<domain type='xen'><name>g</name><uuid>c7a5fdb2-cdaf-9455-926a-d65c16db1809</uuid><memory>1024</memory><os><type>xen</type></os><devices><interface type='network'><mac address='00:16:3e:00:00:01'/><source network='default'/></interface></devices></domain>";
    let e = domain_xml_to_xl_cfg(xml).unwrap_err();
    assert_eq!(
        chain(&e),
        "unsupported configuration: network 'default' is not active"
    );
    let d = domain_xml::domain::Domain::parse(xml).unwrap();
    let c = xen_conv::domain_to_xl_config_with_networks(&d, &|n| {
        (n == "default").then(|| "virbr0".to_string())
    })
    .unwrap();
    assert!(c
        .to_text()
        .contains("vif = [ \"mac=00:16:3e:00:00:01,bridge=virbr0,script=vif-bridge\" ]\n"));
}

#[test]
fn acpi_firmware_round_trips() {
    let cfg = format!("{HVM}acpi_firmware = \"/etc/xen/slic.bin\"\n");
    let xml = xl_cfg_to_domain_xml(&cfg).unwrap();
    assert!(
        xml.contains(
            "    <acpi>\n      <table type='slic'>/etc/xen/slic.bin</table>\n    </acpi>\n"
        ),
        "{xml}"
    );
    let back = domain_xml_to_xl_cfg(&xml).unwrap();
    assert!(
        back.contains("acpi_firmware = \"/etc/xen/slic.bin\"\n"),
        "{back}"
    );
}
