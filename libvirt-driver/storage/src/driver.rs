//! The storage driver: pool objects, their persistence, and the volume operations of the dir and fs backends.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::events::{EventBus, Lifecycle, PoolEvent, PoolEventKind};
use crate::flags;
use crate::model::*;
use crate::qemu_img::{self, Preallocation, Qcow2Options};
use crate::stream::{DownloadSource, UploadSink};
use crate::sys;
use crate::xml;

/// A pool object: its definition and, while active, its volumes and sizes.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    /// The definition in effect (the live one while active).
    def: PoolDef,
    /// A definition saved while the pool was active; it takes effect when the pool stops.
    new_def: Option<PoolDef>,
    persistent: bool,
    autostart: bool,
    active: bool,
    capacity: u64,
    allocation: u64,
    available: u64,
    /// Mode/owner/group of the target directory as found at the last refresh.
    target_perms: Option<Permissions>,
    volumes: BTreeMap<String, Volume>,
    /// Operations running with the driver lock released (libvirt's `asyncjobs`).
    asyncjobs: u32,
    /// Volumes being created, or read as a clone source, by such an operation.
    building: BTreeSet<String>,
}

impl Pool {
    fn new(def: PoolDef) -> Self {
        Pool {
            def,
            new_def: None,
            persistent: false,
            autostart: false,
            active: false,
            capacity: 0,
            allocation: 0,
            available: 0,
            target_perms: None,
            volumes: BTreeMap::new(),
            asyncjobs: 0,
            building: BTreeSet::new(),
        }
    }

    fn check_no_jobs(&self) -> Result<()> {
        if self.asyncjobs > 0 {
            return Err(Error::Internal(format!(
                "pool '{}' has asynchronous jobs running.",
                self.def.name
            )));
        }
        Ok(())
    }

    fn check_not_building(&self, name: &str) -> Result<()> {
        if self.building.contains(name) {
            return Err(Error::OperationInvalid(format!(
                "volume '{name}' is still being allocated."
            )));
        }
        Ok(())
    }

    fn uuid(&self) -> Uuid {
        self.def.uuid.unwrap_or_default()
    }

    fn pool_ref(&self) -> PoolRef {
        PoolRef {
            name: self.def.name.clone(),
            uuid: self.uuid(),
        }
    }

    fn require_active(&self) -> Result<()> {
        if !self.active {
            return Err(Error::OperationInvalid(format!(
                "storage pool '{}' is not active",
                self.def.name
            )));
        }
        Ok(())
    }

    fn volume(&self, name: &str) -> Result<&Volume> {
        self.volumes
            .get(name)
            .ok_or_else(|| Error::NoVolume(format!("no storage vol with matching name '{name}'")))
    }
}

#[derive(Default)]
pub(crate) struct State {
    pools: Vec<Pool>,
}

impl State {
    /// Marks volumes busy (and their pools as running a job) before the lock is released.
    fn begin_job(&mut self, marks: &[(Uuid, String)]) {
        for (uuid, name) in marks {
            if let Some(pool) = self.pools.iter_mut().find(|p| p.uuid() == *uuid) {
                pool.asyncjobs += 1;
                pool.building.insert(name.clone());
            }
        }
    }

    /// Releases the marks of [`State::begin_job`] once the lock is held again.
    fn end_job(&mut self, marks: &[(Uuid, String)]) {
        for (uuid, name) in marks {
            if let Some(pool) = self.pools.iter_mut().find(|p| p.uuid() == *uuid) {
                pool.asyncjobs = pool.asyncjobs.saturating_sub(1);
                pool.building.remove(name);
            }
        }
    }

    pub(crate) fn pool_mut(&mut self, name: &str) -> Option<&mut Pool> {
        self.pools
            .iter_mut()
            .find(|p| p.def.name == name && p.active)
    }

    fn index_by_uuid(&self, pool: &PoolRef) -> Result<usize> {
        self.pools
            .iter()
            .position(|p| p.uuid() == pool.uuid)
            .ok_or_else(|| {
                Error::NoPool(format!(
                    "no storage pool with matching uuid '{}' ({})",
                    pool.uuid.hyphenated(),
                    pool.name
                ))
            })
    }

    fn index_by_name(&self, name: &str) -> Result<usize> {
        self.pools
            .iter()
            .position(|p| p.def.name == name)
            .ok_or_else(|| Error::NoPool(format!("no storage pool with matching name '{name}'")))
    }

    /// libvirt's `virStoragePoolObjIsDuplicate` and source-conflict checks for a new definition.
    fn check_duplicate(&self, def: &PoolDef, check_active: bool) -> Result<Option<usize>> {
        let uuid = def.uuid.unwrap_or_default();
        if let Some(i) = self.pools.iter().position(|p| p.uuid() == uuid) {
            let existing = &self.pools[i];
            if existing.def.name != def.name {
                return Err(Error::OperationFailed(format!(
                    "pool '{}' is already defined with uuid {}",
                    existing.def.name,
                    uuid.hyphenated()
                )));
            }
            if check_active && existing.active {
                return Err(Error::OperationInvalid(format!(
                    "pool is already active as '{}'",
                    existing.def.name
                )));
            }
            return Ok(Some(i));
        }
        if let Some(existing) = self.pools.iter().find(|p| p.def.name == def.name) {
            return Err(Error::OperationFailed(format!(
                "pool '{}' already exists with uuid {}",
                def.name,
                existing.uuid().hyphenated()
            )));
        }
        for other in &self.pools {
            let same_target = other.def.target == def.target;
            let same_device = def.kind == PoolType::Fs
                && other.def.kind == PoolType::Fs
                && other.def.source.device.is_some()
                && other.def.source.device == def.source.device;
            if same_target || same_device {
                return Err(Error::OperationFailed(format!(
                    "Storage source conflict with pool: '{}'",
                    other.def.name
                )));
            }
        }
        Ok(None)
    }
}

pub(crate) struct Inner {
    config_dir: PathBuf,
    autostart_dir: PathBuf,
    state_dir: PathBuf,
    state: Mutex<State>,
    pub(crate) events: EventBus,
    startup_errors: Mutex<Vec<String>>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.xml"))
    }

    fn autostart_link(&self, name: &str) -> PathBuf {
        self.autostart_dir.join(format!("{name}.xml"))
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.xml"))
    }

    fn save_config(&self, def: &PoolDef) -> Result<()> {
        let path = self.config_file(&def.name);
        sys::write_atomic(&path, xml::format_pool(def, 0, 0, 0).as_bytes())
            .map_err(|e| Error::system(format!("cannot write config file '{}'", path.display()), e))
    }

    fn save_state(&self, pool: &Pool) -> Result<()> {
        let path = self.state_file(&pool.def.name);
        let text = xml::format_pool(&pool.def, pool.capacity, pool.allocation, pool.available);
        sys::write_atomic(&path, text.as_bytes())
            .map_err(|e| Error::system(format!("cannot write state file '{}'", path.display()), e))
    }

    fn remove_state(&self, name: &str) {
        let _ = fs::remove_file(self.state_file(name));
        let _ = sys::sync_dir(&self.state_dir);
    }

    /// Rescans an active pool (`refreshPool`): file system sizes and one volume per regular file or block
    /// device in the target directory.
    pub(crate) fn refresh(&self, pool: &mut Pool) -> Result<()> {
        let target = pool.def.target.clone();
        let entries = fs::read_dir(&target).map_err(|e| {
            Error::system(format!("cannot open directory '{}'", target.display()), e)
        })?;
        let (capacity, allocation, available) = sys::statvfs(&target)
            .map_err(|e| Error::system(format!("cannot statvfs path '{}'", target.display()), e))?;
        let meta = fs::metadata(&target)
            .map_err(|e| Error::system(format!("cannot stat path '{}'", target.display()), e))?;
        let mut volumes = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::system(format!("cannot read directory '{}'", target.display()), e)
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // Files a running job is writing are not volumes yet.
            if pool
                .building
                .iter()
                .any(|b| *b == name || wipe_temp_name(b) == name)
            {
                continue;
            }
            // A file that vanished, a dangling link or an image qemu-img cannot read is skipped, as libvirt
            // skips volumes it cannot open.
            if let Ok(Some(vol)) = probe_volume(&target, &name, pool.volumes.get(&name)) {
                volumes.insert(name, vol);
            }
        }
        pool.capacity = capacity;
        pool.allocation = allocation;
        pool.available = available;
        pool.target_perms = Some(Permissions {
            mode: Some(meta.mode() & 0o7777),
            owner: Some(meta.uid()),
            group: Some(meta.gid()),
        });
        // Clone sources being read stay listed.
        for name in &pool.building {
            if let Some(vol) = pool.volumes.get(name) {
                volumes.entry(name.clone()).or_insert_with(|| vol.clone());
            }
        }
        pool.volumes = volumes;
        Ok(())
    }

    /// Refreshes a pool after an upload into `volume`: the whole pool as libvirt does, or only that volume
    /// while jobs run in the pool.
    pub(crate) fn refresh_pool_obj(&self, pool: &mut Pool, volume: &str) -> Result<()> {
        if pool.asyncjobs > 0 {
            self.refresh_volume(pool, volume)
        } else {
            self.refresh(pool)
        }
    }

    /// Re-reads one volume after an operation changed it.
    pub(crate) fn refresh_volume(&self, pool: &mut Pool, name: &str) -> Result<()> {
        match probe_volume(&pool.def.target, name, None)? {
            Some(vol) => {
                pool.volumes.insert(name.to_string(), vol);
            }
            None => {
                pool.volumes.remove(name);
            }
        }
        if let Ok((capacity, allocation, available)) = sys::statvfs(&pool.def.target) {
            pool.capacity = capacity;
            pool.allocation = allocation;
            pool.available = available;
        }
        Ok(())
    }
}

fn timestamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp { sec, nsec }
}

/// Reads a volume's facts from `stat` and `qemu-img info`; `Ok(None)` for entries that are not volumes.
fn probe_volume(target: &Path, name: &str, previous: Option<&Volume>) -> Result<Option<Volume>> {
    let path = target.join(name);
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::system(
                format!("cannot stat file '{}'", path.display()),
                e,
            ))
        }
    };
    let kind = if meta.file_type().is_file() {
        VolType::File
    } else if meta.file_type().is_block_device() {
        VolType::Block
    } else {
        return Ok(None);
    };
    // A regular file unchanged since the last probe (same size, mtime and ctime: any write or metadata change
    // moves ctime) keeps its image facts; only the times and allocation are re-read. This spares one qemu-img
    // run per volume on every refresh.
    if let Some(prev) = previous.filter(|p| {
        kind == VolType::File
            && p.kind == VolType::File
            && p.physical == meta.size()
            && p.mtime == timestamp(meta.mtime(), meta.mtime_nsec())
            && p.ctime == timestamp(meta.ctime(), meta.ctime_nsec())
    }) {
        let mut vol = prev.clone();
        vol.allocation = meta.blocks().saturating_mul(512);
        vol.atime = timestamp(meta.atime(), meta.atime_nsec());
        return Ok(Some(vol));
    }
    let info = qemu_img::info(&path)?;
    let allocation = match kind {
        VolType::File => meta.blocks().saturating_mul(512),
        VolType::Block => info.virtual_size,
    };
    let physical = match kind {
        VolType::File => meta.size(),
        VolType::Block => info.virtual_size,
    };
    let path_str = path.to_string_lossy().into_owned();
    Ok(Some(Volume {
        name: name.to_string(),
        key: path_str,
        path,
        kind,
        capacity: info.virtual_size,
        allocation,
        physical,
        format: info.format,
        backing_store: info.backing_filename.map(|path| VolumeBacking {
            path,
            format: info.backing_format,
        }),
        permissions: Permissions {
            mode: Some(meta.mode() & 0o7777),
            owner: Some(meta.uid()),
            group: Some(meta.gid()),
        },
        atime: timestamp(meta.atime(), meta.atime_nsec()),
        mtime: timestamp(meta.mtime(), meta.mtime_nsec()),
        ctime: timestamp(meta.ctime(), meta.ctime_nsec()),
        compat: info.compat,
        cluster_size: info.cluster_size,
        lazy_refcounts: info.lazy_refcounts,
        extended_l2: info.extended_l2,
    }))
}

/// libvirt's `virFileSanitizePath`: collapses repeated slashes and drops a trailing one.
pub fn sanitize_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    PathBuf::from(out)
}

fn unsupported_flags(flags: u32, function: &str) -> Error {
    Error::InvalidArg(format!(
        "unsupported flags (0x{flags:x}) in function {function}"
    ))
}

fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<()> {
    if flags & !allowed != 0 {
        return Err(unsupported_flags(flags & !allowed, function));
    }
    Ok(())
}

fn validate_pool_def(mut def: PoolDef) -> Result<PoolDef> {
    if def.name.is_empty() {
        return Err(Error::Xml("missing pool source name element".into()));
    }
    if def.name.contains('/') || def.name.contains('\n') {
        return Err(Error::Xml(format!("name {} cannot contain '/'", def.name)));
    }
    if !def.target.is_absolute() {
        return Err(Error::Xml(format!(
            "storage pool target path '{}' must be absolute",
            def.target.display()
        )));
    }
    def.target = sanitize_path(&def.target);
    if def.kind == PoolType::Fs && def.source.device.is_none() {
        return Err(Error::Xml("missing storage pool source device path".into()));
    }
    if def.uuid.is_none() {
        def.uuid = Some(Uuid::new_v4());
    }
    Ok(def)
}

fn validate_volume_name(name: &str) -> Result<()> {
    if name.contains('/') {
        return Err(Error::OperationInvalid(format!(
            "volume name '{name}' cannot contain '/'"
        )));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidArg(format!(
            "volume name '{name}' is not valid"
        )));
    }
    Ok(())
}

fn apply_permissions(path: &Path, perms: &Permissions, default_mode: u32) -> Result<()> {
    let mode = perms.mode.unwrap_or(default_mode);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        Error::system(
            format!("cannot set mode of '{}' to {mode:04o}", path.display()),
            e,
        )
    })?;
    if perms.owner.is_some() || perms.group.is_some() {
        std::os::unix::fs::chown(path, perms.owner, perms.group)
            .map_err(|e| Error::system(format!("cannot chown '{}'", path.display()), e))?;
    }
    Ok(())
}

fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    qemu_img::run(program, &args)
}

/// The file system type already on a device, probed with blkid; `None` when the device holds none.
fn probe_fs(device: &Path) -> Result<Option<String>> {
    let output = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(device)
        .output()
        .map_err(|e| Error::system("Cannot find 'blkid' in path or cannot run it", e))?;
    match output.status.code() {
        Some(0) => {
            let fs = String::from_utf8_lossy(&output.stdout).trim().to_string();
            Ok(if fs.is_empty() { None } else { Some(fs) })
        }
        // blkid exits with 2 when it finds nothing.
        Some(2) => Ok(None),
        _ => Err(Error::ProbeFailed(format!(
            "Unable to probe '{}' for an existing file system: {}",
            device.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// The storage driver. Cheap to clone (shared state); `Send + Sync`. Pools are addressed with [`PoolRef`] (looked
/// up by UUID, as libvirt does) and volumes with [`VolRef`] (pool name, then volume name).
///
/// One mutex guards all pools. Volume create, clone, wipe and resize run their file work (qemu-img, fallocate,
/// zeroing) with it released, the volumes involved marked busy and the pool's job count raised, as libvirt's
/// `asyncjobs` do; pool operations and refreshes hold it (a refresh runs qemu-img only for volumes that changed).
/// Streams ([`UploadSink`], [`DownloadSource`]) do not hold it while data moves.
#[derive(Clone)]
pub struct StorageDriver {
    pub(crate) inner: Arc<Inner>,
}

impl StorageDriver {
    /// Opens the driver on `<config_dir>/storage` (persistent pool XML, `autostart/` links) and
    /// `<state_dir>/storage` (XML of active pools), creating them if needed. Pools that were active when the
    /// previous daemon stopped are active again if their target is still there (dir) or mounted (fs); pools
    /// marked autostart are then started. Failures to restore or autostart one pool do not fail the driver;
    /// they are listed by [`StorageDriver::startup_errors`].
    pub fn open(config_dir: &Path, state_dir: &Path) -> Result<Self> {
        let config_dir = config_dir.join("storage");
        let autostart_dir = config_dir.join("autostart");
        let state_dir = state_dir.join("storage");
        for dir in [&config_dir, &state_dir] {
            fs::create_dir_all(dir).map_err(|e| {
                Error::system(format!("cannot create directory '{}'", dir.display()), e)
            })?;
        }
        let mut inner = Inner {
            config_dir,
            autostart_dir,
            state_dir,
            state: Mutex::new(State::default()),
            events: EventBus::default(),
            startup_errors: Mutex::new(Vec::new()),
        };
        let mut errors = Vec::new();
        let mut state = State::default();
        for (path, def) in read_pool_dir(&inner.config_dir, &mut errors) {
            if path.file_stem().and_then(|s| s.to_str()) != Some(def.name.as_str()) {
                errors.push(format!(
                    "config file '{}' does not match pool name '{}'",
                    path.display(),
                    def.name
                ));
                continue;
            }
            let mut pool = Pool::new(def);
            pool.persistent = true;
            pool.autostart = inner.autostart_link(&pool.def.name).exists();
            state.pools.push(pool);
        }
        // Pools active at the last shutdown: their live definitions.
        for (_, live) in read_pool_dir(&inner.state_dir, &mut errors) {
            let name = live.name.clone();
            let index = match state.pools.iter().position(|p| p.def.name == name) {
                Some(i) => {
                    let pool = &mut state.pools[i];
                    if pool.def != live {
                        pool.new_def = Some(std::mem::replace(&mut pool.def, live));
                    }
                    i
                }
                None => {
                    state.pools.push(Pool::new(live));
                    state.pools.len() - 1
                }
            };
            let pool = &mut state.pools[index];
            let still_there = match pool.def.kind {
                PoolType::Dir => pool.def.target.is_dir(),
                PoolType::Fs => sys::is_mounted(&pool.def.target).unwrap_or(false),
            };
            if still_there && inner.refresh(pool).is_ok() {
                pool.active = true;
            } else {
                errors.push(format!(
                    "storage pool '{name}' is no longer available; marked inactive"
                ));
                if let Some(new_def) = pool.new_def.take() {
                    pool.def = new_def;
                }
                inner.remove_state(&name);
            }
        }
        state.pools.retain(|p| p.persistent || p.active);
        inner.state = Mutex::new(state);
        inner.startup_errors = Mutex::new(errors);
        let driver = StorageDriver {
            inner: Arc::new(inner),
        };
        driver.autostart();
        Ok(driver)
    }

    fn autostart(&self) {
        let candidates: Vec<PoolRef> = {
            let state = self.inner.lock();
            state
                .pools
                .iter()
                .filter(|p| p.autostart && !p.active)
                .map(Pool::pool_ref)
                .collect()
        };
        let mut errors = Vec::new();
        for pool in candidates {
            if let Err(err) = self.start_pool(&pool, 0) {
                errors.push(format!(
                    "Failed to autostart storage pool '{}': {}",
                    pool.name,
                    err.libvirt_message()
                ));
            }
        }
        self.inner
            .startup_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(errors);
    }

    /// Problems met while restoring state and autostarting pools in [`StorageDriver::open`].
    pub fn startup_errors(&self) -> Vec<String> {
        self.inner
            .startup_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Subscribes to pool events; returns the subscription id (for [`StorageDriver::unsubscribe`]) and the
    /// receiving end. Events are sent while the operation still holds the driver lock, so they arrive in the order
    /// the operations took effect.
    pub fn subscribe(&self) -> (u64, Receiver<PoolEvent>) {
        self.inner.events.subscribe()
    }

    /// Ends a subscription; false if the id is unknown.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.inner.events.unsubscribe(id)
    }

    fn emit(&self, pool: &PoolRef, kind: PoolEventKind) {
        self.inner.events.emit(pool, kind);
    }

    // ----- pools -----

    /// `virStoragePoolDefineXML`: adds or replaces a persistent definition (written atomically to
    /// `<config>/storage/<name>.xml`). Redefining an active pool stores the definition for its next start.
    pub fn define_pool(&self, def: PoolDef) -> Result<PoolRef> {
        let def = validate_pool_def(def)?;
        let mut state = self.inner.lock();
        let existing = state.check_duplicate(&def, false)?;
        self.inner.save_config(&def)?;
        let pool = match existing {
            Some(i) => {
                let pool = &mut state.pools[i];
                if pool.active {
                    pool.new_def = Some(def);
                } else {
                    pool.def = def;
                }
                pool.persistent = true;
                pool.pool_ref()
            }
            None => {
                let mut pool = Pool::new(def);
                pool.persistent = true;
                let r = pool.pool_ref();
                state.pools.push(pool);
                r
            }
        };
        self.emit(&pool, PoolEventKind::Lifecycle(Lifecycle::Defined));
        drop(state);
        Ok(pool)
    }

    /// `virStoragePoolCreateXML`: creates and starts a transient pool. Flags: `POOL_CREATE_WITH_BUILD*`.
    pub fn create_pool(&self, def: PoolDef, flags: u32) -> Result<PoolRef> {
        let build_flags = create_build_flags(flags)?;
        let def = validate_pool_def(def)?;
        let mut state = self.inner.lock();
        let existing = state.check_duplicate(&def, true)?;
        let index = match existing {
            Some(i) => {
                let pool = &mut state.pools[i];
                let old = std::mem::replace(&mut pool.def, def);
                if pool.persistent {
                    pool.new_def = Some(old);
                }
                i
            }
            None => {
                state.pools.push(Pool::new(def));
                state.pools.len() - 1
            }
        };
        let result = self.start_locked(&mut state.pools[index], build_flags);
        if let Err(err) = result {
            let pool = &mut state.pools[index];
            if pool.persistent {
                if let Some(old) = pool.new_def.take() {
                    pool.def = old;
                }
            } else {
                state.pools.remove(index);
            }
            return Err(err);
        }
        let pool = state.pools[index].pool_ref();
        self.emit(&pool, PoolEventKind::Lifecycle(Lifecycle::Started));
        drop(state);
        Ok(pool)
    }

    /// Builds (if asked), starts and refreshes a pool, and records it as active.
    fn start_locked(&self, pool: &mut Pool, build_flags: Option<u32>) -> Result<()> {
        if let Some(build_flags) = build_flags {
            build(&pool.def, build_flags)?;
        }
        start_backend(&pool.def)?;
        if let Err(err) = self.inner.refresh(pool) {
            let _ = stop_backend(&pool.def);
            return Err(err);
        }
        pool.active = true;
        if let Err(err) = self.inner.save_state(pool) {
            pool.active = false;
            pool.volumes.clear();
            let _ = stop_backend(&pool.def);
            return Err(err);
        }
        Ok(())
    }

    /// `virStoragePoolCreate` (`virsh pool-start`). Flags: `POOL_CREATE_WITH_BUILD*`.
    pub fn start_pool(&self, pool: &PoolRef, flags: u32) -> Result<()> {
        let build_flags = create_build_flags(flags)?;
        let mut state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &mut state.pools[index];
        if obj.active {
            return Err(Error::OperationInvalid(format!(
                "storage pool '{}' is already active",
                obj.def.name
            )));
        }
        self.start_locked(obj, build_flags)?;
        let r = obj.pool_ref();
        self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Started));
        drop(state);
        Ok(())
    }

    /// `virStoragePoolBuild`: creates the target directory with the definition's mode and owner (default mode
    /// 0711). For fs pools, `POOL_BUILD_OVERWRITE` or `POOL_BUILD_NO_OVERWRITE` also runs `mkfs -t <format>` on
    /// the source device; `NO_OVERWRITE` refuses a device that already holds a file system.
    pub fn build_pool(&self, pool: &PoolRef, flags: u32) -> Result<()> {
        let state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &state.pools[index];
        if obj.active {
            return Err(Error::OperationInvalid(format!(
                "storage pool '{}' is already active",
                obj.def.name
            )));
        }
        build(&obj.def, flags)?;
        let r = obj.pool_ref();
        self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Created));
        drop(state);
        Ok(())
    }

    /// `virStoragePoolRefresh`: rescans the volumes. If the scan fails the pool is stopped, as libvirt does.
    pub fn refresh_pool(&self, pool: &PoolRef, flags: u32) -> Result<()> {
        check_flags(flags, 0, "storagePoolRefresh")?;
        let mut state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        state.pools[index].require_active()?;
        state.pools[index].check_no_jobs()?;
        let r = state.pools[index].pool_ref();
        let mut obj = state.pools[index].clone();
        match self.inner.refresh(&mut obj) {
            Ok(()) => {
                state.pools[index] = obj;
                self.emit(&r, PoolEventKind::Refresh);
                drop(state);
                Ok(())
            }
            Err(err) => {
                self.stop_locked(&mut state, index);
                self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Stopped));
                drop(state);
                Err(err)
            }
        }
    }

    /// Marks a pool inactive, drops its volumes and state file, and removes it if transient.
    fn stop_locked(&self, state: &mut State, index: usize) {
        let pool = &mut state.pools[index];
        pool.active = false;
        pool.volumes.clear();
        pool.capacity = 0;
        pool.allocation = 0;
        pool.available = 0;
        pool.target_perms = None;
        self.inner.remove_state(&pool.def.name);
        if let Some(new_def) = pool.new_def.take() {
            pool.def = new_def;
        }
        if !pool.persistent {
            state.pools.remove(index);
        }
    }

    /// `virStoragePoolDestroy` (`virsh pool-destroy`): stops the pool (fs: unmounts it). Data is untouched; a
    /// transient pool disappears.
    pub fn destroy_pool(&self, pool: &PoolRef) -> Result<()> {
        let mut state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &state.pools[index];
        obj.require_active()?;
        obj.check_no_jobs()?;
        stop_backend(&obj.def)?;
        let r = obj.pool_ref();
        self.stop_locked(&mut state, index);
        self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Stopped));
        drop(state);
        Ok(())
    }

    /// `virStoragePoolDelete` (`virsh pool-delete`): removes the (empty) target directory of an inactive pool.
    /// A non-empty directory is refused with libvirt's system error and nothing is removed.
    pub fn delete_pool(&self, pool: &PoolRef, flags: u32) -> Result<()> {
        let state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &state.pools[index];
        if obj.active {
            return Err(Error::OperationInvalid(format!(
                "storage pool '{}' is still active",
                obj.def.name
            )));
        }
        check_flags(flags, 0, "virStorageBackendFileSystemDelete")?;
        let target = &obj.def.target;
        fs::remove_dir(target).map_err(|e| {
            Error::system(format!("failed to remove pool '{}'", target.display()), e)
        })?;
        let r = obj.pool_ref();
        self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Deleted));
        drop(state);
        Ok(())
    }

    /// `virStoragePoolUndefine`: removes the persistent definition and autostart link of an inactive pool.
    pub fn undefine_pool(&self, pool: &PoolRef) -> Result<()> {
        let mut state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &state.pools[index];
        if obj.active {
            return Err(Error::OperationInvalid(format!(
                "storage pool '{}' is still active",
                obj.def.name
            )));
        }
        if !obj.persistent {
            return Err(Error::Internal(format!(
                "no config file for {}",
                obj.def.name
            )));
        }
        let name = obj.def.name.clone();
        let config = self.inner.config_file(&name);
        fs::remove_file(&config)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Error::system(format!("cannot remove config {}", config.display()), e))?;
        let link = self.inner.autostart_link(&name);
        if let Err(e) = fs::remove_file(&link) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(Error::system(
                    format!("Failed to delete autostart link '{}'", link.display()),
                    e,
                ));
            }
        }
        let _ = sys::sync_dir(&self.inner.config_dir);
        let r = obj.pool_ref();
        state.pools.remove(index);
        self.emit(&r, PoolEventKind::Lifecycle(Lifecycle::Undefined));
        drop(state);
        Ok(())
    }

    /// `virStoragePoolSetAutostart`: creates or removes `<config>/storage/autostart/<name>.xml`.
    pub fn set_autostart(&self, pool: &PoolRef, autostart: bool) -> Result<()> {
        let mut state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        let obj = &mut state.pools[index];
        if !obj.persistent {
            return Err(Error::Internal("pool has no config file".into()));
        }
        if obj.autostart == autostart {
            return Ok(());
        }
        let link = self.inner.autostart_link(&obj.def.name);
        if autostart {
            fs::create_dir_all(&self.inner.autostart_dir).map_err(|e| {
                Error::system(
                    format!(
                        "cannot create autostart directory {}",
                        self.inner.autostart_dir.display()
                    ),
                    e,
                )
            })?;
            let config = self.inner.config_file(&obj.def.name);
            std::os::unix::fs::symlink(&config, &link).map_err(|e| {
                Error::system(
                    format!(
                        "Failed to create symlink '{}' to '{}'",
                        link.display(),
                        config.display()
                    ),
                    e,
                )
            })?;
        } else if let Err(e) = fs::remove_file(&link) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(Error::system(
                    format!("Failed to delete symlink '{}'", link.display()),
                    e,
                ));
            }
        }
        obj.autostart = autostart;
        Ok(())
    }

    /// `virStoragePoolGetAutostart`.
    pub fn autostart_of(&self, pool: &PoolRef) -> Result<bool> {
        let state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        Ok(state.pools[index].autostart)
    }

    /// `virStoragePoolIsActive`.
    pub fn is_active(&self, pool: &PoolRef) -> Result<bool> {
        let state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        Ok(state.pools[index].active)
    }

    /// `virStoragePoolIsPersistent`.
    pub fn is_persistent(&self, pool: &PoolRef) -> Result<bool> {
        let state = self.inner.lock();
        let index = state.index_by_uuid(pool)?;
        Ok(state.pools[index].persistent)
    }

    /// `virStoragePoolGetInfo`.
    pub fn pool_info(&self, pool: &PoolRef) -> Result<PoolInfo> {
        let state = self.inner.lock();
        let p = &state.pools[state.index_by_uuid(pool)?];
        Ok(PoolInfo {
            state: if p.active {
                PoolState::Running
            } else {
                PoolState::Inactive
            },
            capacity: p.capacity,
            allocation: p.allocation,
            available: p.available,
        })
    }

    /// The pool's definition: the live one, or with `XML_INACTIVE` the one that applies at the next start.
    pub fn pool_def(&self, pool: &PoolRef, flags: u32) -> Result<PoolDef> {
        check_flags(flags, flags::XML_INACTIVE, "storagePoolGetXMLDesc")?;
        let state = self.inner.lock();
        let p = &state.pools[state.index_by_uuid(pool)?];
        let mut def = match (&p.new_def, flags & flags::XML_INACTIVE != 0) {
            (Some(new_def), true) => new_def.clone(),
            _ => p.def.clone(),
        };
        if let (Some(perms), false) = (p.target_perms, flags & flags::XML_INACTIVE != 0) {
            def.permissions = perms;
        }
        Ok(def)
    }

    /// `virStoragePoolGetXMLDesc`: the pool XML with its current sizes.
    pub fn pool_xml(&self, pool: &PoolRef, flags: u32) -> Result<String> {
        let def = self.pool_def(pool, flags)?;
        let info = self.pool_info(pool)?;
        Ok(xml::format_pool(
            &def,
            info.capacity,
            info.allocation,
            info.available,
        ))
    }

    /// `virConnectListAllStoragePools` with its filter flags (`flags::LIST_POOLS_*`), in definition order.
    pub fn list_pools(&self, flags: u32) -> Result<Vec<PoolRef>> {
        let known = flags::LIST_POOLS_INACTIVE
            | flags::LIST_POOLS_ACTIVE
            | flags::LIST_POOLS_PERSISTENT
            | flags::LIST_POOLS_TRANSIENT
            | flags::LIST_POOLS_AUTOSTART
            | flags::LIST_POOLS_NO_AUTOSTART
            | flags::LIST_POOLS_TYPES;
        check_flags(flags, known, "virConnectListAllStoragePools")?;
        let pair = |yes: u32, no: u32, value: bool| {
            let both = flags & (yes | no);
            both == 0 || (value && flags & yes != 0) || (!value && flags & no != 0)
        };
        let state = self.inner.lock();
        Ok(state
            .pools
            .iter()
            .filter(|p| {
                pair(
                    flags::LIST_POOLS_ACTIVE,
                    flags::LIST_POOLS_INACTIVE,
                    p.active,
                )
            })
            .filter(|p| {
                pair(
                    flags::LIST_POOLS_PERSISTENT,
                    flags::LIST_POOLS_TRANSIENT,
                    p.persistent,
                )
            })
            .filter(|p| {
                pair(
                    flags::LIST_POOLS_AUTOSTART,
                    flags::LIST_POOLS_NO_AUTOSTART,
                    p.autostart,
                )
            })
            .filter(|p| flags & flags::LIST_POOLS_TYPES == 0 || flags & p.def.kind.list_flag() != 0)
            .map(Pool::pool_ref)
            .collect())
    }

    /// Legacy `virConnectListStoragePools` (`active = true`) and `virConnectListDefinedStoragePools`
    /// (`active = false`); the `NumOf` calls are the lengths. The RPC layer truncates to `maxnames`.
    pub fn pool_names(&self, active: bool) -> Vec<String> {
        let state = self.inner.lock();
        state
            .pools
            .iter()
            .filter(|p| p.active == active)
            .map(|p| p.def.name.clone())
            .collect()
    }

    /// `virStoragePoolLookupByName`.
    pub fn lookup_pool_by_name(&self, name: &str) -> Result<PoolRef> {
        let state = self.inner.lock();
        Ok(state.pools[state.index_by_name(name)?].pool_ref())
    }

    /// `virStoragePoolLookupByUUID`.
    pub fn lookup_pool_by_uuid(&self, uuid: &Uuid) -> Result<PoolRef> {
        let state = self.inner.lock();
        state
            .pools
            .iter()
            .find(|p| p.uuid() == *uuid)
            .map(Pool::pool_ref)
            .ok_or_else(|| {
                Error::NoPool(format!(
                    "no storage pool with matching uuid '{}'",
                    uuid.hyphenated()
                ))
            })
    }

    /// `virConnectFindStoragePoolSources`: the dir and fs backends have no source discovery (as in libvirt);
    /// unknown types are an error too.
    pub fn find_pool_sources(
        &self,
        pool_type: &str,
        _spec: Option<&str>,
        flags: u32,
    ) -> Result<String> {
        check_flags(flags, 0, "storageConnectFindStoragePoolSources")?;
        if PoolType::from_name(pool_type).is_none() && !xml::is_libvirt_pool_type(pool_type) {
            return Err(Error::Internal(format!(
                "unknown storage pool type {pool_type}"
            )));
        }
        Err(Error::NoSupport(format!(
            "pool type '{pool_type}' does not support source discovery"
        )))
    }

    /// `virStoragePoolLookupByTargetPath`: the pool whose target directory is `path` (sanitized first).
    pub fn lookup_pool_by_target_path(&self, path: &str) -> Result<PoolRef> {
        let clean = sanitize_path(Path::new(path));
        let state = self.inner.lock();
        state
            .pools
            .iter()
            .find(|p| p.def.target == clean)
            .map(Pool::pool_ref)
            .ok_or_else(|| {
                Error::NoPool(format!(
                    "no storage pool with matching target path '{path}'"
                ))
            })
    }

    /// `virStoragePoolLookupByVolume`.
    pub fn lookup_pool_by_volume(&self, vol: &VolRef) -> Result<PoolRef> {
        self.lookup_pool_by_name(&vol.pool)
    }

    // ----- volumes -----

    fn active_pool_by_name<'a>(&self, state: &'a mut State, name: &str) -> Result<&'a mut Pool> {
        let index = state.index_by_name(name)?;
        let pool = &mut state.pools[index];
        pool.require_active()?;
        Ok(pool)
    }

    /// `virStoragePoolListAllVolumes`: the volumes of an active pool, by name.
    pub fn list_volumes(&self, pool: &PoolRef) -> Result<Vec<VolRef>> {
        let state = self.inner.lock();
        let p = &state.pools[state.index_by_uuid(pool)?];
        p.require_active()?;
        Ok(p.volumes.values().map(|v| v.vol_ref(&p.def.name)).collect())
    }

    /// Legacy `virStoragePoolListVolumes`; `virStoragePoolNumOfVolumes` is its length.
    pub fn volume_names(&self, pool: &PoolRef) -> Result<Vec<String>> {
        Ok(self
            .list_volumes(pool)?
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// `virStorageVolLookupByName`.
    pub fn lookup_volume_by_name(&self, pool: &PoolRef, name: &str) -> Result<VolRef> {
        let state = self.inner.lock();
        let p = &state.pools[state.index_by_uuid(pool)?];
        p.require_active()?;
        Ok(p.volume(name)?.vol_ref(&p.def.name))
    }

    /// `virStorageVolLookupByKey`: searches every active pool.
    pub fn lookup_volume_by_key(&self, key: &str) -> Result<VolRef> {
        let state = self.inner.lock();
        state
            .pools
            .iter()
            .filter(|p| p.active)
            .find_map(|p| {
                p.volumes
                    .values()
                    .find(|v| v.key == key)
                    .map(|v| v.vol_ref(&p.def.name))
            })
            .ok_or_else(|| Error::NoVolume(format!("no storage vol with matching key {key}")))
    }

    /// `virStorageVolLookupByPath`: searches every active pool for the (sanitized) path.
    pub fn lookup_volume_by_path(&self, path: &str) -> Result<VolRef> {
        let clean = sanitize_path(Path::new(path));
        let state = self.inner.lock();
        state
            .pools
            .iter()
            .filter(|p| p.active)
            .find_map(|p| {
                p.volumes
                    .values()
                    .find(|v| v.path == clean)
                    .map(|v| v.vol_ref(&p.def.name))
            })
            .ok_or_else(|| Error::NoVolume(format!("no storage vol with matching path '{path}'")))
    }

    /// Everything known about a volume.
    pub fn volume(&self, vol: &VolRef) -> Result<Volume> {
        let mut state = self.inner.lock();
        let pool = self.active_pool_by_name(&mut state, &vol.pool)?;
        pool.volume(&vol.name).cloned()
    }

    /// `virStorageVolGetInfo`.
    pub fn volume_info(&self, vol: &VolRef) -> Result<VolInfo> {
        Ok(self.volume(vol)?.info())
    }

    /// `virStorageVolGetInfoFlags`: with `VOL_GET_PHYSICAL` the allocation field carries the physical size.
    pub fn volume_info_flags(&self, vol: &VolRef, flags: u32) -> Result<VolInfo> {
        check_flags(flags, flags::VOL_GET_PHYSICAL, "storageVolGetInfoFlags")?;
        let v = self.volume(vol)?;
        let mut info = v.info();
        if flags & flags::VOL_GET_PHYSICAL != 0 {
            info.allocation = v.physical;
        }
        Ok(info)
    }

    /// `virStorageVolGetPath`.
    pub fn volume_path(&self, vol: &VolRef) -> Result<String> {
        Ok(self.volume(vol)?.path.to_string_lossy().into_owned())
    }

    /// `virStorageVolGetXMLDesc`.
    pub fn volume_xml(&self, vol: &VolRef) -> Result<String> {
        let v = self.volume(vol)?;
        let backing_perms = v.backing_store.as_ref().and_then(|b| {
            let meta = fs::metadata(&b.path).ok()?;
            Some(Permissions {
                mode: Some(meta.mode() & 0o7777),
                owner: Some(meta.uid()),
                group: Some(meta.gid()),
            })
        });
        Ok(xml::format_volume(&v, backing_perms))
    }

    fn check_new_volume(pool: &Pool, name: &str) -> Result<PathBuf> {
        validate_volume_name(name)?;
        let path = pool.def.target.join(name);
        if pool.volumes.contains_key(name)
            || pool.building.contains(name)
            || fs::symlink_metadata(&path).is_ok()
        {
            return Err(Error::VolumeExists(name.to_string()));
        }
        Ok(path)
    }

    /// `virStorageVolCreateXML`: raw volumes are sparse files of `capacity` bytes with `allocation` bytes
    /// preallocated (fallocate); qcow2 volumes come from `qemu-img create` (compat 1.1 by default, backing
    /// store with `-b`/`-F`). Flags: `VOL_CREATE_PREALLOC_METADATA` (qcow2), `VOL_CREATE_VALIDATE`.
    pub fn create_volume(&self, pool: &PoolRef, def: &VolumeDef, flags: u32) -> Result<VolRef> {
        check_flags(
            flags,
            flags::VOL_CREATE_PREALLOC_METADATA | flags::VOL_CREATE_VALIDATE,
            "storageVolCreateXML",
        )?;
        let (path, marks) = {
            let mut state = self.inner.lock();
            let index = state.index_by_uuid(pool)?;
            let p = &state.pools[index];
            p.require_active()?;
            let path = Self::check_new_volume(p, &def.name)?;
            let marks = [(p.uuid(), def.name.clone())];
            state.begin_job(&marks);
            (path, marks)
        };
        // The file is written with the lock released, as libvirt's buildVol does.
        let made = match def.format {
            VolFormat::Raw => create_raw(&path, def, flags),
            VolFormat::Qcow2 => create_qcow2(&path, def, flags),
        }
        .and_then(|()| apply_permissions(&path, &def.permissions, DEFAULT_VOL_MODE));
        self.finish_new_volume(pool, &def.name, &path, &marks, made)
    }

    /// Ends a create or clone job: releases the marks and records the new volume, or removes what was made.
    fn finish_new_volume(
        &self,
        pool: &PoolRef,
        name: &str,
        path: &Path,
        marks: &[(Uuid, String)],
        made: Result<()>,
    ) -> Result<VolRef> {
        let mut state = self.inner.lock();
        state.end_job(marks);
        let index = state.index_by_uuid(pool)?;
        let p = &mut state.pools[index];
        if let Err(err) = made.and_then(|()| self.inner.refresh_volume(p, name)) {
            let _ = fs::remove_file(path);
            p.volumes.remove(name);
            return Err(err);
        }
        p.volume(name).map(|v| v.vol_ref(&p.def.name))
    }

    /// `virStorageVolCreateXMLFrom` (clone): `qemu-img convert` from the source volume (any pool) into a new
    /// volume of `def.format`, grown to `def.capacity` when that is larger than the source.
    pub fn create_volume_from(
        &self,
        pool: &PoolRef,
        def: &VolumeDef,
        source: &VolRef,
        flags: u32,
    ) -> Result<VolRef> {
        check_flags(
            flags,
            flags::VOL_CREATE_PREALLOC_METADATA
                | flags::VOL_CREATE_VALIDATE
                | flags::VOL_CREATE_REFLINK,
            "storageVolCreateXMLFrom",
        )?;
        if flags & flags::VOL_CREATE_REFLINK != 0 {
            return Err(Error::NoSupport(
                "reflink copies are not supported by this backend".into(),
            ));
        }
        // A clone keeps a backing store (virsh vol-clone of an overlay passes the source's): qemu-img convert
        // then writes only what differs from it (-B/-F).
        let backing = match (&def.backing_store, def.format) {
            (None, _) => None,
            (Some(_), VolFormat::Raw) => {
                return Err(Error::NoSupport(
                    "backing storage not supported for raw volumes".into(),
                ))
            }
            (Some(b), VolFormat::Qcow2) => Some(resolve_backing(b)?),
        };
        let (src, path, marks) = {
            let mut state = self.inner.lock();
            let src_pool = self.active_pool_by_name(&mut state, &source.pool)?;
            let src = src_pool.volume(&source.name)?.clone();
            src_pool.check_not_building(&source.name)?;
            let src_uuid = src_pool.uuid();
            let index = state.index_by_uuid(pool)?;
            let p = &state.pools[index];
            p.require_active()?;
            let path = Self::check_new_volume(p, &def.name)?;
            let marks = [
                (src_uuid, source.name.clone()),
                (p.uuid(), def.name.clone()),
            ];
            state.begin_job(&marks);
            (src, path, marks)
        };
        let capacity = def.capacity.max(src.capacity);
        let opts = Qcow2Options {
            compat: def.compat.as_deref(),
            lazy_refcounts: def.lazy_refcounts,
            cluster_size: def.cluster_size,
            extended_l2: def.extended_l2,
            preallocation: Preallocation::for_flags(flags, def.capacity, def.allocation),
            backing,
        };
        // The copy runs with the lock released; the source is marked busy so it cannot change meanwhile.
        let made = qemu_img::convert(&src.path, &src.format, &path, def.format, &opts)
            .and_then(|()| grow_after_clone(&path, def, src.capacity, capacity))
            .and_then(|()| apply_permissions(&path, &def.permissions, DEFAULT_VOL_MODE));
        self.finish_new_volume(pool, &def.name, &path, &marks, made)
    }

    /// Runs `work` on a volume with the lock released and the volume marked busy, after `check` (under the
    /// lock) has validated the request; then re-reads the volume.
    fn volume_job<T>(
        &self,
        vol: &VolRef,
        check: impl FnOnce(&Pool, &Volume) -> Result<T>,
        work: impl FnOnce(&Volume, T) -> Result<()>,
    ) -> Result<()> {
        let (v, value, marks) = {
            let mut state = self.inner.lock();
            let pool = self.active_pool_by_name(&mut state, &vol.pool)?;
            let v = pool.volume(&vol.name)?.clone();
            pool.check_not_building(&vol.name)?;
            let value = check(pool, &v)?;
            let marks = [(pool.uuid(), vol.name.clone())];
            state.begin_job(&marks);
            (v, value, marks)
        };
        let result = work(&v, value);
        let mut state = self.inner.lock();
        state.end_job(&marks);
        let index = state.index_by_name(&vol.pool)?;
        let refreshed = self
            .inner
            .refresh_volume(&mut state.pools[index], &vol.name);
        result.and(refreshed)
    }

    /// `virStorageVolDelete`: unlinks the volume's file.
    pub fn delete_volume(&self, vol: &VolRef, flags: u32) -> Result<()> {
        check_flags(flags, 0, "storageBackendVolDeleteLocal")?;
        let mut state = self.inner.lock();
        let pool = self.active_pool_by_name(&mut state, &vol.pool)?;
        let path = pool.volume(&vol.name)?.path.clone();
        pool.check_not_building(&vol.name)?;
        fs::remove_file(&path)
            .map_err(|e| Error::system(format!("cannot unlink file '{}'", path.display()), e))?;
        pool.volumes.remove(&vol.name);
        let _ = self.inner.refresh_volume(pool, &vol.name);
        Ok(())
    }

    /// `virStorageVolWipe` / `virStorageVolWipePattern`. `VOL_WIPE_ALG_ZERO`: raw volumes have every data extent
    /// overwritten with zeros; qcow2 volumes are recreated empty with the same capacity, compat level and backing
    /// store. `VOL_WIPE_ALG_TRIM`: regular raw files are deallocated (holes read as zeros). The other algorithms
    /// need libvirt's `scrub` helper and are refused.
    pub fn wipe_volume(&self, vol: &VolRef, algorithm: u32, flags: u32) -> Result<()> {
        check_flags(flags, 0, "storageVolWipePattern")?;
        if algorithm > flags::VOL_WIPE_ALG_TRIM {
            return Err(Error::InvalidArg(format!(
                "wiping algorithm {algorithm} not supported"
            )));
        }
        if algorithm != flags::VOL_WIPE_ALG_ZERO && algorithm != flags::VOL_WIPE_ALG_TRIM {
            return Err(Error::NoSupport(format!(
                "wiping algorithm {algorithm} needs the scrub program, which this backend does not use"
            )));
        }
        let trim = algorithm == flags::VOL_WIPE_ALG_TRIM;
        self.volume_job(
            vol,
            |_, v| {
                if trim && (v.kind != VolType::File || v.format == "qcow2") {
                    return Err(Error::NoSupport(format!(
                        "trim wiping is supported for raw files only, not '{}'",
                        v.name
                    )));
                }
                Ok(())
            },
            |v, ()| match v.format.as_str() {
                _ if trim => trim_file(&v.path),
                "qcow2" => recreate_qcow2(v),
                _ => zero_data(&v.path, (v.kind == VolType::Block).then_some(v.capacity)),
            },
        )
    }

    /// `virStorageVolResize`. Flags: `VOL_RESIZE_ALLOCATE` (fallocate the new range), `VOL_RESIZE_DELTA`
    /// (capacity is relative), `VOL_RESIZE_SHRINK` (required to reduce the capacity).
    pub fn resize_volume(&self, vol: &VolRef, capacity: u64, flags: u32) -> Result<()> {
        check_flags(
            flags,
            flags::VOL_RESIZE_ALLOCATE | flags::VOL_RESIZE_DELTA | flags::VOL_RESIZE_SHRINK,
            "storageVolResize",
        )?;
        let shrink = flags & flags::VOL_RESIZE_SHRINK != 0;
        let allocate = flags & flags::VOL_RESIZE_ALLOCATE != 0;
        let check = |pool: &Pool, v: &Volume| -> Result<u64> {
            let new_capacity = if flags & flags::VOL_RESIZE_DELTA != 0 {
                if shrink {
                    v.capacity.checked_sub(capacity).ok_or_else(|| {
                        Error::InvalidArg("can't shrink capacity below size 0".into())
                    })?
                } else {
                    v.capacity
                        .checked_add(capacity)
                        .ok_or_else(|| Error::InvalidArg("capacity overflows".into()))?
                }
            } else {
                capacity
            };
            if new_capacity < v.capacity && !shrink {
                return Err(Error::InvalidArg(
                    "Can't shrink capacity below current capacity unless shrink flag explicitly specified".into(),
                ));
            }
            if new_capacity < v.capacity
                && new_capacity < v.allocation
                && v.format == "raw"
                && v.kind == VolType::File
            {
                return Err(Error::InvalidArg(
                    "Can't shrink capacity below existing allocation".into(),
                ));
            }
            if allocate && new_capacity.saturating_sub(v.allocation) > pool.available {
                return Err(Error::InvalidArg(
                    "Not enough space left in storage pool".into(),
                ));
            }
            match (v.kind, v.format.as_str()) {
                (VolType::File, "raw") => Ok(new_capacity),
                (VolType::File, "qcow2") if !allocate => Ok(new_capacity),
                (VolType::File, "qcow2") => Err(Error::NoSupport(
                    "preallocating a qcow2 resize is not supported".into(),
                )),
                (_, format) => Err(Error::NoSupport(format!(
                    "resizing a volume of format '{format}' is not supported"
                ))),
            }
        };
        let work = |v: &Volume, new_capacity: u64| -> Result<()> {
            if v.format == "qcow2" {
                return qemu_img::resize(&v.path, new_capacity, new_capacity < v.capacity);
            }
            let err = |what: &str, e| Error::system(format!("{what} '{}'", v.path.display()), e);
            let file = OpenOptions::new()
                .write(true)
                .open(&v.path)
                .map_err(|e| err("cannot open volume", e))?;
            file.set_len(new_capacity)
                .map_err(|e| err("Failed to truncate volume with path", e))?;
            if allocate && new_capacity > v.capacity {
                sys::allocate(&file, v.capacity, new_capacity - v.capacity)
                    .map_err(|e| err("Failed to pre-allocate space for file", e))?;
            }
            file.sync_all().map_err(|e| err("cannot sync", e))
        };
        self.volume_job(vol, check, work)
    }

    /// `virStorageVolUpload`: a sink writing the volume's bytes from `offset`; `length` 0 means up to the
    /// capacity. Flags: `VOL_UPLOAD_SPARSE_STREAM` enables [`UploadSink::hole`]. Closing the sink (finish, abort or
    /// drop) refreshes the pool and emits a refresh event, as libvirt does when an upload stream closes. The sink
    /// is also an `std::io::Write`.
    pub fn upload(&self, vol: &VolRef, offset: u64, length: u64, flags: u32) -> Result<UploadSink> {
        check_flags(flags, flags::VOL_UPLOAD_SPARSE_STREAM, "storageVolUpload")?;
        let mut state = self.inner.lock();
        let pool = self.active_pool_by_name(&mut state, &vol.pool)?;
        let pool_ref = pool.pool_ref();
        let v = pool.volume(&vol.name)?;
        pool.check_not_building(&vol.name)?;
        if offset > v.capacity {
            return Err(Error::InvalidArg(format!(
                "offset {offset} is past the capacity {} of volume '{}'",
                v.capacity, v.name
            )));
        }
        let limit = if length == 0 {
            v.capacity
        } else {
            offset.saturating_add(length).min(v.capacity)
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&v.path)
            .map_err(|e| Error::system(format!("Unable to open '{}'", v.path.display()), e))?;
        Ok(UploadSink::new(
            self.inner.clone(),
            pool_ref,
            v.name.clone(),
            file,
            offset,
            limit,
            flags & flags::VOL_UPLOAD_SPARSE_STREAM != 0,
        ))
    }

    /// `virStorageVolDownload`: a source reading the volume's bytes from `offset`; `length` 0 means to the end.
    /// Flags: `VOL_DOWNLOAD_SPARSE_STREAM` makes [`DownloadSource::next_chunk`] report holes instead of zeros.
    /// The source is also an `std::io::Read` (holes read as zeros there).
    pub fn download(
        &self,
        vol: &VolRef,
        offset: u64,
        length: u64,
        flags: u32,
    ) -> Result<DownloadSource> {
        check_flags(
            flags,
            flags::VOL_DOWNLOAD_SPARSE_STREAM,
            "storageVolDownload",
        )?;
        let mut state = self.inner.lock();
        let pool = self.active_pool_by_name(&mut state, &vol.pool)?;
        let v = pool.volume(&vol.name)?;
        pool.check_not_building(&vol.name)?;
        let file = File::open(&v.path)
            .map_err(|e| Error::system(format!("Unable to open '{}'", v.path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::system(format!("cannot stat '{}'", v.path.display()), e))?
            .len();
        let size = if v.kind == VolType::Block {
            v.capacity
        } else {
            size
        };
        let end = if length == 0 {
            size
        } else {
            offset.saturating_add(length).min(size)
        };
        Ok(DownloadSource::new(
            file,
            offset.min(end),
            end,
            flags & flags::VOL_DOWNLOAD_SPARSE_STREAM != 0,
        ))
    }
}

fn create_build_flags(flags: u32) -> Result<Option<u32>> {
    check_flags(
        flags,
        flags::POOL_CREATE_WITH_BUILD
            | flags::POOL_CREATE_WITH_BUILD_OVERWRITE
            | flags::POOL_CREATE_WITH_BUILD_NO_OVERWRITE,
        "storagePoolCreate",
    )?;
    let overwrite = flags & flags::POOL_CREATE_WITH_BUILD_OVERWRITE != 0;
    let no_overwrite = flags & flags::POOL_CREATE_WITH_BUILD_NO_OVERWRITE != 0;
    if overwrite && no_overwrite {
        return Err(Error::InvalidArg(
            "Flags 'VIR_STORAGE_POOL_CREATE_WITH_BUILD_OVERWRITE' and \
             'VIR_STORAGE_POOL_CREATE_WITH_BUILD_NO_OVERWRITE' are mutually exclusive"
                .into(),
        ));
    }
    Ok(if overwrite {
        Some(flags::POOL_BUILD_OVERWRITE)
    } else if no_overwrite {
        Some(flags::POOL_BUILD_NO_OVERWRITE)
    } else if flags & flags::POOL_CREATE_WITH_BUILD != 0 {
        Some(0)
    } else {
        None
    })
}

/// `buildPool` of the dir and fs backends.
fn build(def: &PoolDef, flags: u32) -> Result<()> {
    check_flags(
        flags,
        flags::POOL_BUILD_OVERWRITE | flags::POOL_BUILD_NO_OVERWRITE,
        "virStorageBackendFileSystemBuild",
    )?;
    if flags & flags::POOL_BUILD_OVERWRITE != 0 && flags & flags::POOL_BUILD_NO_OVERWRITE != 0 {
        return Err(Error::InvalidArg(
            "Flags 'VIR_STORAGE_POOL_BUILD_OVERWRITE' and 'VIR_STORAGE_POOL_BUILD_NO_OVERWRITE' are mutually exclusive"
                .into(),
        ));
    }
    let target = &def.target;
    if let Some(parent) = target.parent() {
        if !parent.exists() {
            fs::create_dir_all(parent).map_err(|e| {
                Error::system(format!("cannot create path '{}'", parent.display()), e)
            })?;
        }
    }
    match fs::create_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
        Err(e) => {
            return Err(Error::system(
                format!("cannot create path '{}'", target.display()),
                e,
            ))
        }
    }
    apply_permissions(target, &def.permissions, DEFAULT_POOL_MODE)?;
    if def.kind == PoolType::Fs && flags != 0 {
        make_filesystem(def, flags)?;
    }
    Ok(())
}

/// Runs `mkfs -t <format>` on an fs pool's device (`-F`/`-f` for the ext and xfs tools, which otherwise refuse
/// to overwrite), after checking the device is empty when `NO_OVERWRITE` is given.
fn make_filesystem(def: &PoolDef, flags: u32) -> Result<()> {
    let device = def
        .source
        .device
        .as_deref()
        .ok_or_else(|| Error::Xml("missing source device".into()))?;
    let format = match def.source.format.as_deref() {
        None | Some("auto") => {
            return Err(Error::InvalidArg(format!(
                "cannot build a file system on '{}' without an explicit source format",
                device.display()
            )))
        }
        Some(format) => format,
    };
    if !device.exists() {
        return Err(Error::OperationInvalid(format!(
            "Source device does not exist when formatting pool '{}'",
            def.name
        )));
    }
    if flags & flags::POOL_BUILD_NO_OVERWRITE != 0 {
        if let Some(existing) = probe_fs(device)? {
            return Err(Error::PoolBuilt(format!(
                "Device '{}' already formatted using '{existing}'",
                device.display()
            )));
        }
    }
    let device_arg = device.to_string_lossy().into_owned();
    let mut args = vec!["-t", format];
    match format {
        "xfs" => args.push("-f"),
        "ext2" | "ext3" | "ext4" => args.push("-F"),
        _ => {}
    }
    args.push(&device_arg);
    run_tool("mkfs", &args).map(drop)
}

/// `startPool`: dir pools need their directory; fs pools are mounted (if not already).
fn start_backend(def: &PoolDef) -> Result<()> {
    if !def.target.is_dir() {
        return Err(Error::system(
            format!("cannot open directory '{}'", def.target.display()),
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    if def.kind == PoolType::Fs {
        let mounted = sys::is_mounted(&def.target)
            .map_err(|e| Error::system("cannot read mount list '/proc/self/mounts'", e))?;
        if !mounted {
            let device = def
                .source
                .device
                .as_deref()
                .ok_or_else(|| Error::Xml("missing source device".into()))?;
            if !device.exists() {
                return Err(Error::OperationInvalid(format!(
                    "Source device '{}' does not exist",
                    device.display()
                )));
            }
            let device_arg = device.to_string_lossy().into_owned();
            let target_arg = def.target.to_string_lossy().into_owned();
            let mut args = Vec::new();
            if let Some(format) = def.source.format.as_deref().filter(|f| *f != "auto") {
                args.extend(["-t", format]);
            }
            args.extend([device_arg.as_str(), target_arg.as_str()]);
            run_tool("mount", &args)?;
        }
    }
    Ok(())
}

/// `stopPool`: fs pools are unmounted.
fn stop_backend(def: &PoolDef) -> Result<()> {
    if def.kind == PoolType::Fs
        && sys::is_mounted(&def.target)
            .map_err(|e| Error::system("cannot read mount list '/proc/self/mounts'", e))?
    {
        run_tool("umount", &[&def.target.to_string_lossy()])?;
    }
    Ok(())
}

fn create_raw(path: &Path, def: &VolumeDef, flags: u32) -> Result<()> {
    if def.backing_store.is_some() {
        return Err(Error::NoSupport(
            "backing storage not supported for raw volumes".into(),
        ));
    }
    if flags & flags::VOL_CREATE_PREALLOC_METADATA != 0 {
        return Err(Error::NoSupport(
            "metadata preallocation is not supported for raw volumes".into(),
        ));
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(def.permissions.mode.unwrap_or(DEFAULT_VOL_MODE))
        .open(path)
        .map_err(|e| Error::system(format!("Failed to create file '{}'", path.display()), e))?;
    file.set_len(def.capacity)
        .map_err(|e| Error::system(format!("cannot extend file '{}'", path.display()), e))?;
    let allocation = def.allocation.unwrap_or(0).min(def.capacity);
    sys::allocate(&file, 0, allocation).map_err(|e| {
        Error::system(
            format!(
                "cannot allocate {allocation} bytes in file '{}'",
                path.display()
            ),
            e,
        )
    })?;
    file.sync_all()
        .map_err(|e| Error::system(format!("cannot sync file '{}'", path.display()), e))
}

/// Checks a backing store exists and settles its format (probed with qemu-img when not given).
fn resolve_backing(b: &BackingStore) -> Result<(&Path, VolFormat)> {
    if !b.path.exists() {
        return Err(Error::OperationFailed(format!(
            "inaccessible backing store volume {}",
            b.path.display()
        )));
    }
    let format = match b.format {
        Some(f) => f,
        None => {
            let probed = qemu_img::info(&b.path)?.format;
            VolFormat::from_name(&probed).ok_or_else(|| {
                Error::NoSupport(format!("backing store format '{probed}' is not supported"))
            })?
        }
    };
    Ok((b.path.as_path(), format))
}

fn create_qcow2(path: &Path, def: &VolumeDef, flags: u32) -> Result<()> {
    let backing = def
        .backing_store
        .as_ref()
        .map(resolve_backing)
        .transpose()?;
    if def.capacity == 0 && backing.is_none() {
        return Err(Error::InvalidArg(
            "missing capacity for a qcow2 volume without backing store".into(),
        ));
    }
    let opts = Qcow2Options {
        compat: def.compat.as_deref(),
        lazy_refcounts: def.lazy_refcounts,
        cluster_size: def.cluster_size,
        extended_l2: def.extended_l2,
        preallocation: Preallocation::for_flags(flags, def.capacity, def.allocation),
        backing,
    };
    qemu_img::create_qcow2(path, def.capacity, &opts)
}

fn grow_after_clone(path: &Path, def: &VolumeDef, src_capacity: u64, capacity: u64) -> Result<()> {
    if capacity > src_capacity {
        match def.format {
            VolFormat::Raw => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::system(format!("cannot open '{}'", path.display()), e))?;
                file.set_len(capacity).map_err(|e| {
                    Error::system(format!("cannot extend file '{}'", path.display()), e)
                })?;
            }
            VolFormat::Qcow2 => qemu_img::resize(path, capacity, false)?,
        }
    }
    if def.format == VolFormat::Raw {
        if let Some(allocation) = def.allocation {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::system(format!("cannot open '{}'", path.display()), e))?;
            sys::allocate(&file, 0, allocation.min(capacity)).map_err(|e| {
                Error::system(format!("cannot allocate space in '{}'", path.display()), e)
            })?;
        }
    }
    Ok(())
}

/// The file a qcow2 wipe builds before it replaces the volume.
fn wipe_temp_name(volume: &str) -> String {
    format!(".{volume}.wipe")
}

fn recreate_qcow2(v: &Volume) -> Result<()> {
    let backing = match &v.backing_store {
        None => None,
        Some(b) => {
            let format = b
                .format
                .as_deref()
                .and_then(VolFormat::from_name)
                .ok_or_else(|| {
                    Error::NoSupport(format!(
                        "cannot recreate '{}' over its backing store",
                        v.name
                    ))
                })?;
            Some((PathBuf::from(&b.path), format))
        }
    };
    let tmp = v.path.with_file_name(wipe_temp_name(&v.name));
    let opts = Qcow2Options {
        compat: v.compat.as_deref(),
        lazy_refcounts: v.lazy_refcounts,
        cluster_size: v.cluster_size,
        extended_l2: v.extended_l2,
        preallocation: None,
        backing: backing.as_ref().map(|(p, f)| (p.as_path(), *f)),
    };
    let _ = fs::remove_file(&tmp);
    qemu_img::create_qcow2(&tmp, v.capacity, &opts)?;
    let result = apply_permissions(&tmp, &v.permissions, DEFAULT_VOL_MODE).and_then(|()| {
        fs::rename(&tmp, &v.path)
            .map_err(|e| Error::system(format!("cannot replace '{}'", v.path.display()), e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Deallocates a whole raw file (`VOL_WIPE_ALG_TRIM`): its size stays, every byte reads as zero.
fn trim_file(path: &Path) -> Result<()> {
    let err = |e| Error::system(format!("cannot trim volume '{}'", path.display()), e);
    let file = OpenOptions::new().write(true).open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    sys::punch_hole(&file, 0, size).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Overwrites every data extent of a file with zeros (holes already read as zeros). Block devices, whose
/// `st_size` is 0, pass their size.
fn zero_data(path: &Path, device_size: Option<u64>) -> Result<()> {
    let err = |e| Error::system(format!("cannot wipe volume '{}'", path.display()), e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(err)?;
    let size = device_size.unwrap_or(file.metadata().map_err(err)?.len());
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let Some(data) = sys::next_data(&file, pos).map_err(err)? else {
            break;
        };
        if data >= size {
            break;
        }
        let end = sys::next_hole(&file, data)
            .map_err(err)?
            .unwrap_or(size)
            .min(size);
        let mut at = data;
        while at < end {
            let n = (end - at).min(zeros.len() as u64);
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(at)).map_err(err)?;
            file.write_all(&zeros[..usize::try_from(n).unwrap_or(zeros.len())])
                .map_err(err)?;
            at += n;
        }
        pos = end;
    }
    file.sync_all().map_err(err)
}

/// Reads every `*.xml` pool file in a directory; unreadable or malformed files are reported, not fatal.
fn read_pool_dir(dir: &Path, errors: &mut Vec<String>) -> Vec<(PathBuf, PoolDef)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("xml") && p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        match fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                xml::parse_pool(&t)
                    .and_then(validate_pool_def)
                    .map_err(|e| e.libvirt_message())
            }) {
            Ok(def) => out.push((path, def)),
            Err(err) => errors.push(format!("cannot load '{}': {err}", path.display())),
        }
    }
    out
}
