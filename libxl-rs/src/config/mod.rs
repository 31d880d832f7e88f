//! libxl's domain configuration (`libxl_domain_config` and the types it holds, from `libxl_types.idl`) and
//! its JSON form, as `libxl_domain_config_to_json` writes it and `libxl_domain_config_from_json` reads it.
//!
//! Field names, enum strings and defaults are libxl's. A member equal to its IDL default is left out of the
//! JSON; structs are always written. Reading rejects keys the model does not carry (libxl's COLO, virtio,
//! 9pfs, vdispl and vsnd devices and a few rarely used members), naming their path, rather than dropping
//! them.
//!
//! ```
//! use libxl_rs::config::DomainConfig;
//! let cfg = DomainConfig::from_json_str(r#"{"c_info": {"type": "pv", "name": "g"}}"#).unwrap();
//! assert_eq!(cfg.c_info.name.as_deref(), Some("g"));
//! let back = DomainConfig::from_json_str(&cfg.to_json_string()).unwrap();
//! assert_eq!(back, cfg);
//! ```

pub(crate) mod json;
mod model;
mod types;

pub use json::{Field, Json};
pub use model::*;
pub use types::{Bitmap, CpuidLeaf, CpuidPolicyList, Defbool, KeyValueList, Mac, MsrPolicy, Uuid};

/// Errors from reading a libxl domain configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key the model does not know.
    #[error("unknown key {path}")]
    UnknownKey {
        /// Path of the key, for example `$.b_info.type.hvm.foo`.
        path: String,
    },
    /// A required key is missing.
    #[error("missing key {path}")]
    MissingKey {
        /// Path of the key.
        path: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value {value} at {path}: {reason}")]
    InvalidValue {
        /// Path of the value.
        path: String,
        /// The value (shortened).
        value: String,
        /// Why it is rejected.
        reason: String,
    },
}
