//! The PL011 UART of the QEMU virt machine, the hypervisor's console; its address comes from the device tree.

use core::sync::atomic::{AtomicU64, Ordering};

/// The UART's MMIO base, 0 until the device tree named it.
static BASE: AtomicU64 = AtomicU64::new(0);
/// Data register.
const DR: u64 = 0x00;
/// Flag register.
const FR: u64 = 0x18;
/// FR: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;
/// FR: receive FIFO empty.
const FR_RXFE: u32 = 1 << 4;

/// Sets the UART address (from the device tree's `arm,pl011` node).
pub fn set_base(base: u64) {
    BASE.store(base, Ordering::Release);
}

/// The PL011 driven by polling; writes are dropped while no address is known.
pub struct Serial {
    base: u64,
}

impl Serial {
    /// The console handle. QEMU's PL011 needs no programming to send and receive.
    pub fn init() -> Self {
        Self {
            base: BASE.load(Ordering::Acquire),
        }
    }

    fn write_byte(&mut self, byte: u8) {
        if self.base == 0 {
            return;
        }
        // SAFETY: `base` is the PL011 the device tree describes, mapped as device memory by the boot tables;
        // polling FR and writing DR only affect the UART.
        unsafe {
            while core::ptr::read_volatile((self.base + FR) as usize as *const u32) & FR_TXFF != 0 {
            }
            core::ptr::write_volatile((self.base + DR) as usize as *mut u32, u32::from(byte));
        }
    }
}

/// Takes one received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: as in `write_byte`; reading DR consumes the byte.
    unsafe {
        if core::ptr::read_volatile((base + FR) as usize as *const u32) & FR_RXFE != 0 {
            return None;
        }
        Some(core::ptr::read_volatile((base + DR) as usize as *const u32) as u8)
    }
}

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
