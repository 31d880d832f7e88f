//! The bare-metal part of the runtime: the architecture's entry and hypercall instruction (`x86_64.rs`,
//! `aarch64.rs`), and on top of them the console, shutdown and the PASS/FAIL report.

use core::fmt::Write as _;

use xen_abi::hypercall::{consoleio, schedop, CONSOLE_IO, SCHED_OP};
use xen_abi::xen::SchedShutdown;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

/// Writes bytes to the Xen console.
pub fn console_write(b: &[u8]) -> u64 {
    hypercall(
        CONSOLE_IO,
        [consoleio::WRITE, b.len() as u64, b.as_ptr() as u64, 0, 0],
    )
}

/// The console as a `fmt::Write`.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}

/// Prints a formatted line on the Xen console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut b = $crate::Buf::<256>::default();
        let _ = core::fmt::Write::write_fmt(&mut b, format_args!($($arg)*));
        let _ = core::fmt::Write::write_str(&mut b, "\n");
        $crate::console_write(b.as_bytes());
    }};
}

/// Asks to be shut down with `reason`; returns only if the hypervisor refuses.
pub fn shutdown(reason: u32) -> u64 {
    let s = SchedShutdown { reason };
    hypercall(
        SCHED_OP,
        [
            schedop::SHUTDOWN,
            &s as *const SchedShutdown as u64,
            0,
            0,
            0,
        ],
    )
}

/// Collects check results and reports them.
pub struct Checks {
    name: &'static str,
    failed: u32,
    run: u32,
}

impl Checks {
    /// A new report for guest `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            failed: 0,
            run: 0,
        }
    }

    /// Records one check.
    pub fn check(&mut self, what: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        self.run += 1;
        if ok {
            println!("{}: ok   {what}", self.name);
        } else {
            self.failed += 1;
            println!("FAIL {}: {what}: {detail}", self.name);
        }
    }

    /// Prints the verdict and powers off even when a check failed (the verdict comes from the FAIL lines).
    pub fn finish_with_poweroff(self) -> ! {
        if self.failed == 0 {
            println!("PASS {} ({} checks)", self.name, self.run);
        }
        shutdown(schedop::SHUTDOWN_POWEROFF);
        halt_forever()
    }

    /// Prints the verdict and powers off (or crashes, when a check failed).
    pub fn finish(self) -> ! {
        if self.failed == 0 {
            println!("PASS {} ({} checks)", self.name, self.run);
            shutdown(schedop::SHUTDOWN_POWEROFF);
        } else {
            println!(
                "{}: {} of {} checks failed",
                self.name, self.failed, self.run
            );
            shutdown(schedop::SHUTDOWN_CRASH);
        }
        halt_forever()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut b = crate::Buf::<256>::default();
    let _ = writeln!(b, "FAIL guest panic: {info}");
    console_write(b.as_bytes());
    shutdown(schedop::SHUTDOWN_CRASH);
    halt_forever()
}
