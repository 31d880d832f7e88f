//! Builder tests against the in-memory hypervisor model.

use super::*;
use crate::transport::fake::FakeXen;
use xen_abi::start_info::{HvmStartInfo, HVM_START_MAGIC};

/// A kernel image: one PT_LOAD at `paddr` with `body` (memsz = body + 0x1000 of bss) and a PT_NOTE with the
/// PVH entry `paddr + 0x10`; ELF64 (x86-64) or ELF32 (i386).
pub(crate) fn kernel(is64: bool, paddr: u64, body: &[u8]) -> Vec<u8> {
    let (eh, ph) = if is64 { (64usize, 56usize) } else { (52, 32) };
    let note_at = eh + 2 * ph;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&18u32.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&((paddr + 0x10) as u32).to_le_bytes());
    let data_at = (note_at + note.len()).next_multiple_of(16);
    let mut f = vec![0u8; data_at + body.len()];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = if is64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2);
    put16(&mut f, 18, if is64 { 62 } else { 3 });
    put32(&mut f, 20, 1);
    let memsz = body.len() as u64 + 0x1000;
    if is64 {
        put64(&mut f, 24, paddr);
        put64(&mut f, 32, 64);
        put16(&mut f, 52, 64);
        put16(&mut f, 54, 56);
        put16(&mut f, 56, 2);
        let p = 64;
        put32(&mut f, p, 1);
        put64(&mut f, p + 8, data_at as u64);
        put64(&mut f, p + 16, paddr);
        put64(&mut f, p + 24, paddr);
        put64(&mut f, p + 32, body.len() as u64);
        put64(&mut f, p + 40, memsz);
        let p = 64 + 56;
        put32(&mut f, p, 4);
        put64(&mut f, p + 8, note_at as u64);
        put64(&mut f, p + 32, note.len() as u64);
        put64(&mut f, p + 40, note.len() as u64);
    } else {
        put32(&mut f, 24, paddr as u32);
        put32(&mut f, 28, 52);
        put16(&mut f, 40, 52);
        put16(&mut f, 42, 32);
        put16(&mut f, 44, 2);
        let p = 52;
        put32(&mut f, p, 1);
        put32(&mut f, p + 4, data_at as u32);
        put32(&mut f, p + 8, paddr as u32);
        put32(&mut f, p + 12, paddr as u32);
        put32(&mut f, p + 16, body.len() as u32);
        put32(&mut f, p + 20, memsz as u32);
        let p = 52 + 32;
        put32(&mut f, p, 4);
        put32(&mut f, p + 4, note_at as u32);
        put32(&mut f, p + 16, note.len() as u32);
        put32(&mut f, p + 20, note.len() as u32);
    }
    f[note_at..note_at + note.len()].copy_from_slice(&note);
    f[data_at..].copy_from_slice(body);
    f
}

pub(crate) fn spec(kernel: Vec<u8>) -> BuildSpec {
    BuildSpec {
        uuid: [7; 16],
        memory_mib: 16,
        max_memory_mib: 16,
        vcpus: 2,
        kernel,
        ramdisk: None,
        cmdline: "console=hvc0 root=/dev/xvda".into(),
        paused: false,
        xenstore: false,
    }
}

#[test]
fn builds_elf64_and_elf32_kernels_with_start_info_and_entry_state() {
    for is64 in [true, false] {
        let body: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut x = FakeXen::new(256 << 20);
        let b = build(&mut x, &spec(kernel(is64, 0x20_0000, &body))).expect("built");
        assert_eq!(b.entry, 0x20_0010);
        // Kernel bytes (the model fills fresh frames with 0xdd).
        assert_eq!(
            x.read_guest(b.domid, 0x20_0000, body.len()).expect("mem"),
            body
        );
        let si = x
            .read_guest(b.domid, START_INFO_GPA, 4096)
            .expect("start info");
        let s = HvmStartInfo::read_from(&si).expect("struct");
        assert_eq!((s.magic, s.version, s.nr_modules), (HVM_START_MAGIC, 1, 0));
        assert_eq!(s.memmap_entries, 3);
        // The ACPI tables: the RSDP starts the page below the rings, which the map marks ACPI.
        let acpi = (16 << 20) - 3 * 4096;
        assert_eq!(s.rsdp_paddr, acpi);
        assert_eq!(x.read_guest(b.domid, acpi, 8).expect("rsdp"), b"RSD PTR ");
        let c = (s.cmdline_paddr - START_INFO_GPA) as usize;
        assert_eq!(&si[c..c + 28], b"console=hvc0 root=/dev/xvda\0");
        let m0 = HvmMemmapEntry::read_from(&si[(s.memmap_paddr - START_INFO_GPA) as usize..])
            .expect("e0");
        assert_eq!((m0.addr, m0.size, m0.kind), (0, (16 << 20) - 3 * 4096, 1));
        let st = x.state.borrow();
        let d = &st.domains[&b.domid];
        assert_eq!(d.frames.len(), 4096, "16 MiB populated");
        assert_eq!(d.create.max_vcpus, 2);
        assert_eq!(d.create.handle, [7; 16]);
        assert_eq!(d.create.flags, domctl::cdf::HVM | domctl::cdf::HAP);
        assert_eq!(d.max_memkb, 16 * 1024);
        let ctx = d.vcpus[&0];
        assert_eq!(
            (ctx.mode, ctx.x86_32.eip, ctx.x86_32.ebx),
            (0, 0x20_0010, 0x1000)
        );
        assert_eq!(ctx.x86_32.cr0 & 1, 1, "protected mode");
        assert_eq!(d.params[&memres::HVM_PARAM_CONSOLE_PFN], b.console_gfn);
        assert_eq!(b.console_gfn, 4094);
        assert_eq!(d.unbound, vec![(1, 0), (2, 0)]);
        let e820: Vec<(u64, u64, u32)> = d.e820.iter().map(|e| (e.addr, e.size, e.kind)).collect();
        assert_eq!(
            e820,
            vec![
                (0, (16 << 20) - 3 * 4096, 1),
                ((16 << 20) - 3 * 4096, 4096, 3),
                ((16 << 20) - 8192, 8192, 2)
            ]
        );
        assert_eq!(
            d.params[&memres::HVM_PARAM_CONSOLE_EVTCHN],
            u64::from(b.console_port)
        );
        // Without a xenstored the guest is not told about a store.
        assert_eq!(d.params.get(&memres::HVM_PARAM_STORE_PFN), None);
        assert_eq!(d.params.get(&memres::HVM_PARAM_STORE_EVTCHN), None);

        assert!(!d.paused, "started");
    }
}

#[test]
fn ramdisk_is_module_zero_after_the_kernel() {
    let mut x = FakeXen::default();
    let mut s = spec(kernel(true, 0x10_0000, &[0x90; 100]));
    let rd: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.ramdisk = Some(rd.clone());
    s.paused = true;
    let b = build(&mut x, &s).expect("built");
    // Kernel ends at 1 MiB + 100 + 4096 of bss -> the next page.
    assert_eq!(b.ramdisk, Some((0x10_2000, 10_000)));
    assert_eq!(x.read_guest(b.domid, 0x10_2000, rd.len()).expect("mem"), rd);
    let si = x.read_guest(b.domid, START_INFO_GPA, 4096).expect("si");
    let s = HvmStartInfo::read_from(&si).expect("s");
    assert_eq!(s.nr_modules, 1);
    let m =
        HvmModlistEntry::read_from(&si[(s.modlist_paddr - START_INFO_GPA) as usize..]).expect("m");
    assert_eq!((m.paddr, m.size), (0x10_2000, 10_000));
    assert!(x.state.borrow().domains[&b.domid].paused, "left paused");
}

#[test]
fn bss_is_zeroed_over_poisoned_frames() {
    let mut x = FakeXen::default();
    let k = kernel(true, 0x10_0000, &[1, 2, 3]);
    let b = build(&mut x, &spec(k)).expect("built");
    assert_eq!(
        x.read_guest(b.domid, 0x10_0003, 0x1000).expect("bss"),
        vec![0; 0x1000]
    );
}

#[test]
fn failures_are_clear_and_leave_no_domain_behind() {
    let mut x = FakeXen::new(8 << 20);
    // Not enough host memory: populate fails, the domain is destroyed.
    let e = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 16]))).expect_err("too big");
    assert!(e.to_string().contains("populate_physmap"), "{e}");
    assert_eq!(x.state.borrow().domains.len(), 1, "only dom0 left");
    let mut x = FakeXen::default();
    let e = build(&mut x, &spec(b"#!/bin/sh\n".to_vec())).expect_err("not ELF");
    assert!(e.to_string().contains("not an ELF"), "{e}");
    // A kernel above the domain's memory.
    let e = build(&mut x, &spec(kernel(true, 0x200_0000, &[0; 16]))).expect_err("outside");
    assert!(e.to_string().contains("outside"), "{e}");
    let mut s = spec(kernel(true, 0x10_0000, &[0; 16]));
    s.ramdisk = Some(vec![0; 20 << 20]);
    let e = build(&mut x, &s).expect_err("ramdisk too big");
    assert!(e.to_string().contains("ramdisk"), "{e}");
    assert_eq!(x.state.borrow().domains.len(), 1);
    s.ramdisk = None;
    s.vcpus = 0;
    assert!(matches!(build(&mut x, &s), Err(Error::Config(_))));
}

#[test]
fn copies_and_zeroing_cross_mapping_windows() {
    let mut x = FakeXen::default();
    let k = kernel(true, 0x10_0000, &[0; 8]);
    let b = build(&mut x, &spec(k)).expect("built");
    // 3 bytes then 1.5 MiB of zeroes, unaligned, across several 1 MiB mapping windows.
    copy_to_guest(&mut x, b.domid, 0x20_0ffe, b"abc", 0x18_0000).expect("copy");
    assert_eq!(x.read_guest(b.domid, 0x20_0ffe, 3).expect("data"), b"abc");
    let z = x.read_guest(b.domid, 0x20_1001, 0x18_0000).expect("zeroes");
    assert!(z.iter().all(|b| *b == 0));
    // The byte after the range keeps the model's poison.
    assert_eq!(
        x.read_guest(b.domid, 0x20_0ffe + 3 + 0x18_0000, 1)
            .expect("after"),
        vec![0xdd]
    );
    // Data longer than one window.
    let big: Vec<u8> = (0..0x15_0000u32).map(|i| (i % 253) as u8).collect();
    copy_to_guest(&mut x, b.domid, 0x40_0123, &big, 5).expect("copy");
    assert_eq!(
        x.read_guest(b.domid, 0x40_0123, big.len()).expect("big"),
        big
    );
    assert_eq!(
        x.read_guest(b.domid, 0x40_0123 + big.len() as u64, 5)
            .expect("tail"),
        vec![0; 5]
    );
}

#[test]
fn the_store_is_advertised_only_when_a_xenstored_serves_it() {
    let mut x = FakeXen::default();
    let b = build(
        &mut x,
        &BuildSpec {
            xenstore: true,
            ..spec(kernel(true, 0x10_0000, &[0; 8]))
        },
    )
    .expect("built with a store");
    let st = x.state.borrow();
    let d = &st.domains[&b.domid];
    assert_eq!(d.params[&memres::HVM_PARAM_STORE_PFN], b.xenstore_gfn);
    assert_eq!(
        d.params[&memres::HVM_PARAM_STORE_EVTCHN],
        u64::from(b.xenstore_port)
    );
}

#[test]
fn layouts_use_superpages_where_they_fit_and_outside_ones_are_checked() {
    let l = Layout::pvh([1; 16], 2, 17, 32);
    assert_eq!(
        l.ram,
        vec![
            RamRange {
                first_gfn: 0,
                frames: 4096,
                order: 9
            },
            RamRange {
                first_gfn: 4096,
                frames: 256,
                order: 0
            }
        ]
    );
    assert_eq!((l.ram_frames(), l.max_memkb), (4352, 32 * 1024));
    assert!(l.is_ram(4351) && !l.is_ram(4352));
    assert_eq!(l.memmap[2].addr, (17 << 20) - 8192, "the rings at the top");
    l.validate().expect("a built layout is valid");
    let refused = |f: &dyn Fn(&mut Layout)| {
        let mut bad = l.clone();
        f(&mut bad);
        bad.validate().expect_err("refused").to_string()
    };
    assert!(refused(&|b| b.vcpus = 0).contains("vCPUs"));
    assert!(refused(&|b| b.ram[0].first_gfn = 3).contains("cannot be populated"));
    assert!(refused(&|b| b.ram[1].order = 30).contains("cannot be populated"));
    assert!(refused(&|b| b.ram[1].first_gfn = 4000).contains("overlap"));
    assert!(refused(&|b| b.max_memkb = 1024).contains("memory limit"));
    assert!(refused(&|b| b.memmap.clear()).contains("memory map"));
    assert!(refused(&|b| b.ram.clear()).contains("no RAM"));
}
