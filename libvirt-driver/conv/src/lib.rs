//! Translations between libvirt's domain XML and Xen's native configuration formats.
//!
//! - [`xl_cfg_to_domain_xml`] and [`domain_xml_to_xl_cfg`]: xl.cfg(5) <-> domain XML, what
//!   `virsh domxml-from-native xen-xl` and `virsh domxml-to-native xen-xl` do, reproducing libvirt's libxl
//!   driver output byte for byte (its post-parse defaults included).
//! - [`apply_libxl_defaults`]: the defaults libvirt's libxl driver fills into every definition it accepts.

pub mod defaults;
pub mod libxl;
pub mod xl;

pub use defaults::apply_libxl_defaults;

pub use xl::{
    domain_to_xl_config, domain_to_xl_config_with_networks, domain_xml_to_xl_cfg, xl_cfg_to_domain,
    xl_cfg_to_domain_xml, xl_config_to_domain,
};

/// Errors from translating between configuration formats.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The domain XML is invalid.
    #[error("invalid domain XML")]
    Xml(#[from] domain_xml::Error),
    /// The xl.cfg text is invalid.
    #[error("invalid xl.cfg")]
    XlCfg(#[from] libxl_rs::xlcfg::XlCfgError),
    /// A setting the translation cannot express in the target format.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
}
