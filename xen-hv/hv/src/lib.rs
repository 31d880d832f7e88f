//! xen-hv: a type-1 hypervisor that offers Xen's guest ABI and toolstack interface.
//!
//! The library holds the architecture-neutral logic, built for the host too so its unit tests run under a plain
//! `cargo test`; `main.rs` is the bare-metal image, which only exists for `target_os = "none"`.
#![cfg_attr(target_os = "none", no_std)]

pub mod bootinfo;
pub mod cmdline;
pub mod console_ring;
pub mod evtchn;
pub mod frames;
pub mod hypercall;
pub mod modpack;
pub mod paging;
pub mod pit;
pub mod psci;
pub mod sched;
pub mod time;
pub mod vcpu;
pub mod vgic;
pub mod vlapic;

/// The version xen-hv reports, as Xen's `XENVER_version` and `xl info` do.
pub const VERSION: (u32, u32) = (4, 17);
