//! Converts between xl.cfg and domain XML from the command line, as `virsh domxml-from-native xen-xl FILE` and
//! `virsh domxml-to-native xen-xl FILE` do: `cargo run -p xen-conv --example xl2xml -- (to-xml|to-cfg) FILE`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: xl2xml (to-xml|to-cfg) FILE");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match dir.as_str() {
        "to-xml" => xen_conv::xl_cfg_to_domain_xml(&text),
        "to-cfg" => xen_conv::domain_xml_to_xl_cfg(&text),
        _ => {
            eprintln!("usage: xl2xml (to-xml|to-cfg) FILE");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
