//! The qemu-img commands the backend runs, with the arguments libvirt's `storage_util.c` passes.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::model::VolFormat;

/// The program run; the `QEMU_IMG` environment variable overrides it (tests, packaging).
fn program() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "qemu-img".to_string())
}

/// Runs a helper program; a failure becomes libvirt's "Child process (...) unexpected exit status" error.
pub(crate) fn run(program: &str, args: &[String]) -> Result<String> {
    let output = Command::new(program).args(args).output().map_err(|err| {
        Error::system(
            format!("Cannot find '{program}' in path or cannot run it"),
            err,
        )
    })?;
    if !output.status.success() {
        let status = output
            .status
            .code()
            .map_or_else(|| "signal".to_string(), |c| c.to_string());
        return Err(Error::Internal(format!(
            "Child process ({program} {}) unexpected exit status {status}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// What `qemu-img info --output=json` reports about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Format name.
    pub format: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Bytes allocated on disk.
    pub actual_size: Option<u64>,
    /// Backing file name as stored in the image.
    pub backing_filename: Option<String>,
    /// Backing file format as stored in the image.
    pub backing_format: Option<String>,
    /// Cluster size (qcow2).
    pub cluster_size: Option<u64>,
    /// qcow2 compat level.
    pub compat: Option<String>,
    /// qcow2 lazy refcounts.
    pub lazy_refcounts: bool,
    /// qcow2 extended L2 entries.
    pub extended_l2: bool,
}

/// Probes an image. `-U` (force share) lets it read images a running guest holds open.
pub fn info(path: &Path) -> Result<ImageInfo> {
    let out = run(
        &program(),
        &[
            "info".into(),
            "-U".into(),
            "--output=json".into(),
            path_arg(path),
        ],
    )?;
    parse_info(&out).ok_or_else(|| {
        Error::Internal(format!(
            "cannot parse qemu-img info output for '{}'",
            path.display()
        ))
    })
}

pub(crate) fn parse_info(json: &str) -> Option<ImageInfo> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let str_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let data = value.get("format-specific").and_then(|f| f.get("data"));
    Some(ImageInfo {
        format: str_field("format")?,
        virtual_size: value.get("virtual-size")?.as_u64()?,
        actual_size: value.get("actual-size").and_then(|v| v.as_u64()),
        backing_filename: str_field("backing-filename"),
        backing_format: str_field("backing-filename-format"),
        cluster_size: value.get("cluster-size").and_then(|v| v.as_u64()),
        compat: data
            .and_then(|d| d.get("compat"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        lazy_refcounts: data
            .and_then(|d| d.get("lazy-refcounts"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        extended_l2: data
            .and_then(|d| d.get("extended-l2"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    })
}

/// qcow2 preallocation modes libvirt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// Only the image metadata.
    Metadata,
    /// Metadata and data clusters, with fallocate.
    Falloc,
}

impl Preallocation {
    /// libvirt's choice under `VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA`: `falloc` when the requested allocation
    /// covers the capacity, `metadata` otherwise; none without the flag.
    pub fn for_flags(flags: u32, capacity: u64, allocation: Option<u64>) -> Option<Self> {
        if flags & crate::flags::VOL_CREATE_PREALLOC_METADATA == 0 {
            return None;
        }
        Some(if allocation.unwrap_or(0) >= capacity {
            Preallocation::Falloc
        } else {
            Preallocation::Metadata
        })
    }
}

/// Options of a new qcow2 image.
#[derive(Debug, Clone, Default)]
pub struct Qcow2Options<'a> {
    /// `compat=` (libvirt's default is `1.1`).
    pub compat: Option<&'a str>,
    /// `lazy_refcounts`.
    pub lazy_refcounts: bool,
    /// `cluster_size=` in bytes.
    pub cluster_size: Option<u64>,
    /// `extended_l2=on`.
    pub extended_l2: bool,
    /// `preallocation=`: `metadata`, or `falloc` when the whole capacity is to be allocated, as libvirt
    /// chooses under `VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA`.
    pub preallocation: Option<Preallocation>,
    /// Backing file and its format (`-b`, `-F`).
    pub backing: Option<(&'a Path, VolFormat)>,
}

fn qcow2_o_option(opts: &Qcow2Options<'_>) -> String {
    let mut o = Vec::new();
    match opts.preallocation {
        Some(Preallocation::Metadata) => o.push("preallocation=metadata".to_string()),
        Some(Preallocation::Falloc) => o.push("preallocation=falloc".to_string()),
        None => {}
    }
    o.push(format!("compat={}", opts.compat.unwrap_or("1.1")));
    if opts.lazy_refcounts {
        o.push("lazy_refcounts".to_string());
    }
    if let Some(cluster) = opts.cluster_size {
        o.push(format!("cluster_size={cluster}"));
    }
    if opts.extended_l2 {
        o.push("extended_l2=on".to_string());
    }
    o.join(",")
}

/// libvirt passes sizes to qemu-img in KiB, rounded up.
fn size_arg(bytes: u64) -> String {
    format!("{}K", bytes.div_ceil(1024))
}

/// `qemu-img create -f qcow2 [-b BACKING -F FMT] -o compat=..,.. PATH SIZEK`; with a backing file and capacity 0
/// the size is taken from the backing file.
pub fn create_qcow2(path: &Path, capacity: u64, opts: &Qcow2Options<'_>) -> Result<()> {
    let mut args: Vec<String> = vec!["create".into(), "-f".into(), "qcow2".into()];
    if let Some((backing, format)) = opts.backing {
        args.extend([
            "-b".into(),
            path_arg(backing),
            "-F".into(),
            format.as_str().into(),
        ]);
    }
    args.extend(["-o".into(), qcow2_o_option(opts), path_arg(path)]);
    if capacity > 0 || opts.backing.is_none() {
        args.push(size_arg(capacity));
    }
    run(&program(), &args).map(drop)
}

/// `qemu-img convert -f IN -O OUT [-B BACKING -F FMT] [-o compat=..] SRC DST`: the copy behind create-from
/// (clone); with a backing file only the data that differs from it is written.
pub fn convert(
    src: &Path,
    src_format: &str,
    dst: &Path,
    dst_format: VolFormat,
    opts: &Qcow2Options<'_>,
) -> Result<()> {
    let mut args: Vec<String> = vec![
        "convert".into(),
        "-f".into(),
        src_format.into(),
        "-O".into(),
        dst_format.as_str().into(),
    ];
    if dst_format == VolFormat::Qcow2 {
        if let Some((backing, format)) = opts.backing {
            args.extend([
                "-B".into(),
                path_arg(backing),
                "-F".into(),
                format.as_str().into(),
            ]);
        }
        args.extend(["-o".into(), qcow2_o_option(opts)]);
    }
    args.extend([path_arg(src), path_arg(dst)]);
    run(&program(), &args).map(drop)
}

/// `qemu-img resize [--shrink] -f qcow2 PATH SIZE` for a qcow2 image.
pub fn resize(path: &Path, capacity: u64, shrink: bool) -> Result<()> {
    let mut args: Vec<String> = vec!["resize".into()];
    if shrink {
        args.push("--shrink".into());
    }
    args.extend([
        "-f".into(),
        "qcow2".into(),
        path_arg(path),
        capacity.to_string(),
    ]);
    run(&program(), &args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qcow2_info_with_backing() {
        let json = r#"{"backing-filename-format":"raw","virtual-size":2097152,"filename":"o.qcow2",
            "cluster-size":65536,"format":"qcow2","actual-size":200704,
            "format-specific":{"type":"qcow2","data":{"compat":"1.1","lazy-refcounts":true}},
            "backing-filename":"/tmp/b.img","dirty-flag":false}"#;
        let info = parse_info(json).expect("valid info");
        assert_eq!(info.format, "qcow2");
        assert_eq!(info.virtual_size, 2_097_152);
        assert_eq!(info.actual_size, Some(200_704));
        assert_eq!(info.backing_filename.as_deref(), Some("/tmp/b.img"));
        assert_eq!(info.backing_format.as_deref(), Some("raw"));
        assert_eq!(info.compat.as_deref(), Some("1.1"));
        assert!(info.lazy_refcounts);
    }

    #[test]
    fn rejects_garbage_info() {
        assert!(parse_info("not json").is_none());
        assert!(parse_info(r#"{"format":"raw"}"#).is_none());
    }

    #[test]
    fn sizes_are_kib_rounded_up() {
        assert_eq!(size_arg(0), "0K");
        assert_eq!(size_arg(1), "1K");
        assert_eq!(size_arg(1024), "1K");
        assert_eq!(size_arg(1025), "2K");
    }

    #[test]
    fn qcow2_options_default_to_compat_1_1() {
        assert_eq!(qcow2_o_option(&Qcow2Options::default()), "compat=1.1");
        let flag = crate::flags::VOL_CREATE_PREALLOC_METADATA;
        assert_eq!(Preallocation::for_flags(0, 10, Some(10)), None);
        assert_eq!(
            Preallocation::for_flags(flag, 10, Some(10)),
            Some(Preallocation::Falloc)
        );
        assert_eq!(
            Preallocation::for_flags(flag, 10, Some(0)),
            Some(Preallocation::Metadata)
        );
        let opts = Qcow2Options {
            compat: Some("0.10"),
            lazy_refcounts: true,
            cluster_size: Some(131_072),
            extended_l2: false,
            preallocation: Some(Preallocation::Metadata),
            backing: None,
        };
        assert_eq!(
            qcow2_o_option(&opts),
            "preallocation=metadata,compat=0.10,lazy_refcounts,cluster_size=131072"
        );
    }
}
