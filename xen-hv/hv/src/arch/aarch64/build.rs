//! The aarch64 domain layout, after Xen's: RAM at guest-physical 0x40000000 (`GUEST_RAM0_BASE`), the image's
//! `PT_LOAD` segments at their physical addresses inside it, an optional boot module (initramfs) at the top of
//! RAM and the device tree in the page below it; vCPU 0 starts at the ELF entry in EL1h with x0 = the device
//! tree's address, as Linux's arm64 boot protocol has it.

use xen_abi::elf::{ElfImage, EM_AARCH64};
use xen_abi::fdt::Writer;
use xen_abi::pvh::PvhError;
use xen_hv::frames::PAGE;

use crate::vm::BuildError;

/// Guest-physical address of the domain's RAM.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
/// The PPI event-channel upcalls arrive on (Xen's `GUEST_EVTCHN_PPI`).
pub const EVTCHN_PPI: u32 = 31;

/// Where the pieces of a domain go, decided before its memory is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DomainPlan {
    entry: u64,
    mem_bytes: u64,
    dtb_at: u64,
    module_at: Option<u64>,
    vcpus: u32,
}

fn outside(start: u64, end: u64) -> BuildError {
    BuildError::Layout(PvhError::OutsideMemory { start, end })
}

/// Checks that `elf` (an aarch64 executable) and `module` fit `mem_bytes` of RAM and places them.
pub fn plan_domain(
    elf: &ElfImage<'_>,
    mem_bytes: u64,
    vcpus: u32,
    module: Option<&[u8]>,
) -> Result<DomainPlan, BuildError> {
    if elf.machine() != EM_AARCH64 || !elf.is_64() {
        return Err(BuildError::Elf(xen_abi::elf::ElfError::Unsupported));
    }
    let ram_end = GUEST_RAM_BASE + mem_bytes;
    let (lo, hi) = elf
        .phys_extent()
        .map_err(BuildError::Elf)?
        .ok_or(outside(0, 0))?;
    if lo < GUEST_RAM_BASE || hi > ram_end {
        return Err(outside(lo, hi));
    }
    let entry = elf.entry();
    if !(lo..hi).contains(&entry) {
        return Err(outside(entry, entry + 4));
    }
    let module_at = match module {
        Some(m) => {
            let len = m.len() as u64;
            let at = ram_end.saturating_sub(len) & !(PAGE - 1);
            if len == 0 || at < hi + PAGE {
                return Err(outside(at, at + len));
            }
            Some(at)
        }
        None => None,
    };
    let dtb_at = module_at.unwrap_or(ram_end) - PAGE;
    if dtb_at < hi {
        return Err(outside(dtb_at, dtb_at + PAGE));
    }
    Ok(DomainPlan {
        entry,
        mem_bytes,
        dtb_at,
        module_at,
        vcpus,
    })
}

/// Writes the image, the module and the device tree through `copy(offset into RAM, bytes)`; returns vCPU 0's
/// entry point and its x0 (the device tree's guest-physical address).
pub fn write_domain(
    plan: &DomainPlan,
    elf: &ElfImage<'_>,
    name: &str,
    module: Option<&[u8]>,
    copy: &mut dyn FnMut(u64, &[u8]),
) -> Result<(u64, u64), BuildError> {
    for seg in elf.load_segments() {
        let seg = seg.map_err(BuildError::Elf)?;
        let data = elf.segment_data(&seg).map_err(BuildError::Elf)?;
        copy(seg.paddr - GUEST_RAM_BASE, data);
    }
    let module_range = match (plan.module_at, module) {
        (Some(at), Some(m)) => {
            copy(at - GUEST_RAM_BASE, m);
            Some((at, at + m.len() as u64))
        }
        _ => None,
    };
    let mut dtb = [0u8; PAGE as usize];
    let n = device_tree(&mut dtb, plan, name, module_range)
        .map_err(|_| outside(plan.dtb_at, plan.dtb_at + PAGE))?;
    copy(plan.dtb_at - GUEST_RAM_BASE, &dtb[..n]);
    Ok((plan.entry, plan.dtb_at))
}

/// `cpu@N` for N below 8.
fn cpu_node_name(buf: &mut [u8; 8], i: u32) -> &str {
    buf[..4].copy_from_slice(b"cpu@");
    buf[4] = b'0' + (i % 10) as u8;
    core::str::from_utf8(&buf[..5]).unwrap_or("cpu")
}

fn hi_lo(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

/// The guest's device tree: its RAM, its command line (the domain name) and boot module in `/chosen`, the
/// `/hypervisor` node by which a guest recognises Xen and learns the event-channel PPI, its vCPUs (started
/// through PSCI) and the PSCI node (HVC conduit).
fn device_tree(
    out: &mut [u8],
    plan: &DomainPlan,
    name: &str,
    module: Option<(u64, u64)>,
) -> Result<usize, xen_abi::fdt::FdtError> {
    let mut w = Writer::new();
    w.begin_node("");
    w.prop_cells("#address-cells", &[2]);
    w.prop_cells("#size-cells", &[2]);
    w.prop("compatible", b"xen,xenvm-4.17\0xen,xenvm\0");
    w.begin_node("chosen");
    w.prop_str("bootargs", name);
    if let Some((start, end)) = module {
        w.prop_cells("linux,initrd-start", &hi_lo(start));
        w.prop_cells("linux,initrd-end", &hi_lo(end));
    }
    w.end_node();
    w.begin_node("memory@40000000");
    w.prop_str("device_type", "memory");
    let [bh, bl] = hi_lo(GUEST_RAM_BASE);
    let [sh, sl] = hi_lo(plan.mem_bytes);
    w.prop_cells("reg", &[bh, bl, sh, sl]);
    w.end_node();
    w.begin_node("hypervisor");
    w.prop("compatible", b"xen,xen-4.17\0xen,xen\0");
    // PPI (type 1) number EVTCHN_PPI - 16, level-triggered, active low, all CPUs: as Xen describes it.
    w.prop_cells("interrupts", &[1, EVTCHN_PPI - 16, 0xf08]);
    w.end_node();
    w.begin_node("psci");
    w.prop("compatible", b"arm,psci-1.0\0arm,psci-0.2\0");
    w.prop_str("method", "hvc");
    w.end_node();
    w.begin_node("cpus");
    w.prop_cells("#address-cells", &[1]);
    w.prop_cells("#size-cells", &[0]);
    let mut unit = [0u8; 8];
    for i in 0..plan.vcpus.min(8) {
        let name = cpu_node_name(&mut unit, i);
        w.begin_node(name);
        w.prop_str("device_type", "cpu");
        w.prop("compatible", b"arm,armv8\0");
        w.prop_cells("reg", &[i]);
        w.prop_str("enable-method", "psci");
        w.end_node();
    }
    w.end_node();
    w.end_node();
    w.finish(out)
}
