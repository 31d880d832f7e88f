//! Saving a domain's memory to a file and restoring it: `virDomainSave*`, `virDomainRestore*`,
//! `virDomainSaveImage*` and managed save (`virDomainManagedSave*`, and starting a domain from its image).
//!
//! Images are [`save_image`] files: the daemon's header and the domain XML, then the backend's stream. The
//! semantics are libvirt's:
//!
//! - a saved domain is shut off with reason SAVED and lifecycle event STOPPED/SAVED; a transient one goes;
//! - a restored domain gets STARTED/RESTORED and runs with reason RESTORED, or stays paused (reason USER, event
//!   SUSPENDED) when asked to or when it was paused when saved; `VIR_DOMAIN_SAVE_RUNNING` / `_PAUSED` override
//!   what the image records;
//! - managed-save images are kept by the [`Store`] (`<save-dir>/<name>.save`), only for persistent domains; the
//!   next start restores the image and removes it once the domain runs, `--force-boot` discards it, undefine
//!   refuses while it exists unless asked to remove it (`VIR_DOMAIN_UNDEFINE_MANAGED_SAVE`).
//!
//! Every change asks [`Backend::check_save`] first, so a backend that cannot save fails before anything is
//! touched. The backend's save and restore move a whole guest's memory, so the driver's lock is not held across
//! them (it would stall every other call, keepalive answers of lookups included): the domain is marked busy
//! ([`Busy`]) and other state changes on it are refused meanwhile.
//!
//! [`Store`]: crate::store::Store
//! [`Backend::check_save`]: crate::backend::Backend::check_save

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;

use super::procs;
use super::{
    check_flags, finish, lifecycle, lock, no_domain_name, not_running, writable, xml_error, DomObj,
    Driver, STATE_PAUSED, STATE_RUNNING,
};
use crate::backend::AfterSave;
use crate::proto::{code, edomain, uuid_bytes, uuid_string, DomRef, RpcError};
use crate::save_image::{self, AtomicFile, ImageHeader, PersistError};
use crate::xdr::{Dec, Enc};

/// Whether `p` is a save, restore or managed-save procedure.
pub fn is_save_proc(p: i32) -> bool {
    use procs::*;
    matches!(
        p,
        DOMAIN_SAVE
            | DOMAIN_SAVE_FLAGS
            | DOMAIN_RESTORE
            | DOMAIN_RESTORE_FLAGS
            | DOMAIN_SAVE_IMAGE_GET_XML_DESC
            | DOMAIN_SAVE_IMAGE_DEFINE_XML
            | DOMAIN_MANAGED_SAVE
            | DOMAIN_HAS_MANAGED_SAVE_IMAGE
            | DOMAIN_MANAGED_SAVE_REMOVE
            | DOMAIN_MANAGED_SAVE_GET_XML_DESC
            | DOMAIN_MANAGED_SAVE_DEFINE_XML
    )
}

/// `virDomainSaveRestoreFlags`.
mod flags {
    pub const BYPASS_CACHE: u32 = 1 << 0;
    pub const RUNNING: u32 = 1 << 1;
    pub const PAUSED: u32 = 1 << 2;
}

/// `VIR_DOMAIN_SAVE_IMAGE_XML_SECURE`.
const XML_SECURE: u32 = 1;

/// Lifecycle event details (`VIR_DOMAIN_EVENT_*_*`).
pub(super) mod detail {
    pub const STARTED_RESTORED: i32 = 2;
    pub const SUSPENDED_PAUSED: i32 = 0;
    pub const SUSPENDED_RESTORED: i32 = 4;
    pub const STOPPED_SAVED: i32 = 4;
    pub const STOPPED_FAILED: i32 = 5;
}

/// State reasons (`VIR_DOMAIN_RUNNING_*`, `VIR_DOMAIN_PAUSED_*`, `VIR_DOMAIN_SHUTOFF_*`).
pub(super) mod reason {
    pub const RUNNING_RESTORED: i32 = 3;
    pub const PAUSED_USER: i32 = 1;
    pub const SHUTOFF_SAVED: i32 = 5;
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

fn exclusive_run_pause(f: u32) -> Result<(), RpcError> {
    if f & flags::RUNNING != 0 && f & flags::PAUSED != 0 {
        return Err(RpcError::libxl(
            code::INVALID_ARG,
            "invalid argument: Flags 'VIR_DOMAIN_SAVE_RUNNING' and 'VIR_DOMAIN_SAVE_PAUSED' are mutually exclusive",
        ));
    }
    Ok(())
}

/// Whether a domain restores paused: the caller's flags decide, else what the image records.
fn restore_paused(f: u32, image_paused: bool) -> bool {
    f & flags::PAUSED != 0 || (f & flags::RUNNING == 0 && image_paused)
}

/// A file named by the client: the daemon has no meaningful working directory (libvirt's client library sends
/// absolute paths).
fn client_path(path: &str) -> Result<PathBuf, RpcError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(RpcError::libxl(
            code::INVALID_ARG,
            format!("invalid argument: path '{path}' is not absolute"),
        ));
    }
    Ok(p)
}

/// The XML an image records for a domain: its configuration with secrets, without runtime state.
pub(super) fn image_xml(def: &Domain) -> String {
    Domain {
        id: None,
        ..def.clone()
    }
    .to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE)
}

/// Checks that `dst` can take over the saved state of `src`: the same guest with the same memory and vCPUs
/// (the part of libvirt's ABI stability check that matters to a restore).
fn check_abi(src: &Domain, dst: &Domain) -> Result<(), RpcError> {
    let mismatch = |m: String| {
        RpcError::libxl(
            code::CONFIG_UNSUPPORTED,
            format!("unsupported configuration: {m}"),
        )
    };
    if dst.name != src.name {
        return Err(mismatch(format!(
            "Target domain name '{}' does not match source '{}'",
            dst.name, src.name
        )));
    }
    let (du, su) = (
        dst.uuid.as_deref().and_then(uuid_bytes),
        src.uuid.as_deref().and_then(uuid_bytes),
    );
    if du != su {
        return Err(mismatch(format!(
            "Target domain uuid {} does not match source {}",
            dst.uuid.as_deref().unwrap_or("(none)"),
            src.uuid.as_deref().unwrap_or("(none)")
        )));
    }
    if dst.domain_type != src.domain_type {
        return Err(mismatch(format!(
            "Target domain virt type {} does not match source {}",
            dst.domain_type, src.domain_type
        )));
    }
    if dst.os.os_type != src.os.os_type {
        return Err(mismatch(format!(
            "Target domain OS type {} does not match source {}",
            dst.os.os_type.as_str(),
            src.os.os_type.as_str()
        )));
    }
    if dst.memory_kib != src.memory_kib {
        return Err(mismatch(format!(
            "Target domain max memory {} does not match source {}",
            dst.memory_kib, src.memory_kib
        )));
    }
    if dst.vcpu.count != src.vcpu.count {
        return Err(mismatch(format!(
            "Target domain vCPU max {} does not match source {}",
            dst.vcpu.count, src.vcpu.count
        )));
    }
    Ok(())
}

/// The definition a caller's XML (`dxml`) gives a saved domain, in place of `source`'s.
fn replacement(source: &Domain, dxml: &str) -> Result<Domain, RpcError> {
    let mut def = Domain::parse(dxml).map_err(|e| xml_error(&e, false))?;
    if def.uuid.is_none() {
        def.uuid.clone_from(&source.uuid);
    }
    def.id = None;
    check_abi(source, &def)?;
    Ok(def)
}

/// An image opened for reading, positioned at the backend's stream, with its header and domain.
pub(super) struct OpenImage {
    pub file: File,
    pub header: ImageHeader,
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
    Ok(OpenImage { file, header, def })
}

/// Whether two paths name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A domain marked busy with a long operation ([`DomObj::job`]); the mark goes when this is ended or dropped
/// (also when the operation panics).
pub(super) struct Busy<'a> {
    drv: &'a Driver,
    uuid: [u8; 16],
    armed: bool,
}

impl<'a> Busy<'a> {
    /// Marks `obj` busy with `job`; the caller holds the driver's lock.
    pub(super) fn start(drv: &'a Driver, obj: &mut DomObj, job: &'static str) -> Busy<'a> {
        obj.job = Some(job);
        Busy {
            drv,
            uuid: obj.uuid,
            armed: true,
        }
    }

    /// Ends the job under the caller's lock.
    pub(super) fn end(mut self, doms: &mut BTreeMap<String, DomObj>) {
        if let Some(d) = doms.values_mut().find(|d| d.uuid == self.uuid) {
            d.job = None;
        }
        self.armed = false;
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut doms = lock(&self.drv.doms);
            if let Some(d) = doms.values_mut().find(|d| d.uuid == self.uuid) {
                d.job = None;
            }
        }
    }
}

/// Where [`Driver::save_domain`] writes.
enum Target {
    /// A file the client names.
    File(PathBuf),
    /// The domain's managed-save image.
    Managed,
}

impl Driver {
    /// Executes one save, restore or managed-save procedure, encoding its reply into `e`.
    pub(super) fn save_call(
        &self,
        readonly: bool,
        proc_: i32,
        d: &mut Dec<'_>,
        e: &mut Enc,
    ) -> Result<(), RpcError> {
        use procs::*;
        let ro = writable(readonly);
        match proc_ {
            DOMAIN_SAVE | DOMAIN_SAVE_FLAGS => {
                let r = DomRef::decode(d)?;
                let to = d.str()?;
                let (dxml, f) = if proc_ == DOMAIN_SAVE_FLAGS {
                    (d.opt_str()?, d.u32()?)
                } else {
                    (None, 0)
                };
                finish(d)?;
                ro(if proc_ == DOMAIN_SAVE {
                    "virDomainSave"
                } else {
                    "virDomainSaveFlags"
                })?;
                let to = client_path(&to)?;
                self.save_domain(&r, Target::File(to), dxml.as_deref(), f)?;
            }
            DOMAIN_MANAGED_SAVE => {
                let r = DomRef::decode(d)?;
                let f = d.u32()?;
                finish(d)?;
                ro("virDomainManagedSave")?;
                self.save_domain(&r, Target::Managed, None, f)?;
            }
            DOMAIN_RESTORE | DOMAIN_RESTORE_FLAGS => {
                let from = d.str()?;
                let (dxml, f) = if proc_ == DOMAIN_RESTORE_FLAGS {
                    (d.opt_str()?, d.u32()?)
                } else {
                    (None, 0)
                };
                finish(d)?;
                ro(if proc_ == DOMAIN_RESTORE {
                    "virDomainRestore"
                } else {
                    "virDomainRestoreFlags"
                })?;
                let from = client_path(&from)?;
                self.restore(&from, dxml.as_deref(), f)?;
            }
            DOMAIN_SAVE_IMAGE_GET_XML_DESC => {
                let file = d.str()?;
                let f = d.u32()?;
                finish(d)?;
                check_flags(f, XML_SECURE)?;
                if f & XML_SECURE != 0 {
                    ro("virDomainSaveImageGetXMLDesc with secure flag")?;
                }
                let file = client_path(&file)?;
                e.str(&image_def_xml(&file, f)?);
            }
            DOMAIN_SAVE_IMAGE_DEFINE_XML => {
                let file = d.str()?;
                let dxml = d.str()?;
                let f = d.u32()?;
                finish(d)?;
                ro("virDomainSaveImageDefineXML")?;
                let file = client_path(&file)?;
                redefine_image(&file, Some(&dxml), f)?;
            }
            DOMAIN_HAS_MANAGED_SAVE_IMAGE => {
                let r = DomRef::decode(d)?;
                let f = d.u32()?;
                finish(d)?;
                check_flags(f, 0)?;
                let name = self.with_dom(&r, |x| Ok(x.def.name.clone()))?;
                e.i32(i32::from(self.store.has_managed_save(&name)));
            }
            DOMAIN_MANAGED_SAVE_REMOVE => {
                let r = DomRef::decode(d)?;
                let f = d.u32()?;
                finish(d)?;
                ro("virDomainManagedSaveRemove")?;
                check_flags(f, 0)?;
                let name = self.with_dom(&r, |x| {
                    x.idle()?;
                    Ok(x.def.name.clone())
                })?;
                self.store.delete_managed_save(&name).map_err(|er| {
                    RpcError::libxl(
                        code::OPERATION_FAILED,
                        format!("operation failed: Failed to remove managed save file: {er}"),
                    )
                })?;
            }
            DOMAIN_MANAGED_SAVE_GET_XML_DESC => {
                let r = DomRef::decode(d)?;
                let f = d.u32()?;
                finish(d)?;
                check_flags(f, XML_SECURE)?;
                if f & XML_SECURE != 0 {
                    ro("virDomainManagedSaveGetXMLDesc with secure flag")?;
                }
                let path = self.managed_image(&r, false)?;
                e.str(&image_def_xml(&path, f)?);
            }
            DOMAIN_MANAGED_SAVE_DEFINE_XML => {
                let r = DomRef::decode(d)?;
                let dxml = d.opt_str()?;
                let f = d.u32()?;
                finish(d)?;
                ro("virDomainManagedSaveDefineXML")?;
                check_flags(f, flags::RUNNING | flags::PAUSED)?;
                let path = self.managed_image(&r, true)?;
                redefine_image(&path, dxml.as_deref(), f)?;
            }
            _ => return Err(RpcError::unknown_procedure(proc_)),
        }
        Ok(())
    }

    /// The managed-save image of a domain, which must have one; `change` when it is about to be rewritten (the
    /// domain must not be busy).
    fn managed_image(&self, r: &DomRef, change: bool) -> Result<PathBuf, RpcError> {
        let name = self.with_dom(r, |x| {
            if change {
                x.idle()?;
            }
            Ok(x.def.name.clone())
        })?;
        if !self.store.has_managed_save(&name) {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: domain does not have managed save image",
            ));
        }
        Ok(self.store.managed_save_path(&name))
    }

    /// Writes a save image of domain `domid` to `path` atomically: the header, then the backend's stream; the
    /// domain stops or goes on as `after` says. After a failure the domain may be gone: ask the backend.
    pub(super) fn write_image(
        &self,
        path: &Path,
        header: &ImageHeader,
        domid: u32,
        after: AfterSave,
        frozen: &mut dyn FnMut() -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        let mut f = AtomicFile::create(path)
            .map_err(|e| system_error("Failed to create domain save file", e))?;
        header.write(f.file(), path).map_err(image_error)?;
        self.backend.save(domid, f.file(), after, frozen)?;
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

    /// `virDomainSaveFlags` and `virDomainManagedSave`: writes a running or paused domain's state and stops it.
    fn save_domain(
        &self,
        r: &DomRef,
        target: Target,
        dxml: Option<&str>,
        f: u32,
    ) -> Result<(), RpcError> {
        check_flags(f, flags::BYPASS_CACHE | flags::RUNNING | flags::PAUSED)?;
        exclusive_run_pause(f)?;
        let managed = matches!(target, Target::Managed);
        let (domid, header, path, busy) = {
            let mut doms = lock(&self.doms);
            let obj = Self::find_by_ref(&mut doms, r)?;
            let domid = obj.domid.ok_or_else(not_running)?;
            if managed && !obj.persistent {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    "Requested operation is not valid: cannot do managed save for transient domain",
                ));
            }
            obj.idle()?;
            self.backend.check_save()?;
            let def = match dxml {
                Some(x) => replacement(&obj.def, x)?,
                None => obj.def.clone(),
            };
            let header = ImageHeader {
                xml: image_xml(&def),
                paused: restore_paused(f, obj.state == STATE_PAUSED),
            };
            let path = match target {
                Target::File(p) => p,
                Target::Managed => self.store.managed_save_path(&obj.def.name),
            };
            (domid, header, path, Busy::start(self, obj, "save"))
        };
        let written = if managed {
            self.store.create_save_dir().map_err(image_error)
        } else {
            Ok(())
        }
        .and_then(|()| self.write_image(&path, &header, domid, AfterSave::Stop, &mut || Ok(())));
        // A failed save may have lost the domain (a guest that died while suspending, for one).
        let gone = written.is_err() && matches!(self.backend.info(domid), Ok(None));
        let mut doms = lock(&self.doms);
        busy.end(&mut doms);
        let Some(obj) = doms.values_mut().find(|x| x.uuid == r.uuid) else {
            return written;
        };
        let (reason, event_detail) = match (&written, gone) {
            (Ok(()), _) => (reason::SHUTOFF_SAVED, detail::STOPPED_SAVED),
            (Err(_), true) => (reason::SHUTOFF_FAILED, detail::STOPPED_FAILED),
            (Err(_), false) => return written,
        };
        obj.set_stopped(&self.store, reason);
        let dref = obj.dref();
        let name = obj.def.name.clone();
        self.forget_if_transient(&mut doms, &name);
        drop(doms);
        self.emit_lifecycle(&dref, lifecycle::STOPPED, event_detail);
        written
    }

    /// Refuses to restore a domain whose UUID or name belongs to a running or another domain (libvirt's
    /// `virDomainObjListAdd` checks).
    fn check_restorable(
        doms: &BTreeMap<String, DomObj>,
        name: &str,
        uuid: &[u8; 16],
    ) -> Result<(), RpcError> {
        if let Some(d) = doms.values().find(|d| d.uuid == *uuid) {
            if d.def.name != name {
                return Err(RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!(
                        "operation failed: domain '{}' is already defined with uuid {}",
                        d.def.name,
                        uuid_string(uuid)
                    ),
                ));
            }
            if d.active() {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    format!("Requested operation is not valid: domain '{name}' is already active"),
                ));
            }
            d.idle()?;
        } else if let Some(d) = doms.get(name) {
            return Err(RpcError::libxl(
                code::OPERATION_FAILED,
                format!(
                    "operation failed: domain '{name}' already exists with uuid {}",
                    uuid_string(&d.uuid)
                ),
            ));
        }
        Ok(())
    }

    /// Records a domain the backend restored as `domid`: an inactive persistent domain runs with the image's
    /// definition (its own applies again from the next boot if it differs); otherwise a transient domain appears.
    fn attach_restored(
        &self,
        doms: &mut BTreeMap<String, DomObj>,
        def: Domain,
        uuid: [u8; 16],
        domid: u32,
        paused: bool,
    ) -> DomRef {
        let live = Domain {
            id: Some(i64::from(domid)),
            ..def
        };
        let (state, why) = if paused {
            (STATE_PAUSED, reason::PAUSED_USER)
        } else {
            (STATE_RUNNING, reason::RUNNING_RESTORED)
        };
        let obj = match doms.get_mut(&live.name) {
            Some(obj) => {
                let as_config = Domain {
                    id: None,
                    ..live.clone()
                };
                obj.next_def = (obj.persistent && obj.def != as_config).then(|| obj.def.clone());
                obj.def = live;
                obj
            }
            None => doms.entry(live.name.clone()).or_insert(DomObj {
                def: live,
                next_def: None,
                uuid,
                persistent: false,
                domid: None,
                state,
                reason: why,
                snaps: Default::default(),
                job: None,
            }),
        };
        obj.domid = Some(domid);
        obj.state = state;
        obj.reason = why;
        let _ = self.store.save_status(&obj.def);
        obj.dref()
    }

    /// The events of a restore: STARTED/RESTORED, then SUSPENDED when it stays paused (`suspended` says why).
    fn emit_restored(&self, dref: &DomRef, paused: bool, suspended: i32) {
        self.emit_lifecycle(dref, lifecycle::STARTED, detail::STARTED_RESTORED);
        if paused {
            self.emit_lifecycle(dref, lifecycle::SUSPENDED, suspended);
        }
    }

    /// `virDomainRestoreFlags`: builds the domain an image holds and starts it from the saved state.
    fn restore(&self, path: &Path, dxml: Option<&str>, f: u32) -> Result<(), RpcError> {
        check_flags(f, flags::BYPASS_CACHE | flags::RUNNING | flags::PAUSED)?;
        exclusive_run_pause(f)?;
        self.backend.check_save()?;
        let OpenImage {
            mut file,
            header,
            def,
        } = open_image(path)?;
        let def = match dxml {
            Some(x) => replacement(&def, x)?,
            None => def,
        };
        if def.domain_type != "xen" {
            return Err(RpcError::new(
                code::CONFIG_UNSUPPORTED,
                edomain::LIBXL,
                format!(
                    "unsupported configuration: domain type '{}' is not supported by the Xen driver",
                    def.domain_type
                ),
            ));
        }
        let uuid = def.uuid.as_deref().and_then(uuid_bytes).ok_or_else(|| {
            image_error(crate::Error::SaveImage(
                path.to_path_buf(),
                "its domain XML has no UUID".into(),
            ))
        })?;
        let paused = restore_paused(f, header.paused);
        let busy = {
            let mut doms = lock(&self.doms);
            Self::check_restorable(&doms, &def.name, &uuid)?;
            doms.values_mut()
                .find(|d| d.uuid == uuid)
                .map(|obj| Busy::start(self, obj, "restore"))
        };
        // Restoring a domain's own managed-save image by its path consumes it as a start would: a stale image
        // must not be restored again by the next start.
        let managed = same_file(path, &self.store.managed_save_path(&def.name));
        let domid = self.backend.restore(&def, &mut file, paused)?;
        let mut doms = lock(&self.doms);
        if let Some(b) = busy {
            b.end(&mut doms);
        }
        // A domain with this name or UUID may have appeared meanwhile.
        if let Err(e) = Self::check_restorable(&doms, &def.name, &uuid) {
            drop(doms);
            let _ = self.backend.destroy(domid);
            return Err(e);
        }
        let name = def.name.clone();
        let dref = self.attach_restored(&mut doms, def, uuid, domid, paused);
        if managed && doms.get(&name).is_some_and(|d| d.persistent) {
            if let Err(er) = self.store.delete_managed_save(&name) {
                eprintln!(
                    "virtxend: domain '{name}': failed to remove the restored managed state: {er}"
                );
            }
        }
        drop(doms);
        let why = if f & flags::PAUSED != 0 {
            detail::SUSPENDED_PAUSED
        } else {
            detail::SUSPENDED_RESTORED
        };
        self.emit_restored(&dref, paused, why);
        Ok(())
    }

    /// Starts an inactive persistent domain from its managed-save image (`virDomainCreate` when one exists);
    /// the image is removed once the domain runs, and kept when the restore fails.
    pub(super) fn start_managed_save(&self, name: &str, paused: bool) -> Result<DomRef, RpcError> {
        self.backend.check_save()?;
        let path = self.store.managed_save_path(name);
        let OpenImage {
            mut file,
            header,
            def,
        } = open_image(&path).map_err(|e| RpcError {
            message: format!("{}; start with --force-boot to discard it", e.message),
            ..e
        })?;
        let (uuid, busy) = {
            let mut doms = lock(&self.doms);
            let obj = doms.get_mut(name).ok_or_else(|| no_domain_name(name))?;
            if obj.active() {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    "Requested operation is not valid: Domain is already running",
                ));
            }
            obj.idle()?;
            if def.name != obj.def.name
                || def.uuid.as_deref().and_then(uuid_bytes) != Some(obj.uuid)
            {
                return Err(RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!(
                        "operation failed: cannot restore domain '{name}' uuid {} from a file which belongs to domain '{}' uuid {}",
                        uuid_string(&obj.uuid),
                        def.name,
                        def.uuid.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
            (obj.uuid, Busy::start(self, obj, "restore"))
        };
        let run_paused = paused || header.paused;
        let domid = self.backend.restore(&def, &mut file, run_paused)?;
        if let Err(e) = self.store.delete_managed_save(name) {
            eprintln!("virtxend: domain '{name}': failed to remove the managed state: {e}");
        }
        let mut doms = lock(&self.doms);
        busy.end(&mut doms);
        let dref = self.attach_restored(&mut doms, def, uuid, domid, run_paused);
        drop(doms);
        let why = if paused {
            detail::SUSPENDED_PAUSED
        } else {
            detail::SUSPENDED_RESTORED
        };
        self.emit_restored(&dref, run_paused, why);
        Ok(dref)
    }
}

/// `virDomainSaveImageGetXMLDesc`: the domain XML an image restores with.
fn image_def_xml(path: &Path, f: u32) -> Result<String, RpcError> {
    let def = open_image(path)?.def;
    let mut fmt = FormatFlags::INACTIVE;
    if f & XML_SECURE != 0 {
        fmt |= FormatFlags::SECURE;
    }
    Ok(def.to_xml(fmt))
}

/// `virDomainSaveImageDefineXML`: replaces the XML an image restores with (and, with `VIR_DOMAIN_SAVE_RUNNING`
/// or `_PAUSED`, the state it restores to). The image is rewritten whole and renamed over the old one.
fn redefine_image(path: &Path, dxml: Option<&str>, f: u32) -> Result<(), RpcError> {
    check_flags(f, flags::RUNNING | flags::PAUSED)?;
    exclusive_run_pause(f)?;
    let OpenImage {
        file: mut old,
        header,
        def,
    } = open_image(path)?;
    let def = match dxml {
        Some(x) => replacement(&def, x)?,
        None => def,
    };
    let header = ImageHeader {
        xml: image_xml(&def),
        paused: restore_paused(f, header.paused),
    };
    let mut new = AtomicFile::create(path)
        .map_err(|e| system_error("Failed to create domain save file", e))?;
    header.write(new.file(), path).map_err(image_error)?;
    std::io::copy(&mut old, new.file())
        .map_err(|e| image_error(crate::Error::Io(path.to_path_buf(), e)))?;
    new.persist().map_err(|e| image_error(e.error))
}
