//! The storage driver's one error type, mapped onto libvirt's error codes and domains.

use std::fmt;

/// libvirt's error domain for everything the storage driver reports (`VIR_FROM_STORAGE`).
pub const VIR_FROM_STORAGE: i32 = 18;

/// libvirt error codes (`virErrorNumber` in `virterror.h`) that this crate reports.
pub mod code {
    /// `VIR_ERR_INTERNAL_ERROR`.
    pub const INTERNAL_ERROR: i32 = 1;
    /// `VIR_ERR_NO_SUPPORT`.
    pub const NO_SUPPORT: i32 = 3;
    /// `VIR_ERR_INVALID_ARG`.
    pub const INVALID_ARG: i32 = 8;
    /// `VIR_ERR_OPERATION_FAILED`.
    pub const OPERATION_FAILED: i32 = 9;
    /// `VIR_ERR_XML_ERROR`.
    pub const XML_ERROR: i32 = 27;
    /// `VIR_ERR_SYSTEM_ERROR`.
    pub const SYSTEM_ERROR: i32 = 38;
    /// `VIR_ERR_NO_STORAGE_POOL`.
    pub const NO_STORAGE_POOL: i32 = 49;
    /// `VIR_ERR_NO_STORAGE_VOL`.
    pub const NO_STORAGE_VOL: i32 = 50;
    /// `VIR_ERR_OPERATION_INVALID`.
    pub const OPERATION_INVALID: i32 = 55;
    /// `VIR_ERR_STORAGE_PROBE_FAILED`.
    pub const STORAGE_PROBE_FAILED: i32 = 75;
    /// `VIR_ERR_STORAGE_POOL_BUILT`.
    pub const STORAGE_POOL_BUILT: i32 = 76;
    /// `VIR_ERR_STORAGE_VOL_EXIST`.
    pub const STORAGE_VOL_EXIST: i32 = 90;
}

/// Errors of the storage driver. Each maps to a libvirt error code ([`Error::code`]) in the STORAGE domain
/// ([`Error::domain`]); the `Display` text is libvirt's message for that code, which virsh shows as
/// `error: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No pool matches (`VIR_ERR_NO_STORAGE_POOL`).
    #[error("Storage pool not found: {0}")]
    NoPool(String),
    /// No volume matches (`VIR_ERR_NO_STORAGE_VOL`).
    #[error("Storage volume not found: {0}")]
    NoVolume(String),
    /// The object is not in a state that allows the operation (`VIR_ERR_OPERATION_INVALID`).
    #[error("Requested operation is not valid: {0}")]
    OperationInvalid(String),
    /// An argument is out of range or malformed (`VIR_ERR_INVALID_ARG`).
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// The operation was refused or could not complete (`VIR_ERR_OPERATION_FAILED`).
    #[error("operation failed: {0}")]
    OperationFailed(String),
    /// The operation or flag is not supported (`VIR_ERR_NO_SUPPORT`).
    #[error("this function is not supported by the connection driver: {0}")]
    NoSupport(String),
    /// A volume with that name exists already (`VIR_ERR_STORAGE_VOL_EXIST`).
    #[error("storage volume '{0}' exists already")]
    VolumeExists(String),
    /// The pool's device already holds a file system (`VIR_ERR_STORAGE_POOL_BUILT`).
    #[error("Storage pool already built: {0}")]
    PoolBuilt(String),
    /// Probing the pool's device failed (`VIR_ERR_STORAGE_PROBE_FAILED`).
    #[error("Storage pool probe failed: {0}")]
    ProbeFailed(String),
    /// A stored or supplied XML document is malformed (`VIR_ERR_XML_ERROR`).
    #[error("XML error: {0}")]
    Xml(String),
    /// A helper program (qemu-img, mkfs, mount) failed (`VIR_ERR_INTERNAL_ERROR`).
    #[error("internal error: {0}")]
    Internal(String),
    /// A system call failed (`VIR_ERR_SYSTEM_ERROR`); libvirt appends the errno text, see
    /// [`Error::libvirt_message`].
    #[error("{context}")]
    System {
        /// What was being done, in libvirt's words.
        context: String,
        /// The failing call's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The libvirt error code (`virErrorNumber`).
    pub fn code(&self) -> i32 {
        match self {
            Error::NoPool(_) => code::NO_STORAGE_POOL,
            Error::NoVolume(_) => code::NO_STORAGE_VOL,
            Error::OperationInvalid(_) => code::OPERATION_INVALID,
            Error::InvalidArg(_) => code::INVALID_ARG,
            Error::OperationFailed(_) => code::OPERATION_FAILED,
            Error::NoSupport(_) => code::NO_SUPPORT,
            Error::VolumeExists(_) => code::STORAGE_VOL_EXIST,
            Error::PoolBuilt(_) => code::STORAGE_POOL_BUILT,
            Error::ProbeFailed(_) => code::STORAGE_PROBE_FAILED,
            Error::Xml(_) => code::XML_ERROR,
            Error::Internal(_) => code::INTERNAL_ERROR,
            Error::System { .. } => code::SYSTEM_ERROR,
        }
    }

    /// The libvirt error domain (`virErrorDomain`): always `VIR_FROM_STORAGE` (18).
    pub fn domain(&self) -> i32 {
        VIR_FROM_STORAGE
    }

    /// The complete message the daemon sends in a `remote_error`: the `Display` text, and for system errors
    /// `": "` and the errno text, as libvirt's `virReportSystemError` does.
    pub fn libvirt_message(&self) -> String {
        match self {
            Error::System { context, source } => {
                let text = match source.raw_os_error() {
                    Some(errno) => strerror(errno),
                    None => source.to_string(),
                };
                format!("{context}: {text}")
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn system(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::System {
            context: context.to_string(),
            source,
        }
    }
}

/// The C library's text for an errno value, without Rust's " (os error N)" suffix.
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
