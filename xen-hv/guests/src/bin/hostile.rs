//! Test guest `hostile`: undefined hypercalls, random arguments to every hypercall, then a wild MMIO write. The
//! hypervisor must answer the calls with errors, then stop the domain and keep the others running.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hostile is a bare-metal PVH guest: run it with `scripts/hv-boot hostile`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_abi::hypercall::*;
    use xen_test_guests::{hypercall_raw, is_error, println, Rng};

    #[no_mangle]
    extern "C" fn guest_main(_start_info: u64) -> ! {
        let mut rng = Rng::new(0x5eed_1234_abcd_0001);
        let mut bad = 0;
        // Undefined hypercall numbers.
        let mut undefined = 0;
        for nr in (0..64).chain([128, 4096, u64::MAX]) {
            if matches!(
                nr,
                MEMORY_OP
                    | SET_TIMER_OP
                    | XEN_VERSION
                    | CONSOLE_IO
                    | VCPU_OP
                    | SCHED_OP
                    | HVM_OP
                    | EVENT_CHANNEL_OP
            ) {
                continue;
            }
            undefined += 1;
            let r = hypercall_raw(
                nr,
                [
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                ],
            );
            if r != (-38i64) as u64 {
                bad += 1;
                println!("hostile: hypercall {nr} returned {r:#x}, not -ENOSYS");
            }
        }
        // Random sub-operations and pointers for the implemented hypercalls (never SCHEDOP_block or shutdown,
        // which would legitimately stop this vCPU).
        let calls = [
            MEMORY_OP,
            XEN_VERSION,
            CONSOLE_IO,
            VCPU_OP,
            SCHED_OP,
            HVM_OP,
            EVENT_CHANNEL_OP,
        ];
        let mut errors = 0;
        let n = 400;
        for i in 0..n {
            let nr = calls[i % calls.len()];
            let mut a = [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
            ];
            if i % 2 == 0 {
                // Small, valid-looking sub-op with a wild pointer.
                a[0] %= 12;
            }
            if nr == CONSOLE_IO && a[0] == consoleio::READ {
                // A read with no pending input legitimately returns 0 bytes; write from the wild pointer instead.
                a[0] = consoleio::WRITE;
            }
            if nr == SCHED_OP && a[0] < 8 {
                a[0] += 8;
            }
            if nr == XEN_VERSION && matches!(a[0], xenver::VERSION | xenver::PAGESIZE) {
                a[0] = 1;
            }
            let r = hypercall_raw(nr, a);
            if is_error(r) {
                errors += 1;
            } else {
                println!("hostile: hypercall {nr} {a:x?} returned {r:#x}");
            }
        }
        println!("hostile: {undefined} undefined hypercalls, {errors} of {n} random calls refused");
        if bad == 0 && errors == n {
            println!("PASS hostile: every undefined or malformed hypercall was refused");
        } else {
            println!(
                "FAIL hostile: {bad} wrong answers, {} random calls accepted",
                n - errors
            );
        }
        #[cfg(target_arch = "x86_64")]
        port_io(&mut rng);
        #[cfg(target_arch = "aarch64")]
        foreign_calls();
        println!(
            "EXPECT-CRASH hostile: writing to unbacked guest-physical memory (wild MMIO) next"
        );
        // SAFETY: deliberately hostile: UNBACKED is mapped by our own tables but has no memory behind it.
        unsafe { core::ptr::write_volatile(xen_test_guests::UNBACKED as *mut u64, 0xdead) };
        println!("FAIL hostile: the wild write returned");
        xen_test_guests::halt_forever()
    }

    /// Hypervisor and firmware calls that are neither Xen's nor PSCI's: each must come back as an
    /// undefined-instruction exception inside the guest, not reach the machine.
    #[cfg(target_arch = "aarch64")]
    fn foreign_calls() {
        use xen_test_guests::expect_undefined;
        let hvc = expect_undefined(|| {
            // SAFETY: a trapped call; the hypervisor injects an exception the runtime skips.
            unsafe { core::arch::asm!("hvc #0x1234", options(nostack)) }
        });
        let smc = expect_undefined(|| {
            // SAFETY: as above.
            unsafe { core::arch::asm!("smc #7", options(nostack)) }
        });
        println!("hostile: hvc #0x1234 refused: {hvc}, smc #7 refused: {smc}");
        if !(hvc && smc) {
            println!("FAIL hostile: a foreign HVC or SMC did not raise an undefined instruction");
        }
    }

    /// Port I/O aimed at the machine and random CPUID leaves (x86 only).
    #[cfg(target_arch = "x86_64")]
    fn port_io(rng: &mut Rng) {
        // Port I/O aimed at the machine: QEMU's debug-exit port (a write there would end the whole machine with
        // "success"), COM1, PCI configuration, the PIC; then random ports. All of it must stay inside the domain.
        let mut io_ok = true;
        for port in [0xf4u16, 0x3f8, 0x3f9, 0xcf8, 0xcfc, 0x20, 0x21, 0x64, 0x70] {
            // SAFETY: port I/O traps to the hypervisor, which must not forward it.
            unsafe {
                core::arch::asm!("out %eax, %dx", in("dx") port, in("eax") 0x10u32, options(att_syntax, nomem, nostack));
                let v: u32;
                core::arch::asm!("in %dx, %eax", in("dx") port, out("eax") v, options(att_syntax, nomem, nostack));
                io_ok &= v == 0xffff_ffff;
            }
        }
        for _ in 0..200 {
            let port = rng.next_u64() as u16;
            let val = rng.next_u64() as u8;
            // SAFETY: as above.
            unsafe {
                core::arch::asm!("out %al, %dx", in("dx") port, in("al") val, options(att_syntax, nomem, nostack))
            };
        }
        // Random CPUID leaves.
        for _ in 0..100 {
            let leaf = rng.next_u64() as u32;
            let _ = core::arch::x86_64::__cpuid_count(leaf, rng.next_u64() as u32);
        }
        println!(
            "hostile: port I/O to the machine's devices ignored, unclaimed reads all ones: {io_ok}"
        );
        if !io_ok {
            println!("FAIL hostile: an unclaimed port read did not return all ones");
        }
    }
}
