//! domxml-to-native refuses a value no xl.cfg quoting can hold instead of writing text that would not read back.

#[test]
fn a_kernel_command_line_with_both_quotes_and_a_trailing_quote_is_refused() {
    let xml = "<domain type='xen'><name>q</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>\
               <memory unit='KiB'>65536</memory><vcpu>1</vcpu>\
               <os><type arch='x86_64' machine='xenpvh'>xenpvh</type><kernel>/k</kernel>\
               <cmdline>a='1' b=\"2\"</cmdline></os></domain>";
    let err = xen_conv::domain_xml_to_xl_cfg(xml).unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(chain.contains("cmdline"), "{chain}");
    // The same command line without the trailing quote is written (in triple quotes) and reads back.
    let ok = xml.replace("b=\"2\"</cmdline>", "b=\"2\" c</cmdline>");
    let cfg = xen_conv::domain_xml_to_xl_cfg(&ok).unwrap();
    let back = xen_conv::xl_cfg_to_domain_xml(&cfg).unwrap();
    assert!(
        back.contains("<cmdline>a='1' b=\"2\" c</cmdline>")
            || back.contains("a=&apos;1&apos; b=&quot;2&quot; c"),
        "{cfg}\n{back}"
    );
}
