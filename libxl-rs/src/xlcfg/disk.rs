//! xl-disk-configuration(5): `disk` specification strings.

use super::XlCfgError;

/// A parsed `disk` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskSpec {
    /// The backing path or backend-specific target (absent for an empty CD-ROM drive).
    pub target: Option<String>,
    /// Image format: raw, qcow, qcow2, vhd, qed (absent: raw).
    pub format: Option<String>,
    /// The virtual device name as the guest sees it (xvda, hda, sdb...).
    pub vdev: String,
    /// True for read-only access (`access=ro`, `r`).
    pub readonly: bool,
    /// True when access was given explicitly.
    pub access_set: bool,
    /// `devtype`: cdrom or disk.
    pub devtype: Option<String>,
    /// `backendtype`: phy, qdisk, tap, standalone.
    pub backendtype: Option<String>,
    /// `backend` domain.
    pub backend: Option<String>,
    /// `script` for the block hotplug script.
    pub script: Option<String>,
    /// `direct-io-safe`.
    pub direct_io_safe: bool,
    /// `discard` (`Some(true)`) or `no-discard` (`Some(false)`).
    pub discard: Option<bool>,
}

const FORMATS: &[&str] = &["raw", "qcow", "qcow2", "vhd", "qed", "empty"];

impl DiskSpec {
    /// Parses a disk specification, positional (`target,format,vdev,access`) or with keys.
    ///
    /// `key` and `line` name the setting in errors.
    pub fn parse(spec: &str, key: &str, line: usize) -> Result<DiskSpec, XlCfgError> {
        let err = |message: String| XlCfgError::Value {
            line,
            key: key.to_string(),
            message,
        };
        let mut d = DiskSpec::default();
        let mut rest = spec;
        let mut positionals: Vec<&str> = Vec::new();
        let mut vdev: Option<String> = None;
        loop {
            if let Some(t) = rest.trim_start().strip_prefix("target=") {
                // target= takes the remainder of the string, commas included.
                d.target = Some(t.to_string());
                break;
            }
            let (tok, next) = match rest.split_once(',') {
                Some((a, b)) => (a.trim(), Some(b)),
                None => (rest.trim(), None),
            };
            if let Some((k, v)) = tok.split_once('=') {
                match k {
                    "format" => d.format = Some(check_format(v).map_err(err)?),
                    "vdev" => vdev = Some(v.to_string()),
                    "access" => {
                        d.readonly = parse_access(v).map_err(err)?;
                        d.access_set = true;
                    }
                    "devtype" => match v {
                        "cdrom" | "disk" => d.devtype = Some(v.to_string()),
                        _ => return Err(err(format!("unknown devtype '{v}'"))),
                    },
                    "backendtype" => match v {
                        "phy" | "qdisk" | "tap" | "standalone" => {
                            d.backendtype = Some(v.to_string())
                        }
                        _ => return Err(err(format!("unknown backendtype '{v}'"))),
                    },
                    "backend" => d.backend = Some(v.to_string()),
                    "script" => d.script = Some(v.to_string()),
                    _ => return Err(err(format!("unknown disk parameter '{k}'"))),
                }
            } else {
                match tok {
                    "cdrom" => d.devtype = Some("cdrom".into()),
                    "direct-io-safe" => d.direct_io_safe = true,
                    "discard" => d.discard = Some(true),
                    "no-discard" => d.discard = Some(false),
                    _ => positionals.push(tok),
                }
            }
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        // Positional parameters are target, format, vdev, access; the legacy three-parameter form
        // (`target,vdev,access`) omits the format.
        // Empty trailing parameters (a trailing comma) leave nothing unspecified.
        while positionals.len() > 4 && positionals.last() == Some(&"") {
            positionals.pop();
        }
        let legacy = positionals.len() == 3
            && !positionals[1].is_empty()
            && !FORMATS.contains(&positionals[1]);
        let slots: &[usize] = if legacy { &[0, 2, 3] } else { &[0, 1, 2, 3] };
        if positionals.len() > 4 {
            return Err(err(format!(
                "too many positional parameters at '{}'",
                positionals[4]
            )));
        }
        for (tok, slot) in positionals.iter().zip(slots) {
            if tok.is_empty() {
                continue;
            }
            match slot {
                0 => d.set_legacy_target(tok),
                1 => d.format = Some(check_format(tok).map_err(err)?),
                2 => vdev = Some(tok.to_string()),
                _ => {
                    d.readonly = parse_access(tok).map_err(err)?;
                    d.access_set = true;
                }
            }
        }
        let mut vdev = vdev.ok_or_else(|| err("the disk has no vdev".to_string()))?;
        if let Some(v) = vdev.strip_suffix(":cdrom") {
            vdev = v.to_string();
            d.devtype = Some("cdrom".into());
        } else if let Some(v) = vdev.strip_suffix(":disk") {
            vdev = v.to_string();
        }
        if vdev.is_empty() {
            return Err(err("the disk has an empty vdev".to_string()));
        }
        d.vdev = vdev;
        if d.devtype.as_deref() == Some("cdrom") {
            d.readonly = true;
        }
        Ok(d)
    }

    /// Handles the deprecated `phy:`, `file:`, `tap:FMT:`, `FMT:` target prefixes.
    fn set_legacy_target(&mut self, tok: &str) {
        let mut t = tok;
        if let Some(r) = t.strip_prefix("phy:") {
            self.backendtype = Some("phy".into());
            t = r;
        } else if let Some(r) = t.strip_prefix("file:") {
            t = r;
        } else {
            if let Some(r) = t.strip_prefix("tap2:").or_else(|| t.strip_prefix("tap:")) {
                self.backendtype = Some("tap".into());
                t = r;
            }
            for (prefix, fmt) in [
                ("aio:", "raw"),
                ("raw:", "raw"),
                ("qcow:", "qcow"),
                ("qcow2:", "qcow2"),
                ("vhd:", "vhd"),
                ("qed:", "qed"),
            ] {
                if let Some(r) = t.strip_prefix(prefix) {
                    self.format = Some(fmt.into());
                    t = r;
                    break;
                }
            }
        }
        self.target = Some(t.to_string());
    }

    /// Formats in libvirt's key order: `format, vdev, access, backendtype, devtype, script, target`.
    pub fn to_spec(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.format {
            parts.push(format!("format={f}"));
        }
        parts.push(format!("vdev={}", self.vdev));
        parts.push(format!(
            "access={}",
            if self.readonly { "ro" } else { "rw" }
        ));
        if let Some(b) = &self.backendtype {
            parts.push(format!("backendtype={b}"));
        }
        if let Some(b) = &self.backend {
            parts.push(format!("backend={b}"));
        }
        if let Some(t) = &self.devtype {
            if t == "cdrom" {
                parts.push("devtype=cdrom".into());
            }
        }
        if let Some(s) = &self.script {
            parts.push(format!("script={s}"));
        }
        if self.direct_io_safe {
            parts.push("direct-io-safe".into());
        }
        match self.discard {
            Some(true) => parts.push("discard".into()),
            Some(false) => parts.push("no-discard".into()),
            None => {}
        }
        if let Some(t) = &self.target {
            parts.push(format!("target={t}"));
        }
        parts.join(",")
    }
}

fn check_format(v: &str) -> Result<String, String> {
    if FORMATS.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!("unknown disk format '{v}'"))
    }
}

fn parse_access(v: &str) -> Result<bool, String> {
    match v {
        "r" | "ro" => Ok(true),
        "w" | "rw" => Ok(false),
        _ => Err(format!("unknown disk access '{v}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_and_keyed() {
        let d = DiskSpec::parse("/dev/HostVG/XenGuest2,,hda,,backendtype=phy", "disk", 1).unwrap();
        assert_eq!(d.target.as_deref(), Some("/dev/HostVG/XenGuest2"));
        assert_eq!(d.vdev, "hda");
        assert_eq!(d.backendtype.as_deref(), Some("phy"));
        let d = DiskSpec::parse(
            "/root/boot.iso,raw,hdc,r,backendtype=qdisk,devtype=cdrom",
            "disk",
            1,
        )
        .unwrap();
        assert!(d.readonly);
        assert_eq!(
            d.to_spec(),
            "format=raw,vdev=hdc,access=ro,backendtype=qdisk,devtype=cdrom,target=/root/boot.iso"
        );
        let d = DiskSpec::parse("format=raw,vdev=hdb,target=rbd:a,b=c", "disk", 1).unwrap();
        assert_eq!(d.target.as_deref(), Some("rbd:a,b=c"));
        let d = DiskSpec::parse("phy:/dev/sda,xvda,w", "disk", 1).unwrap();
        assert_eq!(d.backendtype.as_deref(), Some("phy"));
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = DiskSpec::parse("/a,raw", "disk", 7).unwrap_err();
        assert_eq!(e.to_string(), "line 7, key 'disk': the disk has no vdev");
        let e = DiskSpec::parse("/a,floppy-image,xvda,w", "disk", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, key 'disk': unknown disk format 'floppy-image'"
        );
        let e = DiskSpec::parse("vdev=xvda,colour=red", "disk", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, key 'disk': unknown disk parameter 'colour'"
        );
    }
}
