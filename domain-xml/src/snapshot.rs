//! Domain snapshot XML (`<domainsnapshot>`), as libvirt's `virDomainSnapshotDefParse` reads it and
//! `virDomainSnapshotDefFormat` writes it.
//!
//! A definition is read either as a new snapshot request ([`SnapshotParse::New`]: the state, parent, creation
//! time and domain are libvirt's to fill in and are ignored; a missing name becomes the creation time) or as a
//! redefinition of an existing snapshot ([`SnapshotParse::Redefine`]: everything is kept, and the name is
//! required).

use crate::domain::Domain;
use crate::xml::{Cursor, Element};
use crate::{Error, FormatFlags};

/// Snapshot states (`virDomainSnapshotState`).
pub const SNAPSHOT_STATES: &[&str] = &[
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
    "disk-snapshot",
];

/// Snapshot locations of memory and disks.
pub const SNAPSHOT_LOCATIONS: &[&str] = &["no", "internal", "external", "manual"];

/// How a snapshot definition is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotParse {
    /// A new snapshot taken at `now` (seconds since the epoch), when known.
    New {
        /// The creation time; also the default name.
        now: Option<i64>,
    },
    /// Redefinition of existing snapshot metadata.
    Redefine,
}

/// `<seclabel>` inside a snapshot disk's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSeclabel {
    /// `model`.
    pub model: Option<String>,
    /// `relabel`.
    pub relabel: Option<bool>,
    /// `<label>`.
    pub label: Option<String>,
}

/// A `<disk>` of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// Target name (`vda`) or source path.
    pub name: String,
    /// `snapshot`: no, internal, external, manual.
    pub snapshot: Option<String>,
    /// `type`: file or block (file when a source file is given).
    pub disk_type: Option<String>,
    /// `<source file|dev>`.
    pub source: Option<String>,
    /// Source seclabels.
    pub seclabels: Vec<SnapshotSeclabel>,
    /// `<driver type>`.
    pub driver_type: Option<String>,
}

/// The domain a snapshot belongs to: its full definition, or only its UUID.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotDomain {
    /// The domain's definition at the time of the snapshot.
    Full(Box<Domain>),
    /// Only the UUID (`<domain><uuid/></domain>`).
    Uuid(String),
}

/// A domain snapshot definition.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSnapshot {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// State of the domain when the snapshot was taken.
    pub state: Option<String>,
    /// Parent snapshot name.
    pub parent: Option<String>,
    /// Creation time (seconds since the epoch).
    pub creation_time: Option<i64>,
    /// `<memory snapshot file>`.
    pub memory: Option<(String, Option<String>)>,
    /// Disks.
    pub disks: Vec<SnapshotDisk>,
    /// The domain.
    pub domain: Option<SnapshotDomain>,
    /// The inactive domain definition of a running domain's snapshot.
    pub inactive_domain: Option<Box<Domain>>,
    /// `<active>`: whether this is the current snapshot (libvirt's internal state files only).
    pub active: Option<bool>,
}

fn text_child(c: &mut Cursor<'_>, name: &str) -> Result<Option<String>, Error> {
    match c.child(name)? {
        Some(t) => Ok(Some(t.text_finish()?)),
        None => Ok(None),
    }
}

fn location(c: &Cursor<'_>, attr: &str, v: &str) -> Result<String, Error> {
    if SNAPSHOT_LOCATIONS.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(c.invalid_attr(attr, v, "expected 'no', 'internal', 'external' or 'manual'"))
    }
}

fn parse_disk(mut d: Cursor<'_>) -> Result<SnapshotDisk, Error> {
    let name = d.req_attr("name")?.to_string();
    let snapshot = match d.attr("snapshot") {
        Some(v) => Some(location(&d, "snapshot", v)?),
        None => None,
    };
    let mut disk_type = match d.attr("type") {
        Some(t @ ("file" | "block")) => Some(t.to_string()),
        Some(t) => return Err(d.invalid_attr("type", t, "expected 'file' or 'block'")),
        None => None,
    };
    let mut source = None;
    let mut seclabels = Vec::new();
    if let Some(mut s) = d.child("source")? {
        source = s.attr("file").or_else(|| s.attr("dev")).map(str::to_string);
        for mut l in s.children("seclabel") {
            let model = l.attr("model").map(str::to_string);
            let relabel = l.attr_yes_no("relabel")?;
            let label = text_child(&mut l, "label")?;
            l.finish()?;
            seclabels.push(SnapshotSeclabel {
                model,
                relabel,
                label,
            });
        }
        s.finish()?;
        if disk_type.is_none() && source.is_some() {
            disk_type = Some("file".into());
        }
    }
    let mut driver_type = None;
    if let Some(mut dr) = d.child("driver")? {
        driver_type = dr.attr("type").map(str::to_string);
        dr.finish()?;
    }
    d.finish()?;
    Ok(SnapshotDisk {
        name,
        snapshot,
        disk_type,
        source,
        seclabels,
        driver_type,
    })
}

impl DomainSnapshot {
    /// Parses a `<domainsnapshot>` document.
    pub fn parse(xml: &str, mode: SnapshotParse) -> Result<DomainSnapshot, Error> {
        let root = Element::parse(xml)?;
        if root.name != "domainsnapshot" {
            return Err(Error::WrongRoot {
                expected: "domainsnapshot".into(),
                found: root.name.clone(),
            });
        }
        let redefine = mode == SnapshotParse::Redefine;
        let mut c = Cursor::root(&root);
        let mut s = DomainSnapshot {
            name: text_child(&mut c, "name")?.map(|n| n.trim().to_string()),
            description: text_child(&mut c, "description")?,
            state: None,
            parent: None,
            creation_time: None,
            memory: None,
            disks: Vec::new(),
            domain: None,
            inactive_domain: None,
            active: None,
        };
        if let Some(mut st) = c.child("state")? {
            let v = st.text_with(|t| {
                let t = t.trim();
                if SNAPSHOT_STATES.contains(&t) {
                    Ok(t.to_string())
                } else {
                    Err("unknown snapshot state".to_string())
                }
            })?;
            st.finish()?;
            if redefine {
                s.state = Some(v);
            }
        }
        if let Some(mut p) = c.child("parent")? {
            let n = text_child(&mut p, "name")?;
            p.finish()?;
            if redefine {
                s.parent = n.map(|n| n.trim().to_string());
            }
        }
        if let Some(mut ct) = c.child("creationTime")? {
            let t = ct.text_with(|t| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| "expected seconds since the epoch".to_string())
            })?;
            ct.finish()?;
            if redefine {
                s.creation_time = Some(t);
            }
        }
        if let Some(mut m) = c.child("memory")? {
            let snap = match m.attr("snapshot") {
                Some(v) => Some(location(&m, "snapshot", v)?),
                None => None,
            };
            let file = m.attr("file").map(str::to_string);
            m.finish()?;
            let snap = match (snap, &file) {
                (Some(s), _) => s,
                (None, Some(_)) => "external".to_string(),
                (None, None) => {
                    return Err(Error::MissingAttribute {
                        path: "/domainsnapshot/memory/@snapshot".into(),
                    })
                }
            };
            if file.is_some() && snap != "external" {
                return Err(Error::InvalidValue {
                    path: "/domainsnapshot/memory/@snapshot".into(),
                    value: snap,
                    reason: "a memory file requires an external snapshot".into(),
                });
            }
            s.memory = Some((snap, file));
        }
        if let Some(mut ds) = c.child("disks")? {
            for d in ds.children("disk") {
                s.disks.push(parse_disk(d)?);
            }
            ds.finish()?;
        }
        if let Some(mut d) = c.child("domain")? {
            let el = d.element();
            if el.get_attr("type").is_some() {
                d.consume_all();
                if redefine {
                    s.domain = Some(SnapshotDomain::Full(Box::new(Domain::from_element(el)?)));
                }
            } else {
                let u = match d.child("uuid")? {
                    Some(mut u) => u.text_with(crate::domain::parse_uuid)?,
                    None => {
                        return Err(Error::MissingElement {
                            path: "/domainsnapshot/domain/uuid".into(),
                        })
                    }
                };
                d.finish()?;
                if redefine {
                    s.domain = Some(SnapshotDomain::Uuid(u));
                }
            }
        }
        if let Some(mut d) = c.child("inactiveDomain")? {
            let mut el = d.element().clone();
            d.consume_all();
            el.name = "domain".into();
            if redefine {
                s.inactive_domain = Some(Box::new(Domain::from_element(&el)?));
            }
        }
        if let Some(mut a) = c.child("active")? {
            let v = a.text_with(|t| match t.trim() {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err("expected 0 or 1".to_string()),
            })?;
            a.finish()?;
            if redefine {
                s.active = Some(v);
            }
        }
        c.finish()?;
        match mode {
            SnapshotParse::Redefine => {
                if s.name.is_none() {
                    return Err(Error::MissingElement {
                        path: "/domainsnapshot/name".into(),
                    });
                }
            }
            SnapshotParse::New { now } => {
                if let Some(now) = now {
                    s.creation_time = Some(now);
                    if s.name.is_none() {
                        s.name = Some(now.to_string());
                    }
                }
            }
        }
        Ok(s)
    }

    /// Formats the snapshot as libvirt does, ending with a newline.
    pub fn to_xml(&self, flags: FormatFlags) -> String {
        self.to_element(flags).to_xml()
    }

    /// Builds the formatted element tree.
    pub fn to_element(&self, flags: FormatFlags) -> Element {
        let mut e = Element::new("domainsnapshot");
        if let Some(n) = &self.name {
            e.push(Element::new("name").text(n.clone()));
        }
        if let Some(d) = &self.description {
            e.push(Element::new("description").text(d.clone()));
        }
        if let Some(s) = &self.state {
            e.push(Element::new("state").text(s.clone()));
        }
        if let Some(p) = &self.parent {
            e.push(Element::new("parent").child(Element::new("name").text(p.clone())));
        }
        if let Some(t) = self.creation_time {
            e.push(Element::new("creationTime").text(t.to_string()));
        }
        if let Some((snap, file)) = &self.memory {
            e.push(
                Element::new("memory")
                    .attr("snapshot", snap)
                    .opt_attr("file", file.as_deref()),
            );
        }
        if !self.disks.is_empty() {
            let mut ds = Element::new("disks");
            for d in &self.disks {
                let mut de = Element::new("disk")
                    .attr("name", &d.name)
                    .opt_attr("snapshot", d.snapshot.as_deref())
                    .opt_attr("type", d.disk_type.as_deref());
                if d.source.is_some() || !d.seclabels.is_empty() {
                    let attr = if d.disk_type.as_deref() == Some("block") {
                        "dev"
                    } else {
                        "file"
                    };
                    let mut se = Element::new("source").opt_attr(attr, d.source.as_deref());
                    for l in &d.seclabels {
                        let mut le = Element::new("seclabel")
                            .opt_attr("model", l.model.as_deref())
                            .opt_attr("relabel", l.relabel.map(crate::xml::yes_no));
                        if let Some(lab) = &l.label {
                            le.push(Element::new("label").text(lab.clone()));
                        }
                        se.push(le);
                    }
                    de.push(se);
                }
                if let Some(t) = &d.driver_type {
                    de.push(Element::new("driver").attr("type", t));
                }
                ds.push(de);
            }
            e.push(ds);
        }
        match &self.domain {
            Some(SnapshotDomain::Full(d)) => e.push(d.to_element(flags)),
            Some(SnapshotDomain::Uuid(u)) => {
                e.push(Element::new("domain").child(Element::new("uuid").text(u.clone())))
            }
            None => {}
        }
        if let Some(d) = &self.inactive_domain {
            let mut el = d.to_element(flags);
            el.name = "inactiveDomain".into();
            e.push(el);
        }
        if let Some(a) = self.active {
            e.push(Element::new("active").text(if a { "1" } else { "0" }));
        }
        e
    }
}
