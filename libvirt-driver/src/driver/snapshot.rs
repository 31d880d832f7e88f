//! Domain snapshots (`virDomainSnapshot*`), which libvirt's own libxl driver lacks.
//!
//! Each domain keeps a tree of snapshots (parent, children, the current one), persisted by the [`Store`] as one
//! `<domainsnapshot>` file per snapshot. What a snapshot holds follows libvirt's QEMU driver:
//!
//! - shut-off domains: internal snapshots of their qcow2 disks, taken, applied and deleted with
//!   `qemu-img snapshot -c/-a/-d` as libvirt does for inactive domains; a disk in another format is refused
//!   unless the snapshot leaves it out (`snapshot='no'`);
//! - running domains: memory and vCPU state through [`Backend::save`] / [`Backend::restore`], kept as a save
//!   image (the daemon's header and the domain XML, then the backend's stream) so that `virsh restore` can use
//!   it too, plus the same disk snapshots. Without disks the domain goes on after its memory is written; with
//!   disks it stops for the save, its disks are snapshotted and it is restored from that memory, so memory and
//!   disks are of one instant. A backend that cannot save says so (libvirt's OPERATION_UNSUPPORTED) before
//!   anything is touched.
//!
//! External disk snapshots (overlay files) are parsed, kept when redefined, and refused for creation, revert
//! and deletion with OPERATION_UNSUPPORTED.
//!
//! [`Store`]: crate::store::Store
//! [`Backend::save`]: crate::backend::Backend::save
//! [`Backend::restore`]: crate::backend::Backend::restore

use std::collections::BTreeMap;

use domain_xml::domain::Domain;
use domain_xml::snapshot::{DomainSnapshot, SnapshotDisk, SnapshotDomain, SnapshotParse};
use domain_xml::FormatFlags;

use super::{
    check_flags, finish, lifecycle, lock, save, validate_against, writable, DomObj, Driver,
    STATE_PAUSED, STATE_RUNNING, STATE_SHUTOFF,
};
use crate::backend::AfterSave;
use crate::proto::{code, edomain, DomRef, RpcError};
use crate::save_image::ImageHeader;
use crate::xdr::{Dec, Enc};

/// Snapshot procedure numbers of the REMOTE program.
#[allow(missing_docs)]
pub mod procs {
    pub const CREATE_XML: i32 = 185;
    pub const GET_XML_DESC: i32 = 186;
    pub const NUM: i32 = 187;
    pub const LIST_NAMES: i32 = 188;
    pub const LOOKUP_BY_NAME: i32 = 189;
    pub const HAS_CURRENT: i32 = 190;
    pub const CURRENT: i32 = 191;
    pub const REVERT: i32 = 192;
    pub const DELETE: i32 = 193;
    pub const GET_PARENT: i32 = 244;
    pub const NUM_CHILDREN: i32 = 246;
    pub const LIST_CHILDREN_NAMES: i32 = 247;
    pub const IS_CURRENT: i32 = 271;
    pub const HAS_METADATA: i32 = 272;
    pub const LIST_ALL: i32 = 274;
    pub const LIST_ALL_CHILDREN: i32 = 275;
}

/// Whether `p` is a snapshot procedure.
pub fn is_snapshot_proc(p: i32) -> bool {
    matches!(p, 185..=193 | 244 | 246 | 247 | 271 | 272 | 274 | 275)
}

/// `virDomainSnapshotCreateFlags`.
mod create {
    pub const REDEFINE: u32 = 1 << 0;
    pub const CURRENT: u32 = 1 << 1;
    pub const NO_METADATA: u32 = 1 << 2;
    pub const HALT: u32 = 1 << 3;
    pub const DISK_ONLY: u32 = 1 << 4;
    pub const REUSE_EXT: u32 = 1 << 5;
    pub const QUIESCE: u32 = 1 << 6;
    pub const ATOMIC: u32 = 1 << 7;
    pub const LIVE: u32 = 1 << 8;
    pub const VALIDATE: u32 = 1 << 9;
}

/// `virDomainSnapshotListFlags` (ROOTS and DESCENDANTS share bit 0).
mod list {
    pub const ROOTS_OR_DESCENDANTS: u32 = 1 << 0;
    pub const METADATA: u32 = 1 << 1;
    pub const LEAVES: u32 = 1 << 2;
    pub const NO_LEAVES: u32 = 1 << 3;
    pub const NO_METADATA: u32 = 1 << 4;
    pub const INACTIVE: u32 = 1 << 5;
    pub const ACTIVE: u32 = 1 << 6;
    pub const DISK_ONLY: u32 = 1 << 7;
    pub const INTERNAL: u32 = 1 << 8;
    pub const EXTERNAL: u32 = 1 << 9;
    /// Every flag, TOPOLOGICAL (1 << 10) included: lists always come parents first.
    pub const ALL: u32 = (1 << 11) - 1;
}

/// `virDomainSnapshotRevertFlags`.
mod revert {
    pub const RUNNING: u32 = 1 << 0;
    pub const PAUSED: u32 = 1 << 1;
    pub const FORCE: u32 = 1 << 2;
    pub const RESET_NVRAM: u32 = 1 << 3;
}

/// `virDomainSnapshotDeleteFlags`.
mod delete {
    pub const CHILDREN: u32 = 1 << 0;
    pub const METADATA_ONLY: u32 = 1 << 1;
    pub const CHILDREN_ONLY: u32 = 1 << 2;
}

/// Lifecycle event details for snapshot operations (`VIR_DOMAIN_EVENT_*_FROM_SNAPSHOT`).
mod detail {
    pub const DEFINED: i32 = 3;
    pub const STARTED: i32 = 3;
    pub const SUSPENDED: i32 = 5;
    pub const RESUMED: i32 = 2;
    pub const STOPPED: i32 = 6;
}

/// libvirt's snapshot schema, as installed by Debian's libvirt packages.
pub const SNAPSHOT_SCHEMA: &str = "/usr/share/libvirt/schemas/domainsnapshot.rng";

/// Largest name list a reply may carry (`REMOTE_DOMAIN_SNAPSHOT_LIST_MAX`).
const LIST_MAX: usize = 16384;

/// A domain's snapshots: every definition by name and which one is current.
#[derive(Debug, Default, Clone)]
pub struct Snapshots {
    list: BTreeMap<String, DomainSnapshot>,
    current: Option<String>,
}

fn no_snapshot(name: &str) -> RpcError {
    RpcError::libxl(
        code::NO_DOMAIN_SNAPSHOT,
        format!("Domain snapshot not found: no domain snapshot with matching name '{name}'"),
    )
}

fn xml_error(e: &domain_xml::Error) -> RpcError {
    RpcError::new(
        code::XML_ERROR,
        edomain::DOMAIN_SNAPSHOT,
        format!("XML error: {e}"),
    )
}

fn io_error(e: &crate::Error) -> RpcError {
    RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
}

fn exclusive(a: &str, b: &str) -> RpcError {
    RpcError::libxl(
        code::INVALID_ARG,
        format!("invalid argument: Flags '{a}' and '{b}' are mutually exclusive"),
    )
}

fn unsupported(m: impl std::fmt::Display) -> RpcError {
    RpcError::libxl(
        code::OPERATION_UNSUPPORTED,
        format!("Operation not supported: {m}"),
    )
}

fn config_unsupported(m: impl std::fmt::Display) -> RpcError {
    RpcError::libxl(
        code::CONFIG_UNSUPPORTED,
        format!("unsupported configuration: {m}"),
    )
}

fn name_of(s: &DomainSnapshot) -> &str {
    s.name.as_deref().unwrap_or_default()
}

/// Whether the snapshot keeps anything outside the images it names (memory file or overlay disks).
fn is_external(s: &DomainSnapshot) -> bool {
    s.memory.as_ref().is_some_and(|(l, _)| l == "external")
        || s.disks
            .iter()
            .any(|d| d.snapshot.as_deref() == Some("external"))
}

/// Whether the snapshot holds the domain's memory (taken while it ran).
fn has_memory(s: &DomainSnapshot) -> bool {
    s.memory.as_ref().is_some_and(|(l, _)| l != "no")
}

fn state_name(state: i32) -> &'static str {
    match state {
        STATE_RUNNING => "running",
        STATE_PAUSED => "paused",
        STATE_SHUTOFF => "shutoff",
        _ => "nostate",
    }
}

/// A snapshot name becomes a file name and a qcow2 snapshot tag.
fn check_name(name: &str) -> Result<(), RpcError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(RpcError::new(
            code::XML_ERROR,
            edomain::DOMAIN_SNAPSHOT,
            format!("XML error: invalid snapshot name '{name}': it must not be empty, '.', '..' or contain '/'"),
        ));
    }
    Ok(())
}

impl Snapshots {
    /// Builds the tree from loaded metadata; returns warnings for inconsistencies it repaired.
    pub fn load(items: Vec<(DomainSnapshot, bool)>) -> (Snapshots, Vec<String>) {
        let mut s = Snapshots::default();
        let mut warnings = Vec::new();
        for (snap, current) in items {
            let name = name_of(&snap).to_string();
            if current {
                s.current = Some(name.clone());
            }
            s.list.insert(name, snap);
        }
        let names: Vec<String> = s.list.keys().cloned().collect();
        for n in names {
            let orphan = s.list[&n]
                .parent
                .as_ref()
                .is_some_and(|p| !s.list.contains_key(p));
            if orphan {
                warnings.push(format!(
                    "snapshot '{n}': its parent is missing; it becomes a root"
                ));
                if let Some(x) = s.list.get_mut(&n) {
                    x.parent = None;
                }
            }
        }
        (s, warnings)
    }

    /// Number of snapshots.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn get(&self, name: &str) -> Result<&DomainSnapshot, RpcError> {
        self.list.get(name).ok_or_else(|| no_snapshot(name))
    }

    /// Direct children of `parent` (roots for `None`), oldest first.
    fn children(&self, parent: Option<&str>) -> Vec<String> {
        let mut v: Vec<&DomainSnapshot> = self
            .list
            .values()
            .filter(|s| s.parent.as_deref() == parent)
            .collect();
        v.sort_by(|a, b| (a.creation_time, name_of(a)).cmp(&(b.creation_time, name_of(b))));
        v.into_iter().map(|s| name_of(s).to_string()).collect()
    }

    /// Every descendant of `parent` (all snapshots for `None`), each after its parent.
    fn descendants(&self, parent: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack: Vec<String> = self.children(parent).into_iter().rev().collect();
        while let Some(n) = stack.pop() {
            stack.extend(self.children(Some(&n)).into_iter().rev());
            out.push(n);
        }
        out
    }

    /// The names `virDomainListAllSnapshots` / `virDomainSnapshotListAllChildren` return for `flags`, parents
    /// before children.
    fn select(&self, from: Option<&str>, flags: u32) -> Vec<String> {
        let deep = flags & list::ROOTS_OR_DESCENDANTS != 0;
        let base = match (from, deep) {
            (None, true) => self.children(None),
            (None, false) => self.descendants(None),
            (Some(n), true) => self.descendants(Some(n)),
            (Some(n), false) => self.children(Some(n)),
        };
        // A group filters only when some but not all of its bits are set.
        let pair = |yes: u32, no: u32, v: bool| {
            let (y, n) = (flags & yes != 0, flags & no != 0);
            y == n || (y && v) || (n && !v)
        };
        base.into_iter()
            .filter(|n| {
                let s = &self.list[n];
                let leaf = !self.list.values().any(|c| c.parent.as_ref() == Some(n));
                let states = flags & (list::INACTIVE | list::ACTIVE | list::DISK_ONLY);
                let state_bit = match s.state.as_deref() {
                    Some("shutoff") => list::INACTIVE,
                    Some("disk-snapshot") => list::DISK_ONLY,
                    _ => list::ACTIVE,
                };
                pair(list::LEAVES, list::NO_LEAVES, leaf)
                    // Every snapshot this driver knows has metadata.
                    && pair(list::METADATA, list::NO_METADATA, true)
                    && (states == 0 || states & state_bit != 0)
                    && pair(list::INTERNAL, list::EXTERNAL, !is_external(s))
            })
            .collect()
    }
}

/// Decodes a `remote_nonnull_domain_snapshot`.
fn decode_snap(d: &mut Dec<'_>) -> Result<(String, DomRef), RpcError> {
    let name = d.str()?;
    let dom = DomRef::decode(d)?;
    Ok((name, dom))
}

fn encode_snap(e: &mut Enc, name: &str, dom: &DomRef) {
    e.str(name);
    dom.encode(e);
}

/// Fills in one entry per domain disk, in the domain's order, as libvirt's `virDomainSnapshotAlignDisks`: a
/// disk the request names keeps its location (or gets `default`), the others get `default`, except read-only
/// and empty disks, which are left out.
fn align_disks(
    def: &Domain,
    requested: &[SnapshotDisk],
    default: &str,
) -> Result<Vec<SnapshotDisk>, RpcError> {
    let disks = &def.devices.disks;
    let mut chosen: Vec<Option<&SnapshotDisk>> = vec![None; disks.len()];
    for r in requested {
        let i = disks
            .iter()
            .position(|d| d.target_dev == r.name || d.source.as_deref() == Some(r.name.as_str()))
            .ok_or_else(|| config_unsupported(format!("no disk named '{}'", r.name)))?;
        if chosen[i].is_some() {
            return Err(config_unsupported(format!(
                "disk '{}' specified twice",
                r.name
            )));
        }
        chosen[i] = Some(r);
    }
    Ok(disks
        .iter()
        .zip(chosen)
        .map(|(d, r)| {
            let fallback = if d.readonly || d.source.is_none() {
                "no"
            } else {
                default
            };
            SnapshotDisk {
                name: d.target_dev.clone(),
                snapshot: Some(
                    r.and_then(|r| r.snapshot.clone())
                        .unwrap_or_else(|| fallback.to_string()),
                ),
                disk_type: r.and_then(|r| r.disk_type.clone()),
                source: r.and_then(|r| r.source.clone()),
                seclabels: r.map(|r| r.seclabels.clone()).unwrap_or_default(),
                driver_type: r.and_then(|r| r.driver_type.clone()),
            }
        })
        .collect())
}

/// The image path of every disk the snapshot keeps internally, resolved against `def`.
fn internal_images(def: &Domain, snap_disks: &[SnapshotDisk]) -> Result<Vec<String>, RpcError> {
    let mut out = Vec::new();
    for sd in snap_disks {
        match sd.snapshot.as_deref() {
            Some("no") | None => continue,
            Some("internal") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "{other} snapshots of disk {} are not supported by this driver yet (use snapshot='internal' on a qcow2 disk, or snapshot='no')",
                    sd.name
                )))
            }
        }
        let d = def
            .devices
            .disks
            .iter()
            .find(|d| d.target_dev == sd.name)
            .ok_or_else(|| config_unsupported(format!("no disk named '{}'", sd.name)))?;
        let path = match (d.disk_type.as_str(), &d.source) {
            ("file" | "block", Some(p)) => p.clone(),
            _ => {
                return Err(RpcError::libxl(
                    code::OPERATION_INVALID,
                    format!("Requested operation is not valid: can't manipulate inactive snapshots of disk '{}'", sd.name),
                ))
            }
        };
        // The Xen toolstack reads a disk without a driver type as raw.
        let format = d.driver_type.as_deref().unwrap_or("raw");
        if format != "qcow2" {
            return Err(config_unsupported(format!(
                "internal snapshot for disk {} unsupported for storage type {format}",
                sd.name
            )));
        }
        out.push(path);
    }
    Ok(out)
}

/// Runs `qemu-img snapshot <op> <name> <image>`; a failure is libvirt's child-process error.
fn qemu_img_snapshot(op: &str, name: &str, image: &str) -> Result<(), RpcError> {
    let program = std::env::var("QEMU_IMG").unwrap_or_else(|_| "qemu-img".to_string());
    let out = std::process::Command::new(&program)
        .args(["snapshot", op, name, image])
        .output()
        .map_err(|e| {
            RpcError::libxl(
                code::INTERNAL_ERROR,
                format!("internal error: Cannot find '{program}' in path or cannot run it: {e}"),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let status = out
        .status
        .code()
        .map_or_else(|| "signal".to_string(), |c| c.to_string());
    Err(RpcError::libxl(
        code::INTERNAL_ERROR,
        format!(
            "internal error: Child process ({program} snapshot {op} {name} {image}) unexpected exit status {status}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Takes the internal snapshot `name` in every image; on a failure the ones already taken are deleted again.
fn images_create(name: &str, images: &[String]) -> Result<(), RpcError> {
    for (i, img) in images.iter().enumerate() {
        if let Err(e) = qemu_img_snapshot("-c", name, img) {
            for done in &images[..i] {
                let _ = qemu_img_snapshot("-d", name, done);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Deletes the internal snapshot `name` from every image it can, as libvirt does (a missing image or snapshot
/// is a warning, not a failure); returns the warnings.
fn images_delete(name: &str, images: &[String]) -> Vec<String> {
    images
        .iter()
        .filter_map(|img| {
            qemu_img_snapshot("-d", name, img)
                .err()
                .map(|e| format!("skipping snapshot deletion on {img}: {}", e.message))
        })
        .collect()
}

/// How taking a running domain's memory went, with the lifecycle events it caused.
enum Taken {
    /// The memory (and disks) are taken and the domain goes on (or is halted, as asked).
    Complete(Vec<(i32, i32)>),
    /// Nothing is taken; the error says why.
    Failed(Vec<(i32, i32)>, RpcError),
}

/// What a snapshot operation changed, reported after the domain lock is released.
#[derive(Default)]
struct Outcome {
    events: Vec<(i32, i32)>,
    warnings: Vec<String>,
}

impl Driver {
    /// Loads every domain's snapshot metadata (at start-up).
    pub(super) fn load_snapshots(
        store: &crate::store::Store,
        doms: &mut BTreeMap<String, DomObj>,
        warnings: &mut Vec<String>,
    ) {
        for (name, obj) in doms.iter_mut() {
            let (items, errs) = store.load_snapshots(name);
            warnings.extend(errs);
            let (snaps, w) = Snapshots::load(items);
            warnings.extend(w.into_iter().map(|m| format!("domain '{name}': {m}")));
            obj.snaps = snaps;
        }
    }

    /// Executes one snapshot procedure, encoding its reply into `e`.
    pub(super) fn snapshot_call(
        &self,
        readonly: bool,
        proc_: i32,
        d: &mut Dec<'_>,
        e: &mut Enc,
    ) -> Result<(), RpcError> {
        use procs::*;
        let ro = writable(readonly);
        match proc_ {
            CREATE_XML => {
                let r = DomRef::decode(d)?;
                let xml = d.str()?;
                let flags = d.u32()?;
                finish(d)?;
                ro("virDomainSnapshotCreateXML")?;
                let (name, dref) = self.snapshot_create(&r, &xml, flags)?;
                encode_snap(e, &name, &dref);
            }
            GET_XML_DESC => {
                let (name, r) = decode_snap(d)?;
                let flags = d.u32()?;
                finish(d)?;
                // VIR_DOMAIN_SNAPSHOT_XML_SECURE.
                check_flags(flags, 1)?;
                if flags & 1 != 0 {
                    ro("virDomainSnapshotGetXMLDesc with secure flag")?;
                }
                let mut f = FormatFlags::INACTIVE;
                if flags & 1 != 0 {
                    f |= FormatFlags::SECURE;
                }
                let xml = self.with_snaps(&r, |_, s| Ok(s.get(&name)?.to_xml(f)))?;
                e.str(&xml);
            }
            NUM | LIST_NAMES | LIST_ALL => {
                let r = DomRef::decode(d)?;
                let max = if proc_ == NUM { 0 } else { d.i32()? };
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, list::ALL)?;
                let (names, dref) =
                    self.with_snaps(&r, |o, s| Ok((s.select(None, flags), o.dref())))?;
                encode_names(e, proc_, &names, max, &dref)?;
            }
            NUM_CHILDREN | LIST_CHILDREN_NAMES | LIST_ALL_CHILDREN => {
                let (name, r) = decode_snap(d)?;
                let max = if proc_ == NUM_CHILDREN { 0 } else { d.i32()? };
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, list::ALL)?;
                let (names, dref) = self.with_snaps(&r, |o, s| {
                    s.get(&name)?;
                    Ok((s.select(Some(&name), flags), o.dref()))
                })?;
                let p = match proc_ {
                    NUM_CHILDREN => NUM,
                    LIST_CHILDREN_NAMES => LIST_NAMES,
                    _ => LIST_ALL,
                };
                encode_names(e, p, &names, max, &dref)?;
            }
            LOOKUP_BY_NAME => {
                let r = DomRef::decode(d)?;
                let name = d.str()?;
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, 0)?;
                let dref = self.with_snaps(&r, |o, s| {
                    s.get(&name)?;
                    Ok(o.dref())
                })?;
                encode_snap(e, &name, &dref);
            }
            HAS_CURRENT => {
                let r = DomRef::decode(d)?;
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, 0)?;
                let has = self.with_snaps(&r, |_, s| Ok(s.current.is_some()))?;
                e.i32(i32::from(has));
            }
            CURRENT => {
                let r = DomRef::decode(d)?;
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, 0)?;
                let (name, dref) = self.with_snaps(&r, |o, s| {
                    let c = s.current.clone().ok_or_else(|| {
                        RpcError::libxl(
                            code::NO_DOMAIN_SNAPSHOT,
                            "Domain snapshot not found: the domain does not have a current snapshot",
                        )
                    })?;
                    Ok((c, o.dref()))
                })?;
                encode_snap(e, &name, &dref);
            }
            GET_PARENT => {
                let (name, r) = decode_snap(d)?;
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, 0)?;
                let (parent, dref) = self.with_snaps(&r, |o, s| {
                    let p = s.get(&name)?.parent.clone().ok_or_else(|| {
                        RpcError::libxl(
                            code::NO_DOMAIN_SNAPSHOT,
                            format!("Domain snapshot not found: snapshot '{name}' does not have a parent"),
                        )
                    })?;
                    Ok((p, o.dref()))
                })?;
                encode_snap(e, &parent, &dref);
            }
            IS_CURRENT | HAS_METADATA => {
                let (name, r) = decode_snap(d)?;
                let flags = d.u32()?;
                finish(d)?;
                check_flags(flags, 0)?;
                let v = self.with_snaps(&r, |_, s| {
                    s.get(&name)?;
                    // Every snapshot the driver knows has metadata.
                    Ok(proc_ == HAS_METADATA || s.current.as_deref() == Some(name.as_str()))
                })?;
                e.i32(i32::from(v));
            }
            REVERT => {
                let (name, r) = decode_snap(d)?;
                let flags = d.u32()?;
                finish(d)?;
                ro("virDomainRevertToSnapshot")?;
                self.snapshot_revert(&r, &name, flags)?;
            }
            DELETE => {
                let (name, r) = decode_snap(d)?;
                let flags = d.u32()?;
                finish(d)?;
                ro("virDomainSnapshotDelete")?;
                self.snapshot_delete(&r, &name, flags)?;
            }
            _ => return Err(RpcError::unknown_procedure(proc_)),
        }
        Ok(())
    }

    fn with_snaps<T>(
        &self,
        r: &DomRef,
        f: impl FnOnce(&DomObj, &Snapshots) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        self.with_dom(r, |o| f(o, &o.snaps))
    }

    fn finish_outcome(&self, dref: &DomRef, out: Outcome) {
        for w in out.warnings {
            eprintln!("virtxend: domain '{}': {w}", dref.name);
        }
        for (ev, det) in out.events {
            self.emit_lifecycle(dref, ev, det);
        }
    }

    /// Writes the metadata of `changed` snapshots and of the current snapshot, old and new.
    fn persist(
        &self,
        dom: &str,
        snaps: &Snapshots,
        changed: &[String],
        old_current: Option<&str>,
    ) -> Result<(), RpcError> {
        let mut names: Vec<&str> = changed.iter().map(String::as_str).collect();
        names.extend(old_current);
        names.extend(snaps.current.as_deref());
        names.sort_unstable();
        names.dedup();
        for n in names {
            if let Some(s) = snaps.list.get(n) {
                self.store
                    .save_snapshot(dom, s, snaps.current.as_deref() == Some(n))
                    .map_err(|e| io_error(&e))?;
            }
        }
        Ok(())
    }

    fn snapshot_create(
        &self,
        r: &DomRef,
        xml: &str,
        flags: u32,
    ) -> Result<(String, DomRef), RpcError> {
        use create::*;
        check_flags(flags, (1 << 10) - 1)?;
        let redefine = flags & REDEFINE != 0;
        if flags & CURRENT != 0 && !redefine {
            return Err(RpcError::libxl(
                code::INVALID_ARG,
                "invalid argument: use of 'current' flag requires 'redefine' flag",
            ));
        }
        if redefine && flags & NO_METADATA != 0 {
            return Err(exclusive(
                "VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE",
                "VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA",
            ));
        }
        if redefine && flags & HALT != 0 {
            return Err(exclusive(
                "VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE",
                "VIR_DOMAIN_SNAPSHOT_CREATE_HALT",
            ));
        }
        if flags & VALIDATE != 0 {
            validate_against(xml, SNAPSHOT_SCHEMA)?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mode = if redefine {
            SnapshotParse::Redefine
        } else {
            SnapshotParse::New { now: Some(now) }
        };
        let def = DomainSnapshot::parse(xml, mode).map_err(|e| xml_error(&e))?;
        let name = name_of(&def).to_string();
        check_name(&name)?;
        if redefine {
            return self.snapshot_redefine(r, def, flags & CURRENT != 0);
        }
        if flags & QUIESCE != 0 {
            return Err(unsupported(
                "quiescing guest file systems needs a guest agent, which this driver does not have",
            ));
        }
        if flags & (DISK_ONLY | REUSE_EXT) != 0 {
            return Err(unsupported(
                "disk-only snapshots need external disk snapshots, which this driver does not support yet",
            ));
        }
        let _ = (ATOMIC, LIVE); // Creation is always atomic; LIVE only shortens a running domain's pause.

        let mut doms = lock(&self.doms);
        let obj = Self::find_by_ref(&mut doms, r)?;
        obj.idle()?;
        if obj.snaps.list.contains_key(&name) {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                format!(
                    "Requested operation is not valid: domain snapshot '{name}' already exists"
                ),
            ));
        }
        let active = obj.active();
        let memory = match (&def.memory, active) {
            (Some((loc, _)), false) if loc != "no" => {
                return Err(config_unsupported(
                    "memory state cannot be saved with offline or disk-only snapshot",
                ))
            }
            (_, false) => ("no".to_string(), None),
            (Some((loc, _)), true) if loc == "no" => {
                return Err(config_unsupported(
                    "a running domain's snapshot without its memory must be disk-only, which needs external disk snapshots",
                ))
            }
            (Some(m), true) => m.clone(),
            (None, true) => ("internal".to_string(), None),
        };
        if active {
            // Nothing is paused or written unless the backend can save the memory.
            self.backend.check_save()?;
        }
        let default_loc = if memory.0 == "external" {
            "external"
        } else {
            "internal"
        };
        let disks = align_disks(&obj.def, &def.disks, default_loc)?;
        let images = internal_images(&obj.def, &disks)?;
        if images.is_empty() && memory.0 == "no" {
            return Err(config_unsupported("nothing selected for snapshot"));
        }
        let domain = Domain {
            id: None,
            ..obj.def.clone()
        };
        let record = DomainSnapshot {
            name: Some(name.clone()),
            description: def.description.clone(),
            state: Some(state_name(if active { obj.state } else { STATE_SHUTOFF }).to_string()),
            parent: obj.snaps.current.clone(),
            creation_time: Some(now),
            memory: Some(memory.clone()),
            disks,
            domain: Some(SnapshotDomain::Full(Box::new(domain))),
            inactive_domain: obj.next_def.clone().map(Box::new),
            active: None,
        };
        let dom_name = obj.def.name.clone();
        let mut out = Outcome::default();
        if let Some(domid) = obj.domid {
            let mem_path = match &memory.1 {
                Some(f) => std::path::PathBuf::from(f),
                None => self.store.snapshot_memory_path(&dom_name, &name),
            };
            if let Some(dir) = mem_path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_error(&crate::Error::Io(dir.to_path_buf(), e)))?;
            }
            match self.snapshot_memory(obj, domid, &name, &mem_path, &images, flags & HALT != 0) {
                Taken::Complete(events) => out.events.extend(events),
                Taken::Failed(events, e) => {
                    out.events.extend(events);
                    let dref = obj.dref();
                    // A transient domain that is gone goes, unless its memory was kept for the user to restore.
                    if !mem_path.exists() {
                        self.forget_if_transient(&mut doms, &dom_name);
                    }
                    drop(doms);
                    self.finish_outcome(&dref, out);
                    return Err(e);
                }
            }
        } else {
            images_create(&name, &images)?;
        }
        let dref = obj.dref();
        if flags & NO_METADATA == 0 {
            let old = obj.snaps.current.replace(name.clone());
            obj.snaps.list.insert(name.clone(), record);
            if let Err(e) = self.persist(&dom_name, &obj.snaps, &[], old.as_deref()) {
                // Nothing of the snapshot stays behind when its metadata cannot be written.
                obj.snaps.list.remove(&name);
                obj.snaps.current = old;
                let _ = self.store.delete_snapshot(&dom_name, &name);
                out.warnings.extend(images_delete(&name, &images));
                self.forget_if_transient(&mut doms, &dom_name);
                drop(doms);
                self.finish_outcome(&dref, out);
                return Err(e);
            }
        }
        // A transient domain halted for its snapshot goes, with its snapshots, as libvirt's.
        self.forget_if_transient(&mut doms, &dom_name);
        drop(doms);
        self.finish_outcome(&dref, out);
        Ok((name, dref))
    }

    /// Takes the memory (and the disks) of running domain `obj` (id `domid`) for snapshot `name`, the memory as
    /// a save image at `mem_path`. The guest is suspended while its memory is written and its disks are
    /// snapshotted (memory and disks are of one instant), and goes on afterwards (SUSPENDED and RESUMED when it
    /// was running), or stops for `halt`. When the disks cannot be taken, the guest goes on and nothing is kept.
    fn snapshot_memory(
        &self,
        obj: &mut DomObj,
        domid: u32,
        name: &str,
        mem_path: &std::path::Path,
        images: &[String],
        halt: bool,
    ) -> Taken {
        let was_running = obj.state == STATE_RUNNING;
        let mut events = Vec::new();
        if was_running {
            events.push((lifecycle::SUSPENDED, detail::SUSPENDED));
        }
        let header = ImageHeader {
            xml: save::image_xml(&obj.def),
            paused: !was_running,
        };
        let after = if halt {
            AfterSave::Stop
        } else {
            AfterSave::Continue
        };
        let mut disks = || images_create(name, images);
        if let Err(e) = self.write_image(mem_path, &header, domid, after, &mut disks) {
            if matches!(self.backend.info(domid), Ok(None)) {
                obj.set_stopped(&self.store, save::reason::SHUTOFF_FAILED);
                events.push((lifecycle::STOPPED, save::detail::STOPPED_FAILED));
            } else if was_running {
                events.push((lifecycle::RESUMED, detail::RESUMED));
            }
            return Taken::Failed(events, e);
        }
        if halt {
            obj.set_stopped(&self.store, 7); // VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT
            events.push((lifecycle::STOPPED, detail::STOPPED));
        } else if was_running {
            events.push((lifecycle::RESUMED, detail::RESUMED));
        }
        Taken::Complete(events)
    }

    /// `VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE`: records (or replaces) metadata without touching any disk.
    fn snapshot_redefine(
        &self,
        r: &DomRef,
        mut def: DomainSnapshot,
        make_current: bool,
    ) -> Result<(String, DomRef), RpcError> {
        let name = name_of(&def).to_string();
        let missing = |what: &str| {
            RpcError::new(
                code::XML_ERROR,
                edomain::DOMAIN_SNAPSHOT,
                format!("XML error: missing {what} from existing snapshot"),
            )
        };
        if def.state.is_none() {
            return Err(missing("state"));
        }
        if def.creation_time.is_none() {
            return Err(missing("creationTime"));
        }
        let mut doms = lock(&self.doms);
        let obj = Self::find_by_ref(&mut doms, r)?;
        let uuid = match &def.domain {
            Some(SnapshotDomain::Full(d)) => d.uuid.clone(),
            Some(SnapshotDomain::Uuid(u)) => Some(u.clone()),
            None => None,
        };
        if let Some(u) = uuid {
            if crate::proto::uuid_bytes(&u) != Some(obj.uuid) {
                return Err(RpcError::libxl(
                    code::INVALID_ARG,
                    format!(
                        "invalid argument: definition for snapshot {name} must use uuid {}",
                        crate::proto::uuid_string(&obj.uuid)
                    ),
                ));
            }
        }
        if let Some(p) = def.parent.clone() {
            if !obj.snaps.list.contains_key(&p) {
                return Err(RpcError::libxl(
                    code::INVALID_ARG,
                    format!("invalid argument: parent {p} for snapshot {name} not found"),
                ));
            }
            let mut at = Some(p.clone());
            while let Some(a) = at {
                if a == name {
                    return Err(RpcError::libxl(
                        code::INVALID_ARG,
                        format!("invalid argument: parent {p} would create cycle to {name}"),
                    ));
                }
                at = obj.snaps.list.get(&a).and_then(|s| s.parent.clone());
            }
        }
        if let Some(SnapshotDomain::Full(d)) = &mut def.domain {
            d.id = None;
        }
        def.active = None;
        let dom_name = obj.def.name.clone();
        let was_current = obj.snaps.current.as_deref() == Some(name.as_str());
        let saved = (
            obj.snaps.list.get(&name).cloned(),
            obj.snaps.current.clone(),
        );
        obj.snaps.list.insert(name.clone(), def);
        let old = obj.snaps.current.clone();
        if make_current || was_current {
            obj.snaps.current = Some(name.clone());
        }
        if let Err(e) = self.persist(
            &dom_name,
            &obj.snaps,
            std::slice::from_ref(&name),
            old.as_deref(),
        ) {
            match saved.0 {
                Some(prev) => {
                    obj.snaps.list.insert(name.clone(), prev);
                }
                None => {
                    obj.snaps.list.remove(&name);
                }
            }
            obj.snaps.current = saved.1;
            return Err(e);
        }
        Ok((name, obj.dref()))
    }

    fn snapshot_revert(&self, r: &DomRef, name: &str, flags: u32) -> Result<(), RpcError> {
        use revert::*;
        check_flags(flags, RUNNING | PAUSED | FORCE | RESET_NVRAM)?;
        if flags & RUNNING != 0 && flags & PAUSED != 0 {
            return Err(exclusive(
                "VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING",
                "VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED",
            ));
        }
        let mut doms = lock(&self.doms);
        let obj = Self::find_by_ref(&mut doms, r)?;
        obj.idle()?;
        let snap = obj.snaps.get(name)?.clone();
        if is_external(&snap) {
            return Err(config_unsupported(
                "revert to external snapshot not supported yet",
            ));
        }
        if snap.state.as_deref() == Some("disk-snapshot") {
            return Err(config_unsupported(
                "revert to a disk-only snapshot of a running domain is not supported",
            ));
        }
        let mut def = match &snap.domain {
            Some(SnapshotDomain::Full(d)) => Domain {
                id: None,
                ..(**d).clone()
            },
            _ if flags & FORCE != 0 => Domain {
                id: None,
                ..obj.next_def.clone().unwrap_or_else(|| obj.def.clone())
            },
            _ => {
                return Err(RpcError::libxl(
                    code::SNAPSHOT_REVERT_RISKY,
                    format!(
                        "revert requires force: snapshot '{name}' lacks domain '{}' rollback info",
                        obj.def.name
                    ),
                ))
            }
        };
        def.name = obj.def.name.clone();
        def.uuid = Some(crate::proto::uuid_string(&obj.uuid));
        let with_memory = has_memory(&snap);
        if !obj.persistent && !with_memory && flags & (RUNNING | PAUSED) == 0 {
            return Err(RpcError::libxl(
                code::OPERATION_INVALID,
                "Requested operation is not valid: transient domain needs to request run or pause to revert to inactive snapshot",
            ));
        }
        // Nothing is stopped or rolled back unless the backend can restore the memory and the saved memory is
        // there, intact and this domain's.
        let mut memory = None;
        if with_memory {
            self.backend.check_save()?;
            let mem = match snap.memory.as_ref().and_then(|m| m.1.clone()) {
                Some(f) => std::path::PathBuf::from(f),
                None => self.store.snapshot_memory_path(&obj.def.name, name),
            };
            let img = save::open_image(&mem)?;
            if img.def.uuid.as_deref().and_then(crate::proto::uuid_bytes) != Some(obj.uuid) {
                return Err(RpcError::libxl(
                    code::OPERATION_FAILED,
                    format!(
                        "operation failed: the memory of snapshot '{name}' in {} belongs to domain '{}'",
                        mem.display(),
                        img.def.name
                    ),
                ));
            }
            memory = Some(img.file);
        }
        let images = internal_images(&def, &snap.disks)?;
        let dom_name = obj.def.name.clone();
        let mut out = Outcome::default();
        if let Some(domid) = obj.domid {
            self.backend.destroy(domid)?;
            obj.domid = None;
            obj.def.id = None;
            obj.state = STATE_SHUTOFF;
            obj.reason = 7; // VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT
            self.store.delete_status(&dom_name);
            out.events.push((lifecycle::STOPPED, detail::STOPPED));
        }
        for img in &images {
            qemu_img_snapshot("-a", name, img)?;
        }
        if obj.persistent {
            self.store.save_config(&def).map_err(|e| io_error(&e))?;
            out.events.push((lifecycle::DEFINED, detail::DEFINED));
        }
        obj.def = def.clone();
        obj.next_def = None;
        let old = obj.snaps.current.replace(name.to_string());
        let persisted = self.persist(&dom_name, &obj.snaps, &[], old.as_deref());
        let run = with_memory || flags & (RUNNING | PAUSED) != 0;
        let paused = flags & PAUSED != 0
            || (flags & RUNNING == 0 && snap.state.as_deref() == Some("paused"));
        if run {
            let created = match memory.as_mut() {
                Some(file) => self.backend.restore(&def, file, paused),
                None => self.backend.create(&def, paused),
            };
            match created {
                Ok(domid) => {
                    obj.domid = Some(domid);
                    obj.def.id = Some(i64::from(domid));
                    obj.state = if paused { STATE_PAUSED } else { STATE_RUNNING };
                    obj.reason = if paused { 7 } else { 4 }; // PAUSED_/RUNNING_FROM_SNAPSHOT
                    let _ = self.store.save_status(&obj.def);
                    out.events.push((lifecycle::STARTED, detail::STARTED));
                    if paused {
                        out.events.push((lifecycle::SUSPENDED, detail::SUSPENDED));
                    }
                }
                Err(e) => {
                    let dref = obj.dref();
                    drop(doms);
                    self.finish_outcome(&dref, out);
                    return Err(e);
                }
            }
        }
        let dref = obj.dref();
        drop(doms);
        self.finish_outcome(&dref, out);
        persisted
    }

    fn snapshot_delete(&self, r: &DomRef, name: &str, flags: u32) -> Result<(), RpcError> {
        use delete::*;
        check_flags(flags, CHILDREN | METADATA_ONLY | CHILDREN_ONLY)?;
        if flags & CHILDREN != 0 && flags & CHILDREN_ONLY != 0 {
            return Err(exclusive(
                "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN",
                "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY",
            ));
        }
        let mut doms = lock(&self.doms);
        let obj = Self::find_by_ref(&mut doms, r)?;
        obj.idle()?;
        let snap = obj.snaps.get(name)?.clone();
        let descendants = obj.snaps.descendants(Some(name));
        let mut doomed: Vec<String> = Vec::new();
        if flags & CHILDREN_ONLY == 0 {
            doomed.push(name.to_string());
        }
        if flags & (CHILDREN | CHILDREN_ONLY) != 0 {
            doomed.extend(descendants);
        }
        let mut out = Outcome::default();
        if flags & METADATA_ONLY == 0 {
            // Check everything first, then delete the images' snapshots, deepest first.
            let mut work = Vec::new();
            for n in &doomed {
                let s = &obj.snaps.list[n];
                if is_external(s) {
                    return Err(unsupported(format!(
                        "deletion of external snapshot '{n}' is not supported yet; use --metadata"
                    )));
                }
                let def = match &s.domain {
                    Some(SnapshotDomain::Full(d)) => (**d).clone(),
                    _ => obj.def.clone(),
                };
                let images = internal_images(&def, &s.disks)?;
                if obj.active() && !images.is_empty() {
                    return Err(unsupported(
                        "deleting internal disk snapshots of a running domain needs the hypervisor's block layer; use --metadata",
                    ));
                }
                work.push((n.clone(), images));
            }
            for (n, images) in work.iter().rev() {
                out.warnings.extend(images_delete(n, images));
            }
        }
        let dom_name = obj.def.name.clone();
        let old = obj.snaps.current.clone();
        let mut changed = Vec::new();
        if flags & (CHILDREN | CHILDREN_ONLY) == 0 {
            // The children of a deleted snapshot move up to its parent.
            for c in obj.snaps.children(Some(name)) {
                if let Some(s) = obj.snaps.list.get_mut(&c) {
                    s.parent = snap.parent.clone();
                }
                changed.push(c);
            }
        }
        if old.as_ref().is_some_and(|c| doomed.contains(c)) {
            obj.snaps.current = if flags & CHILDREN_ONLY != 0 {
                Some(name.to_string())
            } else {
                snap.parent.clone()
            };
        }
        for n in &doomed {
            obj.snaps.list.remove(n);
        }
        let persisted = self.persist(
            &dom_name,
            &obj.snaps,
            &changed,
            old.as_deref().filter(|o| !doomed.iter().any(|d| d == o)),
        );
        for n in &doomed {
            if let Err(e) = self.store.delete_snapshot(&dom_name, n) {
                out.warnings.push(e.to_string());
            }
        }
        let dref = obj.dref();
        drop(doms);
        self.finish_outcome(&dref, out);
        persisted
    }
}

/// Encodes a NUM (count), LIST_NAMES (names) or LIST_ALL (snapshot refs and count) reply.
fn encode_names(
    e: &mut Enc,
    kind: i32,
    names: &[String],
    max: i32,
    dref: &DomRef,
) -> Result<(), RpcError> {
    match kind {
        procs::NUM => {
            e.i32(names.len() as i32);
        }
        procs::LIST_NAMES => {
            if !(0..=LIST_MAX as i32).contains(&max) {
                return Err(RpcError::rpc("maxnames > REMOTE_DOMAIN_SNAPSHOT_LIST_MAX"));
            }
            let n = names.len().min(max as usize);
            e.u32(n as u32);
            for name in &names[..n] {
                e.str(name);
            }
        }
        _ => {
            // need_results: the references too, or only the count.
            if max != 0 {
                e.u32(names.len() as u32);
                for name in names {
                    encode_snap(e, name, dref);
                }
            } else {
                e.u32(0);
            }
            e.i32(names.len() as i32);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, parent: Option<&str>, t: i64, state: &str) -> (DomainSnapshot, bool) {
        (
            DomainSnapshot {
                name: Some(name.into()),
                description: None,
                state: Some(state.into()),
                parent: parent.map(str::to_string),
                creation_time: Some(t),
                memory: Some(("no".into(), None)),
                disks: Vec::new(),
                domain: None,
                inactive_domain: None,
                active: None,
            },
            false,
        )
    }

    fn tree() -> Snapshots {
        // a -> b -> d, a -> c; e is a second root.
        let (s, w) = Snapshots::load(vec![
            snap("a", None, 1, "shutoff"),
            snap("b", Some("a"), 2, "shutoff"),
            snap("c", Some("a"), 3, "running"),
            snap("d", Some("b"), 4, "shutoff"),
            snap("e", None, 5, "shutoff"),
        ]);
        assert!(w.is_empty());
        s
    }

    #[test]
    fn selection_follows_libvirts_flags() {
        let s = tree();
        assert_eq!(s.select(None, 0), ["a", "b", "d", "c", "e"]);
        assert_eq!(s.select(None, list::ROOTS_OR_DESCENDANTS), ["a", "e"]);
        assert_eq!(s.select(None, list::LEAVES), ["d", "c", "e"]);
        assert_eq!(s.select(None, list::NO_LEAVES), ["a", "b"]);
        assert_eq!(s.select(None, list::LEAVES | list::NO_LEAVES).len(), 5);
        assert_eq!(s.select(None, list::ACTIVE), ["c"]);
        assert!(s.select(None, list::NO_METADATA).is_empty());
        assert_eq!(s.select(Some("a"), 0), ["b", "c"]);
        assert_eq!(
            s.select(Some("a"), list::ROOTS_OR_DESCENDANTS),
            ["b", "d", "c"]
        );
        assert!(s.select(Some("d"), 0).is_empty());
    }

    #[test]
    fn an_orphan_becomes_a_root() {
        let (s, w) = Snapshots::load(vec![snap("x", Some("gone"), 1, "shutoff")]);
        assert_eq!(w.len(), 1);
        assert_eq!(s.select(None, list::ROOTS_OR_DESCENDANTS), ["x"]);
    }

    #[test]
    fn names_that_cannot_be_files_are_refused() {
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(
                check_name(bad).unwrap_err().code,
                code::XML_ERROR,
                "{bad:?}"
            );
        }
        check_name("before-upgrade").unwrap();
    }
}
