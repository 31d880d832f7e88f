//! xl.cfg(5) <-> domain XML, following libvirt's libxl driver (`xen_xl.c`, `xen_common.c`) and the defaults its
//! post-parse step fills in.

mod from_cfg;
mod to_cfg;

pub use from_cfg::xl_config_to_domain;
pub use to_cfg::{domain_to_xl_config, domain_to_xl_config_with_networks};

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;
use libxl_rs::xlcfg::XlConfig;

use crate::Error;

/// Where libxl's firmware images live (libvirt's `LIBXL_FIRMWARE_DIR`).
pub const FIRMWARE_DIR: &str = "/usr/lib/xen/boot";

/// Parses xl.cfg text into a domain model with libvirt's post-parse defaults.
pub fn xl_cfg_to_domain(cfg: &str) -> Result<Domain, Error> {
    let conf = XlConfig::parse(cfg)?;
    xl_config_to_domain(&conf)
}

/// `virsh domxml-from-native xen-xl`: xl.cfg text to domain XML, formatted with the inactive and secure flags
/// (as libvirt's own conversion tests compare it).
pub fn xl_cfg_to_domain_xml(cfg: &str) -> Result<String, Error> {
    Ok(xl_cfg_to_domain(cfg)?.to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE))
}

/// `virsh domxml-to-native xen-xl`: domain XML to xl.cfg text. The XML gets the libxl driver's post-parse
/// defaults first (a generated UUID when it has none, PAE for x86_64 HVM...), as libvirt parses it.
pub fn domain_xml_to_xl_cfg(xml: &str) -> Result<String, Error> {
    let mut dom = Domain::parse(xml)?;
    crate::defaults::apply_libxl_defaults(&mut dom);
    let cfg = domain_to_xl_config(&dom)?;
    // A value no virConf quoting can hold (both quote kinds plus a closing quote, a NUL) is refused rather
    // than written as text that would not read back.
    cfg.check_writable()?;
    Ok(cfg.to_text())
}
