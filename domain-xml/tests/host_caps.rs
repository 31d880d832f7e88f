//! Host capabilities: a document in the layout libvirt's libxl driver writes (two guest types, NUMA topology,
//! secmodel) parses and formats back byte for byte and satisfies the `capability` schema; unknown nodes are
//! errors naming their path.

use std::process::Command;

use domain_xml::caps::Capabilities;

const XEN_CAPS: &str = "<capabilities>

  <host>
    <uuid>2147d599-9cc6-c0dc-92ab-4064b5446e9b</uuid>
    <cpu>
      <arch>x86_64</arch>
      <topology sockets='1' dies='1' cores='2' threads='1'/>
      <feature name='svm'/>
      <pages unit='KiB' size='4'/>
      <pages unit='KiB' size='2048'/>
    </cpu>
    <power_management/>
    <iommu support='no'/>
    <migration_features>
      <live/>
      <uri_transports>
        <uri_transport>tcp</uri_transport>
      </uri_transports>
    </migration_features>
    <topology>
      <cells num='1'>
        <cell id='0'>
          <memory unit='KiB'>25165824</memory>
          <distances>
            <sibling id='0' value='10'/>
          </distances>
          <cpus num='2'>
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/>
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1'/>
          </cpus>
        </cell>
      </cells>
    </topology>
    <secmodel>
      <model>none</model>
      <doi>0</doi>
    </secmodel>
  </host>

  <guest>
    <os_type>xen</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/lib/xen/bin/qemu-system-i386</emulator>
      <machine>xenpv</machine>
      <domain type='xen'/>
    </arch>
  </guest>

  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/lib/xen/bin/qemu-system-i386</emulator>
      <loader>/usr/lib/xen/boot/hvmloader</loader>
      <machine maxCpus='128'>xenfv</machine>
      <domain type='xen'/>
    </arch>
    <features>
      <pae/>
      <nonpae/>
      <acpi default='on' toggle='yes'/>
      <apic default='on' toggle='no'/>
      <hap default='on' toggle='yes'/>
    </features>
  </guest>

</capabilities>
";

#[test]
fn xen_capabilities_round_trip_and_validate() {
    let caps = Capabilities::parse(XEN_CAPS).unwrap();
    assert_eq!(caps.guests.len(), 2);
    assert_eq!(caps.guests[1].machines[0].max_cpus, Some(128));
    assert_eq!(caps.host.cells[0].cpus.len(), 2);
    let out = caps.to_xml();
    assert_eq!(out, XEN_CAPS);
    let f = std::env::temp_dir().join(format!("xenrs-caps-{}.xml", std::process::id()));
    std::fs::write(&f, &out).unwrap();
    let v = Command::new("virt-xml-validate")
        .arg(&f)
        .arg("capability")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn capabilities_errors_name_paths() {
    let bad = XEN_CAPS.replace("<pae/>", "<frob/>");
    assert_eq!(
        Capabilities::parse(&bad).unwrap_err().to_string(),
        "unknown element /capabilities/guest[2]/features/frob"
    );
    let bad = XEN_CAPS.replace("<live/>", "<live/><dead/>");
    assert!(Capabilities::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("dead"));
    assert!(Capabilities::parse("<capabilities/>").is_err());
}
