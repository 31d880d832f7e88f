//! The aarch64 domain layout, after Xen's: RAM at guest-physical 0x40000000 (`GUEST_RAM0_BASE`); the image is
//! either a Linux arm64 `Image` (placed at the RAM base plus its text_offset, entered at its first byte) or an
//! ELF (`PT_LOAD` segments at their physical addresses, entered at `e_entry`); an optional boot module
//! (initramfs) at the top of RAM and the device tree in the page below it; vCPU 0 starts in EL1h with the MMU
//! off and x0 = the device tree's address, as Linux's arm64 boot protocol has it.

use xen_abi::elf::{ElfImage, EM_AARCH64};
use xen_abi::fdt::Writer;
use xen_abi::pvh::PvhError;
use xen_hv::frames::PAGE;

use crate::vm::BuildError;
use xen_hv::vgic;

/// Guest-physical address of the domain's RAM.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;

/// The memory map `XENMEM_memory_map` returns for a domain the hypervisor built: its RAM (the device tree
/// describes the rest). Returns the number of entries written.
pub fn boot_memory_map(mem_bytes: u64, out: &mut [xen_abi::xen::E820Entry]) -> usize {
    match out.first_mut() {
        Some(e) => {
            *e = xen_abi::xen::E820Entry {
                addr: GUEST_RAM_BASE,
                size: mem_bytes,
                kind: 1,
            };
            1
        }
        None => 0,
    }
}
/// The phandle of the guest's GIC node.
const GIC_PHANDLE: u32 = 1;
/// The PPI event-channel upcalls arrive on (Xen's `GUEST_EVTCHN_PPI`).
pub const EVTCHN_PPI: u32 = 31;

/// Where the pieces of a domain go, decided before its memory is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DomainPlan {
    /// Where an arm64 Image is copied (None: an ELF).
    image_at: Option<u64>,
    entry: u64,
    mem_bytes: u64,
    dtb_at: u64,
    module_at: Option<u64>,
    vcpus: u32,
}

fn outside(start: u64, end: u64) -> BuildError {
    BuildError::Layout(PvhError::OutsideMemory { start, end })
}

/// Checks that `image` (an arm64 Image or an aarch64 ELF) and `module` fit `mem_bytes` of RAM and places them.
pub fn plan_domain(
    image: &[u8],
    mem_bytes: u64,
    vcpus: u32,
    module: Option<&[u8]>,
) -> Result<DomainPlan, BuildError> {
    let ram_end = GUEST_RAM_BASE + mem_bytes;
    let (image_at, entry, hi) = match xen_abi::arm64_image::parse(image) {
        Ok(h) => {
            let at = GUEST_RAM_BASE + h.text_offset;
            let end = at.checked_add(h.image_size).ok_or(outside(at, u64::MAX))?;
            if end > ram_end {
                return Err(outside(at, end));
            }
            (Some(at), at, end)
        }
        Err(_) => {
            let elf = ElfImage::parse(image).map_err(BuildError::Elf)?;
            if elf.machine() != EM_AARCH64 || !elf.is_64() {
                return Err(BuildError::Elf(xen_abi::elf::ElfError::Unsupported));
            }
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
            (None, entry, hi)
        }
    };
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
        image_at,
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
    image: &[u8],
    name: &str,
    module: Option<&[u8]>,
    copy: &mut dyn FnMut(u64, &[u8]),
) -> Result<(u64, u64), BuildError> {
    match plan.image_at {
        Some(at) => copy(at - GUEST_RAM_BASE, image),
        None => {
            let elf = ElfImage::parse(image).map_err(BuildError::Elf)?;
            for seg in elf.load_segments() {
                let seg = seg.map_err(BuildError::Elf)?;
                let data = elf.segment_data(&seg).map_err(BuildError::Elf)?;
                copy(seg.paddr - GUEST_RAM_BASE, data);
            }
        }
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
    w.prop_cells("interrupt-parent", &[GIC_PHANDLE]);
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
    w.begin_node("interrupt-controller@3001000");
    w.prop("compatible", b"arm,gic-v3\0");
    w.prop_cells("#interrupt-cells", &[3]);
    w.prop("interrupt-controller", &[]);
    let [gdh, gdl] = hi_lo(vgic::GICD_BASE);
    let [gds_h, gds_l] = hi_lo(vgic::GICD_SIZE);
    let [grh, grl] = hi_lo(vgic::GICR_BASE);
    let [grs_h, grs_l] = hi_lo(vgic::GICR_STRIDE * u64::from(plan.vcpus.max(1)));
    w.prop_cells("reg", &[gdh, gdl, gds_h, gds_l, grh, grl, grs_h, grs_l]);
    w.prop_cells("phandle", &[GIC_PHANDLE]);
    w.end_node();
    // The architected timer's PPIs: secure and non-secure physical, virtual, hypervisor (level, all CPUs).
    w.begin_node("timer");
    w.prop("compatible", b"arm,armv8-timer\0");
    w.prop_cells(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    );
    w.end_node();
    w.begin_node("hypervisor");
    w.prop("compatible", b"xen,xen-4.17\0xen,xen\0");
    // The grant-table region (Xen's GUEST_GNTTAB_BASE/SIZE); no grant table is backed there yet.
    w.prop_cells("reg", &[0, 0x3800_0000, 0, 0x0100_0000]);
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
