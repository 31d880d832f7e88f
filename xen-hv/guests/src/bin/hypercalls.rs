//! Test guest `hypercalls`: checks each hypercall the hypervisor offers a PVH guest and its results and errors.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hypercalls is a bare-metal PVH guest: run it with `scripts/hv-boot hypercalls`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use xen_abi::errno::Errno;
    use xen_abi::hypercall::*;
    use xen_abi::xen::*;
    use xen_test_guests::{hypercall, hypercall_raw, Checks, UNBACKED};

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    static mut VCPU_INFO_PAGE: Page = Page([0; 4096]);

    fn errno(r: u64) -> Option<Errno> {
        Errno::from_ret(r as i64)
    }

    fn read<T: Copy>(pa: u64) -> T {
        // SAFETY: callers pass addresses inside the guest's identity-mapped RAM holding a `T`.
        unsafe { core::ptr::read_volatile(pa as usize as *const T) }
    }

    #[no_mangle]
    /// The PVH boot state, CPUID leaves and the hypercall page; returns the RAM's base and size.
    #[cfg(target_arch = "x86_64")]
    fn boot_checks(c: &mut Checks, start_info: u64) -> (u64, u64) {
        use xen_abi::start_info::{HvmMemmapEntry, HvmStartInfo, HVM_START_MAGIC};
        use xen_test_guests::{hypercall_raw, setup_hypercall_page};

        // Boot state from hvm_start_info.
        let si: HvmStartInfo = read(start_info);
        c.check(
            "start_info magic and version",
            si.magic == HVM_START_MAGIC && si.version == 1,
            format_args!("magic {:#x} version {}", si.magic, si.version),
        );
        // The memory map: RAM, the page of ACPI tables at 0x2000 (the RSDP first), RAM.
        let mm: [HvmMemmapEntry; 3] = read(si.memmap_paddr);
        let layout: [(u64, u64, u32); 3] =
            core::array::from_fn(|i| (mm[i].addr, mm[i].size, mm[i].kind));
        c.check(
            "start_info memory map",
            si.memmap_entries == 3
                && layout[0] == (0, 0x2000, 1)
                && layout[1] == (0x2000, 0x1000, 3)
                && layout[2].0 == 0x3000
                && layout[2].2 == 1
                && layout[2].1 >= 4 << 20,
            format_args!("{} entries: {layout:x?}", si.memmap_entries),
        );
        let rsdp: [u8; 8] = read(si.rsdp_paddr);
        c.check(
            "start_info rsdp_paddr points at the ACPI RSDP",
            si.rsdp_paddr == 0x2000 && &rsdp == b"RSD PTR ",
            format_args!("{:#x}: {rsdp:x?}", si.rsdp_paddr),
        );
        let cmd: [u8; 11] = read(si.cmdline_paddr);
        c.check(
            "start_info command line",
            &cmd == b"hypercalls\0",
            format_args!("{cmd:?}"),
        );

        // CPUID leaves.
        let l0 = core::arch::x86_64::__cpuid(cpuid::BASE);
        c.check(
            "CPUID 0x40000000 signature XenVMMXenVMM",
            [l0.ebx, l0.ecx, l0.edx] == cpuid::SIGNATURE && l0.eax >= cpuid::BASE + 4,
            format_args!(
                "eax {:#x} ebx {:#x} ecx {:#x} edx {:#x}",
                l0.eax, l0.ebx, l0.ecx, l0.edx
            ),
        );
        let l1 = core::arch::x86_64::__cpuid(cpuid::BASE + 1);
        c.check(
            "CPUID 0x40000001 version 4.17",
            l1.eax == 0x4_0011,
            format_args!("{:#x}", l1.eax),
        );
        let l4 = core::arch::x86_64::__cpuid(cpuid::BASE + 4);
        c.check(
            "CPUID 0x40000004 vCPU id 0",
            l4.eax & cpuid::HVM_VCPU_ID_PRESENT != 0 && l4.ebx == 0,
            format_args!("eax {:#x} ebx {}", l4.eax, l4.ebx),
        );
        let std1 = core::arch::x86_64::__cpuid(1);
        c.check(
            "CPUID 1 announces a hypervisor",
            std1.ecx & (1 << 31) != 0,
            format_args!("ecx {:#x}", std1.ecx),
        );

        // Raw vmmcall before the page exists.
        let v = hypercall_raw(XEN_VERSION, [xenver::VERSION, 0, 0, 0, 0]);
        c.check(
            "raw vmmcall xen_version = 4.17",
            v == 0x4_0011,
            format_args!("{v:#x}"),
        );

        // Hypercall page.
        let msr = setup_hypercall_page();
        let page = xen_test_guests::hypercall_page();
        let stub: [u8; 9] = read(page + 32 * XEN_VERSION);
        c.check(
            "hypercall page filled through the MSR from CPUID leaf 2",
            msr == cpuid::HYPERCALL_MSR && stub == [0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3],
            format_args!("msr {msr:#x} stub {stub:02x?}"),
        );
        (0, layout[2].0 + layout[2].1)
    }

    /// The device tree the hypervisor passed (Xen on Arm has no CPUID leaves or hypercall page: the
    /// `/hypervisor` node is how a guest finds Xen); returns the RAM's base and size.
    #[cfg(target_arch = "aarch64")]
    fn boot_checks(c: &mut Checks, dtb: u64) -> (u64, u64) {
        use xen_abi::fdt::{read_cells, Fdt};
        let tree = Fdt::new(xen_test_guests::device_tree(dtb));
        c.check(
            "device tree in x0",
            tree.is_ok(),
            format_args!("at {dtb:#x}: {:?}", tree.err()),
        );
        let Ok(t) = tree else {
            return (0, 0);
        };
        let compat = t.property("/hypervisor", "compatible").unwrap_or(&[]);
        c.check(
            "/hypervisor is compatible with xen,xen",
            compat.split(|&b| b == 0).any(|s| s == b"xen,xen"),
            format_args!("{compat:?}"),
        );
        let irq = t.property("/hypervisor", "interrupts").unwrap_or(&[]);
        c.check(
            "/hypervisor names the event-channel PPI 31",
            read_cells(irq, 1) == Some(1) && read_cells(&irq[4.min(irq.len())..], 1) == Some(15),
            format_args!("{irq:?}"),
        );
        let args = xen_test_guests::boot_args(dtb);
        c.check(
            "/chosen/bootargs is the domain name",
            args == "hypercalls",
            format_args!("{args:?}"),
        );
        let mut ram = (0, 0);
        t.memory(|base, size| ram = (base, size));
        c.check(
            "memory node: RAM at 0x40000000",
            ram.0 == 0x4000_0000 && ram.1 >= 4 << 20,
            format_args!("{:#x}+{:#x}", ram.0, ram.1),
        );
        ram
    }

    #[no_mangle]
    extern "C" fn guest_main(start_info: u64) -> ! {
        let mut c = Checks::new("hypercalls");
        let (ram_base, ram_size) = boot_checks(&mut c, start_info);
        let v = hypercall(XEN_VERSION, [xenver::VERSION, 0, 0, 0, 0]);
        c.check(
            "xen_version(XENVER_version)",
            v == 0x4_0011,
            format_args!("{v:#x}"),
        );
        let mut extra = [0xffu8; 16];
        let r = hypercall(
            XEN_VERSION,
            [xenver::EXTRAVERSION, extra.as_mut_ptr() as u64, 0, 0, 0],
        );
        c.check(
            "xen_version(XENVER_extraversion)",
            r == 0 && extra.starts_with(b"-xen-rs\0"),
            format_args!("ret {r:#x} {extra:?}"),
        );
        let mut feat = [0u32; 2];
        let r = hypercall(
            XEN_VERSION,
            [xenver::GET_FEATURES, feat.as_mut_ptr() as u64, 0, 0, 0],
        );
        c.check(
            "xen_version(XENVER_get_features): auto-translated physmap",
            r == 0 && feat[1] & (1 << 2) != 0,
            format_args!("ret {r:#x} submap {:#x}", feat[1]),
        );
        let r = hypercall(XEN_VERSION, [xenver::EXTRAVERSION, UNBACKED, 0, 0, 0]);
        c.check(
            "bad pointer (no nested mapping) -> EFAULT",
            errno(r) == Some(Errno::Efault),
            format_args!("{r:#x}"),
        );
        let r = hypercall(
            XEN_VERSION,
            [xenver::EXTRAVERSION, 0x7000_0000_0000, 0, 0, 0],
        );
        c.check(
            "bad pointer (no guest mapping) -> EFAULT",
            errno(r) == Some(Errno::Efault),
            format_args!("{r:#x}"),
        );
        let r = hypercall(
            XEN_VERSION,
            [xenver::EXTRAVERSION, 0x8000_0000_0000, 0, 0, 0],
        );
        c.check(
            "bad pointer (non-canonical) -> EFAULT",
            errno(r) == Some(Errno::Efault),
            format_args!("{r:#x}"),
        );

        // console_io.
        let msg = b"hypercalls: console_io write works\n";
        let r = hypercall(
            CONSOLE_IO,
            [
                consoleio::WRITE,
                msg.len() as u64,
                msg.as_ptr() as u64,
                0,
                0,
            ],
        );
        c.check(
            "console_io(CONSOLEIO_write) returns 0",
            r == 0,
            format_args!("{r:#x}"),
        );
        let mut inbuf = [0u8; 16];
        let r = hypercall(
            CONSOLE_IO,
            [consoleio::READ, 16, inbuf.as_mut_ptr() as u64, 0, 0],
        );
        c.check(
            "console_io(CONSOLEIO_read) with no input returns 0 bytes",
            r == 0,
            format_args!("{r:#x}"),
        );
        let r = hypercall(CONSOLE_IO, [consoleio::WRITE, 8, UNBACKED, 0, 0]);
        c.check(
            "console_io write from a bad pointer -> EFAULT",
            errno(r) == Some(Errno::Efault),
            format_args!("{r:#x}"),
        );

        // memory_op(XENMEM_memory_map).
        let mut e820 = [E820Entry::default(); 4];
        let mut map = XenMemoryMap {
            nr_entries: 4,
            pad: 0,
            buffer: e820.as_mut_ptr() as u64,
        };
        let r = hypercall(
            MEMORY_OP,
            [xenmem::MEMORY_MAP, &mut map as *mut _ as u64, 0, 0, 0],
        );
        // The entries tile the RAM's extent from its base without gaps (x86 has the ACPI page among them).
        let n = (map.nr_entries as usize).min(e820.len());
        let mut at = ram_base;
        let tiled = e820[..n].iter().all(|e| {
            let ok = e.addr == at && (e.kind == 1 || e.kind == 3);
            at = e.addr + e.size;
            ok
        });
        c.check(
            "memory_op(XENMEM_memory_map) matches the boot memory map",
            r == 0 && n >= 1 && tiled && at == ram_base + ram_size && e820[n - 1].kind == 1,
            format_args!("ret {r:#x} n {n} {:x?}", &e820[..n]),
        );

        // memory_op(XENMEM_add_to_physmap, shared_info) over the last page of RAM.
        let shared_gpfn = ((ram_base + ram_size) >> 12) - 1;
        let shared = shared_gpfn << 12;
        // SAFETY: the page at `shared` is RAM of this guest that nothing else uses.
        unsafe { core::ptr::write_volatile(shared as usize as *mut u64, 0x5a5a_5a5a_5a5a_5a5a) };
        let xatp = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: xenmem::MAPSPACE_SHARED_INFO,
            idx: 0,
            gpfn: shared_gpfn,
        };
        let r = hypercall(
            MEMORY_OP,
            [xenmem::ADD_TO_PHYSMAP, &xatp as *const _ as u64, 0, 0, 0],
        );
        let first: u64 = read(shared);
        c.check(
            "add_to_physmap(shared_info) replaces the frame",
            r == 0 && first == 0,
            format_args!("ret {r:#x} first word {first:#x}"),
        );
        let bad = XenAddToPhysmap { idx: 1, ..xatp };
        let r = hypercall(
            MEMORY_OP,
            [xenmem::ADD_TO_PHYSMAP, &bad as *const _ as u64, 0, 0, 0],
        );
        c.check(
            "add_to_physmap(shared_info, idx 1) -> EINVAL",
            errno(r) == Some(Errno::Einval),
            format_args!("{r:#x}"),
        );
        let other = XenAddToPhysmap { domid: 42, ..xatp };
        let r = hypercall(
            MEMORY_OP,
            [xenmem::ADD_TO_PHYSMAP, &other as *const _ as u64, 0, 0, 0],
        );
        c.check(
            "add_to_physmap for another domain -> ESRCH",
            errno(r) == Some(Errno::Esrch),
            format_args!("{r:#x}"),
        );

        // hvm_op get/set_param: the callback is a vector (type 2) on x86, the event-channel PPI (type 3) on Arm.
        #[cfg(target_arch = "x86_64")]
        let callback = (2 << 56) | 0xf3;
        #[cfg(target_arch = "aarch64")]
        let callback = (3 << 56) | 31;
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: hvmop::PARAM_CALLBACK_IRQ,
            value: callback,
        };
        let r1 = hypercall(HVM_OP, [hvmop::SET_PARAM, &p as *const _ as u64, 0, 0, 0]);
        p.value = 0;
        let r2 = hypercall(HVM_OP, [hvmop::GET_PARAM, &mut p as *mut _ as u64, 0, 0, 0]);
        c.check(
            "hvm_op set_param/get_param round trip",
            r1 == 0 && r2 == 0 && p.value == callback,
            format_args!("{r1:#x} {r2:#x} {:#x}", p.value),
        );
        // x86 domains get no PV console from the hypervisor; aarch64 domains get its ring page at Xen's magic
        // page address 0x39000000.
        #[cfg(target_arch = "x86_64")]
        let (console_pfn, what) = (0, "hvm_op get_param(CONSOLE_PFN) is 0 (no PV console)");
        #[cfg(target_arch = "aarch64")]
        let (console_pfn, what) = (
            0x39000,
            "hvm_op get_param(CONSOLE_PFN) is the hypervisor's console ring at 0x39000000",
        );
        let mut q = XenHvmParam {
            index: hvmop::PARAM_CONSOLE_PFN,
            value: 77,
            ..p
        };
        let r = hypercall(HVM_OP, [hvmop::GET_PARAM, &mut q as *mut _ as u64, 0, 0, 0]);
        c.check(
            what,
            r == 0 && q.value == console_pfn,
            format_args!("{r:#x} {}", q.value),
        );
        let mut q = XenHvmParam { index: 9999, ..p };
        let r = hypercall(HVM_OP, [hvmop::GET_PARAM, &mut q as *mut _ as u64, 0, 0, 0]);
        c.check(
            "hvm_op get_param(bad index) -> EINVAL",
            errno(r) == Some(Errno::Einval),
            format_args!("{r:#x}"),
        );

        // vcpu_op(VCPUOP_register_vcpu_info), then set_timer_op + SCHEDOP_block wake-up through it.
        let vi_page = core::ptr::addr_of!(VCPU_INFO_PAGE) as u64;
        let reg = VcpuRegisterVcpuInfo {
            mfn: vi_page >> 12,
            offset: 128,
            rsvd: 0,
        };
        let r = hypercall(
            VCPU_OP,
            [vcpuop::REGISTER_VCPU_INFO, 0, &reg as *const _ as u64, 0, 0],
        );
        c.check(
            "vcpu_op(register_vcpu_info)",
            r == 0,
            format_args!("{r:#x}"),
        );
        let r = hypercall(
            VCPU_OP,
            [vcpuop::REGISTER_VCPU_INFO, 7, &reg as *const _ as u64, 0, 0],
        );
        c.check(
            "vcpu_op on a vCPU that does not exist -> ENOENT",
            errno(r) == Some(Errno::Enoent),
            format_args!("{r:#x}"),
        );
        let r = hypercall(SET_TIMER_OP, [1, 0, 0, 0, 0]);
        let b = hypercall(SCHED_OP, [schedop::BLOCK, 0, 0, 0, 0]);
        let pending: u8 = read(vi_page + 128);
        c.check(
            "set_timer_op + SCHEDOP_block: woken with evtchn_upcall_pending in vcpu_info",
            r == 0 && b == 0 && pending == 1,
            format_args!("{r:#x} {b:#x} pending {pending}"),
        );
        // Event channels: VIRQ_TIMER bound to a port; the timer then marks that port pending in shared_info and
        // its word in vcpu_info's selector.
        let mut bind = [0u32, 0, 0xffff_ffff];
        let r = hypercall(EVENT_CHANNEL_OP, [1, bind.as_mut_ptr() as u64, 0, 0, 0]);
        let port = bind[2];
        // SAFETY: clears evtchn_upcall_pending/mask in our registered vcpu_info.
        unsafe { core::ptr::write_volatile((vi_page + 128) as usize as *mut u16, 0) };
        let t = hypercall(SET_TIMER_OP, [1, 0, 0, 0, 0]);
        let b = hypercall(SCHED_OP, [schedop::BLOCK, 0, 0, 0, 0]);
        let word: u64 = read(shared + 2048 + 8 * u64::from(port / 64));
        let sel: u64 = read(vi_page + 128 + 8);
        c.check(
            "EVTCHNOP_bind_virq(VIRQ_TIMER): the timer sets the port pending and its selector bit",
            r == 0
                && port > 0
                && t == 0
                && b == 0
                && word & (1 << (port % 64)) != 0
                && sel & (1 << (port / 64)) != 0,
            format_args!("ret {r:#x} port {port} pending word {word:#x} selector {sel:#x}"),
        );
        let mut again = [0u32, 0, 0];
        let r = hypercall(EVENT_CHANNEL_OP, [1, again.as_mut_ptr() as u64, 0, 0, 0]);
        c.check(
            "a second bind of VIRQ_TIMER on the same vCPU -> EEXIST",
            errno(r) == Some(Errno::Eexist),
            format_args!("{r:#x}"),
        );
        // The callback (HVM_PARAM_CALLBACK_IRQ, set above): a timer upcall arrives as an interrupt once
        // interrupts are enabled, and not before.
        #[cfg(target_arch = "x86_64")]
        xen_test_guests::install_callback_idt(0xf3);
        let before = xen_test_guests::callback_count();
        // SAFETY: clears evtchn_upcall_pending/mask in our own registered vcpu_info.
        unsafe { core::ptr::write_volatile((vi_page + 128) as usize as *mut u16, 0) };
        let r = hypercall(SET_TIMER_OP, [1, 0, 0, 0, 0]);
        // SAFETY: enables interrupts while waiting; the IDT handles the callback vector.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            core::arch::asm!("sti", options(nomem, nostack))
        };
        #[cfg(target_arch = "aarch64")]
        xen_test_guests::enable_upcalls();
        let mut spins = 0u64;
        while xen_test_guests::callback_count() == before && spins < 50_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        // SAFETY: disables interrupts again.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            core::arch::asm!("cli", options(nomem, nostack))
        };
        #[cfg(target_arch = "aarch64")]
        xen_test_guests::disable_upcalls();
        let after = xen_test_guests::callback_count();
        c.check(
            "timer upcall delivered through the callback (interrupt injection)",
            r == 0 && before == 0 && after >= 1,
            format_args!("ret {r:#x} upcalls before {before} after {after}"),
        );
        #[cfg(target_arch = "aarch64")]
        vtimer_checks(&mut c);
        let r = hypercall(SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]);
        c.check("sched_op(SCHEDOP_yield)", r == 0, format_args!("{r:#x}"));
        let r = hypercall(SCHED_OP, [schedop::SHUTDOWN, UNBACKED, 0, 0, 0]);
        c.check(
            "sched_op(shutdown) with a bad pointer -> EFAULT",
            errno(r) == Some(Errno::Efault),
            format_args!("{r:#x}"),
        );

        // Undefined hypercalls and sub-ops.
        let r = hypercall_raw(99, [0; 5]);
        c.check(
            "undefined hypercall 99 -> ENOSYS",
            errno(r) == Some(Errno::Enosys),
            format_args!("{r:#x}"),
        );
        let r = hypercall(EVENT_CHANNEL_OP, [0; 5]);
        c.check(
            "EVTCHNOP_bind_interdomain (not offered) -> ENOSYS",
            errno(r) == Some(Errno::Enosys),
            format_args!("{r:#x}"),
        );
        let r = hypercall(SCHED_OP, [77, 0, 0, 0, 0]);
        c.check(
            "undefined sched_op sub-op -> ENOSYS",
            errno(r) == Some(Errno::Enosys),
            format_args!("{r:#x}"),
        );

        #[cfg(target_arch = "x86_64")]
        port_checks(&mut c);
        c.finish()
    }

    /// The EL1 virtual timer: its PPI 27 reaches the guest through the virtual GIC, and a WFI sleeps until it.
    #[cfg(target_arch = "aarch64")]
    fn vtimer_checks(c: &mut Checks) {
        use xen_test_guests::{arm_vtimer, counter, counter_hz, vtimer_count};
        let hz = counter_hz();
        let before = vtimer_count();
        xen_test_guests::enable_upcalls();
        arm_vtimer(hz / 1000);
        let mut spins = 0u64;
        while vtimer_count() == before && spins < 50_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        let after = vtimer_count();
        c.check(
            "virtual timer interrupt (PPI 27) delivered through the virtual GIC",
            after == before + 1,
            format_args!("{before} -> {after} after {spins} spins"),
        );
        // 20 ms: the vCPU blocks in WFI (other domains run) and wakes for its timer.
        let start = counter();
        arm_vtimer(hz / 50);
        while vtimer_count() == after && counter() - start < hz {
            xen_test_guests::wait_for_interrupt();
        }
        let slept = (counter() - start) * 1000 / hz;
        xen_test_guests::disable_upcalls();
        c.check(
            "WFI sleeps until the virtual timer fires",
            vtimer_count() == after + 1 && (20..1000).contains(&slept),
            format_args!("count {} after {slept} ms", vtimer_count()),
        );
    }

    /// The port 0xe9 debug console and unclaimed port reads.
    #[cfg(target_arch = "x86_64")]
    fn port_checks(c: &mut Checks) {
        let val: u8;
        // SAFETY: port I/O traps to the hypervisor, which emulates these ports.
        unsafe {
            for &ch in b"hypercalls: port 0xe9 works\n" {
                core::arch::asm!("out %al, $0xe9", in("al") ch, options(att_syntax, nomem, nostack));
            }
            core::arch::asm!("in $0x80, %al", out("al") val, options(att_syntax, nomem, nostack));
        }
        c.check(
            "read of an unclaimed port returns all ones",
            val == 0xff,
            format_args!("{val:#x}"),
        );
    }
}
