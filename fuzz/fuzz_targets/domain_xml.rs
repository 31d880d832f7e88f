//! Domain XML: parse, format, re-parse (the formatted form of a model must parse back to the same model), and
//! translate to libxl's domain configuration.
#![no_main]

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dom) = Domain::parse(text) else {
        return;
    };
    let xml = dom.to_xml(FormatFlags::empty());
    let again = Domain::parse(&xml).expect("formatted domain XML must parse");
    assert_eq!(again.to_xml(FormatFlags::empty()), xml, "format is not a fixed point");
    if let Ok(cfg) = xen_conv::libxl::domain_config_from_domain(&dom, Default::default()) {
        let json = cfg.to_json_string();
        libxl_rs::config::DomainConfig::from_json_str(&json).expect("our libxl JSON must parse");
    }
});
