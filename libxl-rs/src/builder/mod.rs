//! The PVH domain builder: creates a domain through a [`Transport`], gives it RAM, loads an ELF32 or ELF64
//! kernel with the Xen PVH entry note, places the initrd as module 0, writes `hvm_start_info` with the memory
//! map and command line, sets vCPU 0's entry state and the console/xenstore ring pages, then unpauses it.
//!
//! Guest-physical layout (4 KiB frames):
//!
//! | range | use |
//! |---|---|
//! | `0x1000` | `hvm_start_info`, module list, memory map, command line |
//! | kernel `p_paddr` (at least 1 MiB) | kernel segments |
//! | next page after the kernel | initrd (module 0) |
//! | third frame from the top | ACPI tables: RSDP (in `hvm_start_info.rsdp_paddr`), XSDT, FADT, DSDT, MADT |
//! | last two frames of RAM | console ring, xenstore ring (reserved in the memory map) |

use xen_abi::domctl::{self, XenDomctl};
use xen_abi::elf::ElfImage;
use xen_abi::memres;
use xen_abi::plain::Plain;
use xen_abi::start_info::{memmap_type, HvmMemmapEntry, HvmModlistEntry};
use xen_abi::xen::{VcpuHvmContext, VcpuHvmX86_32, VCPU_HVM_MODE_32B};

use crate::transport::{Error, Transport};

const PAGE: u64 = 4096;
/// Guest-physical address of `hvm_start_info`.
pub const START_INFO_GPA: u64 = 0x1000;
/// Lowest address a kernel segment may load at.
pub const IMAGE_MIN_GPA: u64 = 0x10_0000;
/// Frames per `populate_physmap` call (fits one sandbox control frame).
const POPULATE_BATCH: usize = 2048;
/// Frames per foreign mapping while copying images.
const MAP_BATCH: u64 = 4096;
/// The order of a 2 MiB extent, and its frames.
const SUPERPAGE_ORDER: u32 = 9;
const SUPERPAGE: u64 = 1 << SUPERPAGE_ORDER;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The domain's UUID.
    pub uuid: [u8; 16],
    /// Boot memory in MiB.
    pub memory_mib: u64,
    /// Memory limit in MiB (at least `memory_mib`).
    pub max_memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// The kernel image (ELF with `XEN_ELFNOTE_PHYS32_ENTRY`).
    pub kernel: Vec<u8>,
    /// The initrd, loaded as module 0.
    pub ramdisk: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
    /// Leave the domain paused after building.
    pub paused: bool,
    /// A xenstored serves the domain's xenstore ring (the toolstack's daemon runs): advertise it in
    /// `HVM_PARAM_STORE_PFN` / `HVM_PARAM_STORE_EVTCHN`. A Linux guest told about a store that nobody serves
    /// waits for its replies forever while probing xenbus, so without one the parameters stay 0.
    pub xenstore: bool,
}

/// Where things went, for callers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The new domain.
    pub domid: u16,
    /// PVH entry point.
    pub entry: u64,
    /// Initrd placement (address, size).
    pub ramdisk: Option<(u64, u64)>,
    /// Console ring frame.
    pub console_gfn: u64,
    /// Xenstore ring frame.
    pub xenstore_gfn: u64,
    /// The guest's console event channel (unbound, for the control domain).
    pub console_port: u32,
    /// The guest's xenstore event channel.
    pub xenstore_port: u32,
    /// The memory map given to the guest.
    pub memmap: Vec<HvmMemmapEntry>,
}

/// The PVH entry state of vCPU 0 (the PVH boot ABI: 32-bit flat protected mode, paging off, `ebx` = start
/// info).
pub fn pvh_entry_context(entry: u64, start_info: u64) -> VcpuHvmContext {
    VcpuHvmContext {
        mode: VCPU_HVM_MODE_32B,
        pad: 0,
        x86_32: VcpuHvmX86_32 {
            eip: entry as u32,
            ebx: start_info as u32,
            eflags: 0x2,
            cr0: 0x11, // PE | ET
            cs_limit: 0xffff_ffff,
            ds_limit: 0xffff_ffff,
            ss_limit: 0xffff_ffff,
            es_limit: 0xffff_ffff,
            tr_limit: 0x67,
            cs_ar: 0xc9b,
            ds_ar: 0xc93,
            ss_ar: 0xc93,
            es_ar: 0xc93,
            tr_ar: 0x8b,
            ..VcpuHvmX86_32::default()
        },
    }
}

/// Copies `data` to guest-physical `gpa` of `domid` and zeroes the following `zero` bytes.
pub fn copy_to_guest<T: Transport>(
    t: &mut T,
    domid: u16,
    gpa: u64,
    data: &[u8],
    zero: u64,
) -> Result<(), Error> {
    let end = gpa + data.len() as u64 + zero;
    let mut frame = gpa / PAGE;
    while frame * PAGE < end {
        let n = MAP_BATCH.min((end - frame * PAGE).div_ceil(PAGE));
        let gfns: Vec<u64> = (frame..frame + n).collect();
        let mut m = t.map_foreign(domid, &gfns)?;
        let win_start = frame * PAGE;
        let win_end = win_start + n * PAGE;
        let lo = gpa.max(win_start);
        let hi = end.min(win_end);
        // The part of the window that takes data, then the part that is zeroed.
        let data_end = (gpa + data.len() as u64).clamp(lo, hi);
        let s0 = ((lo - gpa) as usize).min(data.len());
        let s1 = ((data_end - gpa) as usize).clamp(s0, data.len());
        let src = &data[s0..s1];
        let at = (lo - win_start) as usize;
        m[at..at + src.len()].copy_from_slice(src);
        m[(data_end - win_start) as usize..(hi - win_start) as usize].fill(0);
        frame += n;
    }
    Ok(())
}

fn image_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Image {
        path: what.to_string(),
        message: e.to_string(),
    }
}

/// Builds and (unless `spec.paused`) starts a PVH domain; on failure the half-built domain is destroyed.
pub fn build<T: Transport>(t: &mut T, spec: &BuildSpec) -> Result<Built, Error> {
    if spec.vcpus == 0 {
        return Err(Error::Config("a domain needs at least one vCPU".into()));
    }
    if spec.memory_mib < 2 || spec.max_memory_mib < spec.memory_mib {
        return Err(Error::Config(format!(
            "memory {} MiB / maxmem {} MiB is not usable",
            spec.memory_mib, spec.max_memory_mib
        )));
    }
    let image = ElfImage::parse(&spec.kernel).map_err(|e| image_err("the kernel", e))?;
    let mem_bytes = spec.memory_mib << 20;
    let special = mem_bytes - 2 * PAGE;
    let entry = xen_abi::pvh::check_layout(&image, IMAGE_MIN_GPA, special)
        .map_err(|e| image_err("the kernel", e))?;

    let create = domctl::CreateDomain {
        handle: spec.uuid,
        flags: domctl::cdf::HVM | domctl::cdf::HAP,
        max_vcpus: spec.vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        arch: domctl::ArchDomainConfig {
            emulation_flags: domctl::X86_EMU_LAPIC,
            misc_flags: 0,
        },
        ..domctl::CreateDomain::default()
    };
    let mut d = XenDomctl::new(domctl::cmd::CREATEDOMAIN, 0, &create);
    t.domctl(&mut d, None)?;
    let domid = d.domain;
    match populate_and_load(t, domid, spec, &image, entry, mem_bytes) {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut d = XenDomctl::new(
                domctl::cmd::DESTROYDOMAIN,
                domid,
                &domctl::MaxVcpus::default(),
            );
            let _ = t.domctl(&mut d, None);
            Err(e)
        }
    }
}

fn populate_and_load<T: Transport>(
    t: &mut T,
    domid: u16,
    spec: &BuildSpec,
    image: &ElfImage<'_>,
    entry: u64,
    mem_bytes: u64,
) -> Result<Built, Error> {
    let mut d = XenDomctl::new(
        domctl::cmd::MAX_MEM,
        domid,
        &domctl::MaxMem {
            max_memkb: spec.max_memory_mib * 1024,
        },
    );
    t.domctl(&mut d, None)?;
    // 2 MiB extents where they fit (as libxc populates with superpages), single frames for the rest.
    let pages = mem_bytes / PAGE;
    let big = pages / SUPERPAGE * SUPERPAGE;
    let extents: Vec<u64> = (0..big).step_by(SUPERPAGE as usize).collect();
    for chunk in extents.chunks(POPULATE_BATCH) {
        t.populate_physmap_order(domid, chunk, SUPERPAGE_ORDER)?;
    }
    let rest: Vec<u64> = (big..pages).collect();
    for chunk in rest.chunks(POPULATE_BATCH) {
        t.populate_physmap(domid, chunk)?;
    }

    let mut kernel_end = IMAGE_MIN_GPA;
    for seg in image.load_segments() {
        let seg = seg.map_err(|e| image_err("the kernel", e))?;
        let data = image
            .segment_data(&seg)
            .map_err(|e| image_err("the kernel", e))?;
        copy_to_guest(t, domid, seg.paddr, data, seg.memsz - seg.filesz)?;
        kernel_end = kernel_end.max(seg.paddr + seg.memsz);
    }

    // The ACPI tables' page, then the console and xenstore rings, at the top of RAM.
    let acpi_gpa = mem_bytes - 3 * PAGE;
    let special = mem_bytes - 2 * PAGE;
    let console_gfn = special / PAGE;
    let xenstore_gfn = console_gfn + 1;
    let mut modules = Vec::new();
    let mut ramdisk = None;
    if let Some(rd) = &spec.ramdisk {
        let at = kernel_end.next_multiple_of(PAGE);
        let size = rd.len() as u64;
        if at + size > acpi_gpa {
            return Err(Error::Config(format!(
                "the ramdisk ({size} bytes at {at:#x}) does not fit in {} MiB of memory",
                spec.memory_mib
            )));
        }
        copy_to_guest(t, domid, at, rd, 0)?;
        modules.push(HvmModlistEntry {
            paddr: at,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        });
        ramdisk = Some((at, size));
    }
    let memmap = vec![
        HvmMemmapEntry {
            addr: 0,
            size: acpi_gpa,
            kind: memmap_type::RAM,
            reserved: 0,
        },
        HvmMemmapEntry {
            addr: acpi_gpa,
            size: PAGE,
            kind: memmap_type::ACPI,
            reserved: 0,
        },
        HvmMemmapEntry {
            addr: special,
            size: 2 * PAGE,
            kind: memmap_type::RESERVED,
            reserved: 0,
        },
    ];
    let mut page = vec![0u8; PAGE as usize];
    let si = xen_abi::pvh::write_start_info(
        &mut page,
        START_INFO_GPA,
        &memmap,
        &modules,
        spec.cmdline.as_bytes(),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    // ACPI tables (MADT, hardware-reduced FADT with the sleep and reset registers), as libxl gives PVH guests.
    let mut acpi = vec![0u8; PAGE as usize];
    let rsdp = xen_abi::acpi::build(&mut acpi, acpi_gpa, spec.vcpus as usize)
        .map_err(|e| Error::Config(e.to_string()))?;
    copy_to_guest(t, domid, acpi_gpa, &acpi, 0)?;
    xen_abi::pvh::set_rsdp(&mut page, rsdp);
    copy_to_guest(t, domid, START_INFO_GPA, &page, 0)?;
    // Empty rings.
    copy_to_guest(t, domid, special, &[], 2 * PAGE)?;
    // The same map for XENMEM_memory_map, as libxl sets it.
    let e820: Vec<xen_abi::xen::E820Entry> = memmap
        .iter()
        .map(|m| xen_abi::xen::E820Entry {
            addr: m.addr,
            size: m.size,
            kind: m.kind,
        })
        .collect();
    t.set_memory_map(domid, &e820)?;
    // The rings' event channels: ports in the guest that the control domain binds to.
    let console_port = t.evtchn_alloc_unbound(domid, 0)?;
    let xenstore_port = t.evtchn_alloc_unbound(domid, 0)?;
    t.hvm_set_param(domid, memres::HVM_PARAM_CONSOLE_PFN, console_gfn)?;
    t.hvm_set_param(
        domid,
        memres::HVM_PARAM_CONSOLE_EVTCHN,
        u64::from(console_port),
    )?;
    if spec.xenstore {
        t.hvm_set_param(domid, memres::HVM_PARAM_STORE_PFN, xenstore_gfn)?;
        t.hvm_set_param(
            domid,
            memres::HVM_PARAM_STORE_EVTCHN,
            u64::from(xenstore_port),
        )?;
    }

    let mut ctx = pvh_entry_context(entry, si).as_bytes().to_vec();
    let mut d = XenDomctl::new(
        domctl::cmd::SETVCPUCONTEXT,
        domid,
        &domctl::VcpuContext {
            vcpu: 0,
            pad: 0,
            ctxt: 0,
        },
    );
    t.domctl(&mut d, Some((domctl::VCPUCONTEXT_CTXT_OFFSET, &mut ctx)))?;
    if !spec.paused {
        let mut d = XenDomctl::new(
            domctl::cmd::UNPAUSEDOMAIN,
            domid,
            &domctl::MaxVcpus::default(),
        );
        d.set_payload(&domctl::MaxVcpus::default());
        t.domctl(&mut d, None)?;
    }
    Ok(Built {
        domid,
        entry,
        ramdisk,
        console_gfn,
        xenstore_gfn,
        console_port,
        xenstore_port,
        memmap,
    })
}

#[cfg(test)]
pub(crate) mod tests;
