//! Pool and volume XML in libvirt's layout (`virStoragePoolDefFormat`, `virStorageVolDefFormat`), and the
//! parser for the pool files this driver persists. Client-supplied XML is parsed by the daemon's XML layer
//! (`domain_xml::storage`), which hands the driver a [`PoolDef`] or [`crate::VolumeDef`].

use std::fmt::Write as _;
use std::path::PathBuf;

use quick_xml::events::Event;
use quick_xml::Reader;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    BackingStore, Permissions, PoolDef, PoolSource, PoolType, Timestamp, VolFormat, Volume,
    VolumeDef,
};

/// Escapes text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn format_permissions(out: &mut String, indent: &str, perms: &Permissions) {
    if perms.mode.is_none() && perms.owner.is_none() && perms.group.is_none() {
        return;
    }
    let _ = writeln!(out, "{indent}<permissions>");
    if let Some(mode) = perms.mode {
        let _ = writeln!(out, "{indent}  <mode>{mode:04o}</mode>");
    }
    if let Some(owner) = perms.owner {
        let _ = writeln!(out, "{indent}  <owner>{owner}</owner>");
    }
    if let Some(group) = perms.group {
        let _ = writeln!(out, "{indent}  <group>{group}</group>");
    }
    let _ = writeln!(out, "{indent}</permissions>");
}

/// Formats a pool definition with its sizes, as `virsh pool-dumpxml` shows it.
pub fn format_pool(def: &PoolDef, capacity: u64, allocation: u64, available: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<pool type='{}'>", def.kind.as_str());
    let _ = writeln!(out, "  <name>{}</name>", escape(&def.name));
    if let Some(uuid) = def.uuid {
        let _ = writeln!(out, "  <uuid>{}</uuid>", uuid.hyphenated());
    }
    let _ = writeln!(out, "  <capacity unit='bytes'>{capacity}</capacity>");
    let _ = writeln!(out, "  <allocation unit='bytes'>{allocation}</allocation>");
    let _ = writeln!(out, "  <available unit='bytes'>{available}</available>");
    out.push_str("  <source>\n");
    if let Some(device) = &def.source.device {
        let _ = writeln!(
            out,
            "    <device path='{}'/>",
            escape(&device.to_string_lossy())
        );
    }
    match (&def.source.format, def.kind) {
        (Some(format), _) => {
            let _ = writeln!(out, "    <format type='{}'/>", escape(format));
        }
        (None, PoolType::Fs) => out.push_str("    <format type='auto'/>\n"),
        (None, PoolType::Dir) => {}
    }
    out.push_str("  </source>\n");
    out.push_str("  <target>\n");
    let _ = writeln!(
        out,
        "    <path>{}</path>",
        escape(&def.target.to_string_lossy())
    );
    format_permissions(&mut out, "    ", &def.permissions);
    out.push_str("  </target>\n");
    out.push_str("</pool>\n");
    out
}

fn format_timestamp(out: &mut String, name: &str, ts: Timestamp) {
    let _ = write!(out, "      <{name}>{}", ts.sec);
    if ts.nsec != 0 {
        let _ = write!(out, ".{:09}", ts.nsec);
    }
    let _ = writeln!(out, "</{name}>");
}

/// Formats a volume as `virsh vol-dumpxml` shows it.
pub fn format_volume(vol: &Volume, backing_perms: Option<Permissions>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<volume type='{}'>", vol.kind.as_str());
    let _ = writeln!(out, "  <name>{}</name>", escape(&vol.name));
    let _ = writeln!(out, "  <key>{}</key>", escape(&vol.key));
    let _ = writeln!(out, "  <capacity unit='bytes'>{}</capacity>", vol.capacity);
    let _ = writeln!(
        out,
        "  <allocation unit='bytes'>{}</allocation>",
        vol.allocation
    );
    if vol.physical != 0 {
        let _ = writeln!(out, "  <physical unit='bytes'>{}</physical>", vol.physical);
    }
    out.push_str("  <target>\n");
    let _ = writeln!(
        out,
        "    <path>{}</path>",
        escape(&vol.path.to_string_lossy())
    );
    let _ = writeln!(out, "    <format type='{}'/>", escape(&vol.format));
    format_permissions(&mut out, "    ", &vol.permissions);
    out.push_str("    <timestamps>\n");
    format_timestamp(&mut out, "atime", vol.atime);
    format_timestamp(&mut out, "mtime", vol.mtime);
    format_timestamp(&mut out, "ctime", vol.ctime);
    out.push_str("    </timestamps>\n");
    if let Some(compat) = &vol.compat {
        let _ = writeln!(out, "    <compat>{}</compat>", escape(compat));
    }
    if let Some(cluster) = vol.cluster_size {
        let _ = writeln!(out, "    <clusterSize unit='B'>{cluster}</clusterSize>");
    }
    if vol.lazy_refcounts {
        out.push_str("    <features>\n      <lazy_refcounts/>\n    </features>\n");
    } else if vol.compat.as_deref() == Some("1.1") {
        out.push_str("    <features/>\n");
    }
    out.push_str("  </target>\n");
    if let Some(backing) = &vol.backing_store {
        out.push_str("  <backingStore>\n");
        let _ = writeln!(out, "    <path>{}</path>", escape(&backing.path));
        if let Some(format) = &backing.format {
            let _ = writeln!(out, "    <format type='{}'/>", escape(format));
        }
        if let Some(perms) = backing_perms {
            format_permissions(&mut out, "    ", &perms);
        }
        out.push_str("  </backingStore>\n");
    }
    out.push_str("</volume>\n");
    out
}

/// libvirt's storage pool types in `virStoragePoolType` order; this backend serves `dir` and `fs`.
const POOL_TYPES: [&str; 14] = [
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

/// Whether `name` is one of libvirt's storage pool types (served here or not).
pub fn is_libvirt_pool_type(name: &str) -> bool {
    POOL_TYPES.contains(&name)
}

/// File systems an fs pool can be built with (`mkfs -t`) or mount; `auto` lets mount probe.
const FS_FORMATS: [&str; 6] = ["auto", "ext2", "ext3", "ext4", "vfat", "xfs"];

/// `virConnectGetStoragePoolCapabilities`: every libvirt pool type, `supported='yes'` for dir and fs, with the
/// volume formats this backend creates.
pub fn pool_capabilities() -> String {
    let mut out = String::from("<storagepoolCapabilities>\n");
    for kind in POOL_TYPES {
        if !matches!(kind, "dir" | "fs") {
            let _ = writeln!(out, "  <pool type='{kind}' supported='no'/>");
            continue;
        }
        let _ = writeln!(out, "  <pool type='{kind}' supported='yes'>");
        if kind == "fs" {
            out.push_str("    <poolOptions>\n      <defaultFormat type='auto'/>\n");
            out.push_str("      <enum name='sourceFormatType'>\n");
            for format in FS_FORMATS {
                let _ = writeln!(out, "        <value>{format}</value>");
            }
            out.push_str("      </enum>\n    </poolOptions>\n");
        }
        out.push_str("    <volOptions>\n      <defaultFormat type='raw'/>\n");
        out.push_str("      <enum name='targetFormatType'>\n");
        for format in [VolFormat::Raw, VolFormat::Qcow2] {
            let _ = writeln!(out, "        <value>{}</value>", format.as_str());
        }
        out.push_str("      </enum>\n    </volOptions>\n  </pool>\n");
    }
    out.push_str("</storagepoolCapabilities>\n");
    out
}

fn xml_err(err: impl std::fmt::Display) -> Error {
    Error::Xml(err.to_string())
}

/// One element of a flattened document: its path from the root (`volume/target/format`), attributes and text.
struct Node {
    path: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Flattens a document into its elements, in document order.
fn flatten(xml: &str) -> Result<Vec<Node>> {
    let mut reader = Reader::from_str(xml);
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<(String, usize)> = Vec::new();
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let path = match stack.last() {
                    Some((parent, _)) => format!("{parent}/{tag}"),
                    None if nodes.is_empty() => tag,
                    None => {
                        return Err(Error::Xml(
                            "extra content at the end of the document".into(),
                        ))
                    }
                };
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(xml_err)?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    attrs.push((key, a.unescape_value().map_err(xml_err)?.into_owned()));
                }
                nodes.push(Node {
                    path: path.clone(),
                    attrs,
                    text: String::new(),
                });
                if matches!(event, Event::Start(_)) {
                    stack.push((path, nodes.len() - 1));
                }
            }
            Event::Text(t) => {
                if let Some((_, index)) = stack.last() {
                    nodes[*index].text.push_str(&t.unescape().map_err(xml_err)?);
                }
            }
            Event::CData(t) => {
                if let Some((_, index)) = stack.last() {
                    nodes[*index].text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::Xml("premature end of the document".into()));
    }
    if nodes.is_empty() {
        return Err(Error::Xml("empty document".into()));
    }
    Ok(nodes)
}

fn find<'a>(nodes: &'a [Node], path: &str) -> Option<&'a Node> {
    nodes.iter().find(|n| n.path == path)
}

fn text<'a>(nodes: &'a [Node], path: &str) -> Option<&'a str> {
    find(nodes, path).map(|n| n.text.trim())
}

fn parse_id(text: &str, octal: bool, what: &str) -> Result<Option<u32>> {
    let text = text.trim();
    if text == "-1" {
        return Ok(None);
    }
    let value = if octal {
        u32::from_str_radix(text, 8)
    } else {
        text.parse()
    };
    value
        .map(Some)
        .map_err(|_| Error::Xml(format!("malformed {what} value '{text}'")))
}

fn parse_permissions(nodes: &[Node], base: &str) -> Result<Permissions> {
    let mut perms = Permissions::default();
    if let Some(mode) = text(nodes, &format!("{base}/permissions/mode")) {
        perms.mode = parse_id(mode, true, "mode")?;
    }
    if let Some(owner) = text(nodes, &format!("{base}/permissions/owner")) {
        perms.owner = parse_id(owner, false, "owner")?;
    }
    if let Some(group) = text(nodes, &format!("{base}/permissions/group")) {
        perms.group = parse_id(group, false, "group")?;
    }
    Ok(perms)
}

/// Scales a size element by its `unit` attribute, with libvirt's unit names (`virScaleInteger`): `b`/`bytes`,
/// SI (`KB`, `MB`, ...: powers of 1000) and binary (`K`/`KiB`, `M`/`MiB`, ...: powers of 1024; the default).
pub fn parse_size(value: &str, unit: Option<&str>) -> Result<u64> {
    let number: u64 = value
        .trim()
        .parse()
        .map_err(|_| Error::Xml(format!("malformed size value '{}'", value.trim())))?;
    let unit = unit.unwrap_or("bytes");
    let lower = unit.to_ascii_lowercase();
    let (base, exponent): (u64, u32) = match lower.as_str() {
        "b" | "byte" | "bytes" | "" => (1, 0),
        other => {
            let power = match other.chars().next() {
                Some('k') => 1,
                Some('m') => 2,
                Some('g') => 3,
                Some('t') => 4,
                Some('p') => 5,
                Some('e') => 6,
                _ => return Err(Error::InvalidArg(format!("unknown suffix '{unit}'"))),
            };
            match &other[1..] {
                "" | "ib" => (1024, power),
                "b" => (1000, power),
                _ => return Err(Error::InvalidArg(format!("unknown suffix '{unit}'"))),
            }
        }
    };
    base.checked_pow(exponent)
        .and_then(|scale| number.checked_mul(scale))
        .ok_or_else(|| Error::InvalidArg(format!("value too large: {}{unit}", value.trim())))
}

/// Parses a pool document (dir and fs pools): type, name, uuid, source device and format, target path and
/// permissions. Elements of other pool types are ignored; other pool types are refused.
pub fn parse_pool(xml: &str) -> Result<PoolDef> {
    let nodes = flatten(xml)?;
    let root = &nodes[0];
    if root.path != "pool" {
        return Err(Error::Xml(format!(
            "unexpected root element <{}>, expecting <pool>",
            root.path
        )));
    }
    let type_name = root
        .attr("type")
        .ok_or_else(|| Error::Xml("storage pool missing type attribute".into()))?;
    let kind = match PoolType::from_name(type_name) {
        Some(kind) => kind,
        None if POOL_TYPES.contains(&type_name) => {
            return Err(Error::NoSupport(format!(
                "storage pool type '{type_name}' is not supported by this backend"
            )))
        }
        None => return Err(Error::Xml(format!("unknown storage pool type {type_name}"))),
    };
    let name = text(&nodes, "pool/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Xml("missing pool source name element".into()))?;
    let uuid = match text(&nodes, "pool/uuid") {
        None => None,
        Some(u) => Some(
            Uuid::parse_str(u).map_err(|_| Error::Xml(format!("malformed uuid element '{u}'")))?,
        ),
    };
    let target = text(&nodes, "pool/target/path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::Xml("missing storage pool target path".into()))?;
    Ok(PoolDef {
        name: name.to_string(),
        uuid,
        kind,
        target: PathBuf::from(target),
        permissions: parse_permissions(&nodes, "pool/target")?,
        source: PoolSource {
            device: find(&nodes, "pool/source/device")
                .and_then(|n| n.attr("path"))
                .map(PathBuf::from),
            format: find(&nodes, "pool/source/format")
                .and_then(|n| n.attr("type"))
                .map(str::to_string),
        },
    })
}

fn parse_vol_format(name: Option<&str>) -> Result<VolFormat> {
    match name {
        None | Some("raw") | Some("none") => Ok(VolFormat::Raw),
        Some("qcow2") => Ok(VolFormat::Qcow2),
        Some(other) => Err(Error::NoSupport(format!(
            "volume format '{other}' is not supported by this backend"
        ))),
    }
}

/// Parses a volume document for create and create-from, with libvirt's defaults: format raw, allocation equal
/// to the capacity when absent (a fully allocated raw file, as `virsh vol-create-as` without `--allocation`),
/// backing store format probed when absent. `capacity_required` is false for create-from (clone), where the
/// capacity defaults to the source's, as libvirt parses with `VIR_VOL_XML_PARSE_NO_CAPACITY` there.
pub fn parse_volume(xml: &str, capacity_required: bool) -> Result<VolumeDef> {
    let nodes = flatten(xml)?;
    let root = &nodes[0];
    if root.path != "volume" {
        return Err(Error::Xml(format!(
            "unexpected root element <{}>, expecting <volume>",
            root.path
        )));
    }
    let name = text(&nodes, "volume/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Xml("missing volume name element".into()))?;
    let backing_store = match text(&nodes, "volume/backingStore/path") {
        None | Some("") => None,
        Some(path) => Some(BackingStore {
            path: PathBuf::from(path),
            format: match find(&nodes, "volume/backingStore/format").and_then(|n| n.attr("type")) {
                None => None,
                Some(f) => Some(parse_vol_format(Some(f))?),
            },
        }),
    };
    let capacity = match find(&nodes, "volume/capacity") {
        Some(node) => parse_size(&node.text, node.attr("unit"))?,
        None if backing_store.is_some() || !capacity_required => 0,
        None => return Err(Error::Xml("missing capacity element".into())),
    };
    let allocation = match find(&nodes, "volume/allocation") {
        Some(node) => Some(parse_size(&node.text, node.attr("unit"))?),
        None => Some(capacity),
    };
    let format =
        parse_vol_format(find(&nodes, "volume/target/format").and_then(|n| n.attr("type")))?;
    if find(&nodes, "volume/target/encryption").is_some() {
        return Err(Error::NoSupport(
            "volume encryption is not supported by this backend".into(),
        ));
    }
    let cluster_size = match find(&nodes, "volume/target/clusterSize") {
        Some(node) => Some(parse_size(&node.text, node.attr("unit"))?),
        None => None,
    };
    Ok(VolumeDef {
        name: name.to_string(),
        capacity,
        allocation,
        format,
        backing_store,
        permissions: parse_permissions(&nodes, "volume/target")?,
        compat: text(&nodes, "volume/target/compat").map(str::to_string),
        lazy_refcounts: find(&nodes, "volume/target/features/lazy_refcounts").is_some(),
        cluster_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_round_trips_through_format_and_parse() {
        let def = PoolDef {
            name: "a&b".into(),
            uuid: Some(Uuid::parse_str("35bb2ad9-388a-cdfe-461a-b8907f6e53fe").expect("uuid")),
            kind: PoolType::Fs,
            target: "/mnt/pool dir".into(),
            permissions: Permissions {
                mode: Some(0o755),
                owner: Some(107),
                group: None,
            },
            source: PoolSource {
                device: Some("/dev/sdb1".into()),
                format: Some("ext4".into()),
            },
        };
        let xml = format_pool(&def, 1, 2, 3);
        assert!(xml.contains("<pool type='fs'>"), "{xml}");
        assert!(xml.contains("<name>a&amp;b</name>"), "{xml}");
        assert!(xml.contains("<mode>0755</mode>"), "{xml}");
        assert!(xml.contains("<device path='/dev/sdb1'/>"), "{xml}");
        assert!(
            xml.contains("<available unit='bytes'>3</available>"),
            "{xml}"
        );
        assert_eq!(parse_pool(&xml).expect("parse"), def);
    }

    #[test]
    fn corpus_dir_pool_parses() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpora/libvirt-9.9.0/storagepoolxml2xmlin/pool-dir.xml");
        let Ok(xml) = std::fs::read_to_string(&path) else {
            panic!("corpus file {} is missing", path.display());
        };
        let def = parse_pool(&xml).expect("corpus pool parses");
        assert_eq!(def.kind, PoolType::Dir);
        assert_eq!(def.name, "virtimages");
        assert_eq!(def.target, PathBuf::from("///var/////lib/libvirt/images//"));
        assert_eq!(def.permissions.mode, Some(0o700));
    }

    #[test]
    fn bad_pool_documents_are_errors() {
        assert!(parse_pool("<pool type='disk'><name>x</name></pool>").is_err());
        assert!(parse_pool("<pool type='dir'><target><path>/x</path></target></pool>").is_err());
        assert!(parse_pool("<pool type='dir'><name>x</name><uuid>zz</uuid></pool>").is_err());
        assert!(parse_pool("<domain/>").is_err());
        assert!(parse_pool("<pool type='dir'><name>x</pool>").is_err());
    }

    fn corpus(dir: &str, file: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpora/libvirt-9.9.0")
            .join(dir)
            .join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => panic!("corpus file {}: {err}", path.display()),
        }
    }

    #[test]
    fn sizes_scale_like_libvirt() {
        assert_eq!(parse_size("5", Some("G")).expect("G"), 5 << 30);
        assert_eq!(parse_size("1", Some("TiB")).expect("TiB"), 1 << 40);
        assert_eq!(parse_size("3", Some("KB")).expect("KB"), 3000);
        assert_eq!(parse_size(" 42 ", None).expect("bytes"), 42);
        assert_eq!(parse_size("7", Some("bytes")).expect("bytes"), 7);
        assert_eq!(
            parse_size("1", Some("xyz")).expect_err("unit").code(),
            crate::code::INVALID_ARG
        );
        assert!(parse_size("-1", None).is_err());
        assert!(parse_size("99999999999", Some("E")).is_err(), "overflow");
    }

    #[test]
    fn corpus_volumes_parse() {
        let v =
            parse_volume(&corpus("storagevolxml2xmlin", "vol-qcow2.xml"), true).expect("vol-qcow2");
        assert_eq!(v.name, "OtherDemo.img");
        assert_eq!(v.capacity, 5 << 30);
        assert_eq!(v.allocation, Some(294_912));
        assert_eq!(v.format, VolFormat::Qcow2);
        assert_eq!(
            v.permissions,
            Permissions {
                mode: Some(0o644),
                owner: Some(0),
                group: Some(0)
            }
        );
        let b = v.backing_store.expect("backing");
        assert_eq!(
            (b.path, b.format),
            (PathBuf::from("/dev/null"), Some(VolFormat::Raw))
        );

        let v = parse_volume(
            &corpus("storagevolxml2xmlin", "vol-qcow2-clusterSize.xml"),
            true,
        )
        .expect("cluster");
        assert_eq!(v.cluster_size, Some(128 * 1024));
        let err =
            parse_volume(&corpus("storagevolxml2xmlin", "vol-luks.xml"), true).expect_err("luks");
        assert_eq!(err.code(), crate::code::NO_SUPPORT);

        let v =
            parse_volume(&corpus("storagevolxml2xmlin", "vol-file.xml"), true).expect("vol-file");
        assert_eq!(
            (v.capacity, v.allocation, v.format),
            (1 << 40, Some(0), VolFormat::Raw)
        );
        assert_eq!(v.permissions.owner, Some(744), "owner is decimal");

        let v =
            parse_volume(&corpus("storagevolxml2xmlin", "vol-qcow2-lazy.xml"), true).expect("lazy");
        assert!(v.lazy_refcounts);
        assert_eq!(v.compat.as_deref(), Some("1.1"));

        let v = parse_volume(
            &corpus("storagevolxml2xmlin", "vol-qcow2-nocapacity.xml"),
            false,
        )
        .expect("nocapacity");
        assert_eq!(v.capacity, 0);
        assert!(v.backing_store.is_none());
        assert!(parse_volume(
            &corpus("storagevolxml2xmlin", "vol-qcow2-nocapacity.xml"),
            true
        )
        .is_err());
    }

    #[test]
    fn volume_defaults_and_refusals() {
        let v = parse_volume(
            "<volume><name>a</name><capacity unit='M'>2</capacity></volume>",
            true,
        )
        .expect("minimal");
        assert_eq!(
            (v.format, v.allocation),
            (VolFormat::Raw, Some(2 << 20)),
            "allocation defaults to capacity"
        );
        let err = parse_volume("<volume><name>a</name></volume>", true).expect_err("no capacity");
        assert_eq!(err.code(), crate::code::XML_ERROR);
        let err = parse_volume(
            "<volume><name>a</name><capacity>1</capacity><target><format type='vmdk'/></target></volume>",
            true,
        )
        .expect_err("vmdk");
        assert_eq!(err.code(), crate::code::NO_SUPPORT);
        assert!(parse_volume("<pool type='dir'/>", true).is_err());
        assert!(
            parse_volume("<volume><name>a</name><capacity>1</capacity>", true).is_err(),
            "unterminated"
        );
        assert!(parse_volume("", true).is_err());
    }

    #[test]
    fn corpus_fs_and_netfs_pools() {
        // netfs is not served: refused clearly.
        let err = parse_pool(&corpus("storagepoolxml2xmlin", "pool-netfs.xml")).expect_err("netfs");
        assert_eq!(err.code(), crate::code::NO_SUPPORT);
        assert_eq!(
            err.to_string(),
            "this function is not supported by the connection driver: \
             storage pool type 'netfs' is not supported by this backend"
        );
        let err = parse_pool("<pool type='bogus'><name>x</name></pool>").expect_err("unknown type");
        assert_eq!(err.code(), crate::code::XML_ERROR);
        let def = parse_pool(&corpus("storagepoolxml2xmlin", "pool-dir.xml")).expect("dir");
        assert_eq!(
            def.permissions,
            Permissions {
                mode: Some(0o700),
                owner: None,
                group: None
            }
        );
    }

    #[test]
    fn every_corpus_document_parses_or_is_refused_cleanly() {
        let base =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/libvirt-9.9.0");
        let mut seen = 0;
        for (dir, is_pool) in [
            ("storagepoolxml2xmlin", true),
            ("storagevolxml2xmlin", false),
        ] {
            let entries = std::fs::read_dir(base.join(dir)).expect("corpus directory");
            for entry in entries {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).expect("corpus file");
                let outcome = if is_pool {
                    parse_pool(&text).map(drop)
                } else {
                    parse_volume(&text, false).map(drop)
                };
                if let Err(err) = outcome {
                    assert!(
                        [crate::code::XML_ERROR, crate::code::NO_SUPPORT].contains(&err.code()),
                        "{}: {err:?}",
                        path.display()
                    );
                }
                seen += 1;
            }
        }
        assert!(seen > 40, "corpus too small: {seen}");
    }

    /// Mangled documents (truncations and byte substitutions of every corpus file, from a fixed seed) give
    /// `Ok` or an error, never a panic.
    #[test]
    fn mangled_documents_never_panic() {
        let base =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/libvirt-9.9.0");
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const NASTY: &[u8] = b"<>&'\"/ \n\0\xff=-9";
        let mut runs = 0;
        for dir in ["storagepoolxml2xmlin", "storagevolxml2xmlin"] {
            for entry in std::fs::read_dir(base.join(dir)).expect("corpus directory") {
                let bytes = std::fs::read(entry.expect("entry").path()).expect("corpus file");
                for _ in 0..40 {
                    let mut doc = bytes.clone();
                    let len = doc.len() as u64;
                    match next() % 3 {
                        0 => doc.truncate((next() % len) as usize),
                        1 => {
                            for _ in 0..4 {
                                let at = (next() % len) as usize;
                                doc[at] = NASTY[(next() % NASTY.len() as u64) as usize];
                            }
                        }
                        _ => {
                            let at = (next() % len) as usize;
                            let cut = (next() % (len - at as u64)) as usize;
                            doc.drain(at..at + cut);
                        }
                    }
                    let text = String::from_utf8_lossy(&doc);
                    let _ = parse_pool(&text);
                    let _ = parse_volume(&text, true);
                    let _ = parse_volume(&text, false);
                    runs += 1;
                }
            }
        }
        assert!(runs > 1000, "only {runs} mangled documents");
    }

    #[test]
    fn dir_pool_formats_like_libvirt() {
        let mut def = parse_pool(&corpus("storagepoolxml2xmlin", "pool-dir.xml")).expect("parse");
        def.target = crate::sanitize_path(&def.target);
        let expected: String = corpus("storagepoolxml2xmlout", "pool-dir.xml")
            .lines()
            .filter(|line| !line.contains("<label>"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            format_pool(&def, 0, 0, 0),
            expected,
            "labels are not modelled; everything else matches"
        );
    }
}
