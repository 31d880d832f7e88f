//! Save images: the files `virsh save` and managed save write, and the memory of a running domain's snapshot.
//!
//! The layout follows libvirt's libxl driver: a 64-byte header, then the domain XML with its terminating NUL,
//! then the backend's stream of the domain's memory and vCPU state up to the end of the file. The header holds
//!
//! | offset | size | field                                                                     |
//! |--------|------|---------------------------------------------------------------------------|
//! | 0      | 16   | magic `libvirt-xml\n \0 \r`                                               |
//! | 16     | 4    | format version, [`VERSION`]                                               |
//! | 20     | 4    | length of the XML including its NUL                                       |
//! | 24     | 4    | flags: bit 0 set when the domain restores paused (libvirt's files have 0) |
//! | 28     | 36   | zero                                                                      |
//!
//! Integers are little-endian: libvirt writes the host's order, and every host xen-hv runs on is little-endian.
//!
//! Images are created through an [`AtomicFile`]: written to a temporary file in the destination directory,
//! fsynced and renamed over the destination, so a failed save leaves nothing behind and never damages the image
//! that was there before.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// The magic the header starts with.
pub const MAGIC: &[u8; 16] = b"libvirt-xml\n \0 \r";
/// The format version this daemon writes and reads.
pub const VERSION: u32 = 2;
/// Size of the header.
pub const HEADER_LEN: usize = 64;
/// Largest domain XML an image may carry: what a reply can return (`REMOTE_STRING_MAX`).
pub const XML_MAX: usize = 4 << 20;
/// Header flag: the domain restores paused.
const FLAG_PAUSED: u32 = 1;

/// What the header and the XML of an image say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    /// The domain XML the domain is restored with.
    pub xml: String,
    /// Whether the domain restores paused unless the caller says otherwise.
    pub paused: bool,
}

impl ImageHeader {
    /// Writes the header and the XML at the file's position.
    pub fn write(&self, out: &mut File, path: &Path) -> Result<(), Error> {
        let xml_len = self.xml.len() + 1;
        if self.xml.contains('\0') || xml_len > XML_MAX {
            return Err(Error::SaveImage(
                path.to_path_buf(),
                format!("invalid XML length: {xml_len}"),
            ));
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + xml_len);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&(xml_len as u32).to_le_bytes());
        let flags = if self.paused { FLAG_PAUSED } else { 0 };
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(self.xml.as_bytes());
        buf.push(0);
        out.write_all(&buf)
            .map_err(|e| Error::Io(path.to_path_buf(), e))
    }

    /// Reads and checks the header and the XML from the start of `input`, leaving it positioned at the backend's
    /// stream. A file this daemon did not write, or a truncated one, is an [`Error::SaveImage`].
    pub fn read(input: &mut File, path: &Path) -> Result<ImageHeader, Error> {
        let bad = |m: String| Error::SaveImage(path.to_path_buf(), m);
        let mut head = [0u8; HEADER_LEN];
        read_full(
            input,
            &mut head,
            path,
            "failed to read the header: the file is shorter than 64 bytes",
        )?;
        if &head[..16] != MAGIC {
            return Err(bad("image magic is incorrect".into()));
        }
        let word =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let version = word(16);
        if version != VERSION {
            return Err(bad(format!(
                "image version is not supported ({version}, this daemon reads {VERSION})"
            )));
        }
        let xml_len = word(20) as usize;
        if xml_len == 0 || xml_len > XML_MAX {
            return Err(bad(format!("invalid XML length: {xml_len}")));
        }
        let flags = word(24);
        let mut xml = vec![0u8; xml_len];
        read_full(
            input,
            &mut xml,
            path,
            "failed to read XML: the file is truncated",
        )?;
        // libvirt's files may pad the XML with more NULs; the document ends at the first.
        let end = xml
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("the domain XML is not NUL-terminated".into()))?;
        xml.truncate(end);
        let xml = String::from_utf8(xml).map_err(|_| bad("the domain XML is not UTF-8".into()))?;
        Ok(ImageHeader {
            xml,
            paused: flags & FLAG_PAUSED != 0,
        })
    }
}

/// Fills `buf`; an early end of file is the image's fault (`short` says what was missing), anything else an I/O
/// error.
fn read_full(input: &mut File, buf: &mut [u8], path: &Path, short: &str) -> Result<(), Error> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::SaveImage(path.to_path_buf(), short.to_string())
        } else {
            Error::Io(path.to_path_buf(), e)
        }
    })
}

/// Opens an image for reading. Without blocking: a client naming a FIFO must not stall the daemon (reads of a
/// regular file never block anyway).
pub fn open(path: &Path) -> Result<File, Error> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::Io(path.to_path_buf(), e))?;
    let meta = f.metadata().map_err(|e| Error::Io(path.to_path_buf(), e))?;
    if !meta.is_file() {
        return Err(Error::SaveImage(
            path.to_path_buf(),
            "it is not a regular file".into(),
        ));
    }
    Ok(f)
}

/// A file written under a temporary name beside its destination and renamed over it by
/// [`AtomicFile::persist`]. Dropped without being persisted, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    armed: bool,
}

/// [`AtomicFile::persist`] failed; the file is handed back, so the caller chooses between removing it (drop)
/// and keeping it ([`AtomicFile::keep`]).
#[derive(Debug)]
pub struct PersistError {
    /// Why.
    pub error: Error,
    /// The unpersisted file.
    pub file: AtomicFile,
}

impl AtomicFile {
    /// Creates the temporary file (mode 0600: an image holds a guest's memory) in `path`'s directory.
    pub fn create(path: &Path) -> Result<AtomicFile, Error> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::SaveImage(path.to_path_buf(), "it names no file".into()))?;
        let tmp = dir.join(format!(
            ".{name}.tmp{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::Io(path.to_path_buf(), e))?;
        Ok(AtomicFile {
            file,
            tmp,
            path: path.to_path_buf(),
            armed: true,
        })
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file to disk and renames it over the destination (then syncs the directory).
    pub fn persist(mut self) -> Result<(), Box<PersistError>> {
        let io = |e| Error::Io(self.path.clone(), e);
        if let Err(e) = self.file.sync_all() {
            return Err(Box::new(PersistError {
                error: io(e),
                file: self,
            }));
        }
        if let Err(e) = fs::rename(&self.tmp, &self.path) {
            return Err(Box::new(PersistError {
                error: io(e),
                file: self,
            }));
        }
        self.armed = false;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // The rename is done; a directory that cannot be synced only weakens durability against a host crash.
        let _ = File::open(dir).and_then(|d| d.sync_all());
        Ok(())
    }

    /// Leaves the temporary file in place and returns its path (for data that must not be lost).
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        self.tmp.clone()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("virtxend-image-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn header_layout_and_round_trip() {
        let d = dir("layout");
        let p = d.join("a.save");
        let h = ImageHeader {
            xml: "<domain/>".into(),
            paused: true,
        };
        let mut f = AtomicFile::create(&p).unwrap();
        h.write(f.file(), &p).unwrap();
        f.file().write_all(b"STATE").unwrap();
        f.persist().unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!(&bytes[..16], b"libvirt-xml\n \0 \r");
        assert_eq!(bytes[16..20], 2u32.to_le_bytes());
        assert_eq!(bytes[20..24], 10u32.to_le_bytes());
        assert_eq!(bytes[24..28], 1u32.to_le_bytes());
        assert!(bytes[28..64].iter().all(|b| *b == 0));
        assert_eq!(&bytes[64..74], b"<domain/>\0");
        assert_eq!(&bytes[74..], b"STATE");
        let mut f = open(&p).unwrap();
        assert_eq!(ImageHeader::read(&mut f, &p).unwrap(), h);
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "STATE");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn foreign_and_truncated_files_are_refused() {
        let d = dir("bad");
        let p = d.join("x");
        let check = |bytes: &[u8], want: &str| {
            fs::write(&p, bytes).unwrap();
            let mut f = open(&p).unwrap();
            let e = ImageHeader::read(&mut f, &p).unwrap_err();
            assert!(
                matches!(&e, Error::SaveImage(_, m) if m.contains(want)),
                "{want}: {e}"
            );
        };
        check(b"", "shorter than 64 bytes");
        check(&[b'x'; 100], "image magic is incorrect");
        let mut good = Vec::new();
        good.extend_from_slice(MAGIC);
        good.extend_from_slice(&2u32.to_le_bytes());
        good.extend_from_slice(&6u32.to_le_bytes());
        good.resize(64, 0);
        let mut v3 = good.clone();
        v3[16] = 3;
        check(&v3, "version is not supported");
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&huge, "invalid XML length");
        check(&[good.clone(), b"<a".to_vec()].concat(), "truncated");
        check(&[good.clone(), b"<a/>xy".to_vec()].concat(), "NUL");
        // Padding NULs after the XML, as libvirt may write, are fine.
        fs::write(&p, [good, b"<a/>\0\0".to_vec()].concat()).unwrap();
        let mut f = open(&p).unwrap();
        assert_eq!(ImageHeader::read(&mut f, &p).unwrap().xml, "<a/>");
        assert!(matches!(open(&d), Err(Error::SaveImage(..))));
        // A FIFO is refused at once, not waited on.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(open(&fifo), Err(Error::SaveImage(..))));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unpersisted_file_leaves_nothing_and_the_old_image_intact() {
        let d = dir("atomic");
        let p = d.join("a.save");
        fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.file().write_all(b"new, but the save failed").unwrap();
        }
        assert_eq!(entries(&d), ["a.save"]);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let mut f = AtomicFile::create(&p).unwrap();
        f.file().write_all(b"new").unwrap();
        let kept = f.keep();
        assert!(kept.exists());
        fs::remove_file(kept).unwrap();
        let mut f = AtomicFile::create(&p).unwrap();
        f.file().write_all(b"new").unwrap();
        f.file().seek(SeekFrom::Start(0)).unwrap();
        f.persist().unwrap();
        assert_eq!(entries(&d), ["a.save"]);
        assert_eq!(fs::read(&p).unwrap(), b"new");
        // A missing directory is an error, not a panic.
        assert!(AtomicFile::create(&d.join("no/such/dir.save")).is_err());
        let _ = fs::remove_dir_all(&d);
    }
}
