//! Persistent domain definitions (`<config-dir>/<name>.xml`, autostart symlinks in `<config-dir>/autostart/`),
//! runtime status files for running domains (`<state-dir>/<name>.xml`), snapshot metadata
//! (`<snapshot-dir>/<domain>/<snapshot>.xml`, one file per snapshot as libvirt keeps them), all written
//! atomically, and managed-save images (`<save-dir>/<name>.save`, as libvirt's libxl driver keeps them).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use domain_xml::domain::Domain;
use domain_xml::snapshot::{DomainSnapshot, SnapshotParse};
use domain_xml::FormatFlags;

use crate::Error;

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct Store {
    config_dir: PathBuf,
    state_dir: PathBuf,
    snapshot_dir: PathBuf,
    save_dir: PathBuf,
}

/// Writes `data` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let io = |e| Error::Io(path.to_path_buf(), e);
    {
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

impl Store {
    /// Opens (and creates) the directories; snapshot metadata goes to `<config-dir>/snapshot` and managed-save
    /// images to `<config-dir>/save` (see [`Store::with_snapshot_dir`] and [`Store::with_save_dir`]).
    pub fn open(config_dir: &Path, state_dir: &Path) -> Result<Store, Error> {
        for d in [config_dir, &config_dir.join("autostart"), state_dir] {
            fs::create_dir_all(d).map_err(|e| Error::Io(d.to_path_buf(), e))?;
        }
        Ok(Store {
            config_dir: config_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            snapshot_dir: config_dir.join("snapshot"),
            save_dir: config_dir.join("save"),
        })
    }

    /// Keeps snapshot metadata under `dir` (created when the first snapshot is written). It must outlive a
    /// reboot, as the qcow2 images holding the snapshots' data do: libvirt keeps it under `/var/lib`.
    pub fn with_snapshot_dir(mut self, dir: &Path) -> Store {
        self.snapshot_dir = dir.to_path_buf();
        self
    }

    /// Keeps managed-save images under `dir` (created, mode 0700, when the first is written). They must outlive
    /// a reboot: libvirt keeps them in `/var/lib/libvirt/libxl/save`.
    pub fn with_save_dir(mut self, dir: &Path) -> Store {
        self.save_dir = dir.to_path_buf();
        self
    }

    /// Where a domain's managed-save image is kept.
    pub fn managed_save_path(&self, domain: &str) -> PathBuf {
        self.save_dir.join(format!("{domain}.save"))
    }

    /// Whether a domain has a managed-save image.
    pub fn has_managed_save(&self, domain: &str) -> bool {
        self.managed_save_path(domain).is_file()
    }

    /// Creates the managed-save directory if needed (mode 0700: images hold guests' memory).
    pub fn create_save_dir(&self) -> Result<(), Error> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.save_dir)
            .map_err(|e| Error::Io(self.save_dir.clone(), e))
    }

    /// Removes a domain's managed-save image; none is no error.
    pub fn delete_managed_save(&self, domain: &str) -> Result<(), Error> {
        let p = self.managed_save_path(domain);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(p, e)),
        }
    }

    fn snapshots_path(&self, domain: &str) -> PathBuf {
        self.snapshot_dir.join(domain)
    }

    /// Where the daemon keeps a snapshot's saved memory (running domains' snapshots).
    pub fn snapshot_memory_path(&self, domain: &str, snapshot: &str) -> PathBuf {
        self.snapshots_path(domain).join(format!("{snapshot}.save"))
    }

    /// Saves one snapshot's metadata, with `<active>` telling whether it is the domain's current snapshot.
    pub fn save_snapshot(
        &self,
        domain: &str,
        snap: &DomainSnapshot,
        current: bool,
    ) -> Result<(), Error> {
        let dir = self.snapshots_path(domain);
        fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
        let name = snap.name.as_deref().unwrap_or_default();
        let rec = DomainSnapshot {
            active: Some(current),
            ..snap.clone()
        };
        let xml = rec.to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE);
        write_atomic(&dir.join(format!("{name}.xml")), xml.as_bytes())
    }

    /// Removes one snapshot's metadata (and its saved memory, if any).
    pub fn delete_snapshot(&self, domain: &str, snapshot: &str) -> Result<(), Error> {
        let dir = self.snapshots_path(domain);
        let _ = fs::remove_file(self.snapshot_memory_path(domain, snapshot));
        let p = dir.join(format!("{snapshot}.xml"));
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(p, e)),
        }
    }

    /// Removes every snapshot's metadata of a domain, and its directory.
    pub fn delete_snapshots(&self, domain: &str) -> Result<(), Error> {
        let dir = self.snapshots_path(domain);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(dir, e)),
        }
    }

    /// Loads a domain's snapshot metadata with the flag saying which one is current; files that fail to parse
    /// are reported and skipped.
    pub fn load_snapshots(&self, domain: &str) -> (Vec<(DomainSnapshot, bool)>, Vec<String>) {
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for p in xml_files(&self.snapshots_path(domain)) {
            let parsed = fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    DomainSnapshot::parse(&s, SnapshotParse::Redefine).map_err(|e| e.to_string())
                })
                .and_then(|s| {
                    let stem = p.file_stem().map(|n| n.to_string_lossy().into_owned());
                    if s.name.is_some() && s.name == stem {
                        Ok(s)
                    } else {
                        Err("the snapshot name does not match the file name".to_string())
                    }
                });
            match parsed {
                Ok(mut s) => {
                    let current = s.active.take().unwrap_or(false);
                    out.push((s, current));
                }
                Err(e) => errs.push(format!("{}: {e}", p.display())),
            }
        }
        (out, errs)
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.xml"))
    }
    fn autostart_path(&self, name: &str) -> PathBuf {
        self.config_dir
            .join("autostart")
            .join(format!("{name}.xml"))
    }
    fn status_path(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.xml"))
    }

    /// Saves a persistent definition.
    pub fn save_config(&self, def: &Domain) -> Result<(), Error> {
        let xml = def.to_xml(FormatFlags::INACTIVE | FormatFlags::SECURE);
        write_atomic(&self.config_path(&def.name), xml.as_bytes())
    }

    /// Removes a persistent definition and its autostart link.
    pub fn delete_config(&self, name: &str) -> Result<(), Error> {
        self.set_autostart(name, false)?;
        let p = self.config_path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(p, e)),
        }
    }

    /// Sets or clears autostart (a symlink to the config file, as libvirt does).
    pub fn set_autostart(&self, name: &str, on: bool) -> Result<(), Error> {
        let link = self.autostart_path(name);
        let _ = fs::remove_file(&link);
        if on {
            std::os::unix::fs::symlink(self.config_path(name), &link)
                .map_err(|e| Error::Io(link.clone(), e))?;
        }
        Ok(())
    }

    /// Whether autostart is set.
    pub fn autostart(&self, name: &str) -> bool {
        fs::symlink_metadata(self.autostart_path(name)).is_ok()
    }

    /// Loads every persistent definition; files that fail to parse are reported and skipped.
    pub fn load_configs(&self) -> (Vec<Domain>, Vec<String>) {
        load_dir(&self.config_dir)
    }

    /// Records a running domain's live definition (with its id).
    pub fn save_status(&self, def: &Domain) -> Result<(), Error> {
        write_atomic(
            &self.status_path(&def.name),
            def.to_xml(FormatFlags::SECURE).as_bytes(),
        )
    }

    /// Removes a running domain's status file.
    pub fn delete_status(&self, name: &str) {
        let _ = fs::remove_file(self.status_path(name));
    }

    /// Loads the status files of domains that were running when the daemon last stopped.
    pub fn load_status(&self) -> (Vec<Domain>, Vec<String>) {
        load_dir(&self.state_dir)
    }
}

/// The visible `*.xml` files of a directory, sorted; none when it does not exist.
fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let is_xml = p.extension().is_some_and(|e| e == "xml");
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            is_xml && !hidden && p.is_file()
        })
        .collect();
    paths.sort();
    paths
}

fn load_dir(dir: &Path) -> (Vec<Domain>, Vec<String>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for p in xml_files(dir) {
        match fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|s| Domain::parse(&s).map_err(|e| e.to_string()))
        {
            Ok(d) => out.push(d),
            Err(e) => errs.push(format!("{}: {e}", p.display())),
        }
    }
    (out, errs)
}
