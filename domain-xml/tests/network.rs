//! Network XML: documents in the form `virsh net-dumpxml` prints (libvirt's default NAT network, a host bridge,
//! an isolated dual-stack network with DNS and static leases) parse and format back byte for byte and satisfy
//! the `network` schema; unknown nodes are errors naming their path.

use std::process::Command;

use domain_xml::network::Network;

const DEFAULT_NAT: &str = "<network>
  <name>default</name>
  <uuid>9a05da11-e96b-47f3-8253-a3a482e445f5</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:0a:cd:21'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
";

const HOST_BRIDGE: &str = "<network>
  <name>host-bridge</name>
  <uuid>2147d599-9cc6-c0dc-92ab-4064b5446e9b</uuid>
  <forward mode='bridge'/>
  <bridge name='xenbr0'/>
</network>
";

const ISOLATED: &str = "<network ipv6='yes'>
  <name>lab</name>
  <uuid>c7a5fdb2-cdaf-9455-926a-d65c16db1809</uuid>
  <bridge name='virbr5' stp='on' delay='0'/>
  <mtu size='9000'/>
  <domain name='lab.example' localOnly='yes'/>
  <dns>
    <txt name='example' value='example value'/>
    <host ip='10.0.5.10'>
      <hostname>build</hostname>
      <hostname>build.lab.example</hostname>
    </host>
  </dns>
  <ip address='10.0.5.1' netmask='255.255.255.0'>
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start='10.0.5.100' end='10.0.5.200'/>
      <host mac='00:16:3e:77:e2:ed' name='build' ip='10.0.5.10'/>
      <bootp file='pxelinux.0'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='2001:db8:ca2:2::1' prefix='64'/>
  <route address='192.168.222.0' prefix='24' gateway='10.0.5.2'/>
</network>
";

fn validate(xml: &str, name: &str) {
    let f = std::env::temp_dir().join(format!("xenrs-net-{}-{name}.xml", std::process::id()));
    std::fs::write(&f, xml).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&f)
        .arg("network")
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&v.stderr)
    );
}

#[test]
fn networks_round_trip_and_validate() {
    for (name, doc) in [
        ("default", DEFAULT_NAT),
        ("bridge", HOST_BRIDGE),
        ("isolated", ISOLATED),
    ] {
        let n = Network::parse(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = n.to_xml();
        assert_eq!(out, doc, "{name}");
        validate(&out, name);
    }
    let n = Network::parse(DEFAULT_NAT).unwrap();
    let f = n.forward.as_ref().unwrap();
    assert_eq!((f.mode.as_str(), f.nat_port), ("nat", Some((1024, 65535))));
    assert_eq!(n.bridge.as_ref().unwrap().name.as_deref(), Some("virbr0"));
    assert_eq!(n.ips[0].dhcp_ranges[0].end, "192.168.122.254");
}

#[test]
fn network_errors_name_paths() {
    let bad = DEFAULT_NAT.replace("<nat>", "<nat><frob/>");
    assert_eq!(
        Network::parse(&bad).unwrap_err().to_string(),
        "unknown element /network/forward/nat/frob"
    );
    let bad = DEFAULT_NAT.replace("mode='nat'", "mode='teleport'");
    assert!(Network::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("/network/forward/@mode"));
    let bad = DEFAULT_NAT.replace("address='192.168.122.1'", "address='2001:db8::1'");
    assert!(Network::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("/network/ip/@netmask"));
    let bad = ISOLATED.replace("address='2001:db8:ca2:2::1'", "address='10.1.1.1'");
    assert!(Network::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("/network/ip[2]/@address"));
    let bad = DEFAULT_NAT.replace("start='1024'", "start='70000'");
    assert!(Network::parse(&bad).is_err());
    assert!(Network::parse("<network><name>a/b</name></network>").is_err());
}
