//! Linux calls the backend needs: statvfs, fallocate, hole punching, SEEK_DATA/SEEK_HOLE, atomic file writes and
//! the mount table.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File system totals in bytes: (capacity, allocation, available), as libvirt computes them for a pool.
pub fn statvfs(path: &Path) -> io::Result<(u64, u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable statvfs that outlives the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize;
    let capacity = st.f_blocks.saturating_mul(frsize);
    let allocation = st
        .f_blocks
        .saturating_sub(st.f_bfree)
        .saturating_mul(frsize);
    let available = st.f_bavail.saturating_mul(frsize);
    Ok((capacity, allocation, available))
}

fn to_off(value: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// Allocates `[offset, offset + len)` of `file` (`fallocate` mode 0), which keeps existing data. On file
/// systems without fallocate the range is written with zeros, as libvirt's `safezero` does; callers only pass
/// ranges that hold no data (a new file, or the space a resize adds).
pub fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by `file` and open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, to_off(offset)?, to_off(len)?) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(err);
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = offset;
    let end = offset
        .checked_add(len)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
    while at < end {
        let n = usize::try_from(end - at).map_or(zeros.len(), |left| left.min(zeros.len()));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Deallocates `[offset, offset + len)` of `file` without changing its size; reads there return zeros.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by `file` and open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, to_off(offset)?, to_off(len)?) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `lseek` with SEEK_DATA/SEEK_HOLE. `Ok(Err(errno))` for the two answers that are not failures: ENXIO (no
/// more data) and EINVAL (the file, e.g. a block device, does not report holes).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Result<u64, i32>> {
    // SAFETY: lseek only reads its integer arguments; the descriptor is owned by `file` and open.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), to_off(offset)?, whence) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(errno @ (libc::ENXIO | libc::EINVAL)) => Ok(Err(errno)),
            _ => Err(err),
        };
    }
    Ok(Ok(rc.unsigned_abs()))
}

/// The first offset at or after `offset` that holds data, or `None` when only a hole follows. Files that do
/// not report holes are all data.
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    Ok(match seek(file, offset, libc::SEEK_DATA)? {
        Ok(data) => Some(data),
        Err(libc::EINVAL) => Some(offset),
        Err(_) => None,
    })
}

/// The first offset at or after `offset` that starts a hole (the end of the file counts as one); `None` when
/// the file does not report holes.
pub fn next_hole(file: &File, offset: u64) -> io::Result<Option<u64>> {
    Ok(seek(file, offset, libc::SEEK_HOLE)?.ok())
}

/// Writes `contents` to `path` atomically: a temporary file (mode 0600, as libvirt saves its XML) in the same
/// directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".new");
    let tmp = dir.join(tmp_name);
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(dir)
}

/// Flushes a directory's entries to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `target` is a mount point in this process's mount table.
pub fn is_mounted(target: &Path) -> io::Result<bool> {
    let table = fs::read_to_string("/proc/self/mounts")?;
    Ok(table.lines().any(|line| {
        line.split(' ')
            .nth(1)
            .map(|field| PathBuf::from(unescape_mount_field(field)) == target)
            == Some(true)
    }))
}

/// Decodes the octal escapes (`\040` for space) of a `/proc/self/mounts` field.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(value) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount_field("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field("/plain"), "/plain");
        assert_eq!(unescape_mount_field("/trail\\"), "/trail\\");
    }
}
