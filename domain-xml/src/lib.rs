//! libvirt XML object models (domain, snapshot, storage, capabilities) with parse and format.
//!
//! Every model parses through the shared [`xml`] infrastructure, which rejects unknown elements and attributes
//! with an error naming their path, and formats with libvirt's exact layout so that the output of a parse and
//! format round trip equals libvirt's own output.

pub mod caps;
pub mod domain;
pub mod domcaps;
pub mod network;
pub mod snapshot;
pub mod storage;
pub mod xml;

/// Errors from parsing or validating libvirt XML.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The document is not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset in the input where the problem was found.
        position: u64,
        /// What is wrong.
        message: String,
    },
    /// An element the model does not know.
    #[error("unknown element {path}")]
    UnknownElement {
        /// Path of the element, for example `/domain/devices/disk[2]/foo`.
        path: String,
    },
    /// An attribute the model does not know.
    #[error("unknown attribute {path}")]
    UnknownAttribute {
        /// Path of the attribute, for example `/domain/devices/disk/target/@foo`.
        path: String,
    },
    /// Text where the model expects only elements.
    #[error("unexpected text in {path}")]
    UnexpectedText {
        /// Path of the element containing the text.
        path: String,
    },
    /// A required element is missing.
    #[error("missing element {path}")]
    MissingElement {
        /// Path the element was expected at.
        path: String,
    },
    /// A required attribute is missing.
    #[error("missing attribute {path}")]
    MissingAttribute {
        /// Path the attribute was expected at.
        path: String,
    },
    /// An element that may appear once appears again.
    #[error("duplicate element {path}")]
    Duplicate {
        /// Path of the second occurrence.
        path: String,
    },
    /// A value that does not parse or is out of range.
    #[error("invalid value '{value}' at {path}: {reason}")]
    InvalidValue {
        /// Path of the attribute or element.
        path: String,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The document root is not the expected element.
    #[error("expected root element <{expected}>, found <{found}>")]
    WrongRoot {
        /// The root the model expects.
        expected: String,
        /// The root found.
        found: String,
    },
}

bitflags::bitflags! {
    /// Flags controlling how a model is formatted, as libvirt's `VIR_DOMAIN_XML_*` flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct FormatFlags: u32 {
        /// Format the persistent (inactive) configuration: no runtime state such as the domain id.
        const INACTIVE = 1 << 0;
        /// Include secrets such as graphics passwords.
        const SECURE = 1 << 1;
    }
}
