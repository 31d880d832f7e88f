//! The PVH domain builder: creates a domain through a [`Transport`], gives it RAM, loads an ELF32 or ELF64
//! kernel with the Xen PVH entry note, places the initrd as module 0, writes `hvm_start_info` with the memory
//! map and command line, sets vCPU 0's entry state and the console/xenstore ring pages, then unpauses it.
//! The domain's shape ([`Layout`]: vCPUs, RAM extents, memory map) and the steps that create it
//! ([`create_domain`], [`setup_memory`], [`connect_rings`]) are shared with restoring a saved domain
//! (`crate::save`), which fills the memory from the save file instead of loading a kernel.
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

/// The ACPI tables' page of a PVH domain with `mem_bytes` of RAM: the third frame from the top.
fn acpi_gpa(mem_bytes: u64) -> u64 {
    mem_bytes - 3 * PAGE
}

/// The console ring's page, followed by the xenstore ring's: the last two frames of RAM.
fn rings_gpa(mem_bytes: u64) -> u64 {
    mem_bytes - 2 * PAGE
}

/// One range of guest RAM, populated from `first_gfn` with extents of `1 << order` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// The first frame (aligned to the extent size).
    pub first_gfn: u64,
    /// Frames in the range (a multiple of the extent size).
    pub frames: u64,
    /// The extent order (9 = 2 MiB superpages, 0 = single frames).
    pub order: u32,
}

/// A domain's shape in the hypervisor and its guest-physical layout: what building and restoring both
/// create, so a restored domain gets exactly the memory, extents and memory map of the one that was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The domain's UUID.
    pub uuid: [u8; 16],
    /// vCPUs.
    pub vcpus: u32,
    /// Memory limit in KiB.
    pub max_memkb: u64,
    /// The RAM, in the extents it is populated with.
    pub ram: Vec<RamRange>,
    /// The memory map the guest sees (start info and `XENMEM_memory_map`).
    pub memmap: Vec<HvmMemmapEntry>,
}

/// The highest extent order populate_physmap takes.
pub const MAX_ORDER: u32 = 18;

impl Layout {
    /// The layout of a PVH domain with `memory_mib` of RAM from frame 0 (2 MiB extents where they fit,
    /// single frames for the rest), the ACPI tables' page and the console and xenstore rings at its top.
    pub fn pvh(uuid: [u8; 16], vcpus: u32, memory_mib: u64, max_memory_mib: u64) -> Self {
        let mem_bytes = memory_mib << 20;
        let pages = mem_bytes / PAGE;
        let big = pages / SUPERPAGE * SUPERPAGE;
        let mut ram = Vec::new();
        if big > 0 {
            ram.push(RamRange {
                first_gfn: 0,
                frames: big,
                order: SUPERPAGE_ORDER,
            });
        }
        if pages > big {
            ram.push(RamRange {
                first_gfn: big,
                frames: pages - big,
                order: 0,
            });
        }
        let acpi_gpa = acpi_gpa(mem_bytes);
        let special = rings_gpa(mem_bytes);
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
        Self {
            uuid,
            vcpus,
            max_memkb: max_memory_mib * 1024,
            ram,
            memmap,
        }
    }

    /// Frames of RAM.
    pub fn ram_frames(&self) -> u64 {
        self.ram.iter().map(|r| r.frames).sum()
    }

    /// Whether frame `gfn` is RAM of this layout.
    pub fn is_ram(&self, gfn: u64) -> bool {
        self.ram
            .iter()
            .any(|r| gfn >= r.first_gfn && gfn - r.first_gfn < r.frames)
    }

    /// Checks a layout that came from outside (a save file): vCPUs, extents aligned and inside the memory
    /// limit, ranges apart, a memory map the hypervisor takes.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vcpus == 0 || self.vcpus > 128 {
            return bad(format!("{} vCPUs cannot be built", self.vcpus));
        }
        if self.ram.is_empty() {
            return bad("the domain has no RAM".into());
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for r in &self.ram {
            let extent = 1u64 << r.order.min(63);
            let end = r.first_gfn.checked_add(r.frames);
            if r.order > MAX_ORDER
                || r.frames == 0
                || r.first_gfn % extent != 0
                || r.frames % extent != 0
                || end.is_none_or(|e| e > 1 << 40)
            {
                return bad(format!("RAM range {r:?} cannot be populated"));
            }
            ranges.push((r.first_gfn, r.first_gfn + r.frames));
        }
        ranges.sort_unstable();
        if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
            return bad("RAM ranges overlap".into());
        }
        if self.ram_frames().saturating_mul(4) > self.max_memkb {
            return bad(format!(
                "{} KiB of RAM exceed the memory limit of {} KiB",
                self.ram_frames() * 4,
                self.max_memkb
            ));
        }
        if self.memmap.is_empty() || self.memmap.len() > memres::MAX_E820 {
            return bad(format!(
                "a memory map of {} entries cannot be set",
                self.memmap.len()
            ));
        }
        Ok(())
    }
}

/// `XEN_DOMCTL_createdomain` for a PVH domain of `layout` (HVM container with HAP, only the local APIC
/// emulated); returns its ID. It starts paused, without memory.
pub fn create_domain<T: Transport>(t: &mut T, layout: &Layout) -> Result<u16, Error> {
    let create = domctl::CreateDomain {
        handle: layout.uuid,
        flags: domctl::cdf::HVM | domctl::cdf::HAP,
        max_vcpus: layout.vcpus,
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
    Ok(d.domain)
}

/// `XEN_DOMCTL_destroydomain`, for a domain that could not be finished (errors are ignored: the caller
/// reports why it gave up).
pub fn destroy_quietly<T: Transport>(t: &mut T, domid: u16) {
    let mut d = XenDomctl::new(
        domctl::cmd::DESTROYDOMAIN,
        domid,
        &domctl::MaxVcpus::default(),
    );
    let _ = t.domctl(&mut d, None);
}

/// Gives a new domain the memory of `layout`: its limit, its RAM in the layout's extents, and the memory
/// map `XENMEM_memory_map` returns (as libxl sets it).
pub fn setup_memory<T: Transport>(t: &mut T, domid: u16, layout: &Layout) -> Result<(), Error> {
    let mut d = XenDomctl::new(
        domctl::cmd::MAX_MEM,
        domid,
        &domctl::MaxMem {
            max_memkb: layout.max_memkb,
        },
    );
    t.domctl(&mut d, None)?;
    for r in &layout.ram {
        let starts: Vec<u64> = (r.first_gfn..r.first_gfn + r.frames)
            .step_by(1 << r.order)
            .collect();
        for chunk in starts.chunks(POPULATE_BATCH) {
            t.populate_physmap_order(domid, chunk, r.order)?;
        }
    }
    let e820: Vec<xen_abi::xen::E820Entry> = layout
        .memmap
        .iter()
        .map(|m| xen_abi::xen::E820Entry {
            addr: m.addr,
            size: m.size,
            kind: m.kind,
        })
        .collect();
    t.set_memory_map(domid, &e820)
}

/// The console and xenstore rings' event channels: fresh ports in the guest that the control domain binds
/// to, advertised with the rings' frames in the HVM params (`xenstore_gfn` only when a xenstored serves
/// it). Returns (console port, xenstore port).
pub fn connect_rings<T: Transport>(
    t: &mut T,
    domid: u16,
    console_gfn: u64,
    xenstore_gfn: Option<u64>,
) -> Result<(u32, u32), Error> {
    let console_port = t.evtchn_alloc_unbound(domid, 0)?;
    let xenstore_port = t.evtchn_alloc_unbound(domid, 0)?;
    t.hvm_set_param(domid, memres::HVM_PARAM_CONSOLE_PFN, console_gfn)?;
    t.hvm_set_param(
        domid,
        memres::HVM_PARAM_CONSOLE_EVTCHN,
        u64::from(console_port),
    )?;
    if let Some(gfn) = xenstore_gfn {
        t.hvm_set_param(domid, memres::HVM_PARAM_STORE_PFN, gfn)?;
        t.hvm_set_param(
            domid,
            memres::HVM_PARAM_STORE_EVTCHN,
            u64::from(xenstore_port),
        )?;
    }
    Ok((console_port, xenstore_port))
}

/// `XEN_DOMCTL_unpausedomain`.
pub fn unpause<T: Transport>(t: &mut T, domid: u16) -> Result<(), Error> {
    let mut d = XenDomctl::new(
        domctl::cmd::UNPAUSEDOMAIN,
        domid,
        &domctl::MaxVcpus::default(),
    );
    t.domctl(&mut d, None)
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
    let entry = xen_abi::pvh::check_layout(&image, IMAGE_MIN_GPA, rings_gpa(mem_bytes))
        .map_err(|e| image_err("the kernel", e))?;
    let layout = Layout::pvh(spec.uuid, spec.vcpus, spec.memory_mib, spec.max_memory_mib);
    let domid = create_domain(t, &layout)?;
    match populate_and_load(t, domid, spec, &layout, &image, entry, mem_bytes) {
        Ok(b) => Ok(b),
        Err(e) => {
            destroy_quietly(t, domid);
            Err(e)
        }
    }
}

fn populate_and_load<T: Transport>(
    t: &mut T,
    domid: u16,
    spec: &BuildSpec,
    layout: &Layout,
    image: &ElfImage<'_>,
    entry: u64,
    mem_bytes: u64,
) -> Result<Built, Error> {
    setup_memory(t, domid, layout)?;

    let mut kernel_end = IMAGE_MIN_GPA;
    for seg in image.load_segments() {
        let seg = seg.map_err(|e| image_err("the kernel", e))?;
        let data = image
            .segment_data(&seg)
            .map_err(|e| image_err("the kernel", e))?;
        copy_to_guest(t, domid, seg.paddr, data, seg.memsz - seg.filesz)?;
        kernel_end = kernel_end.max(seg.paddr + seg.memsz);
    }

    let acpi_gpa = acpi_gpa(mem_bytes);
    let special = rings_gpa(mem_bytes);
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
    let mut page = vec![0u8; PAGE as usize];
    let si = xen_abi::pvh::write_start_info(
        &mut page,
        START_INFO_GPA,
        &layout.memmap,
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
    let (console_port, xenstore_port) =
        connect_rings(t, domid, console_gfn, spec.xenstore.then_some(xenstore_gfn))?;

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
        unpause(t, domid)?;
    }
    Ok(Built {
        domid,
        entry,
        ramdisk,
        console_gfn,
        xenstore_gfn,
        console_port,
        xenstore_port,
        memmap: layout.memmap.clone(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
