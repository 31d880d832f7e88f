//! COM2 (I/O port 0x2f8), the sandbox control channel (docs/sandbox-transport.md). The boot CPU polls it, and
//! its receive interrupt (ISA IRQ 3 through the I/O APIC) wakes that CPU or ends its current guest slice as soon
//! as a request arrives, instead of at the next timer tick.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::port::Port;

const COM2: u16 = 0x2f8;
/// The vector of COM2's receive interrupt.
pub const VECTOR: u8 = 0x23;
/// COM2's ISA interrupt line, wired to the I/O APIC pin of the same number.
const IRQ: u32 = 3;
/// The I/O APIC's registers (the machine's MADT places it here on QEMU's PC machines).
const IOAPIC: usize = 0xfec0_0000;

/// Set by the receive interrupt, taken by [`take_irq`].
static PENDING: AtomicBool = AtomicBool::new(false);

/// True (once) when COM2 signalled received bytes since the last call.
pub fn take_irq() -> bool {
    PENDING.swap(false, Ordering::AcqRel)
}

/// The interrupt handler's body (called from `isr_com2`).
#[no_mangle]
extern "C" fn hv_com2_interrupt() {
    PENDING.store(true, Ordering::Release);
    super::lapic::eoi();
}

fn ioapic_write(index: u32, value: u32) {
    // SAFETY: IOREGSEL and IOWIN of the I/O APIC, identity-mapped by the boot tables; only the redirection entry
    // of COM2's pin is written.
    unsafe {
        core::ptr::write_volatile(IOAPIC as *mut u32, index);
        core::ptr::write_volatile((IOAPIC + 0x10) as *mut u32, value);
    }
}

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
        // Receive interrupts to the calling (boot) CPU: fixed delivery, physical destination, edge-triggered,
        // active high. OUT2 (set above) gates the UART's interrupt line on PC hardware.
        let apic_id = super::lapic::id();
        ioapic_write(0x10 + 2 * IRQ + 1, apic_id << 24);
        ioapic_write(0x10 + 2 * IRQ, u32::from(VECTOR));
        // SAFETY: IER of COM2: interrupt when received data is available.
        unsafe { port(1).write(0x01) };
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
