//! Storage pool (`<pool>`) and volume (`<volume>`) XML. Pools as libvirt's `virStoragePoolDefParseXML` reads it and
//! `virStoragePoolDefFormat` writes it (inactive definition: sizes in bytes, sanitised target paths, per-type
//! defaults for the source name, format and target path, no free-extent lists).

use crate::xml::{Cursor, Element};
use crate::Error;

/// The fs storage pool XML namespace (`<fs:mount_opts>`).
pub const FS_NAMESPACE: &str = "http://libvirt.org/schemas/storagepool/fs/1.0";

/// Pool types libvirt knows.
pub const POOL_TYPES: &[&str] = &[
    "dir",
    "fs",
    "netfs",
    "logical",
    "disk",
    "iscsi",
    "iscsi-direct",
    "scsi",
    "mpath",
    "rbd",
    "sheepdog",
    "gluster",
    "zfs",
    "vstorage",
];

/// `<host name port>` of a pool source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHost {
    /// Host name or address.
    pub name: String,
    /// Port.
    pub port: Option<u16>,
}

/// `<device path part_separator>` of a pool source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// Device path (or iSCSI target IQN).
    pub path: String,
    /// `part_separator` (disk pools).
    pub part_separator: Option<bool>,
}

/// `<auth type username><secret uuid|usage/></auth>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAuth {
    /// `chap` or `ceph`.
    pub auth_type: String,
    /// User name.
    pub username: String,
    /// Secret UUID.
    pub secret_uuid: Option<String>,
    /// Secret usage.
    pub secret_usage: Option<String>,
}

/// `<adapter>` of a SCSI pool: its attributes in libvirt's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolAdapter {
    /// `scsi_host` or `fc_host`.
    pub adapter_type: String,
    /// `name` (scsi_host).
    pub name: Option<String>,
    /// `parent` (fc_host).
    pub parent: Option<String>,
    /// `parent_wwnn`.
    pub parent_wwnn: Option<String>,
    /// `parent_wwpn`.
    pub parent_wwpn: Option<String>,
    /// `parent_fabric_wwn`.
    pub parent_fabric_wwn: Option<String>,
    /// `managed`.
    pub managed: Option<bool>,
    /// `wwnn`.
    pub wwnn: Option<String>,
    /// `wwpn`.
    pub wwpn: Option<String>,
    /// `<parentaddr unique_id><address domain bus slot function/></parentaddr>` (scsi_host).
    pub parentaddr: Option<(Option<u32>, [u32; 4])>,
}

/// `<source>` of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolSource {
    /// Hosts.
    pub hosts: Vec<PoolHost>,
    /// Devices.
    pub devices: Vec<PoolDevice>,
    /// `<dir path>`.
    pub dir: Option<String>,
    /// SCSI adapter.
    pub adapter: Option<PoolAdapter>,
    /// `<name>`: volume group, RBD pool, gluster volume, ZFS pool...
    pub name: Option<String>,
    /// `<initiator><iqn name/></initiator>`.
    pub initiator_iqn: Option<String>,
    /// `<format type>`.
    pub format: Option<String>,
    /// Authentication.
    pub auth: Option<PoolAuth>,
    /// `<protocol ver>` (netfs).
    pub protocol_ver: Option<String>,
    /// `<vendor name>`.
    pub vendor: Option<String>,
    /// `<product name>`.
    pub product: Option<String>,
}

/// `<permissions>` of a pool or volume target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Octal mode.
    pub mode: Option<u32>,
    /// Owner uid (`-1`: unset).
    pub owner: Option<u32>,
    /// Group gid (`-1`: unset).
    pub group: Option<u32>,
    /// Security label.
    pub label: Option<String>,
}

impl Permissions {
    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.group.is_none() && self.label.is_none()
    }

    fn parse(mut p: Cursor<'_>) -> Result<Permissions, Error> {
        let mut perms = Permissions::default();
        if let Some(mut m) = p.child("mode")? {
            perms.mode = Some(m.text_with(|t| {
                u32::from_str_radix(t.trim(), 8)
                    .ok()
                    .filter(|v| *v <= 0o7777)
                    .ok_or_else(|| "expected an octal mode up to 07777".to_string())
            })?);
            m.finish()?;
        }
        for (name, slot) in [("owner", &mut perms.owner), ("group", &mut perms.group)] {
            if let Some(mut o) = p.child(name)? {
                *slot = o.text_with(|t| {
                    let v: i64 = t
                        .trim()
                        .parse()
                        .map_err(|_| "expected a numeric id".to_string())?;
                    if v == -1 || v == i64::from(u32::MAX) {
                        Ok(None)
                    } else {
                        u32::try_from(v)
                            .map(Some)
                            .map_err(|_| "id out of range".to_string())
                    }
                })?;
                o.finish()?;
            }
        }
        if let Some(l) = p.child("label")? {
            perms.label = Some(l.text_finish()?.trim().to_string());
        }
        p.finish()?;
        Ok(perms)
    }

    fn to_element(&self) -> Element {
        let mut e = Element::new("permissions");
        if let Some(m) = self.mode {
            e.push(Element::new("mode").text(format!("0{m:o}")));
        }
        if let Some(o) = self.owner {
            e.push(Element::new("owner").text(o.to_string()));
        }
        if let Some(g) = self.group {
            e.push(Element::new("group").text(g.to_string()));
        }
        if let Some(l) = &self.label {
            e.push(Element::new("label").text(l.clone()));
        }
        e
    }
}

/// A storage pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePool {
    /// Pool type (one of [`POOL_TYPES`]).
    pub pool_type: String,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: Option<String>,
    /// Capacity in bytes (runtime state; parsing leaves it 0).
    pub capacity: u64,
    /// Allocation in bytes.
    pub allocation: u64,
    /// Available bytes.
    pub available: u64,
    /// `<features><cow state/></features>`.
    pub cow: Option<bool>,
    /// Source.
    pub source: PoolSource,
    /// Target path.
    pub target_path: Option<String>,
    /// Target permissions.
    pub permissions: Permissions,
    /// `<refresh><volume allocation/></refresh>`.
    pub refresh_volume_allocation: Option<String>,
    /// `<fs:mount_opts>` options (netfs/fs namespace).
    pub mount_opts: Vec<String>,
}

/// Collapses repeated slashes and drops a trailing one, as libvirt's `virFileSanitizePath` (a leading `//`
/// is kept, three or more become one).
pub fn sanitize_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let keep_double = p.starts_with("//") && !p.starts_with("///");
    let mut prev_slash = false;
    for ch in p.chars() {
        if ch == '/' {
            if prev_slash {
                continue;
            }
            prev_slash = true;
        } else {
            prev_slash = false;
        }
        out.push(ch);
    }
    if keep_double {
        out.insert(0, '/');
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// Scales `value` in `unit` to bytes as libvirt's `virScaleInteger` does: `b`/`bytes`, powers of 1024
/// (`k`, `KiB`, `M`, `MiB`... `E`, `EiB`) and powers of 1000 (`KB`, `MB`... `EB`).
pub fn scale_to_bytes(value: u64, unit: Option<&str>) -> Result<u64, String> {
    let unit = unit.unwrap_or("b");
    let (base, exp): (u64, u32) = match unit {
        "b" | "B" | "byte" | "bytes" => (1, 0),
        "k" | "K" | "KiB" => (1024, 1),
        "KB" => (1000, 1),
        "m" | "M" | "MiB" => (1024, 2),
        "MB" => (1000, 2),
        "g" | "G" | "GiB" => (1024, 3),
        "GB" => (1000, 3),
        "t" | "T" | "TiB" => (1024, 4),
        "TB" => (1000, 4),
        "p" | "P" | "PiB" => (1024, 5),
        "PB" => (1000, 5),
        "e" | "E" | "EiB" => (1024, 6),
        "EB" => (1000, 6),
        _ => return Err(format!("unknown unit '{unit}'")),
    };
    value
        .checked_mul(base.pow(exp))
        .ok_or_else(|| "size overflows".to_string())
}

fn size_bytes(c: &mut Cursor<'_>, name: &str) -> Result<Option<u64>, Error> {
    let Some(mut e) = c.child(name)? else {
        return Ok(None);
    };
    let unit = e.attr("unit").map(str::to_string);
    let v = e.text_with(|t| scale_to_bytes(crate::xml::parse_uint(t.trim())?, unit.as_deref()))?;
    e.finish()?;
    Ok(Some(v))
}

fn yes_no_attr(c: &mut Cursor<'_>, name: &str) -> Result<Option<bool>, Error> {
    c.attr_yes_no(name)
}

fn format_types(pool_type: &str) -> Option<(&'static [&'static str], &'static str)> {
    Some(match pool_type {
        "fs" => (
            &[
                "auto", "ext2", "ext3", "ext4", "ufs", "iso9660", "udf", "gfs", "gfs2", "vfat",
                "hfs+", "xfs", "ocfs2", "vmfs",
            ],
            "auto",
        ),
        "netfs" => (&["auto", "nfs", "glusterfs", "cifs"], "auto"),
        "disk" => (
            &[
                "unknown", "dos", "dvh", "gpt", "mac", "bsd", "pc98", "sun", "lvm2",
            ],
            "unknown",
        ),
        "logical" => (&["unknown", "lvm2"], "lvm2"),
        _ => return None,
    })
}

impl StoragePool {
    /// Parses a `<pool>` document.
    pub fn parse(xml: &str) -> Result<StoragePool, Error> {
        let root = Element::parse(xml)?;
        if root.name != "pool" {
            return Err(Error::WrongRoot {
                expected: "pool".into(),
                found: root.name.clone(),
            });
        }
        let mut c = Cursor::root(&root);
        let pool_type = c.req_attr("type")?.to_string();
        if !POOL_TYPES.contains(&pool_type.as_str()) {
            return Err(c.invalid_attr("type", &pool_type, "unknown storage pool type"));
        }
        if let Some(ns) = c.attr("xmlns:fs") {
            if ns != FS_NAMESPACE {
                return Err(c.invalid_attr("xmlns:fs", ns, format!("expected '{FS_NAMESPACE}'")));
            }
        }
        let name = match c.child("name")? {
            Some(n) => n.text_finish()?.trim().to_string(),
            None => String::new(),
        };
        let uuid = match c.child("uuid")? {
            Some(mut u) => Some(u.text_with(crate::domain::parse_uuid)?),
            None => None,
        };
        // Sizes are runtime state: libvirt's definition parser checks but does not keep them (the daemon fills
        // them in for a running pool's XML).
        for n in ["capacity", "allocation", "available"] {
            size_bytes(&mut c, n)?;
        }
        let (capacity, allocation, available) = (0, 0, 0);
        let mut cow = None;
        if let Some(mut f) = c.child("features")? {
            if let Some(mut w) = f.child("cow")? {
                cow = Some(
                    w.attr_yes_no("state")?
                        .ok_or_else(|| Error::MissingAttribute {
                            path: w.attr_path("state"),
                        })?,
                );
                w.finish()?;
            }
            f.finish()?;
        }
        let mut source = match c.child("source")? {
            Some(s) => parse_source(s, &pool_type)?,
            None => PoolSource::default(),
        };
        let mut target_path = None;
        let mut permissions = Permissions::default();
        if let Some(mut t) = c.child("target")? {
            if let Some(p) = t.child("path")? {
                target_path = Some(sanitize_path(p.text_finish()?.trim()));
            }
            if let Some(p) = t.child("permissions")? {
                permissions = Permissions::parse(p)?;
            }
            t.finish()?;
        }
        let mut refresh_volume_allocation = None;
        if let Some(mut r) = c.child("refresh")? {
            if let Some(mut v) = r.child("volume")? {
                let a = v.req_attr("allocation")?;
                if !matches!(a, "default" | "capacity") {
                    return Err(v.invalid_attr(
                        "allocation",
                        a,
                        "expected 'default' or 'capacity'",
                    ));
                }
                refresh_volume_allocation = Some(a.to_string());
                v.finish()?;
            }
            r.finish()?;
        }
        let mut mount_opts = Vec::new();
        if let Some(mut m) = c.child("fs:mount_opts")? {
            for mut o in m.children("fs:option") {
                mount_opts.push(o.req_attr("name")?.to_string());
                o.finish()?;
            }
            m.finish()?;
        }
        c.finish()?;

        // libvirt's per-type checks and defaults.
        let missing = |what: &str| Error::MissingElement {
            path: format!("/pool/{what}"),
        };
        let named_by_source = matches!(
            pool_type.as_str(),
            "logical" | "rbd" | "sheepdog" | "gluster" | "zfs" | "vstorage"
        );
        let name = match (name.is_empty(), &source.name) {
            (false, _) => name,
            // A pool whose source has a name may be named by it only.
            (true, Some(n)) if named_by_source && !n.is_empty() => n.clone(),
            (true, _) => return Err(missing("name")),
        };
        let pt = pool_type.as_str();
        if source.name.is_none() {
            if matches!(pt, "logical" | "zfs" | "vstorage") {
                source.name = Some(name.clone());
            } else if matches!(pt, "rbd" | "sheepdog" | "gluster") {
                return Err(missing("source/name"));
            }
        }
        if pool_type == "gluster" && source.dir.is_none() {
            source.dir = Some("/".into());
        }
        if let Some((_, default)) = format_types(&pool_type) {
            if source.format.is_none() {
                source.format = Some(default.to_string());
            }
        }
        match pool_type.as_str() {
            "logical" => {
                target_path = Some(format!("/dev/{}", source.name.as_deref().unwrap_or("")))
            }
            "zfs" => {
                target_path = Some(format!(
                    "/dev/zvol/{}",
                    source.name.as_deref().unwrap_or("")
                ))
            }
            "dir" | "fs" | "netfs" | "disk" | "iscsi" | "scsi" | "mpath" | "vstorage"
                if target_path.is_none() =>
            {
                return Err(missing("target/path"));
            }
            _ => {}
        }
        if matches!(pt, "netfs" | "gluster" | "iscsi" | "iscsi-direct" | "rbd")
            && source.hosts.is_empty()
        {
            return Err(missing("source/host"));
        }
        if matches!(pool_type.as_str(), "netfs") && source.dir.is_none() {
            return Err(missing("source/dir"));
        }
        if pool_type == "scsi" && source.adapter.is_none() {
            return Err(missing("source/adapter"));
        }
        if matches!(pool_type.as_str(), "fs" | "disk" | "iscsi" | "iscsi-direct")
            && source.devices.is_empty()
        {
            return Err(missing("source/device"));
        }
        Ok(StoragePool {
            pool_type,
            name,
            uuid,
            capacity,
            allocation,
            available,
            cow,
            source,
            target_path,
            permissions,
            refresh_volume_allocation,
            mount_opts,
        })
    }

    /// Formats the pool as libvirt does, ending with a newline.
    pub fn to_xml(&self) -> String {
        self.to_element().to_xml()
    }

    /// Builds the formatted element tree.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("pool").attr("type", &self.pool_type);
        if !self.mount_opts.is_empty() {
            e.push_attr("xmlns:fs", FS_NAMESPACE);
        }
        e.push(Element::new("name").text(self.name.clone()));
        if let Some(u) = &self.uuid {
            e.push(Element::new("uuid").text(u.clone()));
        }
        for (n, v) in [
            ("capacity", self.capacity),
            ("allocation", self.allocation),
            ("available", self.available),
        ] {
            e.push(Element::new(n).attr("unit", "bytes").text(v.to_string()));
        }
        if let Some(c) = self.cow {
            e.push(
                Element::new("features")
                    .child(Element::new("cow").attr("state", crate::xml::yes_no(c))),
            );
        }
        e.push(self.source_element());
        if self.target_path.is_some() || !self.permissions.is_empty() {
            let mut t = Element::new("target");
            if let Some(p) = &self.target_path {
                t.push(Element::new("path").text(p.clone()));
            }
            if !self.permissions.is_empty() {
                t.push(self.permissions.to_element());
            }
            e.push(t);
        }
        if let Some(a) = &self.refresh_volume_allocation {
            e.push(Element::new("refresh").child(Element::new("volume").attr("allocation", a)));
        }
        if !self.mount_opts.is_empty() {
            let mut m = Element::new("fs:mount_opts");
            for o in &self.mount_opts {
                m.push(Element::new("fs:option").attr("name", o));
            }
            e.push(m);
        }
        e
    }

    fn source_element(&self) -> Element {
        let s = &self.source;
        let mut e = Element::new("source");
        for h in &s.hosts {
            e.push(
                Element::new("host")
                    .attr("name", &h.name)
                    .opt_attr("port", h.port),
            );
        }
        for d in &s.devices {
            e.push(
                Element::new("device")
                    .attr("path", &d.path)
                    .opt_attr("part_separator", d.part_separator.map(crate::xml::yes_no)),
            );
        }
        if let Some(d) = &s.dir {
            e.push(Element::new("dir").attr("path", d));
        }
        if let Some(a) = &s.adapter {
            let mut ae = Element::new("adapter")
                .attr("type", &a.adapter_type)
                .opt_attr("name", a.name.as_deref())
                .opt_attr("parent", a.parent.as_deref())
                .opt_attr("parent_wwnn", a.parent_wwnn.as_deref())
                .opt_attr("parent_wwpn", a.parent_wwpn.as_deref())
                .opt_attr("parent_fabric_wwn", a.parent_fabric_wwn.as_deref())
                .opt_attr("managed", a.managed.map(crate::xml::yes_no))
                .opt_attr("wwnn", a.wwnn.as_deref())
                .opt_attr("wwpn", a.wwpn.as_deref());
            if let Some((uid, [d, b, sl, f])) = a.parentaddr {
                ae.push(
                    Element::new("parentaddr").opt_attr("unique_id", uid).child(
                        Element::new("address")
                            .attr("domain", format!("0x{d:04x}"))
                            .attr("bus", format!("0x{b:02x}"))
                            .attr("slot", format!("0x{sl:02x}"))
                            .attr("function", format!("0x{f:x}")),
                    ),
                );
            }
            e.push(ae);
        }
        if let Some(n) = &s.name {
            e.push(Element::new("name").text(n.clone()));
        }
        if let Some(i) = &s.initiator_iqn {
            e.push(Element::new("initiator").child(Element::new("iqn").attr("name", i)));
        }
        if let Some(f) = &s.format {
            e.push(Element::new("format").attr("type", f));
        }
        if let Some(a) = &s.auth {
            let secret = Element::new("secret")
                .opt_attr("uuid", a.secret_uuid.as_deref())
                .opt_attr("usage", a.secret_usage.as_deref());
            e.push(
                Element::new("auth")
                    .attr("type", &a.auth_type)
                    .attr("username", &a.username)
                    .child(secret),
            );
        }
        if let Some(v) = &s.protocol_ver {
            e.push(Element::new("protocol").attr("ver", v));
        }
        if let Some(v) = &s.vendor {
            e.push(Element::new("vendor").attr("name", v));
        }
        if let Some(p) = &s.product {
            e.push(Element::new("product").attr("name", p));
        }
        if e.is_empty() {
            // libvirt always writes the source element open and closed.
            e = e.text("\n  ");
        }
        e
    }
}

fn parse_source(mut s: Cursor<'_>, pool_type: &str) -> Result<PoolSource, Error> {
    let mut src = PoolSource::default();
    for mut h in s.children("host") {
        let name = h.req_attr("name")?.to_string();
        let port = h.attr_parse::<u16>("port")?;
        h.finish()?;
        src.hosts.push(PoolHost { name, port });
    }
    for mut d in s.children("device") {
        let path = d.req_attr("path")?.to_string();
        let part_separator = yes_no_attr(&mut d, "part_separator")?;
        // Free extents are runtime state (the inactive format drops them).
        for mut fe in d.children("freeExtent") {
            fe.attr_parse::<u64>("start")?;
            fe.attr_parse::<u64>("end")?;
            fe.finish()?;
        }
        d.finish()?;
        src.devices.push(PoolDevice {
            path,
            part_separator,
        });
    }
    if let Some(mut d) = s.child("dir")? {
        src.dir = Some(d.req_attr("path")?.to_string());
        d.finish()?;
    }
    if let Some(mut a) = s.child("adapter")? {
        let mut ad = PoolAdapter {
            name: a.attr("name").map(str::to_string),
            parent: a.attr("parent").map(str::to_string),
            parent_wwnn: a.attr("parent_wwnn").map(str::to_string),
            parent_wwpn: a.attr("parent_wwpn").map(str::to_string),
            parent_fabric_wwn: a.attr("parent_fabric_wwn").map(str::to_string),
            managed: a.attr_yes_no("managed")?,
            wwnn: a.attr("wwnn").map(str::to_string),
            wwpn: a.attr("wwpn").map(str::to_string),
            ..PoolAdapter::default()
        };
        ad.adapter_type = match a.attr("type") {
            Some(t @ ("scsi_host" | "fc_host")) => t.to_string(),
            Some(t) => return Err(a.invalid_attr("type", t, "expected 'scsi_host' or 'fc_host'")),
            // Legacy form: a bare name means a SCSI host.
            None if ad.name.is_some() => "scsi_host".to_string(),
            None => {
                return Err(Error::MissingAttribute {
                    path: a.attr_path("type"),
                })
            }
        };
        if let Some(mut pa) = a.child("parentaddr")? {
            let uid = pa.attr_parse::<u32>("unique_id")?;
            let mut addr = pa.req_child("address")?;
            let mut f = [0u32; 4];
            for (slot, k) in f.iter_mut().zip(["domain", "bus", "slot", "function"]) {
                let v = addr.req_attr(k)?;
                *slot = crate::xml::parse_uint(v)
                    .ok()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| addr.invalid_attr(k, v, "expected a number"))?;
            }
            addr.finish()?;
            pa.finish()?;
            ad.parentaddr = Some((uid, f));
        }
        if ad.adapter_type == "fc_host" && (ad.wwnn.is_none() || ad.wwpn.is_none()) {
            return Err(Error::MissingAttribute {
                path: a.attr_path(if ad.wwnn.is_none() { "wwnn" } else { "wwpn" }),
            });
        }
        a.finish()?;
        src.adapter = Some(ad);
    }
    if let Some(n) = s.child("name")? {
        src.name = Some(n.text_finish()?.trim().to_string());
    }
    if let Some(mut i) = s.child("initiator")? {
        let iqns = i.children("iqn");
        if let Some(mut q) = iqns.into_iter().next() {
            src.initiator_iqn = Some(q.req_attr("name")?.to_string());
            q.finish()?;
        }
        i.finish()?;
    }
    if let Some(mut f) = s.child("format")? {
        let t = f.req_attr("type")?;
        match format_types(pool_type) {
            Some((known, _)) if known.contains(&t) => src.format = Some(t.to_string()),
            Some(_) => return Err(f.invalid_attr("type", t, "unknown format for this pool type")),
            None => return Err(f.invalid_attr("type", t, "this pool type has no format")),
        }
        f.finish()?;
    }
    if let Some(mut a) = s.child("auth")? {
        let auth_type = a.req_attr("type")?.to_string();
        if !matches!(auth_type.as_str(), "chap" | "ceph") {
            return Err(a.invalid_attr("type", &auth_type, "expected 'chap' or 'ceph'"));
        }
        let username = a.req_attr("username")?.to_string();
        let mut sec = a.req_child("secret")?;
        let secret_uuid = sec.attr("uuid").map(str::to_string);
        let secret_usage = sec.attr("usage").map(str::to_string);
        if secret_uuid.is_none() && secret_usage.is_none() {
            return Err(Error::MissingAttribute {
                path: sec.attr_path("uuid"),
            });
        }
        sec.finish()?;
        a.finish()?;
        src.auth = Some(PoolAuth {
            auth_type,
            username,
            secret_uuid,
            secret_usage,
        });
    }
    if let Some(mut p) = s.child("protocol")? {
        src.protocol_ver = Some(p.req_attr("ver")?.to_string());
        p.finish()?;
    }
    if let Some(mut v) = s.child("vendor")? {
        src.vendor = Some(v.req_attr("name")?.to_string());
        v.finish()?;
    }
    if let Some(mut p) = s.child("product")? {
        src.product = Some(p.req_attr("name")?.to_string());
        p.finish()?;
    }
    s.finish()?;
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sanitised() {
        assert_eq!(
            sanitize_path("///var/////lib/libvirt/images//"),
            "/var/lib/libvirt/images"
        );
        assert_eq!(sanitize_path("//srv/x"), "//srv/x");
        assert_eq!(sanitize_path("/"), "/");
    }

    #[test]
    fn unknown_nodes_are_named() {
        let e = StoragePool::parse(
            "<pool type='dir'><name>p</name><target><path>/x</path><bogus/></target></pool>",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "unknown element /pool/target/bogus");
        let e = StoragePool::parse("<pool type='dir' foo='1'><name>p</name></pool>").unwrap_err();
        assert!(e.to_string().contains("/pool/@foo"), "{e}");
        let e = StoragePool::parse("<pool type='nope'><name>p</name></pool>").unwrap_err();
        assert!(e.to_string().contains("unknown storage pool type"), "{e}");
        assert!(StoragePool::parse("<pool type='dir'><name>p</name></pool>").is_err());
        assert!(StoragePool::parse("<volume/>").is_err());
    }
}

/// The volume type a pool's volumes get when the XML gives none (`virStorageVolOptionsForPoolType`).
pub fn default_volume_type(pool_type: &str) -> &'static str {
    match pool_type {
        "logical" | "disk" | "iscsi" | "iscsi-direct" | "scsi" | "mpath" | "zfs" => "block",
        "rbd" | "sheepdog" | "gluster" => "network",
        _ => "file",
    }
}

/// Volume types libvirt knows.
pub const VOLUME_TYPES: &[&str] = &["file", "block", "dir", "network", "netdir", "ploop"];

/// Image formats of file-backed volumes (`virStorageFileFormat`).
pub const FILE_FORMATS: &[&str] = &[
    "none", "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop",
    "cow", "qcow", "qcow2", "qed", "vmdk", "luks",
];

/// Partition types of disk-pool volumes.
pub const PARTITION_FORMATS: &[&str] = &[
    "none",
    "linux",
    "fat16",
    "fat32",
    "linux-swap",
    "linux-lvm",
    "linux-raid",
    "extended",
];

/// The volume format options of a pool type: the formats and the default, or `None` when volumes of the
/// pool have no format.
fn volume_formats(pool_type: &str) -> Option<(&'static [&'static str], &'static str)> {
    match pool_type {
        "dir" | "fs" | "netfs" | "gluster" | "vstorage" => Some((FILE_FORMATS, "raw")),
        "disk" => Some((PARTITION_FORMATS, "none")),
        _ => None,
    }
}

/// `<encryption>` of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encryption {
    /// `format`: default, qcow, luks, luks2, luks-any.
    pub format: String,
    /// `<secret type uuid|usage/>` entries: (type, uuid, usage).
    pub secrets: Vec<(String, Option<String>, Option<String>)>,
    /// `<cipher name size mode hash/>`.
    pub cipher: Option<(String, u32, Option<String>, Option<String>)>,
    /// `<ivgen name hash/>`.
    pub ivgen: Option<(String, Option<String>)>,
}

impl Encryption {
    fn parse(mut c: Cursor<'_>) -> Result<Encryption, Error> {
        let format = c.req_attr("format")?.to_string();
        if !matches!(
            format.as_str(),
            "default" | "qcow" | "luks" | "luks2" | "luks-any"
        ) {
            return Err(c.invalid_attr("format", &format, "unknown encryption format"));
        }
        let mut e = Encryption {
            format,
            ..Encryption::default()
        };
        for mut s in c.children("secret") {
            let t = s.req_attr("type")?.to_string();
            if t != "passphrase" {
                return Err(s.invalid_attr("type", &t, "expected 'passphrase'"));
            }
            let uuid = match s.attr("uuid") {
                Some(u) => {
                    Some(crate::domain::parse_uuid(u).map_err(|r| s.invalid_attr("uuid", u, r))?)
                }
                None => None,
            };
            let usage = s.attr("usage").map(str::to_string);
            s.finish()?;
            e.secrets.push((t, uuid, usage));
        }
        if let Some(mut ci) = c.child("cipher")? {
            let name = ci.req_attr("name")?.to_string();
            let size = ci.req_attr_parse::<u32>("size")?;
            let mode = ci.attr("mode").map(str::to_string);
            let hash = ci.attr("hash").map(str::to_string);
            ci.finish()?;
            e.cipher = Some((name, size, mode, hash));
        }
        if let Some(mut iv) = c.child("ivgen")? {
            let name = iv.req_attr("name")?.to_string();
            let hash = iv.attr("hash").map(str::to_string);
            iv.finish()?;
            e.ivgen = Some((name, hash));
        }
        c.finish()?;
        Ok(e)
    }

    fn to_element(&self) -> Element {
        let mut e = Element::new("encryption").attr("format", &self.format);
        for (t, uuid, usage) in &self.secrets {
            e.push(
                Element::new("secret")
                    .attr("type", t)
                    .opt_attr("uuid", uuid.as_deref())
                    .opt_attr("usage", usage.as_deref()),
            );
        }
        if let Some((name, size, mode, hash)) = &self.cipher {
            e.push(
                Element::new("cipher")
                    .attr("name", name)
                    .attr("size", size)
                    .opt_attr("mode", mode.as_deref())
                    .opt_attr("hash", hash.as_deref()),
            );
        }
        if let Some((name, hash)) = &self.ivgen {
            e.push(
                Element::new("ivgen")
                    .attr("name", name)
                    .opt_attr("hash", hash.as_deref()),
            );
        }
        e
    }
}

/// The `<target>` or `<backingStore>` of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeTarget {
    /// Path.
    pub path: Option<String>,
    /// Format.
    pub format: Option<String>,
    /// Permissions.
    pub permissions: Permissions,
    /// Encryption.
    pub encryption: Option<Encryption>,
    /// qcow2 compatibility level.
    pub compat: Option<String>,
    /// qcow2 cluster size in bytes.
    pub cluster_size: Option<u64>,
    /// qcow2 features (`lazy_refcounts`, `extended_l2`); `Some(empty)` is `<features/>`.
    pub features: Option<Vec<String>>,
    /// `<nocow/>`: create without copy-on-write (a creation hint libvirt does not format).
    pub nocow: bool,
}

const QCOW2_FEATURES: &[&str] = &["lazy_refcounts", "extended_l2"];

impl VolumeTarget {
    fn parse(
        mut c: Cursor<'_>,
        formats: Option<(&'static [&'static str], &'static str)>,
        backing: bool,
    ) -> Result<VolumeTarget, Error> {
        let mut t = VolumeTarget::default();
        if let Some(p) = c.child("path")? {
            t.path = Some(p.text_finish()?.trim().to_string());
        }
        if let Some(mut f) = c.child("format")? {
            let v = f.req_attr("type")?;
            match formats {
                Some((known, _)) if known.contains(&v) => t.format = Some(v.to_string()),
                Some(_) => return Err(f.invalid_attr("type", v, "unknown volume format")),
                None => {
                    return Err(f.invalid_attr("type", v, "volumes of this pool have no format"))
                }
            }
            f.finish()?;
        }
        if t.format.is_none() {
            t.format = formats.map(|(_, d)| d.to_string());
        }
        if let Some(p) = c.child("permissions")? {
            t.permissions = Permissions::parse(p)?;
        }
        if !backing {
            // Timestamps are runtime state: checked, not kept.
            if let Some(mut ts) = c.child("timestamps")? {
                for n in ["atime", "mtime", "ctime", "btime"] {
                    if let Some(mut x) = ts.child(n)? {
                        x.text_with(|v| {
                            let (s, ns) = v.trim().split_once('.').unwrap_or((v.trim(), "0"));
                            s.parse::<u64>()
                                .ok()
                                .zip(ns.parse::<u64>().ok())
                                .map(|_| ())
                                .ok_or_else(|| "expected seconds[.nanoseconds]".to_string())
                        })?;
                        x.finish()?;
                    }
                }
                ts.finish()?;
            }
            if let Some(e) = c.child("encryption")? {
                t.encryption = Some(Encryption::parse(e)?);
            }
            if let Some(cp) = c.child("compat")? {
                let v = cp.text_finish()?.trim().to_string();
                let ok = v.split('.').count() == 2
                    && v.split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return Err(Error::InvalidValue {
                        path: format!("{}/compat", c.path()),
                        value: v,
                        reason: "expected a version like 1.1".into(),
                    });
                }
                t.compat = Some(v);
            }
            if let Some(cs) = size_bytes(&mut c, "clusterSize")? {
                t.cluster_size = Some(cs);
            }
            if let Some(mut fe) = c.child("features")? {
                let mut list = Vec::new();
                for name in QCOW2_FEATURES {
                    if let Some(x) = fe.child(name)? {
                        x.finish()?;
                        list.push((*name).to_string());
                    }
                }
                fe.finish()?;
                if t.compat.is_none() {
                    t.compat = Some("1.1".into());
                }
                t.features = Some(list);
            }
            if let Some(n) = c.child("nocow")? {
                n.finish()?;
                t.nocow = true;
            }
        }
        c.finish()?;
        Ok(t)
    }

    fn to_element(&self, name: &str) -> Element {
        let mut e = Element::new(name);
        if let Some(p) = &self.path {
            e.push(Element::new("path").text(p.clone()));
        }
        if let Some(f) = &self.format {
            e.push(Element::new("format").attr("type", f));
        }
        if !self.permissions.is_empty() {
            e.push(self.permissions.to_element());
        }
        if let Some(enc) = &self.encryption {
            e.push(enc.to_element());
        }
        if let Some(c) = &self.compat {
            e.push(Element::new("compat").text(c.clone()));
        }
        if let Some(cs) = self.cluster_size.filter(|c| *c > 0) {
            e.push(
                Element::new("clusterSize")
                    .attr("unit", "B")
                    .text(cs.to_string()),
            );
        }
        if let Some(f) = &self.features {
            let mut fe = Element::new("features");
            for n in f {
                fe.push(Element::new(n.clone()));
            }
            e.push(fe);
        }
        e
    }
}

/// A storage volume definition (`<volume>`), read in the context of its pool's type as libvirt does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageVolume {
    /// Volume type (one of [`VOLUME_TYPES`]).
    pub vol_type: String,
    /// Name.
    pub name: String,
    /// Key.
    pub key: Option<String>,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Allocation in bytes.
    pub allocation: u64,
    /// Target.
    pub target: VolumeTarget,
    /// Backing store.
    pub backing_store: Option<VolumeTarget>,
}

impl StorageVolume {
    /// Parses a `<volume>` document for a volume of a pool of type `pool_type`.
    pub fn parse(xml: &str, pool_type: &str) -> Result<StorageVolume, Error> {
        let root = Element::parse(xml)?;
        if root.name != "volume" {
            return Err(Error::WrongRoot {
                expected: "volume".into(),
                found: root.name.clone(),
            });
        }
        if !POOL_TYPES.contains(&pool_type) {
            return Err(Error::InvalidValue {
                path: "/volume".into(),
                value: pool_type.into(),
                reason: "unknown storage pool type".into(),
            });
        }
        let mut c = Cursor::root(&root);
        let vol_type = match c.attr("type") {
            Some(t) if VOLUME_TYPES.contains(&t) => t.to_string(),
            Some(t) => return Err(c.invalid_attr("type", t, "unknown volume type")),
            None => default_volume_type(pool_type).to_string(),
        };
        let name = c.req_child("name")?.text_finish()?.trim().to_string();
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidValue {
                path: "/volume/name".into(),
                value: name,
                reason: "a volume name must be non-empty and contain no '/'".into(),
            });
        }
        let key = match c.child("key")? {
            Some(k) => Some(k.text_finish()?.trim().to_string()),
            None => None,
        };
        // Source extents are runtime state (the pool reports them): checked, not kept.
        if let Some(mut s) = c.child("source")? {
            for mut d in s.children("device") {
                d.req_attr("path")?;
                for mut x in d.children("extent") {
                    x.req_attr_parse::<u64>("start")?;
                    x.req_attr_parse::<u64>("end")?;
                    x.finish()?;
                }
                d.finish()?;
            }
            s.finish()?;
        }
        let capacity = size_bytes(&mut c, "capacity")?;
        let allocation = size_bytes(&mut c, "allocation")?;
        // Display only; libvirt does not read it back.
        size_bytes(&mut c, "physical")?;
        let formats = volume_formats(pool_type);
        let target = match c.child("target")? {
            Some(t) => VolumeTarget::parse(t, formats, false)?,
            None => VolumeTarget {
                format: formats.map(|(_, d)| d.to_string()),
                ..VolumeTarget::default()
            },
        };
        let backing_store = match c.child("backingStore")? {
            Some(b) => Some(VolumeTarget::parse(b, formats, true)?),
            None => None,
        };
        c.finish()?;
        let capacity = capacity.unwrap_or(0);
        Ok(StorageVolume {
            vol_type,
            name,
            key,
            capacity,
            allocation: allocation.unwrap_or(capacity),
            target,
            backing_store,
        })
    }

    /// Formats the volume as libvirt does, ending with a newline.
    pub fn to_xml(&self) -> String {
        self.to_element().to_xml()
    }

    /// Builds the formatted element tree.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("volume").attr("type", &self.vol_type);
        e.push(Element::new("name").text(self.name.clone()));
        if let Some(k) = &self.key {
            e.push(Element::new("key").text(k.clone()));
        }
        e.push(
            Element::new("capacity")
                .attr("unit", "bytes")
                .text(self.capacity.to_string()),
        );
        e.push(
            Element::new("allocation")
                .attr("unit", "bytes")
                .text(self.allocation.to_string()),
        );
        e.push(self.target.to_element("target"));
        if let Some(b) = &self.backing_store {
            if b.path.is_some() {
                e.push(b.to_element("backingStore"));
            }
        }
        e
    }
}
