//! The hypervisor console (the serial port on x86_64, the PL011 on aarch64).

/// The console writer of this architecture.
#[cfg(target_arch = "x86_64")]
pub type Serial = crate::arch::x86_64::serial::Serial;
/// The console writer of this architecture.
#[cfg(target_arch = "aarch64")]
pub type Serial = crate::arch::aarch64::pl011::Serial;

/// Returns a writer for the console, initialising the UART.
pub fn init() -> Serial {
    Serial::init()
}
