//! The xen-hv bare-metal image. On the host this binary only explains how to build it.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod vm;

#[cfg(target_os = "none")]
use core::fmt::Write as _;
#[cfg(target_os = "none")]
use core::sync::atomic::Ordering;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("xen-hv is a bare-metal image: build it with `cargo xtask build-hv` and boot it with `scripts/hv-boot`");
    std::process::exit(2);
}

/// Reads physical memory through the boot identity map.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
struct BootMem;

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
impl xen_hv::bootinfo::PhysRead for BootMem {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), xen_hv::bootinfo::BootError> {
        let end = paddr
            .checked_add(buf.len() as u64)
            .ok_or(xen_hv::bootinfo::BootError::BadAddress(paddr))?;
        if end > 1 << 32 {
            return Err(xen_hv::bootinfo::BootError::BadAddress(paddr));
        }
        // SAFETY: the range was checked to lie in the first 4 GiB, which the boot page tables identity-map, and
        // the boot information is not written by anyone while it is parsed.
        buf.copy_from_slice(unsafe { arch::phys_slice(paddr, buf.len()) });
        Ok(())
    }
}

/// The Rust entry point, called by the boot stub in long mode with the boot protocol and its information address.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn hv_main(protocol: u32, info_paddr: u64) -> ! {
    use xen_hv::bootinfo::BootInfo;
    let mut con = console::init();
    let (major, minor) = xen_hv::VERSION;
    let _ = writeln!(con, "xen-hv {major}.{minor} (x86_64) starting");
    let info = match protocol {
        arch::x86_64::boot::PROTOCOL_PVH => BootInfo::from_pvh(&BootMem, info_paddr),
        arch::x86_64::boot::PROTOCOL_MULTIBOOT2 => BootInfo::from_multiboot2(&BootMem, info_paddr),
        other => {
            let _ = writeln!(con, "(XEN) panic: unknown boot protocol {other}");
            arch::exit(0x11);
        }
    };
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            let _ = writeln!(con, "(XEN) panic: {e}");
            arch::exit(0x11);
        }
    };
    let proto = if protocol == arch::x86_64::boot::PROTOCOL_PVH {
        "PVH"
    } else {
        "multiboot2"
    };
    let _ = writeln!(con, "(XEN) boot protocol: {proto}");
    let (opts, mut frames) = boot_summary(&mut con, &info);
    // Keep the first MiB (firmware, boot structures, a future AP trampoline), the image and the modules.
    frames.remove(0, 1 << 20);
    let (image_start, image_end) = arch::x86_64::image_range();
    frames.remove(image_start, image_end - image_start);
    frames.remove(info_paddr, 64 * 1024);
    for m in info.modules() {
        frames.remove(m.base, m.len);
    }
    init_heap(&mut con, &mut frames);
    arch::x86_64::cpu::init(0);
    arch::x86_64::percpu::init(0);
    arch::x86_64::cpu::enable_fxsave();
    arch::x86_64::lapic::init(
        arch::x86_64::cpu::TIMER_VECTOR,
        arch::x86_64::cpu::SPURIOUS_VECTOR,
    );
    arch::x86_64::lapic::calibrate();
    let _ = writeln!(
        con,
        "(XEN) LAPIC timer every {} ms ({} counts, measured against the PIT), {} TSC cycles per tick",
        arch::x86_64::lapic::PERIOD_NS / 1_000_000,
        arch::x86_64::lapic::counts_per_tick(),
        arch::x86_64::lapic::tsc_per_tick()
    );
    if opts.selftest_trap {
        let _ = writeln!(con, "(XEN) self-test: raising #UD in the hypervisor");
        // SAFETY: deliberately executes an invalid instruction; the #UD handler prints a dump and stops.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
    let module = info.modules().first().copied();
    // Without boot modules the machine only has work when a control domain can drive it over COM2.
    if module.is_none() && arch::x86_64::com2::Com2::probe().is_none() {
        let _ = writeln!(con, "(XEN) no guest domains to run; halting");
        arch::exit(0x10);
    }
    // Host SVM areas for every CPU, allocated here so the APs need no allocator.
    for cpu in 0..arch::x86_64::percpu::MAX_CPUS {
        let (Some(hsave), Some(vmsave)) = (frames.alloc(4096, 4096), frames.alloc(4096, 4096))
        else {
            let _ = writeln!(con, "(XEN) panic: out of memory for per-CPU state");
            arch::exit(0x11);
        };
        // SAFETY: both frames were just allocated and are identity-mapped.
        unsafe {
            core::ptr::write_bytes(hsave as usize as *mut u8, 0, 4096);
            core::ptr::write_bytes(vmsave as usize as *mut u8, 0, 4096);
        }
        let p = arch::x86_64::percpu::of(cpu);
        p.hsave.store(hsave, Ordering::Release);
        p.vmsave.store(vmsave, Ordering::Release);
    }
    let bsp = arch::x86_64::percpu::of(0);
    if let Err(e) = arch::x86_64::svm::enable(
        bsp.hsave.load(Ordering::Acquire),
        bsp.vmsave.load(Ordering::Acquire),
    ) {
        let _ = writeln!(con, "(XEN) panic: {e}");
        arch::exit(0x11);
    }
    let _ = writeln!(con, "(XEN) SVM with nested paging enabled");
    MAX_CPUS_OPT.store(opts.maxcpus.unwrap_or(u32::MAX), Ordering::Relaxed);
    let cpus = if opts.maxcpus != Some(1) {
        arch::x86_64::smp::start_aps(|n| {
            let t = arch::x86_64::lapic::TICKS.load(Ordering::Acquire);
            while arch::x86_64::lapic::TICKS.load(Ordering::Acquire) < t + n {
                // SAFETY: waits for the timer with the IDT loaded; interrupts are disabled again afterwards.
                unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            }
        })
    } else {
        1
    };
    let _ = writeln!(con, "(XEN) {cpus} CPU(s) online");
    run_domains(con, frames, &opts, &info, cpus)
}

/// The Rust entry point on aarch64, called by the boot stub at EL2 with the MMU on and `dtb` = the device tree
/// QEMU passed in x0.
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
#[no_mangle]
pub extern "C" fn hv_main(dtb: u64) -> ! {
    use xen_abi::fdt::Fdt;
    // The boot tables map 1..4 GiB as RAM; a tree elsewhere (or larger than 2 MiB) cannot be used.
    let tree = if (1 << 30..(1 << 32) - 64).contains(&dtb) {
        // SAFETY: the header lies in the identity-mapped RAM window checked above; QEMU placed the tree there.
        let header = unsafe { arch::phys_slice(dtb, xen_abi::fdt::HEADER) };
        match Fdt::total_size(header) {
            Ok(n) if n <= 2 << 20 && dtb + n as u64 <= 1 << 32 => {
                // SAFETY: as above, for the size the header gives, still inside the window.
                Some(unsafe { arch::phys_slice(dtb, n) })
            }
            _ => None,
        }
    } else {
        None
    };
    let Some(tree) = tree else {
        // No console without the tree: report failure through the exit status only.
        arch::exit(0x11);
    };
    if let Ok(fdt) = Fdt::new(tree) {
        let mut uart = None;
        fdt.regs_compatible("arm,pl011", |base, _| {
            uart.get_or_insert(base);
        });
        if let Some(base) = uart {
            arch::aarch64::pl011::set_base(base);
        }
    }
    let mut con = console::init();
    let (major, minor) = xen_hv::VERSION;
    let _ = writeln!(con, "xen-hv {major}.{minor} (aarch64) starting at EL2");
    let info = match xen_hv::bootinfo::BootInfo::from_fdt(tree) {
        Ok(info) => info,
        Err(e) => {
            let _ = writeln!(con, "(XEN) panic: {e}");
            arch::exit(0x11);
        }
    };
    let _ = writeln!(con, "(XEN) boot protocol: device tree at {dtb:#x}");
    let (opts, mut frames) = boot_summary(&mut con, &info);
    let (image_start, image_end) = arch::aarch64::image_range();
    frames.remove(image_start, image_end - image_start);
    // Only the first 4 GiB are mapped for EL2: RAM above (QEMU with more than 3 GiB) stays unused.
    frames.remove(1 << 32, (1 << 52) - (1 << 32));
    frames.remove(dtb, tree.len() as u64);
    for m in info.modules() {
        frames.remove(m.base, m.len);
    }
    init_heap(&mut con, &mut frames);
    let mut gic = [0u64; 2];
    let mut n = 0;
    if let Ok(fdt) = Fdt::new(tree) {
        fdt.regs_compatible("arm,gic-v3", |base, _| {
            if n < 2 {
                gic[n] = base;
                n += 1;
            }
        });
    }
    if let Err(e) = arch::gic::init(gic[0], gic[1]) {
        let _ = writeln!(con, "(XEN) panic: {e}");
        arch::exit(0x11);
    }
    if arch::pa_bits() < 48 {
        let _ = writeln!(
            con,
            "(XEN) panic: stage-2 tables need 48-bit physical addresses, the CPU has {}",
            arch::pa_bits()
        );
        arch::exit(0x11);
    }
    arch::init_stage2();
    arch::timer::arm();
    let _ = writeln!(
        con,
        "(XEN) GICv3 distributor {:#x}, redistributor {:#x}; counter {} Hz, EL2 timer tick every {} ms",
        gic[0],
        gic[1],
        arch::timer::frequency(),
        arch::timer::PERIOD_NS / 1_000_000
    );
    let _ = writeln!(con, "(XEN) stage-2 translation: 4 KiB granule, 48-bit IPA");
    let cpus = start_secondaries(&mut con, tree, &mut frames, &opts);
    let _ = writeln!(con, "(XEN) {cpus} CPU(s) online");
    if opts.selftest_trap {
        let _ = writeln!(
            con,
            "(XEN) self-test: raising an undefined instruction in the hypervisor"
        );
        // SAFETY: deliberately executes a permanently undefined instruction; the EL2 vector prints a dump and
        // stops.
        unsafe { core::arch::asm!("udf #0", options(nomem, nostack)) };
    }
    if info.modules().is_empty() {
        let _ = writeln!(con, "(XEN) no guest domains to run; halting");
        arch::exit(0x10);
    }
    run_domains(con, frames, &opts, &info, cpus)
}

/// Starts the other CPUs the device tree lists (up to `maxcpus=`) through the firmware's PSCI CPU_ON, each on
/// a 64 KiB stack from `frames`, and waits for each to come online; returns the CPUs online.
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
fn start_secondaries(
    con: &mut impl core::fmt::Write,
    tree: &[u8],
    frames: &mut xen_hv::frames::FrameAllocator,
    opts: &xen_hv::cmdline::Options,
) -> u32 {
    use xen_abi::fdt::{read_cells, Fdt};
    let max = opts.maxcpus.unwrap_or(u32::MAX).min(arch::MAX_CPUS as u32);
    let Ok(fdt) = Fdt::new(tree) else {
        return 1;
    };
    if max <= 1 {
        return 1;
    }
    // From EL2 only an SMC reaches the firmware (an HVC would trap to ourselves).
    if fdt.property("/psci", "method") != Some(&b"smc\0"[..]) {
        let _ = writeln!(
            con,
            "(XEN) the firmware's PSCI is not called through SMC: secondary CPUs stay off"
        );
        return 1;
    }
    let cells = fdt
        .property("/cpus", "#address-cells")
        .and_then(|v| read_cells(v, 1))
        .unwrap_or(1) as u32;
    let mut mpidrs = [0u64; arch::MAX_CPUS];
    let mut n = 0;
    let _ = fdt.for_each_prop(|p| {
        if p.name == "reg" && p.path.len() == 2 && p.path[0] == "cpus" && n < mpidrs.len() {
            if let Some(m) = read_cells(p.value, cells) {
                mpidrs[n] = m;
                n += 1;
            }
        }
    });
    let me: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) me, options(nomem, nostack)) };
    let mut online = 1;
    for &mpidr in &mpidrs[..n] {
        if mpidr == me & 0xff_00ff_ffff || online >= max {
            continue;
        }
        let Some(stack) = frames.alloc(64 * 1024, 4096) else {
            break;
        };
        let r = arch::cpu_on(mpidr, stack + 64 * 1024, true);
        if r != 0 {
            let _ = writeln!(con, "(XEN) CPU {mpidr:#x}: PSCI CPU_ON failed with {r}");
            frames.free(stack, 64 * 1024);
            continue;
        }
        let deadline = arch::now_ns() + 1_000_000_000;
        while arch::ONLINE.load(Ordering::Acquire) <= online && arch::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if arch::ONLINE.load(Ordering::Acquire) > online {
            online += 1;
        } else {
            let _ = writeln!(con, "(XEN) CPU {mpidr:#x} did not come online");
        }
    }
    online
}

/// The Rust entry of a secondary CPU (from `hv_secondary_entry`, MMU on, own stack): its redistributor,
/// stage-2 control and tick, then the scheduling loop once the domains are built.
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
#[no_mangle]
pub extern "C" fn hv_secondary_main() -> ! {
    if arch::gic::init_cpu().is_ok() {
        arch::init_stage2();
        arch::timer::arm();
        arch::ONLINE.fetch_add(1, Ordering::AcqRel);
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        vm::cpu_loop(&MACHINE);
    }
    loop {
        // SAFETY: waiting for an event with interrupts masked only parks this CPU.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

/// Prints what the boot loader handed over and returns the parsed options and the RAM as free frames.
#[cfg(target_os = "none")]
fn boot_summary(
    con: &mut impl core::fmt::Write,
    info: &xen_hv::bootinfo::BootInfo,
) -> (xen_hv::cmdline::Options, xen_hv::frames::FrameAllocator) {
    let _ = writeln!(con, "(XEN) command line: {}", info.cmdline());
    let opts = xen_hv::cmdline::Options::parse(info.cmdline());
    if opts.unknown > 0 {
        let _ = writeln!(
            con,
            "(XEN) {} unrecognised command line option(s) ignored",
            opts.unknown
        );
    }
    let _ = writeln!(con, "(XEN) physical memory map:");
    for r in info.memmap() {
        let _ = writeln!(
            con,
            "(XEN)  {:016x} - {:016x} type {}",
            r.base,
            r.base + r.len,
            r.kind
        );
    }
    let _ = writeln!(
        con,
        "(XEN) {} MiB RAM, {} boot module(s)",
        info.ram_bytes() >> 20,
        info.modules().len()
    );
    for (i, m) in info.modules().iter().enumerate() {
        let _ = writeln!(con, "(XEN)  module {i}: {:#x} +{:#x}", m.base, m.len);
    }
    let mut frames = xen_hv::frames::FrameAllocator::new();
    for r in info.memmap() {
        if r.kind == xen_abi::start_info::memmap_type::RAM {
            frames.add(r.base, r.len);
        }
    }
    (opts, frames)
}

/// Takes the hypervisor heap from the free frames.
#[cfg(target_os = "none")]
fn init_heap(con: &mut impl core::fmt::Write, frames: &mut xen_hv::frames::FrameAllocator) {
    let _ = writeln!(
        con,
        "(XEN) {} MiB free for domains",
        frames.free_bytes() >> 20
    );
    let Some(heap) = frames.alloc(HEAP_BYTES, 4096) else {
        let _ = writeln!(con, "(XEN) panic: no memory for the heap");
        arch::exit(0x11);
    };
    // SAFETY: the range was just taken from the frame allocator, is identity-mapped and used by nothing else.
    unsafe {
        HEAP.lock()
            .init(heap as usize as *mut u8, HEAP_BYTES as usize)
    };
}

/// Builds one domain per guest of the boot module's pack, runs them on every CPU until all are gone, prints
/// the verdict and ends the machine with it.
#[cfg(target_os = "none")]
fn run_domains(
    mut con: impl core::fmt::Write,
    frames: xen_hv::frames::FrameAllocator,
    opts: &xen_hv::cmdline::Options,
    info: &xen_hv::bootinfo::BootInfo,
    cpus: u32,
) -> ! {
    let module = info.modules().first().copied();
    let entries: alloc::vec::Vec<_> = match module {
        Some(module) => {
            // SAFETY: the module was reserved above and stays untouched for the hypervisor's lifetime.
            let pack = unsafe { arch::phys_slice(module.base, module.len as usize) };
            match xen_hv::modpack::parse(pack) {
                Ok(e) => e.collect(),
                Err(e) => {
                    let _ = writeln!(con, "(XEN) panic: {e}");
                    arch::exit(0x11);
                }
            }
        }
        None => alloc::vec::Vec::new(),
    };
    let free_before = frames.free_bytes();
    let mut machine = vm::Machine::new(frames);
    let ram_bytes: u64 = info
        .memmap()
        .iter()
        .filter(|r| r.kind == xen_abi::start_info::memmap_type::RAM)
        .map(|r| r.len)
        .sum();
    machine.set_ctl_host(cpus, ram_bytes);
    if machine.has_ctl() {
        let _ = writeln!(con, "(XEN) control channel on COM2");
    }
    let mut built = 0;
    for (i, e) in entries.iter().enumerate() {
        if e.module_of.is_some() {
            continue;
        }
        let module = entries
            .iter()
            .find(|m| m.module_of == Some(i))
            .map(|m| m.image);
        // The first guest is the boot domain: dom0_mem= and dom0_max_vcpus= apply to it, as in Xen.
        let (mem_mib, vcpus) = if built == 0 {
            let mem = opts
                .dom0_mem
                .map_or(e.mem_mib, |b| u32::try_from(b >> 20).unwrap_or(u32::MAX));
            let vcpus = opts.dom0_max_vcpus.map_or(e.vcpus, |m| e.vcpus.min(m));
            (mem, vcpus)
        } else {
            (e.mem_mib, e.vcpus)
        };
        match machine.create_domain(e.name, e.image, mem_mib, vcpus, module) {
            Ok(_) => built += 1,
            Err(err) => {
                let _ = writeln!(con, "(XEN) {}: cannot build the domain: {err}", e.name);
            }
        }
    }
    let _ = writeln!(con, "(XEN) running {built} domain(s) on {cpus} CPU(s)");
    *MACHINE.lock() = Some(machine);
    GO.store(true, Ordering::Release);
    vm::cpu_loop(&MACHINE);
    // Every domain is gone; the other CPUs leave their loops too.
    let (passed, free_after) = MACHINE
        .lock()
        .as_mut()
        .map_or((false, 0), |m| (m.report(), m.free_bytes()));
    let _ = writeln!(con, "(XEN) all domains are gone");
    let _ = writeln!(
        con,
        "(XEN) {} KiB free before the domains were built, {} KiB after they are gone",
        free_before >> 10,
        free_after >> 10
    );
    if passed {
        let _ = writeln!(con, "(XEN) all guests passed");
        arch::exit(0x10);
    }
    let _ = writeln!(con, "(XEN) some guests failed");
    arch::exit(0x11);
}

/// The hypervisor heap: linked_list_allocator (rust-osdev, small, no_std, spin-locked), over frames taken from
/// the frame allocator at boot. It holds the per-vCPU hardware state (boxed so scheduling moves a pointer).
#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
/// Heap size.
#[cfg(target_os = "none")]
const HEAP_BYTES: u64 = 16 << 20;

/// The machine every CPU schedules from.
#[cfg(target_os = "none")]
static MACHINE: spin::Mutex<Option<vm::Machine>> = spin::Mutex::new(None);
/// Set once the domains are built: the APs start scheduling.
#[cfg(target_os = "none")]
static GO: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `maxcpus=`: CPUs with an index at or above it stay parked.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
static MAX_CPUS_OPT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(u32::MAX);

/// The Rust entry of an application processor, called by the trampoline with its CPU index on its own stack.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn hv_ap_entry(idx: u32) -> ! {
    if idx >= MAX_CPUS_OPT.load(Ordering::Relaxed) {
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }
    let idx = idx as usize;
    arch::x86_64::cpu::init(idx);
    arch::x86_64::percpu::init(idx);
    arch::x86_64::cpu::enable_fxsave();
    arch::x86_64::lapic::init(
        arch::x86_64::cpu::TIMER_VECTOR,
        arch::x86_64::cpu::SPURIOUS_VECTOR,
    );
    let me = arch::x86_64::percpu::of(idx);
    if arch::x86_64::svm::enable(
        me.hsave.load(Ordering::Acquire),
        me.vmsave.load(Ordering::Acquire),
    )
    .is_err()
    {
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }
    arch::x86_64::smp::ONLINE.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    vm::cpu_loop(&MACHINE);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut con = console::init();
    let _ = writeln!(con, "(XEN) PANIC: {info}");
    arch::exit(0x11);
}
