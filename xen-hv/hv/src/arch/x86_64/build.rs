//! The x86_64 domain layout: a PVH guest (ELF with a PVH entry note) in RAM at guest-physical 0,
//! `hvm_start_info` at 0x1000 with the memory map and the domain's name as command line, the ACPI tables
//! (`xen_abi::acpi`: MADT, hardware-reduced FADT) in the page at 0x2000, an optional boot module (initramfs) at
//! the top of RAM.

use xen_abi::elf::ElfImage;
use xen_abi::start_info::{HvmMemmapEntry, HvmModlistEntry};
use xen_abi::xen::E820Entry;
use xen_hv::frames::PAGE;

use crate::vm::BuildError;

/// Guest-physical address of `hvm_start_info`.
const START_INFO_GPA: u64 = 0x1000;
/// Guest-physical address of the ACPI tables' page.
const ACPI_GPA: u64 = 0x2000;
/// Lowest guest-physical address an image may load at.
const IMAGE_MIN_GPA: u64 = 0x10_0000;

/// Where the pieces of a domain go, decided before its memory is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DomainPlan {
    entry: u64,
    mem_bytes: u64,
    module_at: Option<u64>,
    vcpus: u32,
}

/// The memory map of a domain the hypervisor built (what `hvm_start_info` lists and `XENMEM_memory_map`
/// returns): RAM, the ACPI tables' page, RAM. Returns the number of entries written (0 if `out` is too short).
pub fn boot_memory_map(mem_bytes: u64, out: &mut [E820Entry]) -> usize {
    use xen_abi::start_info::memmap_type::{ACPI, RAM};
    let map = [
        (0, ACPI_GPA, RAM),
        (ACPI_GPA, PAGE, ACPI),
        (
            ACPI_GPA + PAGE,
            mem_bytes.saturating_sub(ACPI_GPA + PAGE),
            RAM,
        ),
    ];
    if out.len() < map.len() {
        return 0;
    }
    for (o, (addr, size, kind)) in out.iter_mut().zip(map) {
        *o = E820Entry { addr, size, kind };
    }
    map.len()
}

/// Checks that `elf` (and `module`) fit `mem_bytes` of RAM and places them.
pub fn plan_domain(
    image: &[u8],
    mem_bytes: u64,
    vcpus: u32,
    module: Option<&[u8]>,
) -> Result<DomainPlan, BuildError> {
    let elf = ElfImage::parse(image).map_err(BuildError::Elf)?;
    let entry =
        xen_abi::pvh::check_layout(&elf, IMAGE_MIN_GPA, mem_bytes).map_err(BuildError::Layout)?;
    // A boot module (initramfs) goes at the top of RAM, above the image.
    let module_at = match module {
        Some(m) => {
            let len = m.len() as u64;
            let at = mem_bytes.saturating_sub(len) & !(PAGE - 1);
            let image_end = elf
                .phys_extent()
                .map_err(BuildError::Elf)?
                .map_or(IMAGE_MIN_GPA, |(_, hi)| hi);
            if len == 0 || at < image_end {
                return Err(BuildError::Layout(xen_abi::pvh::PvhError::OutsideMemory {
                    start: at,
                    end: at + len,
                }));
            }
            Some(at)
        }
        None => None,
    };
    Ok(DomainPlan {
        entry,
        mem_bytes,
        module_at,
        vcpus,
    })
}

/// Writes the image, the module and the start info through `copy(offset into RAM, bytes)`; returns vCPU 0's
/// entry point and its start argument (`ebx` = the start info's address).
pub fn write_domain(
    plan: &DomainPlan,
    image: &[u8],
    name: &str,
    module: Option<&[u8]>,
    copy: &mut dyn FnMut(u64, &[u8]),
) -> Result<(u64, u64), BuildError> {
    let elf = ElfImage::parse(image).map_err(BuildError::Elf)?;
    for seg in elf.load_segments() {
        let seg = seg.map_err(BuildError::Elf)?;
        let data = elf.segment_data(&seg).map_err(BuildError::Elf)?;
        copy(seg.paddr, data);
    }
    let mut e820 = [E820Entry::default(); 3];
    let n = boot_memory_map(plan.mem_bytes, &mut e820);
    let mut map = [HvmMemmapEntry::default(); 3];
    for (m, e) in map.iter_mut().zip(&e820[..n]) {
        *m = HvmMemmapEntry {
            addr: e.addr,
            size: e.size,
            kind: e.kind,
            reserved: 0,
        };
    }
    let map = &map[..n];
    // The ACPI tables, as the toolstack's builder gives them (Linux needs the MADT to use its local APIC).
    let mut acpi = [0u8; PAGE as usize];
    let rsdp = xen_abi::acpi::build(&mut acpi, ACPI_GPA, plan.vcpus as usize)
        .map_err(|_| BuildError::TooManyVcpus)?;
    copy(ACPI_GPA, &acpi);
    let mut modlist = [HvmModlistEntry::default(); 1];
    let nr_modules = match (plan.module_at, module) {
        (Some(at), Some(m)) => {
            copy(at, m);
            modlist[0] = HvmModlistEntry {
                paddr: at,
                size: m.len() as u64,
                cmdline_paddr: 0,
                reserved: 0,
            };
            1
        }
        _ => 0,
    };
    let mut page = [0u8; PAGE as usize];
    let si = xen_abi::pvh::write_start_info(
        &mut page,
        START_INFO_GPA,
        map,
        &modlist[..nr_modules],
        name.as_bytes(),
    )
    .map_err(BuildError::Layout)?;
    xen_abi::pvh::set_rsdp(&mut page, rsdp);
    copy(START_INFO_GPA, &page);
    Ok((plan.entry, si))
}
