//! `__HYPERVISOR_sysctl` (`xen/include/public/sysctl.h`): host-wide queries a toolstack needs (`physinfo`,
//! `getdomaininfolist`), with Xen's command numbers and layouts. xen-hv accepts [`INTERFACE_VERSION`] (0x16).

use crate::plain::Plain;

/// `XEN_SYSCTL_INTERFACE_VERSION` that xen-hv accepts.
pub const INTERFACE_VERSION: u32 = 0x16;

/// `XEN_SYSCTL_*` commands.
pub mod cmd {
    /// `XEN_SYSCTL_readconsole`.
    pub const READCONSOLE: u32 = 1;
    /// `XEN_SYSCTL_physinfo`.
    pub const PHYSINFO: u32 = 3;
    /// `XEN_SYSCTL_getdomaininfolist`.
    pub const GETDOMAININFOLIST: u32 = 6;
}

/// `XEN_SYSCTL_PHYSCAP_*` bits of [`Physinfo::capabilities`].
pub mod physcap {
    /// HVM guests supported.
    pub const HVM: u32 = 1 << 0;
    /// PV guests supported.
    pub const PV: u32 = 1 << 1;
    /// Hardware-assisted paging available.
    pub const HAP: u32 = 1 << 3;
}

/// `struct xen_sysctl_physinfo` (112 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Physinfo {
    /// Hardware threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// Highest possible CPU ID.
    pub max_cpu_id: u32,
    /// Online NUMA nodes.
    pub nr_nodes: u32,
    /// Highest possible node ID.
    pub max_node_id: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// [`physcap`] bits.
    pub capabilities: u32,
    /// Architecture-specific capability bits.
    pub arch_capabilities: u32,
    /// Padding.
    pub pad: u32,
    /// Host pages.
    pub total_pages: u64,
    /// Free pages.
    pub free_pages: u64,
    /// Pages waiting to be scrubbed.
    pub scrub_pages: u64,
    /// Claimed pages.
    pub outstanding_pages: u64,
    /// Highest possible machine frame.
    pub max_mfn: u64,
    /// CPUID feature words.
    pub hw_cap: [u32; 8],
}

/// `struct xen_sysctl_getdomaininfolist` (24 bytes): `buffer` is a guest handle to an array of
/// [`crate::domctl::GetDomainInfo`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetDomainInfoList {
    /// First domain ID to report.
    pub first_domain: u16,
    /// Padding.
    pub pad: u16,
    /// Room in `buffer`, in entries.
    pub max_domains: u32,
    /// Guest handle of the output array.
    pub buffer: u64,
    /// Entries written (OUT).
    pub num_domains: u32,
    /// Tail padding.
    pub pad2: u32,
}

/// Byte offset of `buffer` in [`GetDomainInfoList`].
pub const GETDOMAININFOLIST_BUFFER_OFFSET: usize = core::mem::offset_of!(GetDomainInfoList, buffer);

/// Size of the `u` union of `struct xen_sysctl`.
pub const UNION_SIZE: usize = 128;

/// `struct xen_sysctl` (136 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct XenSysctl {
    /// `XEN_SYSCTL_*`.
    pub cmd: u32,
    /// [`INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The payload.
    pub u: [u8; UNION_SIZE],
}

impl Default for XenSysctl {
    fn default() -> Self {
        Self {
            cmd: 0,
            interface_version: 0,
            u: [0; UNION_SIZE],
        }
    }
}

impl XenSysctl {
    /// A request for `cmd` carrying `payload`.
    pub fn new<P: Plain>(cmd: u32, payload: &P) -> Self {
        let mut s = Self {
            cmd,
            interface_version: INTERFACE_VERSION,
            u: [0; UNION_SIZE],
        };
        s.set_payload(payload);
        s
    }

    /// The payload read as `P`.
    pub fn payload<P: Plain>(&self) -> P {
        P::read_from(&self.u).unwrap_or_default()
    }

    /// Replaces the payload.
    pub fn set_payload<P: Plain>(&mut self, payload: &P) {
        self.u = [0; UNION_SIZE];
        let b = payload.as_bytes();
        let n = b.len().min(UNION_SIZE);
        self.u[..n].copy_from_slice(&b[..n]);
    }
}

/// Byte offset of the union inside [`XenSysctl`].
pub const UNION_OFFSET: usize = core::mem::offset_of!(XenSysctl, u);

// SAFETY: `#[repr(C)]`, integer fields and explicit padding only; size checked below.
unsafe impl Plain for Physinfo {}
// SAFETY: `#[repr(C)]`, integer fields and explicit padding only; size checked below.
unsafe impl Plain for GetDomainInfoList {}
// SAFETY: `#[repr(C)]`, integer fields and a byte array only; size checked below.
unsafe impl Plain for XenSysctl {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Physinfo>() == 112);
    assert!(offset_of!(Physinfo, capabilities) == 28);
    assert!(offset_of!(Physinfo, total_pages) == 40);
    assert!(offset_of!(Physinfo, free_pages) == 48);
    assert!(offset_of!(Physinfo, max_mfn) == 72);
    assert!(offset_of!(Physinfo, hw_cap) == 80);
    assert!(size_of::<GetDomainInfoList>() == 24);
    assert!(offset_of!(GetDomainInfoList, max_domains) == 4);
    assert!(offset_of!(GetDomainInfoList, buffer) == 8);
    assert!(offset_of!(GetDomainInfoList, num_domains) == 16);
    assert!(size_of::<XenSysctl>() == 136);
    assert!(offset_of!(XenSysctl, u) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physinfo_travels_in_the_union() {
        let p = Physinfo {
            nr_cpus: 2,
            total_pages: 0x2_0000,
            ..Physinfo::default()
        };
        let s = XenSysctl::new(cmd::PHYSINFO, &p);
        let b = s.as_bytes();
        assert_eq!(&b[..8], &[3, 0, 0, 0, 0x16, 0, 0, 0]);
        assert_eq!(&b[8 + 8..8 + 12], &2u32.to_le_bytes());
        assert_eq!(s.payload::<Physinfo>(), p);
    }
}
