//! `__HYPERVISOR_domctl` (`xen/include/public/domctl.h`): the subset of domain control operations a toolstack
//! needs to build and run PVH domains, with Xen's command numbers and layouts.
//!
//! xen-hv accepts [`INTERFACE_VERSION`] (0x18, the version of the Xen tree the layouts were taken from) for the
//! unstable operations; the stable ones (create, destroy, pause, unpause, getdomaininfo) need 0 or the current
//! version, as Xen does not check them against the version.
//!
//! One deviation is documented here: `XEN_DOMCTL_setvcpucontext` on a PVH domain takes a
//! [`crate::xen::VcpuHvmContext`] (the `VCPUOP_initialise` form of the PVH entry state) through its `ctxt`
//! handle, not a `vcpu_guest_context` or an HVM save record.

use crate::plain::Plain;

/// `XEN_DOMCTL_INTERFACE_VERSION` that xen-hv accepts.
pub const INTERFACE_VERSION: u32 = 0x18;

/// `XEN_DOMCTL_*` commands.
pub mod cmd {
    /// `XEN_DOMCTL_createdomain`.
    pub const CREATEDOMAIN: u32 = 1;
    /// `XEN_DOMCTL_destroydomain`.
    pub const DESTROYDOMAIN: u32 = 2;
    /// `XEN_DOMCTL_pausedomain`.
    pub const PAUSEDOMAIN: u32 = 3;
    /// `XEN_DOMCTL_unpausedomain`.
    pub const UNPAUSEDOMAIN: u32 = 4;
    /// `XEN_DOMCTL_getdomaininfo`.
    pub const GETDOMAININFO: u32 = 5;
    /// `XEN_DOMCTL_max_mem`.
    pub const MAX_MEM: u32 = 11;
    /// `XEN_DOMCTL_setvcpucontext`.
    pub const SETVCPUCONTEXT: u32 = 12;
    /// `XEN_DOMCTL_max_vcpus` (kept for older toolstacks; `createdomain` carries `max_vcpus` now).
    pub const MAX_VCPUS: u32 = 15;
    /// `XEN_DOMCTL_resumedomain`: a domain that shut down to suspend runs again (its toolstack first sets the
    /// suspend hypercall's return value to 1, "cancelled", through `sethvmcontext`).
    pub const RESUMEDOMAIN: u32 = 27;
    /// `XEN_DOMCTL_gethvmcontext`: the domain's HVM context records (`crate::hvmsave`).
    pub const GETHVMCONTEXT: u32 = 33;
    /// `XEN_DOMCTL_sethvmcontext`.
    pub const SETHVMCONTEXT: u32 = 34;
}

/// `SCHEDOP_remote_shutdown` (`public/sched.h`): Xen has no shutdown domctl; a control domain asks another
/// domain to shut down with this `sched_op`, whose argument is [`RemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;

/// `struct sched_remote_shutdown` (4 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RemoteShutdown {
    /// Target domain.
    pub domain_id: u16,
    /// Padding to the `unsigned int` reason.
    pub pad: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `XEN_DOMCTL_CDF_*` flags of [`CreateDomain::flags`].
pub mod cdf {
    /// HVM (PVH is an HVM container) guest.
    pub const HVM: u32 = 1 << 0;
    /// Use hardware-assisted paging.
    pub const HAP: u32 = 1 << 1;
}

/// `XEN_DOMINF_*` flags of [`GetDomainInfo::flags`].
pub mod dominf {
    /// The domain is being destroyed.
    pub const DYING: u32 = 1 << 0;
    /// HVM guest.
    pub const HVM_GUEST: u32 = 1 << 1;
    /// The guest has shut down; the reason is in bits 16..24.
    pub const SHUTDOWN: u32 = 1 << 2;
    /// Paused by the control domain.
    pub const PAUSED: u32 = 1 << 3;
    /// Blocked waiting for an event.
    pub const BLOCKED: u32 = 1 << 4;
    /// Running (a vCPU is on a physical CPU).
    pub const RUNNING: u32 = 1 << 5;
    /// Uses hardware-assisted paging.
    pub const HAP: u32 = 1 << 8;
    /// `XEN_DOMINF_shutdownshift`.
    pub const SHUTDOWN_SHIFT: u32 = 16;
    /// `XEN_DOMINF_shutdownmask`.
    pub const SHUTDOWN_MASK: u32 = 0xff;
}

/// `struct xen_arch_domainconfig` (x86, 8 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ArchDomainConfig {
    /// `XEN_X86_EMU_*`.
    pub emulation_flags: u32,
    /// `XEN_X86_MSR_RELAXED` and friends.
    pub misc_flags: u32,
}

/// `XEN_X86_EMU_LAPIC`: what a PVH domain gets.
pub const X86_EMU_LAPIC: u32 = 1;

/// `struct xen_domctl_createdomain` (68 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CreateDomain {
    /// XSM label.
    pub ssidref: u32,
    /// The domain's UUID.
    pub handle: [u8; 16],
    /// [`cdf`] flags.
    pub flags: u32,
    /// IOMMU options.
    pub iommu_opts: u32,
    /// Number of vCPUs the domain may have.
    pub max_vcpus: u32,
    /// Highest event channel port.
    pub max_evtchn_port: u32,
    /// Grant table frames, negative for the default.
    pub max_grant_frames: i32,
    /// Maptrack frames, negative for the default.
    pub max_maptrack_frames: i32,
    /// Grant table version options.
    pub grant_opts: u32,
    /// altp2m options.
    pub altp2m_opts: u16,
    /// Number of altp2m views.
    pub altp2m_nr: u16,
    /// Per-vCPU trace buffer size.
    pub vmtrace_size: u32,
    /// CPU pool.
    pub cpupool_id: u32,
    /// Architecture configuration.
    pub arch: ArchDomainConfig,
}

/// `struct xen_domctl_getdomaininfo` (112 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetDomainInfo {
    /// Domain ID.
    pub domain: u16,
    /// Padding.
    pub pad1: u16,
    /// [`dominf`] flags.
    pub flags: u32,
    /// Pages the domain owns.
    pub tot_pages: u64,
    /// Page limit.
    pub max_pages: u64,
    /// Claimed but not yet allocated pages.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// Guest frame of the shared info page.
    pub shared_info_frame: u64,
    /// CPU time used, nanoseconds.
    pub cpu_time: u64,
    /// Online vCPUs.
    pub nr_online_vcpus: u32,
    /// Highest vCPU ID.
    pub max_vcpu_id: u32,
    /// XSM label.
    pub ssidref: u32,
    /// UUID.
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// Architecture configuration.
    pub arch_config: ArchDomainConfig,
}

impl GetDomainInfo {
    /// The guest's shutdown reason (`SHUTDOWN_*`) when [`dominf::SHUTDOWN`] is set.
    pub fn shutdown_reason(&self) -> Option<u32> {
        (self.flags & dominf::SHUTDOWN != 0)
            .then_some((self.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK)
    }
}

/// `struct xen_domctl_max_mem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MaxMem {
    /// Limit in KiB.
    pub max_memkb: u64,
}

/// `struct xen_domctl_max_vcpus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MaxVcpus {
    /// Most vCPUs.
    pub max: u32,
}

/// `struct xen_domctl_vcpucontext` (16 bytes): `ctxt` is a guest handle to the context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuContext {
    /// vCPU index.
    pub vcpu: u32,
    /// Padding (the handle is 64-bit aligned).
    pub pad: u32,
    /// Guest handle of the context.
    pub ctxt: u64,
}

/// `struct xen_domctl_hvmcontext` (16 bytes): `buffer` is a guest handle to `size` bytes of context records;
/// `gethvmcontext` sets `size` to the bytes written (or needed, with `ENOBUFS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmContext {
    /// Buffer size in, bytes used out.
    pub size: u32,
    /// Padding (the handle is 64-bit aligned).
    pub pad: u32,
    /// Guest handle of the buffer.
    pub buffer: u64,
}

/// Byte offset of `buffer` inside [`HvmContext`].
pub const HVMCONTEXT_BUFFER_OFFSET: usize = core::mem::offset_of!(HvmContext, buffer);

/// Byte offset of `ctxt` inside [`VcpuContext`], for transports that patch handles.
pub const VCPUCONTEXT_CTXT_OFFSET: usize = core::mem::offset_of!(VcpuContext, ctxt);

/// Size of the `u` union of `struct xen_domctl`.
pub const UNION_SIZE: usize = 128;

/// `struct xen_domctl` (144 bytes): the header and the command's payload in `u`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct XenDomctl {
    /// `XEN_DOMCTL_*`.
    pub cmd: u32,
    /// [`INTERFACE_VERSION`].
    pub interface_version: u32,
    /// Target domain.
    pub domain: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// The payload.
    pub u: [u8; UNION_SIZE],
}

impl Default for XenDomctl {
    fn default() -> Self {
        Self {
            cmd: 0,
            interface_version: 0,
            domain: 0,
            pad: [0; 3],
            u: [0; UNION_SIZE],
        }
    }
}

impl XenDomctl {
    /// A request for `cmd` on `domain` carrying `payload` (zero-extended to the union's size).
    pub fn new<P: Plain>(cmd: u32, domain: u16, payload: &P) -> Self {
        let mut d = Self {
            cmd,
            interface_version: INTERFACE_VERSION,
            domain,
            ..Self::default()
        };
        let b = payload.as_bytes();
        let n = b.len().min(UNION_SIZE);
        d.u[..n].copy_from_slice(&b[..n]);
        d
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

/// Byte offset of the union inside [`XenDomctl`].
pub const UNION_OFFSET: usize = core::mem::offset_of!(XenDomctl, u);

macro_rules! plain_here {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the structure is `#[repr(C)]`, has only integer (or integer array) fields and explicit
            // padding, and its size is checked against Xen's below.
            unsafe impl Plain for $t {}
        )*
    };
}

plain_here!(
    ArchDomainConfig,
    CreateDomain,
    GetDomainInfo,
    MaxMem,
    MaxVcpus,
    VcpuContext,
    HvmContext,
    XenDomctl,
    RemoteShutdown
);

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<ArchDomainConfig>() == 8);
    assert!(size_of::<CreateDomain>() == 68);
    assert!(offset_of!(CreateDomain, handle) == 4);
    assert!(offset_of!(CreateDomain, flags) == 20);
    assert!(offset_of!(CreateDomain, max_vcpus) == 28);
    assert!(offset_of!(CreateDomain, grant_opts) == 44);
    assert!(offset_of!(CreateDomain, altp2m_opts) == 48);
    assert!(offset_of!(CreateDomain, vmtrace_size) == 52);
    assert!(offset_of!(CreateDomain, cpupool_id) == 56);
    assert!(offset_of!(CreateDomain, arch) == 60);
    assert!(size_of::<GetDomainInfo>() == 112);
    assert!(offset_of!(GetDomainInfo, flags) == 4);
    assert!(offset_of!(GetDomainInfo, tot_pages) == 8);
    assert!(offset_of!(GetDomainInfo, cpu_time) == 56);
    assert!(offset_of!(GetDomainInfo, nr_online_vcpus) == 64);
    assert!(offset_of!(GetDomainInfo, handle) == 76);
    assert!(offset_of!(GetDomainInfo, cpupool) == 92);
    assert!(offset_of!(GetDomainInfo, gpaddr_bits) == 96);
    assert!(offset_of!(GetDomainInfo, arch_config) == 104);
    assert!(size_of::<MaxMem>() == 8);
    assert!(size_of::<MaxVcpus>() == 4);
    assert!(size_of::<VcpuContext>() == 16);
    assert!(offset_of!(VcpuContext, ctxt) == 8);
    assert!(size_of::<HvmContext>() == 16);
    assert!(offset_of!(HvmContext, buffer) == 8);
    assert!(size_of::<XenDomctl>() == 144);
    assert!(size_of::<RemoteShutdown>() == 8);
    assert!(offset_of!(RemoteShutdown, reason) == 4);
    assert!(offset_of!(XenDomctl, domain) == 8);
    assert!(offset_of!(XenDomctl, u) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_header_bytes_match_xen() {
        let d = XenDomctl::new(cmd::MAX_MEM, 7, &MaxMem { max_memkb: 0x1234 });
        let b = d.as_bytes();
        assert_eq!(&b[..4], &11u32.to_le_bytes());
        assert_eq!(&b[4..8], &0x18u32.to_le_bytes());
        assert_eq!(&b[8..10], &7u16.to_le_bytes());
        assert_eq!(&b[16..24], &0x1234u64.to_le_bytes());
        assert_eq!(d.payload::<MaxMem>().max_memkb, 0x1234);
        let back = XenDomctl::read_from(b).expect("144 bytes");
        assert_eq!(back, d);
    }

    #[test]
    fn shutdown_reason_comes_from_the_high_flag_bits() {
        let mut i = GetDomainInfo {
            flags: dominf::SHUTDOWN | (3 << 16),
            ..GetDomainInfo::default()
        };
        assert_eq!(i.shutdown_reason(), Some(3));
        i.flags = dominf::RUNNING;
        assert_eq!(i.shutdown_reason(), None);
    }
}
