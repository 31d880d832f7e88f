//! Pool and volume XML in libvirt's layout (`virStoragePoolDefFormat`, `virStorageVolDefFormat`), and the
//! parser for the pool files this driver persists. Client-supplied XML is parsed by the daemon's XML layer
//! (`domain_xml::storage`), which hands the driver a [`PoolDef`] or [`crate::VolumeDef`].

use std::fmt::Write as _;
use std::path::PathBuf;

use quick_xml::events::Event;
use quick_xml::Reader;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Permissions, PoolDef, PoolSource, PoolType, Timestamp, Volume};

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
    if let Some(format) = &def.source.format {
        let _ = writeln!(out, "    <format type='{}'/>", escape(format));
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
    let _ = writeln!(out, "  <physical unit='bytes'>{}</physical>", vol.physical);
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

fn xml_err(err: impl std::fmt::Display) -> Error {
    Error::Xml(err.to_string())
}

fn parse_u32(text: &str, octal: bool) -> Result<Option<u32>> {
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
        .map_err(|_| Error::Xml(format!("malformed permission value '{text}'")))
}

/// Parses a pool document of the subset this driver writes: type, name, uuid, source device and format, target
/// path and permissions. Other elements are ignored.
pub fn parse_pool(xml: &str) -> Result<PoolDef> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut kind = None;
    let mut name = None;
    let mut uuid = None;
    let mut target = None;
    let mut perms = Permissions::default();
    let mut source = PoolSource::default();
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let attr = |key: &str| -> Result<Option<String>> {
                    for a in e.attributes() {
                        let a = a.map_err(xml_err)?;
                        if a.key.as_ref() == key.as_bytes() {
                            return Ok(Some(a.unescape_value().map_err(xml_err)?.into_owned()));
                        }
                    }
                    Ok(None)
                };
                let parent = stack.last().map(String::as_str);
                match (parent, tag.as_str()) {
                    (None, "pool") => {
                        let type_name =
                            attr("type")?.ok_or_else(|| Error::Xml("missing pool type".into()))?;
                        kind = Some(PoolType::from_name(&type_name).ok_or_else(|| {
                            Error::Xml(format!("unsupported storage pool type '{type_name}'"))
                        })?);
                    }
                    (None, other) => {
                        return Err(Error::Xml(format!("unexpected root element <{other}>")))
                    }
                    (Some("source"), "device") => source.device = attr("path")?.map(PathBuf::from),
                    (Some("source"), "format") => source.format = attr("type")?,
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(tag);
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(xml_err)?.into_owned();
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match path.as_slice() {
                    ["pool", "name"] => name = Some(text),
                    ["pool", "uuid"] => {
                        uuid =
                            Some(Uuid::parse_str(text.trim()).map_err(|_| {
                                Error::Xml(format!("malformed uuid element '{text}'"))
                            })?)
                    }
                    ["pool", "target", "path"] => target = Some(PathBuf::from(text)),
                    ["pool", "target", "permissions", "mode"] => {
                        perms.mode = parse_u32(&text, true)?
                    }
                    ["pool", "target", "permissions", "owner"] => {
                        perms.owner = parse_u32(&text, false)?
                    }
                    ["pool", "target", "permissions", "group"] => {
                        perms.group = parse_u32(&text, false)?
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(PoolDef {
        name: name.ok_or_else(|| Error::Xml("missing pool source name element".into()))?,
        uuid,
        kind: kind.ok_or_else(|| Error::Xml("missing <pool> root element".into()))?,
        target: target.ok_or_else(|| Error::Xml("missing storage pool target path".into()))?,
        permissions: perms,
        source,
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
}
