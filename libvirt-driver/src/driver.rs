//! The libxl-equivalent driver: the daemon's domain state and every REMOTE procedure it implements.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use domain_xml::domain::Domain;
use domain_xml::FormatFlags;

use crate::backend::{Backend, BackendEvent};
use crate::host;
use crate::proto::{code, edomain, uuid_bytes, DomRef, RpcError};
use crate::store::Store;
use crate::xdr::{Dec, Enc};

mod save;
pub mod snapshot;

/// Procedure numbers of the REMOTE program that the driver implements.
#[allow(missing_docs)]
pub mod procs {
    pub const CONNECT_OPEN: i32 = 1;
    pub const CONNECT_CLOSE: i32 = 2;
    pub const GET_TYPE: i32 = 3;
    pub const GET_VERSION: i32 = 4;
    pub const GET_MAX_VCPUS: i32 = 5;
    pub const NODE_GET_INFO: i32 = 6;
    pub const GET_CAPABILITIES: i32 = 7;
    pub const DOMAIN_ATTACH_DEVICE: i32 = 8;
    pub const DOMAIN_CREATE: i32 = 9;
    pub const DOMAIN_CREATE_XML: i32 = 10;
    pub const DOMAIN_DEFINE_XML: i32 = 11;
    pub const DOMAIN_DESTROY: i32 = 12;
    pub const DOMAIN_DETACH_DEVICE: i32 = 13;
    pub const DOMAIN_GET_XML_DESC: i32 = 14;
    pub const DOMAIN_GET_AUTOSTART: i32 = 15;
    pub const DOMAIN_GET_INFO: i32 = 16;
    pub const DOMAIN_GET_MAX_MEMORY: i32 = 17;
    pub const DOMAIN_GET_MAX_VCPUS: i32 = 18;
    pub const DOMAIN_GET_OS_TYPE: i32 = 19;
    pub const LIST_DEFINED_DOMAINS: i32 = 21;
    pub const DOMAIN_LOOKUP_BY_ID: i32 = 22;
    pub const DOMAIN_LOOKUP_BY_NAME: i32 = 23;
    pub const DOMAIN_LOOKUP_BY_UUID: i32 = 24;
    pub const NUM_OF_DEFINED_DOMAINS: i32 = 25;
    pub const DOMAIN_REBOOT: i32 = 27;
    pub const DOMAIN_RESUME: i32 = 28;
    pub const DOMAIN_SET_AUTOSTART: i32 = 29;
    pub const DOMAIN_SET_MAX_MEMORY: i32 = 30;
    pub const DOMAIN_SET_MEMORY: i32 = 31;
    pub const DOMAIN_SET_VCPUS: i32 = 32;
    pub const DOMAIN_SHUTDOWN: i32 = 33;
    pub const DOMAIN_SUSPEND: i32 = 34;
    pub const DOMAIN_UNDEFINE: i32 = 35;
    pub const LIST_DOMAINS: i32 = 37;
    pub const NUM_OF_DOMAINS: i32 = 51;
    pub const DOMAIN_RESTORE: i32 = 54;
    pub const DOMAIN_SAVE: i32 = 55;
    pub const GET_HOSTNAME: i32 = 59;
    pub const SUPPORTS_FEATURE: i32 = 60;
    pub const AUTH_LIST: i32 = 66;
    pub const AUTH_POLKIT: i32 = 70;
    pub const NODE_GET_CELLS_FREE_MEMORY: i32 = 101;
    pub const NODE_GET_FREE_MEMORY: i32 = 102;
    pub const GET_URI: i32 = 110;
    pub const DOMAIN_XML_FROM_NATIVE: i32 = 135;
    pub const DOMAIN_XML_TO_NATIVE: i32 = 136;
    pub const IS_SECURE: i32 = 149;
    pub const DOMAIN_IS_ACTIVE: i32 = 150;
    pub const DOMAIN_IS_PERSISTENT: i32 = 151;
    pub const GET_LIB_VERSION: i32 = 157;
    pub const DOMAIN_MANAGED_SAVE: i32 = 182;
    pub const DOMAIN_HAS_MANAGED_SAVE_IMAGE: i32 = 183;
    pub const DOMAIN_MANAGED_SAVE_REMOVE: i32 = 184;
    pub const DOMAIN_SAVE_FLAGS: i32 = 232;
    pub const DOMAIN_RESTORE_FLAGS: i32 = 233;
    pub const DOMAIN_SAVE_IMAGE_GET_XML_DESC: i32 = 235;
    pub const DOMAIN_SAVE_IMAGE_DEFINE_XML: i32 = 236;
    pub const DOMAIN_MANAGED_SAVE_GET_XML_DESC: i32 = 388;
    pub const DOMAIN_MANAGED_SAVE_DEFINE_XML: i32 = 389;
    pub const DOMAIN_CREATE_WITH_FLAGS: i32 = 196;
    pub const DOMAIN_ATTACH_DEVICE_FLAGS: i32 = 160;
    pub const DOMAIN_DETACH_DEVICE_FLAGS: i32 = 161;
    pub const DOMAIN_UPDATE_DEVICE_FLAGS: i32 = 174;
    pub const DOMAIN_SET_VCPUS_FLAGS: i32 = 199;
    pub const DOMAIN_GET_VCPUS_FLAGS: i32 = 200;
    pub const DOMAIN_OPEN_CONSOLE: i32 = 201;
    pub const DOMAIN_IS_UPDATED: i32 = 202;
    pub const GET_SYSINFO: i32 = 203;
    pub const DOMAIN_SET_MEMORY_FLAGS: i32 = 204;
    pub const DOMAIN_GET_STATE: i32 = 212;
    pub const DOMAIN_UNDEFINE_FLAGS: i32 = 231;
    pub const DOMAIN_DESTROY_FLAGS: i32 = 234;
    pub const DOMAIN_RESET: i32 = 245;
    pub const DOMAIN_SHUTDOWN_FLAGS: i32 = 258;
    pub const DOMAIN_SET_METADATA: i32 = 264;
    pub const DOMAIN_GET_METADATA: i32 = 265;
    pub const CONNECT_LIST_ALL_DOMAINS: i32 = 273;
    pub const DOMAIN_EVENT_CALLBACK_REGISTER_ANY: i32 = 316;
    pub const DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: i32 = 317;
    pub const DOMAIN_EVENT_CALLBACK_LIFECYCLE: i32 = 318;
    pub const DOMAIN_EVENT_CALLBACK_METADATA_CHANGE: i32 = 379;
    pub const GET_DOMAIN_CAPABILITIES: i32 = 342;
    pub const GET_ALL_DOMAIN_STATS: i32 = 344;
    pub const DOMAIN_DEFINE_XML_FLAGS: i32 = 350;
    pub const DOMAIN_RENAME: i32 = 358;
    pub const REGISTER_CLOSE_CALLBACK: i32 = 360;
    pub const UNREGISTER_CLOSE_CALLBACK: i32 = 361;
}

/// Lifecycle event numbers (`VIR_DOMAIN_EVENT_*`).
pub mod lifecycle {
    /// Defined (detail 0 added, 1 updated).
    pub const DEFINED: i32 = 0;
    /// Undefined (detail 0 removed).
    pub const UNDEFINED: i32 = 1;
    /// Started.
    pub const STARTED: i32 = 2;
    /// Suspended.
    pub const SUSPENDED: i32 = 3;
    /// Resumed.
    pub const RESUMED: i32 = 4;
    /// Stopped.
    pub const STOPPED: i32 = 5;
}

/// Domain states.
const STATE_RUNNING: i32 = 1;
const STATE_PAUSED: i32 = 3;
const STATE_SHUTOFF: i32 = 5;

/// Event ids a client may register (every id libvirt 9.0 defines: 0..=25).
const EVENT_ID_LAST: i32 = 25;

/// Where an event for a connection is delivered: called with the encoded MESSAGE payload and procedure.
pub type EventOut = Arc<dyn Fn(i32, Vec<u8>) + Send + Sync>;

struct DomObj {
    /// The live definition while running, else the persistent one.
    def: Domain,
    /// A persistent definition saved while the domain runs; it replaces `def` when the domain stops.
    next_def: Option<Domain>,
    uuid: [u8; 16],
    persistent: bool,
    domid: Option<u32>,
    state: i32,
    reason: i32,
    /// The domain's snapshots.
    snaps: snapshot::Snapshots,
    /// A long operation (save, restore) running on the domain without the driver's lock: other state changes
    /// are refused until it ends, and the backend's events for the domain are left to it.
    job: Option<&'static str>,
}

impl DomObj {
    fn dref(&self) -> DomRef {
        DomRef {
            name: self.def.name.clone(),
            uuid: self.uuid,
            id: self.domid.map_or(-1, |d| d as i32),
        }
    }
    fn active(&self) -> bool {
        self.domid.is_some()
    }
    /// Records that the domain no longer runs, for `reason` (`VIR_DOMAIN_SHUTOFF_*`); a persistent definition
    /// saved while it ran takes effect.
    fn set_stopped(&mut self, store: &Store, reason: i32) {
        store.delete_status(&self.def.name);
        self.domid = None;
        self.def.id = None;
        if let Some(next) = self.next_def.take() {
            self.def = next;
        }
        self.state = STATE_SHUTOFF;
        self.reason = reason;
    }
    /// Refuses a state change while a long operation runs on the domain.
    fn idle(&self) -> Result<(), RpcError> {
        match self.job {
            None => Ok(()),
            Some(job) => Err(RpcError::libxl(
                code::OPERATION_INVALID,
                format!(
                    "Requested operation is not valid: domain '{}' is busy: {job} in progress",
                    self.def.name
                ),
            )),
        }
    }
}

struct EventReg {
    callback_id: i32,
    conn: u64,
    event_id: i32,
    dom: Option<[u8; 16]>,
    out: EventOut,
}

/// Per-connection state the driver needs.
#[derive(Debug, Default, Clone)]
pub struct ConnState {
    /// CONNECT_OPEN succeeded.
    pub opened: bool,
    /// Read-only connection (ro socket or the READONLY open flag).
    pub readonly: bool,
    /// A close callback is registered.
    pub close_callback: bool,
    /// The client must authenticate with polkit before anything but the auth calls (non-root peer on a
    /// polkit-protected socket); cleared once it has.
    pub needs_polkit: bool,
    /// The peer's process id and user id (SO_PEERCRED).
    pub peer: Option<(u32, u32)>,
}

/// The driver: domain objects, event registrations, store and backend.
pub struct Driver {
    store: Store,
    backend: Arc<dyn Backend>,
    doms: Mutex<BTreeMap<String, DomObj>>,
    events: Mutex<Vec<EventReg>>,
    next_callback: AtomicI32,
    /// Problems found while loading state, for the daemon log.
    pub load_warnings: Vec<String>,
    storage: Option<crate::storage_rpc::StorageRpc>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn no_domain_name(name: &str) -> RpcError {
    RpcError::libxl(
        code::NO_DOMAIN,
        format!("Domain not found: no domain with matching name '{name}'"),
    )
}

fn not_running() -> RpcError {
    RpcError::libxl(
        code::OPERATION_INVALID,
        "Requested operation is not valid: domain is not running",
    )
}

fn read_only(api: &str) -> RpcError {
    RpcError::new(
        6,
        edomain::LIBXL,
        format!("operation forbidden: read only access prevents {api}"),
    )
}

/// The guard of state-changing calls on a connection: `Err(read_only(api))` when it is read-only.
fn writable(readonly: bool) -> impl Fn(&str) -> Result<(), RpcError> {
    move |api| {
        if readonly {
            Err(read_only(api))
        } else {
            Ok(())
        }
    }
}

fn check_flags(flags: u32, allowed: u32) -> Result<(), RpcError> {
    let bad = flags & !allowed;
    if bad != 0 {
        return Err(RpcError::libxl(
            code::INVALID_ARG,
            format!("invalid argument: unsupported flags (0x{bad:x}) in function"),
        ));
    }
    Ok(())
}

fn xml_error(e: &domain_xml::Error, validate: bool) -> RpcError {
    if validate {
        RpcError::new(
            code::XML_INVALID_SCHEMA,
            edomain::DOMAIN,
            format!("XML document failed to validate against schema: {e}"),
        )
    } else {
        RpcError::new(code::XML_ERROR, edomain::DOMAIN, format!("XML error: {e}"))
    }
}

/// libvirt's domain schema, as installed by Debian's libvirt packages.
pub const DOMAIN_SCHEMA: &str = "/usr/share/libvirt/schemas/domain.rng";

/// `VIR_DOMAIN_DEFINE_VALIDATE`: checks the document against libvirt's RelaxNG schema (with xmllint, libxml2's
/// validator, which libvirt itself uses).
fn validate_schema(xml: &str) -> Result<(), RpcError> {
    validate_against(xml, DOMAIN_SCHEMA)
}

/// Validates `xml` against the RelaxNG schema at `schema` with xmllint.
fn validate_against(xml: &str, schema: &str) -> Result<(), RpcError> {
    use std::io::Write as _;
    let internal = |m: String| {
        RpcError::new(
            code::INTERNAL_ERROR,
            edomain::DOMAIN,
            format!("internal error: {m}"),
        )
    };
    let mut child = std::process::Command::new("xmllint")
        .args(["--noout", "--relaxng", schema, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            internal(format!(
                "cannot run xmllint to validate against {schema}: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means xmllint exited early; its status and messages tell why.
        let _ = stdin.write_all(xml.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| internal(format!("xmllint failed: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let detail: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("fails to validate") && !l.trim().is_empty())
        .map(|l| l.strip_prefix("-:").unwrap_or(l).to_string())
        .collect();
    Err(RpcError::new(
        code::XML_INVALID_SCHEMA,
        edomain::DOMAIN,
        format!(
            "XML document failed to validate against schema: Unable to validate doc against {schema}\n{}",
            detail.join("\n")
        ),
    ))
}

fn finish(d: &Dec<'_>) -> Result<(), RpcError> {
    d.finish().map_err(RpcError::from)
}

impl Driver {
    /// Opens the store, loads persistent definitions and running-domain status, and attaches the backend.
    pub fn new(store: Store, backend: Arc<dyn Backend>) -> Arc<Driver> {
        Self::with_storage(store, backend, None)
    }

    /// As [`Driver::new`], also serving the storage procedures through `storage`.
    pub fn with_storage(
        store: Store,
        backend: Arc<dyn Backend>,
        storage: Option<crate::storage_rpc::StorageRpc>,
    ) -> Arc<Driver> {
        let mut doms = BTreeMap::new();
        let (configs, mut warnings) = store.load_configs();
        for def in configs {
            let uuid = def.uuid.as_deref().and_then(uuid_bytes).unwrap_or([0; 16]);
            doms.insert(
                def.name.clone(),
                DomObj {
                    def,
                    next_def: None,
                    uuid,
                    persistent: true,
                    domid: None,
                    state: STATE_SHUTOFF,
                    reason: 0,
                    snaps: Default::default(),
                    job: None,
                },
            );
        }
        // Domains that were running when the daemon stopped: keep those the backend still knows.
        let (status, w2) = store.load_status();
        warnings.extend(w2);
        for def in status {
            let domid = def.id.and_then(|i| u32::try_from(i).ok());
            let alive = match domid {
                Some(id) => backend.info(id).ok().flatten(),
                None => None,
            };
            match (domid, alive) {
                (Some(id), Some(info)) => {
                    let uuid = def.uuid.as_deref().and_then(uuid_bytes).unwrap_or([0; 16]);
                    // The persistent definition, if it differs from the live one, applies from the next boot.
                    let config = doms.remove(&def.name).map(|o| o.def);
                    let persistent = config.is_some();
                    let live_as_config = Domain {
                        id: None,
                        ..def.clone()
                    };
                    let next_def = config.filter(|c| *c != live_as_config);
                    doms.insert(
                        def.name.clone(),
                        DomObj {
                            def,
                            next_def,
                            uuid,
                            persistent,
                            domid: Some(id),
                            state: info.state,
                            reason: info.reason,
                            snaps: Default::default(),
                            job: None,
                        },
                    );
                }
                _ => {
                    warnings.push(format!(
                        "domain '{}' is no longer running; status removed",
                        def.name
                    ));
                    store.delete_status(&def.name);
                }
            }
        }
        Self::load_snapshots(&store, &mut doms, &mut warnings);
        let drv = Arc::new(Driver {
            store,
            backend,
            doms: Mutex::new(doms),
            events: Mutex::new(Vec::new()),
            next_callback: AtomicI32::new(1),
            load_warnings: warnings,
            storage,
        });
        let weak = Arc::downgrade(&drv);
        drv.backend.set_event_sink(Box::new(move |ev| {
            if let Some(d) = weak.upgrade() {
                d.backend_event(ev);
            }
        }));
        drv
    }

    /// Starts every autostart domain that is not running; returns the failures (for the log).
    pub fn autostart(&self) -> Vec<String> {
        let names: Vec<String> = lock(&self.doms)
            .values()
            .filter(|d| !d.active() && d.persistent && self.store.autostart(&d.def.name))
            .map(|d| d.def.name.clone())
            .collect();
        let mut errs = Vec::new();
        for n in names {
            if let Err(e) = self.start(&n, false, false) {
                errs.push(format!("failed to autostart domain '{n}': {}", e.message));
            }
        }
        errs
    }

    fn backend_event(&self, ev: BackendEvent) {
        let mut doms = lock(&self.doms);
        let Some(name) = doms
            .values()
            .find(|d| d.domid == Some(ev.domid))
            .map(|d| d.def.name.clone())
        else {
            return;
        };
        let Some(obj) = doms.get_mut(&name) else {
            return;
        };
        if obj.job.is_some() {
            // A save stops the domain itself and records why; a domain that dies meanwhile is found by it.
            return;
        }
        match ev.event {
            // VIR_DOMAIN_SHUTOFF_* reasons are the STOPPED event details shifted by one (UNKNOWN is 0).
            lifecycle::STOPPED => obj.set_stopped(&self.store, ev.detail + 1),
            lifecycle::SUSPENDED => obj.state = STATE_PAUSED,
            lifecycle::RESUMED | lifecycle::STARTED => obj.state = STATE_RUNNING,
            _ => {}
        }
        let dref = obj.dref();
        self.forget_if_transient(&mut doms, &name);
        drop(doms);
        self.emit_lifecycle(&dref, ev.event, ev.detail);
    }

    /// Forgets a transient domain that no longer runs, and its snapshots with it, as libvirt does.
    fn forget_if_transient(&self, doms: &mut BTreeMap<String, DomObj>, name: &str) {
        if doms.get(name).is_some_and(|d| !d.persistent && !d.active()) {
            if let Some(d) = doms.remove(name) {
                if !d.snaps.is_empty() {
                    let _ = self.store.delete_snapshots(name);
                }
            }
        }
    }

    /// Sends a lifecycle event to every matching registration.
    pub fn emit_lifecycle(&self, dom: &DomRef, event: i32, detail: i32) {
        let regs = lock(&self.events);
        for r in regs
            .iter()
            .filter(|r| r.event_id == 0 && r.dom.is_none_or(|u| u == dom.uuid))
        {
            let mut e = Enc::new();
            e.i32(r.callback_id);
            dom.encode(&mut e);
            e.i32(event).i32(detail);
            (r.out)(procs::DOMAIN_EVENT_CALLBACK_LIFECYCLE, e.buf);
        }
    }

    /// Sends a metadata-change event (event id 23) to every matching registration.
    pub fn emit_metadata_change(&self, dom: &DomRef, ty: i32, nsuri: Option<&str>) {
        let regs = lock(&self.events);
        for r in regs
            .iter()
            .filter(|r| r.event_id == 23 && r.dom.is_none_or(|u| u == dom.uuid))
        {
            let mut e = Enc::new();
            e.i32(r.callback_id);
            dom.encode(&mut e);
            e.i32(ty).opt_str(nsuri);
            (r.out)(procs::DOMAIN_EVENT_CALLBACK_METADATA_CHANGE, e.buf);
        }
    }

    /// Drops every event registration of a connection (on disconnect).
    pub fn drop_connection(&self, conn: u64) {
        lock(&self.events).retain(|r| r.conn != conn);
        if let Some(s) = &self.storage {
            s.drop_connection(conn);
        }
    }

    /// The storage side, when the daemon serves storage.
    pub fn storage(&self) -> Option<&crate::storage_rpc::StorageRpc> {
        self.storage.as_ref()
    }

    fn find_by_ref<'a>(
        doms: &'a mut BTreeMap<String, DomObj>,
        r: &DomRef,
    ) -> Result<&'a mut DomObj, RpcError> {
        // libvirt's libxl driver looks domains up by UUID.
        let found = doms.values_mut().find(|d| d.uuid == r.uuid);
        found.ok_or_else(|| {
            RpcError::libxl(
                code::NO_DOMAIN,
                format!(
                    "Domain not found: no domain with matching uuid '{}' ({})",
                    crate::proto::uuid_string(&r.uuid),
                    r.name
                ),
            )
        })
    }

    fn with_dom<T>(
        &self,
        r: &DomRef,
        f: impl FnOnce(&mut DomObj) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut doms = lock(&self.doms);
        let d = Self::find_by_ref(&mut doms, r)?;
        f(d)
    }

    /// Defines (or redefines) a persistent domain.
    pub fn define(&self, xml: &str, flags: u32) -> Result<DomRef, RpcError> {
        check_flags(flags, 1)?;
        let validate = flags & 1 != 0;
        if validate {
            validate_schema(xml)?;
        }
        let mut def = Domain::parse(xml).map_err(|e| xml_error(&e, validate))?;
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
        if def.uuid.is_none() {
            def.uuid = Some(uuid::Uuid::new_v4().to_string());
        }
        def.id = None;
        let uuid = def.uuid.as_deref().and_then(uuid_bytes).ok_or_else(|| {
            RpcError::new(
                code::XML_ERROR,
                edomain::DOMAIN,
                "XML error: malformed uuid element",
            )
        })?;
        let mut doms = lock(&self.doms);
        if let Some(other) = doms
            .values()
            .find(|d| d.uuid == uuid && d.def.name != def.name)
        {
            return Err(RpcError::libxl(
                code::OPERATION_FAILED,
                format!(
                    "operation failed: domain '{}' is already defined with uuid {}",
                    other.def.name,
                    crate::proto::uuid_string(&uuid)
                ),
            ));
        }
        let updated = match doms.get(&def.name) {
            Some(o) if o.uuid != uuid => {
                return Err(RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!(
                        "operation failed: domain '{}' already exists with uuid {}",
                        def.name,
                        crate::proto::uuid_string(&o.uuid)
                    ),
                ))
            }
            Some(_) => true,
            None => false,
        };
        self.store.save_config(&def).map_err(|e| {
            RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
        })?;
        let name = def.name.clone();
        let obj = doms.entry(name.clone()).or_insert_with(|| DomObj {
            def: def.clone(),
            next_def: None,
            uuid,
            persistent: true,
            domid: None,
            state: STATE_SHUTOFF,
            reason: 0,
            snaps: Default::default(),
            job: None,
        });
        if !obj.active() {
            obj.def = def;
        } else {
            // A running domain keeps its live definition; the new one applies from the next boot.
            obj.next_def = Some(def);
        }
        obj.persistent = true;
        let dref = obj.dref();
        drop(doms);
        self.emit_lifecycle(&dref, lifecycle::DEFINED, i32::from(updated));
        Ok(dref)
    }

    /// Undefines a domain (a running one becomes transient).
    pub fn undefine(&self, r: &DomRef, flags: u32) -> Result<(), RpcError> {
        // MANAGED_SAVE 1, SNAPSHOTS_METADATA 2, NVRAM 4, KEEP_NVRAM 8, CHECKPOINTS_METADATA 16, TPM 32, KEEP_TPM 64.
        check_flags(flags, 0x7f)?;
        let mut doms = lock(&self.doms);
        let d = Self::find_by_ref(&mut doms, r)?;
        if !d.persistent {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: cannot undefine transient domain",
            ));
        }
        d.idle()?;
        let name = d.def.name.clone();
        // Everything is checked before anything is removed.
        let managed_save = self.store.has_managed_save(&name);
        if managed_save && flags & 1 == 0 {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: Refusing to undefine while domain managed save image exists",
            ));
        }
        let nsnaps = d.snaps.len();
        if !d.active() && nsnaps > 0 && flags & 2 == 0 {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                format!("Requested operation is not valid: cannot delete inactive domain with {nsnaps} snapshots"),
            ));
        }
        if managed_save {
            // VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.
            self.store.delete_managed_save(&name).map_err(|e| {
                RpcError::libxl(
                    code::INTERNAL_ERROR,
                    format!("internal error: Failed to remove domain managed save image: {e}"),
                )
            })?;
        }
        if !d.active() && nsnaps > 0 {
            // VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA: the metadata goes, the data stays in the images.
            self.store.delete_snapshots(&name).map_err(|e| {
                RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
            })?;
            d.snaps = Default::default();
        }
        self.store.delete_config(&name).map_err(|e| {
            RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
        })?;
        let dref = d.dref();
        if d.active() {
            d.persistent = false;
        } else {
            doms.remove(&name);
        }
        drop(doms);
        self.emit_lifecycle(&dref, lifecycle::UNDEFINED, 0);
        Ok(())
    }

    /// Starts an inactive domain: from its managed-save image when it has one (which `force_boot` discards
    /// instead), else by booting it.
    fn start(&self, name: &str, paused: bool, force_boot: bool) -> Result<DomRef, RpcError> {
        let def = {
            let doms = lock(&self.doms);
            let d = doms.get(name).ok_or_else(|| no_domain_name(name))?;
            if d.active() {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    "Requested operation is not valid: Domain is already running",
                ));
            }
            d.idle()?;
            d.def.clone()
        };
        if self.store.has_managed_save(name) {
            if !force_boot {
                return self.start_managed_save(name, paused);
            }
            self.store.delete_managed_save(name).map_err(|e| {
                RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!("operation failed: cannot remove managed save file: {e}"),
                )
            })?;
        }
        let domid = self.backend.create(&def, paused)?;
        let mut doms = lock(&self.doms);
        let d = doms.get_mut(name).ok_or_else(|| no_domain_name(name))?;
        d.domid = Some(domid);
        d.state = if paused { STATE_PAUSED } else { STATE_RUNNING };
        d.reason = 1;
        d.def.id = Some(i64::from(domid));
        let _ = self.store.save_status(&d.def);
        let dref = d.dref();
        drop(doms);
        self.emit_lifecycle(&dref, lifecycle::STARTED, 0);
        if paused {
            self.emit_lifecycle(&dref, lifecycle::SUSPENDED, 0);
        }
        Ok(dref)
    }

    fn running_domid(&self, r: &DomRef) -> Result<u32, RpcError> {
        self.with_dom(r, |d| d.domid.ok_or_else(not_running))
    }

    fn domain_xml(&self, r: &DomRef, flags: u32) -> Result<String, RpcError> {
        // SECURE 1, INACTIVE 2, UPDATE_CPU 4, MIGRATABLE 8.
        check_flags(flags, 0xf)?;
        let mut f = FormatFlags::empty();
        if flags & 1 != 0 {
            f |= FormatFlags::SECURE;
        }
        if flags & 2 != 0 {
            f |= FormatFlags::INACTIVE;
        }
        self.with_dom(r, |d| {
            if !d.active() {
                f |= FormatFlags::INACTIVE;
            }
            match &d.next_def {
                Some(next) if f.contains(FormatFlags::INACTIVE) => Ok(next.to_xml(f)),
                _ => Ok(d.def.to_xml(f)),
            }
        })
    }

    /// Applies a configuration change (`VIR_DOMAIN_AFFECT_CONFIG`, or CURRENT on an inactive domain): to the
    /// persistent definition, which is saved; a running domain's change applies from its next boot.
    /// `AFFECT_LIVE` needs the hypervisor and is refused clearly.
    fn modify_config(
        &self,
        r: &DomRef,
        flags: u32,
        f: impl FnOnce(&mut Domain) -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        self.with_dom(r, |d| {
            let live = flags & 1 != 0 || (flags & 3 == 0 && d.active());
            let config = flags & 2 != 0 || (flags & 3 == 0 && !d.active());
            if live && !d.active() {
                return Err(not_running());
            }
            if live {
                return Err(RpcError::libxl(
                    code::OPERATION_UNSUPPORTED,
                    "Operation not supported: changing a running domain needs the hypervisor connection, which is not attached",
                ));
            }
            if config && !d.persistent {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    "Requested operation is not valid: transient domains do not have any persistent config",
                ));
            }
            let mut cfg = if d.active() {
                d.next_def.clone().unwrap_or_else(|| Domain {
                    id: None,
                    ..d.def.clone()
                })
            } else {
                d.def.clone()
            };
            f(&mut cfg)?;
            self.store
                .save_config(&cfg)
                .map_err(|er| RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {er}")))?;
            if d.active() {
                d.next_def = Some(cfg);
            } else {
                d.def = cfg;
            }
            Ok(())
        })
    }

    fn set_memory(&self, r: &DomRef, kib: u64, flags: u32) -> Result<(), RpcError> {
        // AFFECT_LIVE 1, AFFECT_CONFIG 2, MEM_MAXIMUM 4.
        check_flags(flags, 7)?;
        self.modify_config(r, flags, |def| {
            if flags & 4 != 0 {
                if kib == 0 {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        "invalid argument: memory must not be 0",
                    ));
                }
                def.memory_kib = kib;
                def.current_memory_kib = def.current_memory_kib.min(kib);
            } else {
                if kib > def.memory_kib {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        "invalid argument: cannot set memory higher than max memory",
                    ));
                }
                def.current_memory_kib = kib;
            }
            Ok(())
        })
    }

    fn set_vcpus(&self, r: &DomRef, n: u32, flags: u32) -> Result<(), RpcError> {
        // AFFECT_LIVE 1, AFFECT_CONFIG 2, VCPU_MAXIMUM 4, VCPU_GUEST 8.
        check_flags(flags, 7)?;
        if n == 0 {
            return Err(RpcError::libxl(
                code::INVALID_ARG,
                "invalid argument: nvcpus must be at least 1",
            ));
        }
        if n > host::MAX_VCPUS as u32 {
            return Err(RpcError::libxl(
                code::INVALID_ARG,
                format!(
                    "invalid argument: requested vcpus is greater than max allowable vcpus for the connection: {n} > {}",
                    host::MAX_VCPUS
                ),
            ));
        }
        self.modify_config(r, flags, |def| {
            if flags & 4 != 0 {
                let cur = def.vcpu.current.unwrap_or(def.vcpu.count).min(n);
                def.vcpu.count = n;
                def.vcpu.current = (cur < n).then_some(cur);
            } else {
                if n > def.vcpu.count {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        format!(
                            "invalid argument: requested vcpus is greater than max allowable vcpus for the domain: {n} > {}",
                            def.vcpu.count
                        ),
                    ));
                }
                def.vcpu.current = (n < def.vcpu.count).then_some(n);
            }
            Ok(())
        })
    }

    /// Renames an inactive persistent domain (definition, autostart link) and reports it as libvirt does:
    /// UNDEFINED/RENAMED for the old name, DEFINED/RENAMED for the new one.
    fn rename(&self, r: &DomRef, new_name: &str) -> Result<(), RpcError> {
        let mut doms = lock(&self.doms);
        if doms.contains_key(new_name) {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                format!("Requested operation is not valid: domain with name '{new_name}' already exists"),
            ));
        }
        let d = Self::find_by_ref(&mut doms, r)?;
        if d.active() {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: cannot rename active domain",
            ));
        }
        if !d.persistent {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: cannot rename a transient domain",
            ));
        }
        if !d.snaps.is_empty() {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: cannot rename domain with snapshots",
            ));
        }
        if self.store.has_managed_save(&d.def.name) {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: domain with a managed saved state can't be renamed",
            ));
        }
        d.idle()?;
        let old_name = d.def.name.clone();
        let old_ref = d.dref();
        let autostart = self.store.autostart(&old_name);
        let mut def = d.def.clone();
        def.name = new_name.to_string();
        let io = |er: crate::Error| {
            RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {er}"))
        };
        self.store.save_config(&def).map_err(io)?;
        if autostart {
            self.store.set_autostart(new_name, true).map_err(io)?;
        }
        self.store.delete_config(&old_name).map_err(io)?;
        let Some(mut obj) = doms.remove(&old_name) else {
            return Err(no_domain_name(&old_name));
        };
        obj.def = def;
        let new_ref = obj.dref();
        doms.insert(new_name.to_string(), obj);
        drop(doms);
        self.emit_lifecycle(&old_ref, lifecycle::UNDEFINED, 1);
        self.emit_lifecycle(&new_ref, lifecycle::DEFINED, 2);
        Ok(())
    }

    /// Whether a domain with this name exists.
    pub fn lookup_name(&self, name: &str) -> Result<DomRef, RpcError> {
        lock(&self.doms)
            .get(name)
            .map(DomObj::dref)
            .ok_or_else(|| no_domain_name(name))
    }

    /// Domains matching `virConnectListAllDomains` flags. Each group (active, persistent, state, managed save,
    /// autostart, snapshot, checkpoint) filters only when some but not all of its bits are set.
    fn list_all(&self, flags: u32) -> Vec<DomRef> {
        // A two-bit group: (flags for "yes", flags for "no") and the domain's answer.
        let pair = |yes: u32, no: u32, v: bool| {
            let (y, n) = (flags & yes != 0, flags & no != 0);
            y == n || (y && v) || (n && !v)
        };
        let doms = lock(&self.doms);
        doms.values()
            .filter(|d| {
                let states = flags & 0xf0;
                let state_bit = match d.state {
                    STATE_RUNNING => 0x10,
                    STATE_PAUSED => 0x20,
                    STATE_SHUTOFF => 0x40,
                    _ => 0x80,
                };
                pair(1, 2, d.active())
                    && pair(4, 8, d.persistent)
                    && (states == 0 || states & state_bit != 0)
                    // Only a filter on managed save looks for the image files.
                    && (flags & 0x300 == 0
                        || pair(0x100, 0x200, self.store.has_managed_save(&d.def.name)))
                    // No domain has a checkpoint in this driver.
                    && pair(0x400, 0x800, self.store.autostart(&d.def.name))
                    && pair(0x1000, 0x2000, !d.snaps.is_empty())
                    && pair(0x4000, 0x8000, false)
            })
            .map(DomObj::dref)
            .collect()
    }

    fn register_event(
        &self,
        conn: u64,
        event_id: i32,
        dom: Option<DomRef>,
        out: EventOut,
    ) -> Result<i32, RpcError> {
        if !(0..=EVENT_ID_LAST).contains(&event_id) {
            return Err(RpcError::new(
                code::INVALID_ARG,
                edomain::REMOTE,
                format!("invalid argument: unsupported event ID {event_id}"),
            ));
        }
        let uuid = match dom {
            Some(r) => Some(self.with_dom(&r, |d| Ok(d.uuid))?),
            None => None,
        };
        let id = self.next_callback.fetch_add(1, Ordering::Relaxed);
        lock(&self.events).push(EventReg {
            callback_id: id,
            conn,
            event_id,
            dom: uuid,
            out,
        });
        Ok(id)
    }

    fn deregister_event(&self, conn: u64, id: i32) -> Result<(), RpcError> {
        let mut regs = lock(&self.events);
        let before = regs.len();
        regs.retain(|r| !(r.conn == conn && r.callback_id == id));
        if regs.len() == before {
            return Err(RpcError::new(
                code::INVALID_ARG,
                edomain::REMOTE,
                format!("invalid argument: callback {id} not registered"),
            ));
        }
        Ok(())
    }

    fn stats(&self, doms: Vec<DomRef>, stats: u32, flags: u32) -> Result<Vec<u8>, RpcError> {
        // STATE 1, CPU_TOTAL 2, BALLOON 4, VCPU 8, INTERFACE 16, BLOCK 32, ...: this driver reports 1, 4 and 8
        // (the others need the hypervisor); ENFORCE_STATS (1 << 31) makes asking for the others an error.
        let unsupported = stats & !(1 | 4 | 8);
        if flags & (1 << 31) != 0 && unsupported != 0 {
            return Err(RpcError::libxl(
                code::OPERATION_UNSUPPORTED,
                format!("Operation not supported: Stats types bits 0x{unsupported:x} are not supported by this daemon"),
            ));
        }
        let refs = if doms.is_empty() {
            self.list_all(flags & 0xff)
        } else {
            doms
        };
        let mut e = Enc::new();
        let mut out = Vec::new();
        for r in refs {
            let item = self.with_dom(&r, |d| {
                let mut params: Vec<(String, i32, u64)> = Vec::new(); // (field, type, value)
                let want = |bit: u32| stats == 0 || stats & bit != 0;
                if want(1) {
                    params.push(("state.state".into(), 1, d.state as u64));
                    params.push(("state.reason".into(), 1, d.reason as u64));
                }
                if want(4) {
                    params.push(("balloon.current".into(), 4, d.def.current_memory_kib));
                    params.push(("balloon.maximum".into(), 4, d.def.memory_kib));
                }
                if want(8) {
                    let cur = d.def.vcpu.current.unwrap_or(d.def.vcpu.count);
                    params.push(("vcpu.current".into(), 2, u64::from(cur)));
                    params.push(("vcpu.maximum".into(), 2, u64::from(d.def.vcpu.count)));
                }
                Ok((d.dref(), params))
            });
            // An explicitly requested domain that does not exist is an error.
            out.push(item?);
        }
        e.u32(out.len() as u32);
        for (dref, params) in out {
            dref.encode(&mut e);
            e.u32(params.len() as u32);
            for (field, ty, v) in params {
                e.str(&field).i32(ty);
                match ty {
                    1 => e.i32(v as i32),
                    2 => e.u32(v as u32),
                    _ => e.u64(v),
                };
            }
        }
        Ok(e.buf)
    }

    /// Opens a console for a running domain.
    pub fn open_console(
        &self,
        args: &[u8],
    ) -> Result<Box<dyn crate::backend::ConsoleIo>, RpcError> {
        let mut d = Dec::new(args);
        let r = DomRef::decode(&mut d)?;
        let dev = d.opt_str()?;
        let flags = d.u32()?;
        finish(&d)?;
        check_flags(flags, 3)?;
        let domid = self.running_domid(&r)?;
        self.backend.open_console(domid, dev.as_deref())
    }

    /// Executes one REMOTE call and returns the encoded reply payload.
    pub fn call(
        &self,
        conn_id: u64,
        conn: &mut ConnState,
        proc_: i32,
        args: &[u8],
        out: &EventOut,
    ) -> Result<Vec<u8>, RpcError> {
        use procs::*;
        let mut d = Dec::new(args);
        let mut e = Enc::new();
        // Calls allowed before authentication.
        match proc_ {
            AUTH_LIST => {
                finish(&d)?;
                // NONE 0 when no check is needed (root peer, or a socket without polkit), else POLKIT 2.
                e.u32(1).i32(if conn.needs_polkit { 2 } else { 0 });
                return Ok(e.buf);
            }
            AUTH_POLKIT => {
                finish(&d)?;
                if conn.needs_polkit {
                    crate::auth::polkit_check(conn)?;
                    conn.needs_polkit = false;
                }
                e.i32(1);
                return Ok(e.buf);
            }
            _ if conn.needs_polkit => return Err(RpcError::rpc("authentication required")),
            _ => {}
        }
        // Calls allowed before CONNECT_OPEN.
        match proc_ {
            SUPPORTS_FEATURE => {
                let f = d.i32()?;
                finish(&d)?;
                // 9 typed-param strings, 10 keepalive, 14 event callbacks, 15 close callbacks.
                let yes = matches!(f, 9 | 10 | 14 | 15);
                e.i32(i32::from(yes));
                return Ok(e.buf);
            }
            CONNECT_OPEN => {
                let name = d.opt_str()?;
                let flags = d.u32()?;
                finish(&d)?;
                if conn.opened {
                    return Err(RpcError::new(
                        code::INTERNAL_ERROR,
                        edomain::REMOTE,
                        "internal error: connection already open",
                    ));
                }
                if let Some(n) = name.as_deref().filter(|n| !n.is_empty()) {
                    let ok = ["xen:///", "xen:///system", "xen://", "xen:"].contains(&n)
                        || n.strip_prefix("xen:///system?").is_some();
                    if !ok {
                        return Err(RpcError::libxl(
                            code::INVALID_ARG,
                            format!("invalid argument: unexpected Xen URI path '{n}', try xen:///system"),
                        ));
                    }
                }
                conn.opened = true;
                conn.readonly |= flags & 1 != 0;
                return Ok(e.buf);
            }
            _ => {}
        }
        if !conn.opened {
            return Err(RpcError::rpc("internal error: connection not open"));
        }
        let ro = writable(conn.readonly);
        match proc_ {
            CONNECT_CLOSE => {
                finish(&d)?;
                self.drop_connection(conn_id);
                conn.opened = false;
            }
            GET_TYPE => {
                finish(&d)?;
                e.str("Xen");
            }
            GET_VERSION => {
                finish(&d)?;
                // The Xen ABI version xen-hv implements (4.17), or what an attached hypervisor reports.
                let v = self.backend.hypervisor_version().unwrap_or(4_017_000);
                e.u64(v);
            }
            GET_LIB_VERSION => {
                finish(&d)?;
                e.u64(9_000_000);
            }
            GET_HOSTNAME => {
                finish(&d)?;
                let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                e.str(h.trim());
            }
            GET_URI => {
                finish(&d)?;
                e.str("xen:///system");
            }
            IS_SECURE => {
                finish(&d)?;
                e.i32(1);
            }
            GET_MAX_VCPUS => {
                let t = d.opt_str()?;
                finish(&d)?;
                if let Some(t) = t.filter(|t| !t.eq_ignore_ascii_case("xen")) {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        format!("invalid argument: unknown type '{t}'"),
                    ));
                }
                e.i32(host::MAX_VCPUS);
            }
            NODE_GET_INFO => {
                finish(&d)?;
                let n = host::node_info();
                let mut model = [0u8; 32];
                let b = n.model.as_bytes();
                let len = b.len().min(31);
                model[..len].copy_from_slice(&b[..len]);
                for c in model {
                    e.i32(i32::from(c as i8));
                }
                e.u64(n.memory_kib)
                    .i32(n.cpus)
                    .i32(n.mhz)
                    .i32(n.nodes)
                    .i32(n.sockets)
                    .i32(n.cores)
                    .i32(n.threads);
            }
            NODE_GET_CELLS_FREE_MEMORY => {
                let start = d.i32()?;
                let max = d.i32()?;
                finish(&d)?;
                let nodes = host::node_info().nodes;
                if start < 0 || start >= nodes {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        format!(
                            "invalid argument: start cell {start} out of range (0-{})",
                            nodes - 1
                        ),
                    ));
                }
                if !(0..=1024).contains(&max) {
                    return Err(RpcError::rpc("maxCells > REMOTE_NODE_MAX_CELLS"));
                }
                // One NUMA cell holds all of the host's memory.
                let n = usize::from(max > 0);
                e.u32(n as u32);
                if n == 1 {
                    e.u64(host::free_memory());
                }
            }
            NODE_GET_FREE_MEMORY => {
                finish(&d)?;
                e.u64(host::free_memory());
            }
            GET_CAPABILITIES => {
                finish(&d)?;
                e.str(&host::capabilities_xml());
            }
            GET_DOMAIN_CAPABILITIES => {
                let _emu = d.opt_str()?;
                let arch = d.opt_str()?;
                let machine = d.opt_str()?;
                let virttype = d.opt_str()?;
                let flags = d.u32()?;
                finish(&d)?;
                check_flags(flags, 0)?;
                e.str(&host::domain_capabilities_xml(
                    arch.as_deref(),
                    machine.as_deref(),
                    virttype.as_deref(),
                )?);
            }
            GET_SYSINFO => {
                let flags = d.u32()?;
                finish(&d)?;
                check_flags(flags, 0)?;
                e.str(&host::sysinfo_xml());
            }
            REGISTER_CLOSE_CALLBACK | UNREGISTER_CLOSE_CALLBACK => {
                finish(&d)?;
                conn.close_callback = proc_ == REGISTER_CLOSE_CALLBACK;
            }
            CONNECT_LIST_ALL_DOMAINS => {
                let need = d.i32()?;
                let flags = d.u32()?;
                finish(&d)?;
                let list = self.list_all(flags);
                if need != 0 {
                    e.u32(list.len() as u32);
                    for r in &list {
                        r.encode(&mut e);
                    }
                } else {
                    e.u32(0);
                }
                e.u32(list.len() as u32);
            }
            NUM_OF_DOMAINS | NUM_OF_DEFINED_DOMAINS => {
                finish(&d)?;
                let n = self
                    .list_all(if proc_ == NUM_OF_DOMAINS { 1 } else { 2 })
                    .len();
                e.i32(n as i32);
            }
            LIST_DOMAINS => {
                let max = d.i32()?;
                finish(&d)?;
                if !(0..=16384).contains(&max) {
                    return Err(RpcError::rpc("maxids > REMOTE_DOMAIN_LIST_MAX"));
                }
                let ids: Vec<i32> = self
                    .list_all(1)
                    .iter()
                    .map(|r| r.id)
                    .take(max as usize)
                    .collect();
                e.u32(ids.len() as u32);
                for i in ids {
                    e.i32(i);
                }
            }
            LIST_DEFINED_DOMAINS => {
                let max = d.i32()?;
                finish(&d)?;
                if !(0..=16384).contains(&max) {
                    return Err(RpcError::rpc("maxnames > REMOTE_DOMAIN_LIST_MAX"));
                }
                let names: Vec<String> = self
                    .list_all(2)
                    .into_iter()
                    .map(|r| r.name)
                    .take(max as usize)
                    .collect();
                e.u32(names.len() as u32);
                for n in names {
                    e.str(&n);
                }
            }
            DOMAIN_LOOKUP_BY_NAME => {
                let name = d.str()?;
                finish(&d)?;
                self.lookup_name(&name)?.encode(&mut e);
            }
            DOMAIN_LOOKUP_BY_UUID => {
                let mut u = [0u8; 16];
                u.copy_from_slice(d.fixed(16)?);
                finish(&d)?;
                let doms = lock(&self.doms);
                let r = doms
                    .values()
                    .find(|x| x.uuid == u)
                    .map(DomObj::dref)
                    .ok_or_else(|| {
                        RpcError::libxl(
                            code::NO_DOMAIN,
                            format!(
                                "Domain not found: no domain with matching uuid '{}'",
                                crate::proto::uuid_string(&u)
                            ),
                        )
                    })?;
                r.encode(&mut e);
            }
            DOMAIN_LOOKUP_BY_ID => {
                let id = d.i32()?;
                finish(&d)?;
                let doms = lock(&self.doms);
                let r = doms
                    .values()
                    .find(|x| x.domid.is_some_and(|v| v as i32 == id))
                    .map(DomObj::dref)
                    .ok_or_else(|| {
                        RpcError::libxl(
                            code::NO_DOMAIN,
                            format!("Domain not found: no domain with matching id {id}"),
                        )
                    })?;
                r.encode(&mut e);
            }
            DOMAIN_DEFINE_XML | DOMAIN_DEFINE_XML_FLAGS => {
                let xml = d.str()?;
                let flags = if proc_ == DOMAIN_DEFINE_XML_FLAGS {
                    d.u32()?
                } else {
                    0
                };
                finish(&d)?;
                ro("virDomainDefineXMLFlags")?;
                self.define(&xml, flags)?.encode(&mut e);
            }
            DOMAIN_UNDEFINE | DOMAIN_UNDEFINE_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let flags = if proc_ == DOMAIN_UNDEFINE_FLAGS {
                    d.u32()?
                } else {
                    0
                };
                finish(&d)?;
                ro("virDomainUndefineFlags")?;
                self.undefine(&r, flags)?;
            }
            DOMAIN_CREATE | DOMAIN_CREATE_WITH_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let flags = if proc_ == DOMAIN_CREATE_WITH_FLAGS {
                    d.u32()?
                } else {
                    0
                };
                finish(&d)?;
                ro("virDomainCreateWithFlags")?;
                // PAUSED 1, AUTODESTROY 2, BYPASS_CACHE 4, FORCE_BOOT 8, VALIDATE 16.
                check_flags(flags, 0x1f)?;
                let name = self.with_dom(&r, |x| Ok(x.def.name.clone()))?;
                let nr = self.start(&name, flags & 1 != 0, flags & 8 != 0)?;
                if proc_ == DOMAIN_CREATE_WITH_FLAGS {
                    nr.encode(&mut e);
                }
            }
            DOMAIN_CREATE_XML => {
                let xml = d.str()?;
                let flags = d.u32()?;
                finish(&d)?;
                ro("virDomainCreateXML")?;
                check_flags(flags, 0x1f)?;
                let mut def = Domain::parse(&xml).map_err(|er| xml_error(&er, flags & 16 != 0))?;
                if def.domain_type != "xen" {
                    return Err(RpcError::new(
                        code::CONFIG_UNSUPPORTED,
                        edomain::LIBXL,
                        format!("unsupported configuration: domain type '{}' is not supported by the Xen driver", def.domain_type),
                    ));
                }
                if let Some(o) = lock(&self.doms).get(&def.name) {
                    o.idle()?;
                    if o.active() {
                        return Err(RpcError::libxl(
                            code::OPERATION_INVALID,
                            format!(
                                "Requested operation is not valid: domain '{}' is already active",
                                def.name
                            ),
                        ));
                    }
                }
                if def.uuid.is_none() {
                    def.uuid = Some(uuid::Uuid::new_v4().to_string());
                }
                // The backend decides; nothing is recorded unless the guest really starts.
                let domid = self.backend.create(&def, flags & 1 != 0)?;
                def.id = Some(i64::from(domid));
                let uuid = def.uuid.as_deref().and_then(uuid_bytes).unwrap_or([0; 16]);
                let mut doms = lock(&self.doms);
                let persistent = doms.get(&def.name).is_some_and(|o| o.persistent);
                let snaps = doms
                    .get(&def.name)
                    .map(|o| o.snaps.clone())
                    .unwrap_or_default();
                let _ = self.store.save_status(&def);
                let obj = DomObj {
                    def,
                    next_def: None,
                    uuid,
                    persistent,
                    domid: Some(domid),
                    state: if flags & 1 != 0 {
                        STATE_PAUSED
                    } else {
                        STATE_RUNNING
                    },
                    reason: 1,
                    snaps,
                    job: None,
                };
                let r = obj.dref();
                doms.insert(obj.def.name.clone(), obj);
                drop(doms);
                self.emit_lifecycle(&r, lifecycle::STARTED, 0);
                r.encode(&mut e);
            }
            DOMAIN_DESTROY
            | DOMAIN_DESTROY_FLAGS
            | DOMAIN_SHUTDOWN
            | DOMAIN_SHUTDOWN_FLAGS
            | DOMAIN_REBOOT
            | DOMAIN_RESET
            | DOMAIN_SUSPEND
            | DOMAIN_RESUME => {
                let r = DomRef::decode(&mut d)?;
                let flags = if matches!(
                    proc_,
                    DOMAIN_DESTROY_FLAGS | DOMAIN_SHUTDOWN_FLAGS | DOMAIN_REBOOT | DOMAIN_RESET
                ) {
                    d.u32()?
                } else {
                    0
                };
                finish(&d)?;
                ro("virDomainLifecycle")?;
                let domid = self.with_dom(&r, |x| {
                    let id = x.domid.ok_or_else(not_running)?;
                    x.idle()?;
                    Ok(id)
                })?;
                let _ = flags;
                match proc_ {
                    DOMAIN_DESTROY | DOMAIN_DESTROY_FLAGS => {
                        self.backend.destroy(domid)?;
                        self.backend_event(BackendEvent {
                            domid,
                            event: lifecycle::STOPPED,
                            detail: 1, // VIR_DOMAIN_EVENT_STOPPED_DESTROYED
                        });
                    }
                    DOMAIN_SHUTDOWN | DOMAIN_SHUTDOWN_FLAGS => self.backend.shutdown(domid)?,
                    DOMAIN_REBOOT | DOMAIN_RESET => self.backend.reboot(domid)?,
                    DOMAIN_SUSPEND => {
                        self.backend.pause(domid)?;
                        self.backend_event(BackendEvent {
                            domid,
                            event: lifecycle::SUSPENDED,
                            detail: 0,
                        });
                    }
                    _ => {
                        self.backend.unpause(domid)?;
                        self.backend_event(BackendEvent {
                            domid,
                            event: lifecycle::RESUMED,
                            detail: 0,
                        });
                    }
                }
            }
            DOMAIN_SET_MAX_MEMORY | DOMAIN_SET_MEMORY | DOMAIN_SET_MEMORY_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let kib = d.u64()?;
                let flags = match proc_ {
                    DOMAIN_SET_MEMORY_FLAGS => d.u32()?,
                    // As libxl: the legacy setmem acts on the running domain (AFFECT_LIVE), setmaxmem on the
                    // maximum of the current state.
                    DOMAIN_SET_MAX_MEMORY => 4,
                    _ => 1,
                };
                finish(&d)?;
                ro("virDomainSetMemoryFlags")?;
                self.set_memory(&r, kib, flags)?;
            }
            DOMAIN_SET_VCPUS | DOMAIN_SET_VCPUS_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let n = d.u32()?;
                // The legacy call acts on the running domain (AFFECT_LIVE), as libxl's.
                let flags = if proc_ == DOMAIN_SET_VCPUS_FLAGS {
                    d.u32()?
                } else {
                    1
                };
                finish(&d)?;
                ro("virDomainSetVcpusFlags")?;
                self.set_vcpus(&r, n, flags)?;
            }
            DOMAIN_ATTACH_DEVICE
            | DOMAIN_ATTACH_DEVICE_FLAGS
            | DOMAIN_DETACH_DEVICE
            | DOMAIN_DETACH_DEVICE_FLAGS
            | DOMAIN_UPDATE_DEVICE_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let xml = d.str()?;
                // The legacy calls act on the running domain (AFFECT_LIVE).
                let flags = if matches!(proc_, DOMAIN_ATTACH_DEVICE | DOMAIN_DETACH_DEVICE) {
                    1
                } else {
                    d.u32()?
                };
                finish(&d)?;
                ro("virDomainAttachDeviceFlags")?;
                // AFFECT_LIVE 1, AFFECT_CONFIG 2, DEVICE_MODIFY_FORCE 4 (update only).
                check_flags(
                    flags,
                    if proc_ == DOMAIN_UPDATE_DEVICE_FLAGS {
                        7
                    } else {
                        3
                    },
                )?;
                let dev = domain_xml::xml::Element::parse(&xml).map_err(|er| {
                    RpcError::new(code::XML_ERROR, edomain::DOMAIN, format!("XML error: {er}"))
                })?;
                let op = match proc_ {
                    DOMAIN_ATTACH_DEVICE | DOMAIN_ATTACH_DEVICE_FLAGS => DeviceOp::Attach,
                    DOMAIN_DETACH_DEVICE | DOMAIN_DETACH_DEVICE_FLAGS => DeviceOp::Detach,
                    _ => DeviceOp::Update,
                };
                self.modify_config(&r, flags & 3, |def| edit_device(def, &dev, op))?;
            }
            DOMAIN_GET_INFO => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                let (def, domid, state) =
                    self.with_dom(&r, |x| Ok((x.def.clone(), x.domid, x.state)))?;
                let live = match domid {
                    Some(id) => self.backend.info(id)?,
                    None => None,
                };
                match live {
                    Some(i) => e
                        .i32(i.state)
                        .u64(def.memory_kib)
                        .u64(i.memory_kib)
                        .i32(i.vcpus as i32)
                        .u64(i.cpu_time_ns),
                    None => e
                        .i32(state)
                        .u64(def.memory_kib)
                        .u64(def.current_memory_kib)
                        .i32(def.vcpu.current.unwrap_or(def.vcpu.count) as i32)
                        .u64(0),
                };
            }
            DOMAIN_GET_STATE => {
                let r = DomRef::decode(&mut d)?;
                let flags = d.u32()?;
                finish(&d)?;
                check_flags(flags, 0)?;
                let (s, reason) = self.with_dom(&r, |x| Ok((x.state, x.reason)))?;
                e.i32(s).i32(reason);
            }
            DOMAIN_GET_XML_DESC => {
                let r = DomRef::decode(&mut d)?;
                let flags = d.u32()?;
                finish(&d)?;
                if flags & 1 != 0 {
                    ro("virDomainGetXMLDesc with secure flag")?;
                }
                e.str(&self.domain_xml(&r, flags)?);
            }
            DOMAIN_GET_AUTOSTART => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                let name = self.with_dom(&r, |x| Ok(x.def.name.clone()))?;
                e.i32(i32::from(self.store.autostart(&name)));
            }
            DOMAIN_SET_AUTOSTART => {
                let r = DomRef::decode(&mut d)?;
                let on = d.i32()?;
                finish(&d)?;
                ro("virDomainSetAutostart")?;
                self.with_dom(&r, |x| {
                    if !x.persistent {
                        return Err(RpcError::libxl(
                            code::OPERATION_INVALID,
                            "Requested operation is not valid: cannot set autostart for transient domain",
                        ));
                    }
                    self.store
                        .set_autostart(&x.def.name, on != 0)
                        .map_err(|er| RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {er}")))
                })?;
            }
            DOMAIN_IS_ACTIVE | DOMAIN_IS_PERSISTENT => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                let v = self.with_dom(&r, |x| {
                    Ok(if proc_ == DOMAIN_IS_ACTIVE {
                        x.active()
                    } else {
                        x.persistent
                    })
                })?;
                e.i32(i32::from(v));
            }
            DOMAIN_IS_UPDATED => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                e.i32(self.with_dom(&r, |x| Ok(i32::from(x.next_def.is_some())))?);
            }
            DOMAIN_RENAME => {
                let r = DomRef::decode(&mut d)?;
                let new_name = d.opt_str()?;
                let flags = d.u32()?;
                finish(&d)?;
                ro("virDomainRename")?;
                check_flags(flags, 0)?;
                let new_name = new_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                    RpcError::libxl(
                        code::INVALID_ARG,
                        "invalid argument: new domain name must not be empty",
                    )
                })?;
                self.rename(&r, &new_name)?;
                e.i32(0);
            }
            DOMAIN_GET_OS_TYPE => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                e.str(self.with_dom(&r, |x| Ok(x.def.os.os_type.as_str()))?);
            }
            DOMAIN_GET_MAX_MEMORY => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                e.u64(self.with_dom(&r, |x| Ok(x.def.memory_kib))?);
            }
            DOMAIN_GET_MAX_VCPUS => {
                let r = DomRef::decode(&mut d)?;
                finish(&d)?;
                e.i32(self.with_dom(&r, |x| Ok(x.def.vcpu.count as i32))?);
            }
            DOMAIN_GET_VCPUS_FLAGS => {
                let r = DomRef::decode(&mut d)?;
                let flags = d.u32()?;
                finish(&d)?;
                // LIVE 1, CONFIG 2, MAXIMUM 4, GUEST 8.
                check_flags(flags, 7)?;
                let v = self.with_dom(&r, |x| {
                    if flags & 1 != 0 && !x.active() {
                        return Err(not_running());
                    }
                    Ok(if flags & 4 != 0 {
                        x.def.vcpu.count
                    } else {
                        x.def.vcpu.current.unwrap_or(x.def.vcpu.count)
                    })
                })?;
                e.i32(v as i32);
            }
            DOMAIN_GET_METADATA => {
                let r = DomRef::decode(&mut d)?;
                let ty = d.i32()?;
                let uri = d.opt_str()?;
                let flags = d.u32()?;
                finish(&d)?;
                check_flags(flags, 3)?;
                let v = self.with_dom(&r, |x| metadata_get(&x.def, ty, uri.as_deref()))?;
                e.str(&v);
            }
            DOMAIN_SET_METADATA => {
                let r = DomRef::decode(&mut d)?;
                let ty = d.i32()?;
                let meta = d.opt_str()?;
                let _key = d.opt_str()?;
                let _uri = d.opt_str()?;
                let flags = d.u32()?;
                finish(&d)?;
                ro("virDomainSetMetadata")?;
                check_flags(flags, 3)?;
                self.with_dom(&r, |x| {
                    match ty {
                        0 => x.def.description = meta.filter(|m| !m.is_empty()),
                        1 => {
                            if meta.as_deref().is_some_and(|m| m.contains('\n')) {
                                return Err(RpcError::libxl(code::INVALID_ARG, "invalid argument: title can't contain newlines"));
                            }
                            x.def.title = meta.filter(|m| !m.is_empty());
                        }
                        _ => {
                            return Err(RpcError::libxl(
                                code::CONFIG_UNSUPPORTED,
                                "unsupported configuration: setting element metadata is not supported yet by this driver",
                            ))
                        }
                    }
                    if x.persistent {
                        self.store
                            .save_config(&x.def)
                            .map_err(|er| RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {er}")))?;
                    }
                    Ok(x.dref())
                })
                .map(|dref| self.emit_metadata_change(&dref, ty, None))?;
            }
            DOMAIN_EVENT_CALLBACK_REGISTER_ANY => {
                let id = d.i32()?;
                let dom = if d.flag()? {
                    Some(DomRef::decode(&mut d)?)
                } else {
                    None
                };
                finish(&d)?;
                e.i32(self.register_event(conn_id, id, dom, out.clone())?);
            }
            DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY => {
                let id = d.i32()?;
                finish(&d)?;
                self.deregister_event(conn_id, id)?;
            }
            GET_ALL_DOMAIN_STATS => {
                let n = d.count("domains", 16384)?;
                let mut doms = Vec::with_capacity(n);
                for _ in 0..n {
                    doms.push(DomRef::decode(&mut d)?);
                }
                let stats = d.u32()?;
                let flags = d.u32()?;
                finish(&d)?;
                return self.stats(doms, stats, flags);
            }
            DOMAIN_XML_FROM_NATIVE | DOMAIN_XML_TO_NATIVE => {
                let fmt = d.str()?;
                let input = d.str()?;
                let flags = d.u32()?;
                finish(&d)?;
                check_flags(flags, 0)?;
                if fmt != "xen-xl" {
                    return Err(RpcError::libxl(
                        code::CONFIG_UNSUPPORTED,
                        format!("unsupported configuration: unsupported config type {fmt}"),
                    ));
                }
                let r = if proc_ == DOMAIN_XML_FROM_NATIVE {
                    xen_conv::xl_cfg_to_domain_xml(&input)
                } else {
                    xen_conv::domain_xml_to_xl_cfg(&input)
                };
                e.str(&r.map_err(|er| conv_error(&er))?);
            }
            p if save::is_save_proc(p) => {
                self.save_call(conn.readonly, p, &mut d, &mut e)?;
            }
            p if snapshot::is_snapshot_proc(p) => {
                self.snapshot_call(conn.readonly, p, &mut d, &mut e)?;
            }
            p if crate::storage_rpc::is_storage_proc(p) => {
                return match &self.storage {
                    Some(st) => st.call(conn_id, conn.readonly, p, args, out),
                    None => Err(RpcError::unknown_procedure(p)),
                };
            }
            _ => return Err(RpcError::unknown_procedure(proc_)),
        }
        Ok(e.buf)
    }
}

fn conv_error(e: &xen_conv::Error) -> RpcError {
    use std::error::Error as _;
    let detail = match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    };
    match e {
        xen_conv::Error::Xml(_) => RpcError::new(
            code::XML_ERROR,
            edomain::DOMAIN,
            format!("XML error: {detail}"),
        ),
        // VIR_ERR_CONF_SYNTAX.
        xen_conv::Error::XlCfg(_) => {
            RpcError::libxl(48, format!("configuration file syntax error: {detail}"))
        }
        xen_conv::Error::Unsupported(m) => RpcError::libxl(
            code::CONFIG_UNSUPPORTED,
            format!("unsupported configuration: {m}"),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceOp {
    Attach,
    Detach,
    Update,
}

/// The identity libvirt matches a device by: a disk by its target, an interface by its MAC, others by content.
fn device_key(e: &domain_xml::xml::Element) -> Option<String> {
    let child_attr = |child: &str, attr: &str| {
        e.elements()
            .find(|c| c.name == child)
            .and_then(|c| c.get_attr(attr))
    };
    match e.name.as_str() {
        "disk" => child_attr("target", "dev").map(|t| format!("disk target {t}")),
        "interface" => child_attr("mac", "address")
            .map(|m| format!("interface mac {}", m.to_ascii_lowercase())),
        _ => None,
    }
}

/// True when every attribute and child of `want` appears in `have` (libvirt's lenient matching for devices
/// without a key).
fn subset(want: &domain_xml::xml::Element, have: &domain_xml::xml::Element) -> bool {
    want.name == have.name
        && want
            .attrs
            .iter()
            .all(|(k, v)| have.get_attr(k) == Some(v.as_str()))
        && want
            .elements()
            .all(|w| have.elements().any(|h| subset(w, h)))
}

/// Attaches, detaches or updates one device in a definition, through the element tree, and re-validates the
/// result with the domain model.
fn edit_device(
    def: &mut Domain,
    dev: &domain_xml::xml::Element,
    op: DeviceOp,
) -> Result<(), RpcError> {
    use domain_xml::xml::{Element, Node};
    let failed =
        |m: String| RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {m}"));
    let mut root = def.to_element(FormatFlags::INACTIVE | FormatFlags::SECURE);
    if !root.elements().any(|c| c.name == "devices") {
        root.push(Element::new("devices"));
    }
    let devices = root
        .children
        .iter_mut()
        .find_map(|n| match n {
            Node::Element(e) if e.name == "devices" => Some(e),
            _ => None,
        })
        .ok_or_else(|| failed("the definition has no devices element".into()))?;
    let key = device_key(dev);
    let matches = |e: &Element| match &key {
        Some(k) => device_key(e).as_ref() == Some(k),
        None => subset(dev, e),
    };
    let pos = devices
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if matches(e)));
    let not_found = || failed("matching device was not found".into());
    match op {
        DeviceOp::Attach => {
            if let (Some(k), Some(_)) = (&key, pos) {
                return Err(failed(format!("{k} already exists")));
            }
            devices.push(dev.clone());
        }
        DeviceOp::Detach => {
            devices.children.remove(pos.ok_or_else(not_found)?);
        }
        DeviceOp::Update => {
            if key.is_none() {
                return Err(RpcError::libxl(
                    code::OPERATION_UNSUPPORTED,
                    format!("Operation not supported: persistent update of device '{}' is not supported", dev.name),
                ));
            }
            devices.children[pos.ok_or_else(not_found)?] = Node::Element(dev.clone());
        }
    }
    *def = Domain::from_element(&root)
        .map_err(|e| RpcError::new(code::XML_ERROR, edomain::DOMAIN, format!("XML error: {e}")))?;
    Ok(())
}

fn metadata_get(def: &Domain, ty: i32, uri: Option<&str>) -> Result<String, RpcError> {
    let none = || {
        RpcError::libxl(
            code::NO_DOMAIN_METADATA,
            "metadata not found: Requested metadata element is not present",
        )
    };
    match ty {
        0 => def.description.clone().ok_or_else(none),
        1 => def.title.clone().ok_or_else(none),
        2 => {
            let uri = uri.ok_or_else(|| {
                RpcError::libxl(code::INVALID_ARG, "invalid argument: uri must not be NULL")
            })?;
            let m = def.metadata.as_ref().ok_or_else(none)?;
            m.elements()
                .find(|c| c.attrs_ns_uri().as_deref() == Some(uri))
                .map(|c| c.to_xml().trim_end().to_string())
                .ok_or_else(none)
        }
        _ => Err(RpcError::libxl(
            code::INVALID_ARG,
            format!("invalid argument: unknown metadata type '{ty}'"),
        )),
    }
}

/// Finds the namespace URI an element declares for its own prefix.
trait NsUri {
    fn attrs_ns_uri(&self) -> Option<String>;
}

impl NsUri for domain_xml::xml::Element {
    fn attrs_ns_uri(&self) -> Option<String> {
        let prefix = self.name.split_once(':').map(|(p, _)| p);
        match prefix {
            Some(p) => self.get_attr(&format!("xmlns:{p}")).map(str::to_string),
            None => self.get_attr("xmlns").map(str::to_string),
        }
    }
}
