//! libxl JSON: parse into the domain configuration model, write, and read back to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libxl_rs::config::DomainConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = DomainConfig::from_json_str(text) else {
        return;
    };
    let json = cfg.to_json_string();
    let again = DomainConfig::from_json_str(&json).expect("written libxl JSON must parse");
    assert_eq!(again, cfg, "JSON round trip changed the configuration");
});
