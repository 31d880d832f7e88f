//! The hypervisor console (the serial port on x86_64).

/// Returns a writer for the console, initialising the UART.
pub fn init() -> crate::arch::x86_64::serial::Serial {
    crate::arch::x86_64::serial::Serial::init()
}
