//! The dom0 transport: hypercalls through `/dev/xen/privcmd` (`IOCTL_PRIVCMD_HYPERCALL`) with argument buffers
//! in pages from `/dev/xen/hypercall`, foreign frames through `IOCTL_PRIVCMD_MMAPBATCH_V2`, and event channels
//! through `/dev/xen/evtchn` (Linux `include/uapi/xen/privcmd.h` and `evtchn.h`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sys::{self, Mapping, PAGE};
use super::{Arg, Call, Error, ForeignMapping, Transport};

/// `struct privcmd_hypercall`.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct PrivcmdHypercall {
    /// Hypercall number.
    pub op: u64,
    /// Arguments.
    pub arg: [u64; 5],
}

/// `struct privcmd_mmapbatch_v2`.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct PrivcmdMmapBatchV2 {
    /// Number of frames.
    pub num: u32,
    /// Target domain.
    pub dom: u16,
    /// Padding (implicit in C).
    pub pad: u16,
    /// Virtual address of the mapping (from `mmap` of the privcmd device).
    pub addr: u64,
    /// Pointer to the `xen_pfn_t` array.
    pub arr: u64,
    /// Pointer to the per-frame `int` error array.
    pub err: u64,
}

/// `IOCTL_PRIVCMD_HYPERCALL`.
pub const IOCTL_PRIVCMD_HYPERCALL: u64 = sys::ioc(0, b'P', 0, size_of::<PrivcmdHypercall>());
/// `IOCTL_PRIVCMD_MMAPBATCH_V2`.
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: u64 = sys::ioc(0, b'P', 4, size_of::<PrivcmdMmapBatchV2>());
/// `IOCTL_EVTCHN_BIND_VIRQ` (`struct ioctl_evtchn_bind_virq { unsigned int virq; }`).
pub const IOCTL_EVTCHN_BIND_VIRQ: u64 = sys::ioc(0, b'E', 0, 4);
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN` (`struct ioctl_evtchn_bind_interdomain { unsigned int remote_domain,
/// remote_port; }`).
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = sys::ioc(0, b'E', 1, 8);
/// `IOCTL_EVTCHN_UNBIND` (`struct ioctl_evtchn_unbind { unsigned int port; }`).
pub const IOCTL_EVTCHN_UNBIND: u64 = sys::ioc(0, b'E', 3, 4);
/// `IOCTL_EVTCHN_NOTIFY` (`struct ioctl_evtchn_notify { unsigned int port; }`).
pub const IOCTL_EVTCHN_NOTIFY: u64 = sys::ioc(0, b'E', 4, 4);

const _: () = {
    assert!(size_of::<PrivcmdHypercall>() == 48);
    assert!(size_of::<PrivcmdMmapBatchV2>() == 32);
    assert!(core::mem::offset_of!(PrivcmdMmapBatchV2, addr) == 8);
    assert!(core::mem::offset_of!(PrivcmdMmapBatchV2, err) == 24);
};

/// Hypercalls, mappings and events through the Linux Xen drivers of a real control domain.
#[derive(Debug)]
pub struct PrivcmdTransport {
    privcmd: File,
    hypercall_dev: File,
    evtchn: File,
}

fn open(path: PathBuf) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| Error::DeviceMissing {
            path: path.display().to_string(),
            source,
        })
}

impl PrivcmdTransport {
    /// Opens `/dev/xen/{privcmd,hypercall,evtchn}`.
    pub fn open() -> Result<Self, Error> {
        Self::open_in(Path::new("/dev/xen"))
    }

    /// Opens the three devices in `dir` (for tests and unusual device layouts).
    pub fn open_in(dir: &Path) -> Result<Self, Error> {
        Ok(Self {
            privcmd: open(dir.join("privcmd"))?,
            hypercall_dev: open(dir.join("hypercall"))?,
            evtchn: open(dir.join("evtchn"))?,
        })
    }
}

/// Offsets of each buffer inside one hypercall-buffer region (8-byte aligned), and the region's size in
/// whole pages.
pub(crate) fn buffer_layout(lens: &[usize]) -> (Vec<usize>, usize) {
    let mut at = 0usize;
    let mut offs = Vec::with_capacity(lens.len());
    for l in lens {
        offs.push(at);
        at += l.next_multiple_of(8);
    }
    (offs, at.max(1).next_multiple_of(PAGE))
}

impl Transport for PrivcmdTransport {
    fn hypercall(&mut self, call: &mut Call<'_>) -> Result<i64, Error> {
        call.validate()?;
        let lens: Vec<usize> = call.bufs.iter().map(|b| b.len()).collect();
        let (offs, size) = buffer_layout(&lens);
        let mut region = Mapping::shared(self.hypercall_dev.as_raw_fd(), size, 0)
            .map_err(|e| Error::io("mapping hypercall buffers from /dev/xen/hypercall", e))?;
        let base = region.addr();
        call.patch_handles(|t| base + offs[t] as u64);
        for (b, o) in call.bufs.iter().zip(&offs) {
            region.as_mut_slice()[*o..*o + b.len()].copy_from_slice(b);
        }
        let mut h = PrivcmdHypercall {
            op: call.op,
            arg: [0; 5],
        };
        for (a, v) in call.args.iter().zip(h.arg.iter_mut()) {
            *v = match a {
                Arg::Value(x) => *x,
                Arg::Buf(i) => base + offs[*i] as u64,
            };
        }
        // SAFETY: `h` is a live privcmd_hypercall and every pointer in it (and in the patched handles) refers
        // to `region`, which stays mapped until after the call.
        let r = unsafe {
            sys::ioctl(
                self.privcmd.as_raw_fd(),
                IOCTL_PRIVCMD_HYPERCALL,
                (&mut h as *mut PrivcmdHypercall).cast(),
            )
        };
        for (b, o) in call.bufs.iter_mut().zip(&offs) {
            let n = b.len();
            b.copy_from_slice(&region.as_slice()[*o..*o + n]);
        }
        match r {
            Ok(v) => Ok(i64::from(v)),
            Err(e) => match e.raw_os_error() {
                // The driver returns the hypercall's -errno as errno.
                Some(n) if n > 0 => Ok(-i64::from(n)),
                _ => Err(Error::io("IOCTL_PRIVCMD_HYPERCALL", e)),
            },
        }
    }

    fn map_foreign(&mut self, domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error> {
        let len = gfns.len() * PAGE;
        let map = Mapping::shared(self.privcmd.as_raw_fd(), len, 0)
            .map_err(|e| Error::io("reserving a foreign mapping on /dev/xen/privcmd", e))?;
        let mut errs = vec![0i32; gfns.len()];
        let mut b = PrivcmdMmapBatchV2 {
            num: u32::try_from(gfns.len()).map_err(|_| Error::Config("too many frames".into()))?,
            dom: domid,
            pad: 0,
            addr: map.addr(),
            arr: gfns.as_ptr() as u64,
            err: errs.as_mut_ptr() as u64,
        };
        // SAFETY: `b` is a live privcmd_mmapbatch_v2; `arr` and `err` point at arrays of `num` elements that
        // outlive the call and `addr` is our own privcmd mapping of `num` pages.
        let r = unsafe {
            sys::ioctl(
                self.privcmd.as_raw_fd(),
                IOCTL_PRIVCMD_MMAPBATCH_V2,
                (&mut b as *mut PrivcmdMmapBatchV2).cast(),
            )
        };
        if let Some((i, e)) = errs.iter().enumerate().find(|(_, e)| **e != 0) {
            return Err(Error::Hypercall {
                op: format!("mapping frame {:#x} of domain {domid}", gfns[i]),
                ret: i64::from(*e),
            });
        }
        r.map_err(|e| Error::io(format!("IOCTL_PRIVCMD_MMAPBATCH_V2 for domain {domid}"), e))?;
        Ok(ForeignMapping::from_mmap(map))
    }

    fn bind_virq(&mut self, virq: u32) -> Result<u32, Error> {
        let mut v = virq;
        // SAFETY: the request takes a `struct ioctl_evtchn_bind_virq` (one unsigned int), which `v` is.
        let port = unsafe {
            sys::ioctl(
                self.evtchn.as_raw_fd(),
                IOCTL_EVTCHN_BIND_VIRQ,
                (&mut v as *mut u32).cast(),
            )
        }
        .map_err(|e| Error::io(format!("binding VIRQ {virq}"), e))?;
        Ok(port as u32)
    }

    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, Error> {
        let mut v = [u32::from(domid), remote_port];
        // SAFETY: the request takes a `struct ioctl_evtchn_bind_interdomain` (two unsigned ints), which `v` is.
        let port = unsafe {
            sys::ioctl(
                self.evtchn.as_raw_fd(),
                IOCTL_EVTCHN_BIND_INTERDOMAIN,
                v.as_mut_ptr().cast(),
            )
        }
        .map_err(|e| Error::io(format!("binding port {remote_port} of domain {domid}"), e))?;
        Ok(port as u32)
    }

    fn poll_notified(&mut self) -> Result<Vec<u32>, Error> {
        let mut fired = Vec::new();
        while sys::wait_readable(self.evtchn.as_raw_fd(), Duration::ZERO)
            .map_err(|e| Error::io("polling /dev/xen/evtchn", e))?
        {
            let mut b = [0u8; 4];
            self.evtchn
                .read_exact(&mut b)
                .map_err(|e| Error::io("reading /dev/xen/evtchn", e))?;
            // Writing the port back unmasks it.
            self.evtchn
                .write_all(&b)
                .map_err(|e| Error::io("unmasking an event channel", e))?;
            fired.push(u32::from_le_bytes(b));
        }
        Ok(fired)
    }

    fn unbind(&mut self, port: u32) -> Result<(), Error> {
        let mut p = port;
        // SAFETY: the request takes a `struct ioctl_evtchn_unbind` (one unsigned int), which `p` is.
        unsafe {
            sys::ioctl(
                self.evtchn.as_raw_fd(),
                IOCTL_EVTCHN_UNBIND,
                (&mut p as *mut u32).cast(),
            )
        }
        .map_err(|e| Error::io(format!("unbinding port {port}"), e))?;
        Ok(())
    }

    fn notify(&mut self, port: u32) -> Result<(), Error> {
        let mut p = port;
        // SAFETY: the request takes a `struct ioctl_evtchn_notify` (one unsigned int), which `p` is.
        unsafe {
            sys::ioctl(
                self.evtchn.as_raw_fd(),
                IOCTL_EVTCHN_NOTIFY,
                (&mut p as *mut u32).cast(),
            )
        }
        .map_err(|e| Error::io(format!("notifying port {port}"), e))?;
        Ok(())
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<Option<u32>, Error> {
        if !sys::wait_readable(self.evtchn.as_raw_fd(), timeout)
            .map_err(|e| Error::io("polling /dev/xen/evtchn", e))?
        {
            return Ok(None);
        }
        let mut b = [0u8; 4];
        self.evtchn
            .read_exact(&mut b)
            .map_err(|e| Error::io("reading /dev/xen/evtchn", e))?;
        // Writing the port back unmasks it.
        self.evtchn
            .write_all(&b)
            .map_err(|e| Error::io("unmasking an event channel", e))?;
        Ok(Some(u32::from_le_bytes(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        // _IOC(_IOC_NONE, 'P', 0, 48) and _IOC(_IOC_NONE, 'P', 4, 32) on x86-64.
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
        // _IOC(_IOC_NONE, 'E', 1, 8) and _IOC(_IOC_NONE, 'E', 3, 4).
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_PRIVCMD_MMAPBATCH_V2, 0x0020_5004);
        assert_eq!(IOCTL_EVTCHN_BIND_VIRQ, 0x0004_4500);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
    }

    #[test]
    fn missing_devices_give_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("xl-privcmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let e = PrivcmdTransport::open_in(&dir).expect_err("no devices there");
        let msg = e.to_string();
        assert!(
            msg.contains("privcmd") && msg.contains("control domain"),
            "{msg}"
        );
        assert!(matches!(e, Error::DeviceMissing { .. }));
        let _ = std::fs::remove_dir(&dir);
        if !Path::new("/dev/xen/privcmd").exists() {
            assert!(matches!(
                PrivcmdTransport::open(),
                Err(Error::DeviceMissing { .. })
            ));
        }
    }

    #[test]
    fn buffers_are_packed_8_byte_aligned_in_whole_pages() {
        assert_eq!(buffer_layout(&[144, 128]), (vec![0, 144], 4096));
        assert_eq!(buffer_layout(&[3, 5, 4096]), (vec![0, 8, 16], 8192));
        assert_eq!(buffer_layout(&[]), (vec![], 4096));
    }
}
