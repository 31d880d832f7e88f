//! The 16550 UART on COM1, the hypervisor's console.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// COM1 driven by polling.
pub struct Serial {
    _private: (),
}

impl Serial {
    /// Programs COM1 for 115200 8N1 with FIFOs and returns the handle.
    pub fn init() -> Self {
        let regs = [
            (1u16, 0x00u8),
            (3, 0x80),
            (0, 0x01),
            (1, 0x00),
            (3, 0x03),
            (2, 0xc7),
            (4, 0x0b),
        ];
        for (offset, value) in regs {
            // SAFETY: COM1's registers are I/O ports owned by the hypervisor's console; writing the standard
            // 16550 initialisation sequence has no memory-safety effect.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
        Self { _private: () }
    }

    fn write_byte(&mut self, byte: u8) {
        let mut lsr = Port::<u8>::new(COM1 + 5);
        let mut data = Port::<u8>::new(COM1);
        // SAFETY: reading the line status register and writing the transmit register of COM1 only affects the
        // UART.
        unsafe {
            while lsr.read() & 0x20 == 0 {}
            data.write(byte);
        }
    }
}

/// Takes one byte received on COM1, if one is waiting (line status "data ready").
pub fn try_read_byte() -> Option<u8> {
    let mut lsr = Port::<u8>::new(COM1 + 5);
    let mut data = Port::<u8>::new(COM1);
    // SAFETY: reading COM1's line status and receive registers only affects the UART (it consumes the byte).
    unsafe { (lsr.read() & 1 != 0).then(|| data.read()) }
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
