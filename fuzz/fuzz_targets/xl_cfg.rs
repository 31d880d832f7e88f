//! xl.cfg: parse, write, re-parse; then the translation to domain XML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libxl_rs::xlcfg::XlConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = XlConfig::parse(text) else {
        return;
    };
    let written = cfg.to_text();
    XlConfig::parse(&written).expect("written xl.cfg must parse");
    let _ = xen_conv::xl_config_to_domain(&cfg);
});
