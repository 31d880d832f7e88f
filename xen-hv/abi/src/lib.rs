//! The Xen public ABI as one `no_std` crate.
//!
//! Hypercall numbers, sub-operation codes, error numbers and the `#[repr(C)]` structures that cross the
//! guest/hypervisor and toolstack/hypervisor boundaries. Both sides of every boundary (xen-hv and libxl-rs)
//! use these definitions, so a layout can only change in one place. Every structure carries compile-time size
//! and offset checks taken from the Xen public headers (`xen/include/public`). The ELF/PVH reader used by both
//! domain builders lives here too.
#![cfg_attr(target_os = "none", no_std)]

pub mod acpi;
pub mod arm64_image;
pub mod ctlframe;
pub mod ctlserver;
pub mod domctl;
pub mod elf;
pub mod errno;
pub mod fdt;
pub mod hvmsave;
pub mod hypercall;
pub mod memres;
pub mod plain;
pub mod pvh;
pub mod start_info;
pub mod sysctl;
pub mod xen;
