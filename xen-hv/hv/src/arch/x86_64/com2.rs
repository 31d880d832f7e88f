//! COM2 (I/O port 0x2f8), the sandbox control channel (docs/sandbox-transport.md), driven by polling.

use x86_64::instructions::port::Port;

const COM2: u16 = 0x2f8;

/// COM2 when the machine has one.
pub struct Com2 {
    _private: (),
}

fn port(offset: u16) -> Port<u8> {
    Port::new(COM2 + offset)
}

impl Com2 {
    /// Finds COM2 through its scratch register and programs it for 8N1 with FIFOs; `None` when absent.
    pub fn probe() -> Option<Self> {
        // SAFETY: COM2's registers are I/O ports the hypervisor owns; an absent UART reads back 0xff and writes
        // to it go nowhere.
        let present = unsafe {
            port(7).write(0x5a);
            let a = port(7).read();
            port(7).write(0xa5);
            a == 0x5a && port(7).read() == 0xa5
        };
        if !present {
            return None;
        }
        for (offset, value) in [
            (1u16, 0x00u8),
            (3, 0x80),
            (0, 0x01),
            (1, 0x00),
            (3, 0x03),
            (2, 0xc7),
            (4, 0x0b),
        ] {
            // SAFETY: the standard 16550 initialisation sequence on COM2's own registers.
            unsafe { port(offset).write(value) };
        }
        Some(Self { _private: () })
    }

    /// Reads the bytes waiting in the receive FIFO into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            // SAFETY: reading COM2's line status and receive registers only affects the UART.
            let ready = unsafe { port(5).read() } & 1 != 0;
            if !ready {
                break;
            }
            // SAFETY: as above.
            buf[n] = unsafe { port(0).read() };
            n += 1;
        }
        n
    }

    /// Sends `data`, waiting for room in the transmitter.
    pub fn write(&mut self, data: &[u8]) {
        for &b in data {
            // SAFETY: reading the line status register and writing the transmit register of COM2 only affects
            // the UART.
            unsafe {
                while port(5).read() & 0x20 == 0 {}
                port(0).write(b);
            }
        }
    }
}
