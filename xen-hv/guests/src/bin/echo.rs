//! Guest `echo`: reads the serial console through `console_io(CONSOLEIO_read)` and answers every line with
//! `echo: <line>`; the line `quit` ends it with `PASS echo`. Needs input, so it is not in hv-boot's default set;
//! the QEMU tests type into it.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("echo is a bare-metal PVH guest: run it with `scripts/hv-boot echo` and type lines");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_abi::hypercall::{consoleio, CONSOLE_IO, SCHED_OP};
    use xen_test_guests::{hypercall, println, Checks};

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        let mut c = Checks::new("echo");
        println!("echo: ready");
        let mut line = [0u8; 128];
        let mut len = 0usize;
        let mut chunk = [0u8; 32];
        loop {
            let r = hypercall(
                CONSOLE_IO,
                [
                    consoleio::READ,
                    chunk.len() as u64,
                    chunk.as_mut_ptr() as u64,
                    0,
                    0,
                ],
            );
            if (r as i64) < 0 {
                c.check("console_io read", false, format_args!("failed with {r:#x}"));
                c.finish();
            }
            if r == 0 {
                // Nothing typed yet: give the CPU away and try again.
                hypercall(SCHED_OP, [xen_abi::hypercall::schedop::YIELD, 0, 0, 0, 0]);
                continue;
            }
            for &b in &chunk[..r as usize] {
                if b == b'\r' || b == b'\n' {
                    let text = core::str::from_utf8(&line[..len]).unwrap_or("?");
                    if text == "quit" {
                        c.check("typed input arrived", true, format_args!(""));
                        c.finish_with_poweroff();
                    }
                    if len > 0 {
                        println!("echo: {text}");
                    }
                    len = 0;
                } else if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
            }
        }
    }
}
