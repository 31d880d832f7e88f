//! Regression tests for characters XML 1.0 forbids (fuzzer finding `domain_xml/crash-3bb6ea86`): the parser
//! rejects them in text, attribute values, names and comments, naming where they are, for every model built
//! on `xml.rs`.

use domain_xml::domain::Domain;
use domain_xml::network::Network;
use domain_xml::xml::{is_xml_char, Element};
use domain_xml::{Error, FormatFlags};

/// The fuzzer's reproducer: a `<name>` of U+0006 and NULs, which the writer used to drop, leaving an empty
/// name that did not parse back.
const REPRODUCER: &[u8] = b"\
<domain type='xen'>\n\
  <name>\x06\x00\x00\x00\x00\x00\x00\x00</name>\n\
  <description>None</description>\n\
  <uuid>2147d599-9cc6-c0dc-92ab-4064b5446e9b</uuid>\n\
  <memory>1048576</memory>\n\
  <currentMemory>1048576</currentMemory>\n\
  <vcpu>4</vcpu>\n\
  <on_poweroff>destroy</on_poweroff>\n\
  <on_reboot>restart</on_reboot>\n\
  <on_crash>destroy</on_crash>\n\
  <clock offset='localtime' adjustment='3600'/>\n\
  <os>\n\
    <type>hvm</type>\n\
    <loader>/usr/lib/xen/boot/hvmloader</loader>\n\
    <boot dev='hd'/>\n\
  </os>\n\
  <features>\n\
    <apic/>\n\
    <acpi/>\n\
    <pae/>\n\
  </features>\n\
  <devices>\n\
    <emulator>/bin/true</emulator>\n\
    <disk type='file' device='disk'>\n\
      <driver name='qemu'/>\n\
      <source file='/var/lib/xen/images/test-hvm.img'/>\n\
      <target dev='hda'/>\n\
    </disk>\n\
    <interface type='bridge'>\n\
      <source bridge='br0'/>\n\
      <mac address='00:16:3e:66:12:b4'/>\n\
      <script path='/etc/xen/scripts/vif-bridge'/>\n\
    </interface>\n\
    <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>\n\
  </devices>\n\
</domain>\n\
";

fn message(e: Error) -> String {
    match e {
        Error::Malformed { message, .. } => message,
        other => panic!("expected a well-formedness error, got {other}"),
    }
}

#[test]
fn reproducer_is_rejected_naming_the_path() {
    let text = std::str::from_utf8(REPRODUCER).unwrap();
    let e = message(Domain::parse(text).unwrap_err());
    assert_eq!(
        e,
        "character U+0006 is not allowed in XML 1.0 (in the text of /domain/name)"
    );
    // With a printable name the same document parses and formats to a fixed point.
    let clean: String = text
        .chars()
        .map(|c| if is_xml_char(c) { c } else { 'x' })
        .collect();
    let dom = Domain::parse(&clean).unwrap();
    let xml = dom.to_xml(FormatFlags::empty());
    assert!(xml.contains("<name>xxxxxxxx</name>"), "{xml}");
    let again = Domain::parse(&xml).unwrap();
    assert_eq!(again.to_xml(FormatFlags::empty()), xml);
}

#[test]
fn forbidden_characters_everywhere_name_their_place() {
    let cases: &[(&str, &str)] = &[
        (
            "<a><b>x\u{1}</b></a>",
            "U+0001 is not allowed in XML 1.0 (in the text of /a/b)",
        ),
        (
            "<a><b/><b>\u{0}</b></a>",
            "U+0000 is not allowed in XML 1.0 (in the text of /a/b[2])",
        ),
        (
            "<a><b k='v\u{1f}'/></a>",
            "U+001F is not allowed in XML 1.0 (in /a/b/@k)",
        ),
        (
            "<a><b k='&#x6;'/></a>",
            "U+0006 is not allowed in XML 1.0 (in /a/b/@k)",
        ),
        (
            "<a>&#1;</a>",
            "U+0001 is not allowed in XML 1.0 (in the text of /a)",
        ),
        (
            "<a><![CDATA[\u{FFFE}]]></a>",
            "U+FFFE is not allowed in XML 1.0 (in the text of /a)",
        ),
        (
            "<a><!-- \u{7} --></a>",
            "U+0007 is not allowed in XML 1.0 (in a comment in /a)",
        ),
        (
            "<a\u{2}b/>",
            "U+0002 is not allowed in XML 1.0 (in the element name at /a\u{2}b)",
        ),
        (
            "<a><c x\u{3}='1'/></a>",
            "U+0003 is not allowed in XML 1.0 (in an attribute name of /a/c)",
        ),
    ];
    for (doc, want) in cases {
        match Element::parse(doc) {
            Err(Error::Malformed { message, .. }) => {
                assert!(message.ends_with(want), "{doc:?}: {message}")
            }
            other => panic!("{doc:?}: {other:?}"),
        }
    }
    // Tab, newline, carriage return and characters up to U+10FFFF other than U+FFFE/U+FFFF are allowed.
    let ok = Element::parse("<a k='\t\u{D7FF}\u{E000}\u{10FFFF}'>\r\n\u{FFFD}</a>").unwrap();
    assert_eq!(ok.get_attr("k"), Some("\t\u{D7FF}\u{E000}\u{10FFFF}"));
}

#[test]
fn other_models_reject_them_too() {
    let e = Network::parse("<network><name>n\u{8}</name></network>").unwrap_err();
    assert!(message(e).ends_with("(in the text of /network/name)"));
}
