//! Save images of domains through the backend: a domain's state written to an image ([`Driver::write_image`]),
//! an image opened and checked to restore one ([`open_image`]).
//!
//! Images are [`save_image`] files: the daemon's header and the domain XML, then the backend's stream.

use std::fs::File;
use std::path::Path;

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;

use super::Driver;
use crate::backend::AfterSave;
use crate::proto::{code, RpcError};
use crate::save_image::{self, AtomicFile, ImageHeader, PersistError};

/// Lifecycle event details (`VIR_DOMAIN_EVENT_*_*`).
pub(super) mod detail {
    pub const STOPPED_FAILED: i32 = 5;
}

/// State reasons (`VIR_DOMAIN_SHUTOFF_*`).
pub(super) mod reason {
    pub const SHUTOFF_FAILED: i32 = 6;
}

/// A save image that cannot be used, or an I/O failure on one.
pub(super) fn image_error(e: crate::Error) -> RpcError {
    RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
}

/// A failure to open or create an image file: libvirt's system error (`what` names the step) with the OS's
/// message; anything else is [`image_error`].
fn system_error(what: &str, e: crate::Error) -> RpcError {
    match e {
        crate::Error::Io(path, err) => {
            let msg = err.to_string();
            // The OS's message, as strerror words it (without Rust's " (os error N)").
            let msg = match msg.rfind(" (os error ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            RpcError::libxl(
                code::SYSTEM_ERROR,
                format!("{what} '{}': {msg}", path.display()),
            )
        }
        other => image_error(other),
    }
}

/// The XML an image records for a domain: its configuration with secrets, without runtime state.
pub(super) fn image_xml(def: &Domain) -> String {
    Domain {
        id: None,
        ..def.clone()
    }
    .to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE)
}

/// An image opened for reading, positioned at the backend's stream, with its domain.
pub(super) struct OpenImage {
    pub file: File,
    pub def: Domain,
}

/// Opens and checks an image.
pub(super) fn open_image(path: &Path) -> Result<OpenImage, RpcError> {
    let mut file =
        save_image::open(path).map_err(|e| system_error("Failed to open domain image file", e))?;
    let header = ImageHeader::read(&mut file, path).map_err(image_error)?;
    let mut def = Domain::parse(&header.xml).map_err(|e| {
        image_error(crate::Error::SaveImage(
            path.to_path_buf(),
            format!("its domain XML is invalid: {e}"),
        ))
    })?;
    def.id = None;
    Ok(OpenImage { file, def })
}

impl Driver {
    /// Writes a save image of domain `domid` to `path` atomically: the header, then the backend's stream; the
    /// domain stops or goes on as `after` says. After a failure the domain may be gone: ask the backend.
    pub(super) fn write_image(
        &self,
        path: &Path,
        header: &ImageHeader,
        domid: u32,
        after: AfterSave,
    ) -> Result<(), RpcError> {
        let mut f = AtomicFile::create(path)
            .map_err(|e| system_error("Failed to create domain save file", e))?;
        header.write(f.file(), path).map_err(image_error)?;
        self.backend.save(domid, f.file(), after)?;
        f.persist().map_err(|e| {
            let PersistError { error, file } = *e;
            if after == AfterSave::Stop {
                // The domain is gone and this file is all that is left of it: it stays.
                let kept = file.keep();
                RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!(
                        "operation failed: the domain's state was saved to {} but could not be moved to {}: {error}",
                        kept.display(),
                        path.display()
                    ),
                )
            } else {
                image_error(error)
            }
        })
    }
}
