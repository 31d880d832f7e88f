//! Byte-level access to the ABI structures: every structure in this crate is `#[repr(C)]`, made of integers and
//! explicit padding fields only, so any byte pattern is a valid value and a value's bytes are all initialised.

/// A structure that can be copied from and to raw bytes.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` (or packed) structures of integer fields with no implicit padding, so every
/// byte pattern is a valid value and every byte of a value is initialised.
pub unsafe trait Plain: Copy + Default {
    /// Reads a value from the start of `bytes`; `None` when `bytes` is too short.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked, `read_unaligned` copes with any alignment and the trait's contract makes
        // every byte pattern a valid `Self`.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract says every byte of `Self` is initialised; the slice borrows `self`.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

macro_rules! plain {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the structure is `#[repr(C)]`, has only integer fields and explicit padding, and its size
            // is checked against the sum of its fields next to its definition.
            unsafe impl Plain for $t {}
        )*
    };
}

plain!(
    crate::xen::VcpuTimeInfo,
    crate::xen::VcpuInfo,
    crate::xen::XenAddToPhysmap,
    crate::xen::XenMemoryMap,
    crate::xen::E820Entry,
    crate::xen::XenHvmParam,
    crate::xen::VcpuRegisterVcpuInfo,
    crate::xen::VcpuRunstateInfo,
    crate::xen::SchedShutdown,
    crate::xen::VcpuHvmX86_32,
    crate::xen::VcpuHvmContext,
    crate::xen::VcpuHvmX86_64,
    crate::start_info::HvmStartInfo,
    crate::start_info::HvmModlistEntry,
    crate::start_info::HvmMemmapEntry,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::XenHvmParam;

    #[test]
    fn round_trips_through_bytes() {
        let p = XenHvmParam {
            domid: 0x7ff0,
            pad: 0,
            index: 17,
            value: 0xdead_beef_0000_0001,
        };
        let bytes = p.as_bytes();
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..2], &[0xf0, 0x7f]);
        assert_eq!(XenHvmParam::read_from(bytes), Some(p));
        assert_eq!(XenHvmParam::read_from(&bytes[..15]), None);
    }
}
