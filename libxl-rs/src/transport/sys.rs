//! The OS-specific part of the transports: memory mappings, ioctls and polling (Linux).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Page size of guest frames.
pub(crate) const PAGE: usize = 4096;

/// An `mmap`ped region, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, shared and read-write.
    pub(crate) fn shared(fd: RawFd, len: usize, offset: u64) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so no existing memory is affected;
        // the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// Maps the pages of `fd` at `offsets` (each page-aligned) next to each other, in order.
    pub(crate) fn pages(fd: RawFd, offsets: &[u64]) -> io::Result<Self> {
        let len = offsets
            .len()
            .checked_mul(PAGE)
            .filter(|l| *l > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no pages to map"))?;
        // SAFETY: reserves a fresh, inaccessible anonymous region chosen by the kernel; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Self {
            ptr: base.cast(),
            len,
        };
        if offsets.iter().any(|off| off % PAGE as u64 != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unaligned page offset",
            ));
        }
        // One mmap per run of consecutive file pages.
        let mut i = 0;
        while i < offsets.len() {
            let mut n = 1;
            while i + n < offsets.len() && offsets[i + n] == offsets[i] + (n * PAGE) as u64 {
                n += 1;
            }
            let off = libc::off_t::try_from(offsets[i])
                .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            // SAFETY: the target pages lie inside `region`, which this function reserved and owns, so
            // MAP_FIXED replaces only our own reservation; the result is checked.
            let p = unsafe {
                libc::mmap(
                    region.ptr.add(i * PAGE).cast(),
                    n * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    off,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            i += n;
        }
        Ok(region)
    }

    /// The start address.
    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// The mapping as bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live read-write mapping owned by `self` for its whole lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapping as mutable bytes.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the borrow unique on our side.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region this value created and owns.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// `_IOC(dir, type, nr, size)` as Linux encodes it on x86 and arm64.
pub(crate) const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `ioctl(fd, req, arg)`; returns the non-negative result or the OS error.
///
/// # Safety
///
/// `arg` must point at a live value of the type `req` expects, valid for reads and writes for the call.
pub(crate) unsafe fn ioctl(fd: RawFd, req: u64, arg: *mut libc::c_void) -> io::Result<i32> {
    // SAFETY: the caller guarantees `arg` matches `req`.
    let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}
