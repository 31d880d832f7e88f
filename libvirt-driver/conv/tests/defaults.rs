//! libvirt's libxl post-parse defaults.

use std::path::PathBuf;

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;
use xen_conv::apply_libxl_defaults;

const FLAGS: FormatFlags = FormatFlags::INACTIVE.union(FormatFlags::SECURE);

/// The XML of every xlconfigdata case checked in the cfg -> XML direction is libvirt output, post-parse already
/// applied: applying the defaults again must change nothing. (The xml-to-cfg-only cases are hand-written input.)
#[test]
fn corpus_output_is_a_fixed_point() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpora/libvirt-9.9.0/xlconfigdata");
    let cases = std::fs::read_to_string(dir.join("cases.tsv")).unwrap();
    let mut n = 0;
    for (name, direction) in cases.lines().filter_map(|l| l.split_once('\t')) {
        if direction == "xml-to-cfg" {
            continue;
        }
        let p = dir.join(format!("test-{name}.xml"));
        let xml = std::fs::read_to_string(&p).unwrap();
        let mut d = Domain::parse(&xml).unwrap();
        apply_libxl_defaults(&mut d);
        assert_eq!(d.to_xml(FLAGS), xml, "{}", p.display());
        n += 1;
    }
    assert_eq!(n, 30);
}

#[test]
fn pv_definition_gets_console_inputs_balloon_and_xenbus() {
    let mut d = Domain::parse(
        "<domain type='xen'><name>pv</name><memory unit='MiB'>256</memory><os><type>linux</type>\
         <kernel>/boot/vmlinuz</kernel></os><devices><disk type='network'><source protocol='rbd' name='p/i'/>\
         <target dev='xvda' bus='xen'/></disk><interface type='bridge'><source bridge='xenbr0'/></interface>\
         </devices></domain>",
    )
    .unwrap();
    apply_libxl_defaults(&mut d);
    let uuid = d.uuid.clone().unwrap();
    let mac = d.devices.interfaces[0].mac.clone().unwrap();
    assert!(mac.starts_with("00:16:3e:"));
    let want = format!(
        "<domain type='xen'>
  <name>pv</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='xenpv'>linux</type>
    <kernel>/boot/vmlinuz</kernel>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='p/i'/>
      <target dev='xvda' bus='xen'/>
    </disk>
    <controller type='xenbus' index='0'/>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='xenbr0'/>
    </interface>
    <console type='pty'>
      <target type='xen' port='0'/>
    </console>
    <input type='mouse' bus='xen'/>
    <input type='keyboard' bus='xen'/>
    <memballoon model='xen'/>
  </devices>
</domain>
"
    );
    assert_eq!(d.to_xml(FLAGS), want);
    // Idempotent.
    let once = d.clone();
    apply_libxl_defaults(&mut d);
    assert_eq!(d, once);
}

#[test]
fn hvm_definition_gets_pae_video_and_xen_pci_backend() {
    let mut d = Domain::parse(
        "<domain type='xen'><name>h</name><uuid>c7a5fdb2-cdaf-9455-926a-d65c16db1809</uuid>\
         <memory>1048576</memory><os><type arch='x86_64' machine='xenfv'>hvm</type></os>\
         <devices><disk type='file' device='cdrom'><source file='/i.iso'/><target dev='hdc' bus='ide'/>\
         <readonly/></disk><hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='2' \
         function='3'/></source></hostdev><serial type='pty'/><graphics type='vnc' port='-1' autoport='yes'/>\
         </devices></domain>",
    )
    .unwrap();
    apply_libxl_defaults(&mut d);
    let out = d.to_xml(FLAGS);
    for want in [
        "  <features>\n    <pae/>\n  </features>\n",
        "      <address type='drive' controller='0' bus='1' target='0' unit='0'/>\n",
        "    <controller type='xenbus' index='0'/>\n    <controller type='ide' index='0'/>\n",
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n",
        "    <input type='mouse' bus='ps2'/>\n    <input type='keyboard' bus='ps2'/>\n",
        "      <model type='cirrus' vram='8192' heads='1' primary='yes'/>\n",
        "      <driver name='xen'/>\n      <source>\n        <address domain='0x0000' bus='0x01' slot='0x02' function='0x3'/>\n",
        "    <boot dev='hd'/>\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}
