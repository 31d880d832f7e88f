//! Domain XML -> libxl domain configuration, as libvirt's libxl driver builds it before `libxl_domain_create_new`
//! (`libxlBuildDomainConfig` in `src/libxl/libxl_conf.c`), including the defaults libvirt's post-parse step adds
//! for Xen guests (an implicit cirrus video card with 8 MiB for HVM guests that have graphics, a serial port
//! for an HVM console).
//!
//! ```
//! let xml = "<domain type='xen'><name>g</name><memory>524288</memory><vcpu>2</vcpu>\
//!            <os><type>hvm</type></os><devices/></domain>";
//! let cfg = xen_conv::libxl::domain_config_from_xml(xml).unwrap();
//! assert_eq!(cfg.b_info.max_vcpus, 2);
//! assert_eq!(cfg.b_info.max_memkb, 524288);
//! ```

use domain_xml::domain::{Chardev, Disk, Domain, Graphics, Interface, LifecycleAction, OsType};
use libxl_rs::config::{
    ActionOnShutdown, BiosType, Bitmap, BuildType, ChannelKind, CpuidLeaf, Defbool, DeviceChannel,
    DeviceDisk, DeviceModelVersion, DeviceNic, DevicePci, DeviceVfb, DeviceVkb, DiskBackend,
    DiskFormat, DomainConfig, DomainType, HvmInfo, Mac, NicType, TscMode, Uuid, VgaInterfaceType,
    VncInfo, VnodeInfo,
};

use crate::Error;

/// libvirt's `LIBXL_BOOTLOADER_PATH` default for PV guests without a kernel or bootloader.
pub const DEFAULT_BOOTLOADER: &str = "pygrub";

/// The video RAM libvirt's libxl driver gives a cirrus card it adds implicitly, in KiB.
const DEFAULT_VRAM_KIB: u64 = 8192;

/// Options for libxl versions whose configuration differs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The libxl lacks `b_info.nested_hvm` (`LIBXL_HAVE_BUILDINFO_NESTED_HVM`): nested virtualization goes in
    /// the deprecated `b_info.u.hvm.nested_hvm`.
    pub legacy_nested_hvm: bool,
}

fn unsupported(m: impl Into<String>) -> Error {
    Error::Unsupported(m.into())
}

/// Parses domain XML and builds the libxl domain configuration for it.
/// libvirt's libxl post-parse defaults ([`crate::defaults::apply_libxl_defaults`]) are applied first, as
/// libvirt applies them when it parses a definition.
pub fn domain_config_from_xml(xml: &str) -> Result<DomainConfig, Error> {
    domain_config_from_xml_with(xml, Options::default())
}

/// [`domain_config_from_xml`] for a libxl with the given [`Options`].
pub fn domain_config_from_xml_with(xml: &str, opts: Options) -> Result<DomainConfig, Error> {
    let mut d = Domain::parse(xml)?;
    crate::defaults::apply_libxl_defaults(&mut d);
    domain_config_from_domain(&d, opts)
}

/// libxl's estimate of the shadow memory a guest needs (`libxl_get_required_shadow_memory`): 256 pages per
/// vCPU plus 2 pages per MiB of RAM, in KiB (4 KiB pages).
pub fn required_shadow_memkb(max_memkb: u64, vcpus: u32) -> u64 {
    4u64.saturating_mul(
        256u64
            .saturating_mul(u64::from(vcpus))
            .saturating_add(2u64.saturating_mul(max_memkb / 1024)),
    )
}

/// Builds the libxl domain configuration for a parsed domain.
pub fn domain_config_from_domain(d: &Domain, opts: Options) -> Result<DomainConfig, Error> {
    if d.domain_type != "xen" {
        return Err(unsupported(format!(
            "domain type '{}' is not supported by libxl (expected 'xen')",
            d.domain_type
        )));
    }
    let t = match d.os.os_type {
        OsType::Hvm => DomainType::Hvm,
        OsType::Xen | OsType::Linux => DomainType::Pv,
        OsType::Xenpvh => DomainType::Pvh,
    };
    let hvm = t == DomainType::Hvm;
    let mut c = DomainConfig::new(t);

    // c_info
    if let Some(f) = &d.features {
        if hvm {
            if let Some(h) = f.hap {
                c.c_info.hap = Defbool::set(h);
            }
        }
    }
    c.c_info.name = Some(d.name.clone());
    if let Some(u) = &d.uuid {
        c.c_info.uuid = Uuid::parse(u).ok_or_else(|| unsupported(format!("invalid UUID '{u}'")))?;
    }

    build_info(d, &mut c, hvm, opts)?;

    for (i, disk) in d.devices.disks.iter().enumerate() {
        c.disks
            .push(make_disk(disk).map_err(|m| unsupported(format!("disk {i}: {m}")))?);
    }

    let mut devid = 0i32;
    for (i, n) in d.devices.interfaces.iter().enumerate() {
        if n.net_type == "hostdev" {
            c.pcidevs.push(pci_from_address(
                n.source_address.as_ref().map(|a| a.fields.as_slice()),
                false,
                &format!("interface {i}"),
            )?);
            continue;
        }
        c.nics
            .push(make_nic(n, hvm, devid).map_err(|m| unsupported(format!("interface {i}: {m}")))?);
        devid += 1;
    }

    for (i, h) in d.devices.hostdevs.iter().enumerate() {
        if h.hostdev_type != "pci" {
            return Err(unsupported(format!(
                "hostdev {i}: type '{}' is not supported by libxl",
                h.hostdev_type
            )));
        }
        c.pcidevs.push(pci_from_address(
            h.source_address.as_ref().map(|a| a.fields.as_slice()),
            h.write_filtering == Some(false),
            &format!("hostdev {i}"),
        )?);
    }

    make_vfbs(d, &mut c, hvm)?;

    for (i, ch) in d.devices.channels.iter().enumerate() {
        c.channels
            .push(make_channel(ch).map_err(|m| unsupported(format!("channel {i}: {m}")))?);
    }

    c.on_poweroff = action(d.on_poweroff);
    c.on_reboot = action(d.on_reboot);
    c.on_crash = action(d.on_crash);
    Ok(c)
}

fn action(a: LifecycleAction) -> ActionOnShutdown {
    match a {
        LifecycleAction::Destroy => ActionOnShutdown::Destroy,
        LifecycleAction::Restart => ActionOnShutdown::Restart,
        LifecycleAction::RenameRestart => ActionOnShutdown::RestartRename,
        LifecycleAction::Preserve => ActionOnShutdown::Preserve,
        LifecycleAction::CoredumpDestroy => ActionOnShutdown::CoredumpDestroy,
        LifecycleAction::CoredumpRestart => ActionOnShutdown::CoredumpRestart,
    }
}

/// Parses a libvirt cpuset (`0-3,^2,8`) into a bitmap.
fn parse_cpuset(s: &str) -> Result<Bitmap, String> {
    let mut set = std::collections::BTreeSet::new();
    let mut excluded = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (neg, p) = match part.strip_prefix('^') {
            Some(p) => (true, p),
            None => (false, part),
        };
        let num = |x: &str| -> Result<u32, String> {
            x.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n < 4096)
                .ok_or_else(|| format!("invalid cpuset '{s}'"))
        };
        let (a, b) = match p.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(p)?, num(p)?),
        };
        if a > b {
            return Err(format!("invalid cpuset '{s}'"));
        }
        for n in a..=b {
            if neg {
                excluded.push(n);
            } else {
                set.insert(n);
            }
        }
    }
    for n in excluded {
        set.remove(&n);
    }
    Ok(Bitmap(set))
}

fn build_info(d: &Domain, c: &mut DomainConfig, hvm: bool, opts: Options) -> Result<(), Error> {
    let b = &mut c.b_info;
    let max = d.vcpu.count;
    let cur = d.vcpu.current.unwrap_or(max);
    b.max_vcpus = i32::try_from(max).map_err(|_| unsupported("too many vCPUs"))?;
    b.avail_vcpus = Bitmap::first(cur.min(max));
    if let Some(cs) = &d.vcpu.cpuset {
        b.cpumap = parse_cpuset(cs).map_err(unsupported)?;
    }
    if let Some(pins) = d.cputune.as_ref().map(|t| &t.vcpupin) {
        if !pins.is_empty() {
            let mut aff = vec![Bitmap::default(); max as usize];
            for (v, set) in pins {
                let slot = aff.get_mut(*v as usize).ok_or_else(|| {
                    unsupported(format!("vcpupin for vCPU {v} beyond {max} vCPUs"))
                })?;
                *slot = parse_cpuset(set).map_err(unsupported)?;
            }
            b.vcpu_hard_affinity = aff;
        }
    }

    // Clock.
    match d.clock.offset.as_str() {
        "utc" => {}
        "localtime" => b.localtime = Defbool::True,
        "variable" => {
            if d.clock.basis.as_deref() == Some("localtime") {
                b.localtime = Defbool::True;
            }
        }
        other => {
            return Err(unsupported(format!(
                "unsupported clock offset '{other}' for libxl"
            )))
        }
    }
    if let Some(adj) = &d.clock.adjustment {
        if d.clock.offset != "utc" {
            let secs: i64 = adj
                .parse()
                .map_err(|_| unsupported(format!("invalid clock adjustment '{adj}'")))?;
            // libxl takes the offset as uint32 and the guest's RTC reads it back as signed: a negative
            // offset is kept modulo 2^32, as libvirt assigns it.
            b.rtc_timeoffset = (secs as i128).rem_euclid(1 << 32) as u32;
        }
    }
    for t in &d.clock.timers {
        match t.name.as_str() {
            "tsc" => {
                b.tsc_mode = match t.mode.as_deref() {
                    Some("native") => TscMode::Native,
                    Some("paravirt") => TscMode::NativeParavirt,
                    Some("emulate") => TscMode::AlwaysEmulate,
                    _ => TscMode::Default,
                }
            }
            "hpet" if hvm => {}
            other => {
                return Err(unsupported(format!(
                    "unsupported timer type (name) '{other}'"
                )))
            }
        }
    }

    if let Some(shares) = d.cputune.as_ref().and_then(|t| t.shares) {
        b.sched_params.weight = i32::try_from(shares)
            .map_err(|_| unsupported(format!("cpu shares {shares} out of range")))?;
    }
    b.max_memkb = d.memory_kib;
    b.target_memkb = d.current_memory_kib;
    b.shadow_memkb = required_shadow_memkb(b.max_memkb, max);

    if let Some(gf) = d
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == "xenbus")
        .find_map(|c| c.max_grant_frames)
    {
        b.max_grant_frames = gf;
    }

    // vNUMA.
    if let Some(cpu) = &d.cpu {
        for (i, cell) in cpu.numa.iter().enumerate() {
            let mut node = VnodeInfo {
                memkb: cell.memory_kib,
                pnode: u32::try_from(i).unwrap_or(u32::MAX),
                vcpus: parse_cpuset(&cell.cpus).map_err(unsupported)?,
                ..VnodeInfo::default()
            };
            let mut dist = cell.distances.clone();
            dist.sort_by_key(|(id, _)| *id);
            node.distances = dist.into_iter().map(|(_, v)| v).collect();
            b.vnuma_nodes.push(node);
        }
    }

    // Nested virtualization and CPUID.
    if let Some(cpu) = &d.cpu {
        if cpu.mode.as_deref() == Some("host-passthrough") {
            let mut hw_virt = true;
            for f in &cpu.features {
                let pol = f.policy.as_deref().unwrap_or("require");
                if matches!(f.name.as_str(), "vmx" | "svm") {
                    if matches!(pol, "disable" | "forbid") {
                        hw_virt = false;
                    }
                    continue;
                }
                let val = match pol {
                    "force" | "require" => true,
                    "disable" | "forbid" => false,
                    _ => continue,
                };
                set_cpuid(&mut b.cpuid.cpuid, &f.name, val)?;
            }
            if hvm {
                let nested = Defbool::set(hw_virt);
                match (&mut b.type_, opts.legacy_nested_hvm) {
                    (BuildType::Hvm(h), true) => h.nested_hvm = nested,
                    _ => b.nested_hvm = nested,
                }
            }
        }
    }

    let f = d.features.clone().unwrap_or_default();
    if hvm {
        if f.apic == Some(true) {
            b.apic = Defbool::True;
        } else {
            b.apic = Defbool::False;
        }
        b.acpi = Defbool::set(f.acpi == Some(true));
        b.kernel.clone_from(&d.os.kernel);
        b.cmdline.clone_from(&d.os.cmdline);
        b.ramdisk.clone_from(&d.os.initrd);
        if let Some(em) = &d.devices.emulator {
            b.device_model = Some(em.clone());
            b.device_model_version = DeviceModelVersion::QemuXen;
        }
        let BuildType::Hvm(h) = &mut b.type_ else {
            return Err(unsupported("internal: HVM build info expected"));
        };
        hvm_info(d, h, &f)?;
        make_video(d, h, &mut b.video_memkb)?;
    } else {
        if let Some(true) = f.acpi {
            b.acpi = Defbool::True;
        }
        b.kernel.clone_from(&d.os.kernel);
        b.cmdline.clone_from(&d.os.cmdline);
        b.ramdisk.clone_from(&d.os.initrd);
        if let BuildType::Pv(pv) = &mut b.type_ {
            if let Some(bl) = &d.bootloader {
                pv.bootloader = Some(bl.clone());
            } else if d.os.kernel.is_none() {
                pv.bootloader = Some(DEFAULT_BOOTLOADER.to_string());
            }
            if let Some(args) = &d.bootloader_args {
                pv.bootloader_args = args.split_whitespace().map(str::to_string).collect();
            }
            if f.xen_e820_host == Some(true) {
                pv.e820_host = Defbool::True;
            }
        }
    }
    Ok(())
}

fn hvm_info(d: &Domain, h: &mut HvmInfo, f: &domain_xml::domain::Features) -> Result<(), Error> {
    h.pae = Defbool::set(f.pae == Some(true));
    if f.viridian == Some(true) {
        h.viridian = Defbool::True;
    }
    if d.clock
        .timers
        .iter()
        .any(|t| t.name == "hpet" && t.present == Some(true))
    {
        h.hpet = Defbool::True;
    }
    if let Some(s) = d.devices.sounds.first() {
        h.soundhw = Some(s.model.clone());
    }
    let boot: String = if d.os.boot.is_empty() {
        "c".into()
    } else {
        d.os.boot
            .iter()
            .map(|b| match b.as_str() {
                "fd" => 'a',
                "cdrom" => 'd',
                "network" => 'n',
                _ => 'c',
            })
            .collect()
    };
    h.boot = Some(boot);
    let efi = d.os.firmware.as_deref() == Some("efi")
        || d.os
            .loader
            .as_ref()
            .is_some_and(|l| l.loader_type.as_deref() == Some("pflash"));
    if efi {
        h.bios = BiosType::Ovmf;
        if let Some(p) = d.os.loader.as_ref().and_then(|l| l.path.clone()) {
            h.system_firmware = Some(p);
        }
    }

    // Serial ports; an HVM console with no serial is the first serial port (libvirt's post-parse).
    let mut serials: Vec<&Chardev> = d.devices.serials.iter().collect();
    if serials.is_empty() {
        if let Some(con) = d.devices.consoles.first() {
            if matches!(con.target_type.as_deref(), None | Some("serial")) {
                serials.push(con);
            }
        }
    }
    match serials.len() {
        0 => {}
        1 => h.serial = Some(chrdev_str(serials[0]).map_err(unsupported)?),
        _ => {
            h.serial_list = serials
                .iter()
                .map(|s| chrdev_str(s))
                .collect::<Result<_, _>>()
                .map_err(unsupported)?
        }
    }
    if !d.devices.parallels.is_empty() {
        return Err(unsupported("Parallel devices are not supported by libxl"));
    }

    // VNC and SDL stay off until a <graphics> enables them.
    h.vnc.enable = Defbool::False;
    h.sdl.enable = Defbool::False;

    for i in d
        .devices
        .inputs
        .iter()
        .filter(|i| i.bus.as_deref() == Some("usb"))
    {
        let dev = match i.input_type.as_str() {
            "mouse" => "mouse",
            "tablet" => "tablet",
            "keyboard" => "keyboard",
            other => return Err(unsupported(format!("Unknown input device type '{other}'"))),
        };
        h.usbdevice_list.push(dev.to_string());
    }
    Ok(())
}

fn make_video(d: &Domain, h: &mut HvmInfo, video_memkb: &mut u64) -> Result<(), Error> {
    let implicit;
    let video = match d.devices.videos.first() {
        Some(v) => Some((v.model_type.as_str(), v.vram)),
        None if !d.devices.graphics.is_empty() => {
            implicit = ("cirrus", Some(DEFAULT_VRAM_KIB));
            Some(implicit)
        }
        None => None,
    };
    match video {
        None | Some(("none", _)) => {
            h.nographic = Defbool::True;
            h.vga.kind = VgaInterfaceType::None;
        }
        Some((model, vram)) => {
            h.vga.kind = match model {
                "cirrus" | "default" => VgaInterfaceType::Cirrus,
                "vga" => VgaInterfaceType::Std,
                "qxl" => VgaInterfaceType::Qxl,
                other => {
                    return Err(unsupported(format!(
                        "video type '{other}' is not supported by libxl"
                    )))
                }
            };
            let vram = vram.unwrap_or(DEFAULT_VRAM_KIB);
            // libxl needs at least 8 MiB for cirrus and 16 MiB for std VGA with qemu-xen.
            let min = if h.vga.kind == VgaInterfaceType::Cirrus {
                8192
            } else {
                16384
            };
            *video_memkb = vram.max(min);
        }
    }
    Ok(())
}

fn chrdev_str(ch: &Chardev) -> Result<String, String> {
    let src = ch.sources.first();
    let path = || {
        src.and_then(|s| s.path.clone())
            .ok_or_else(|| format!("chardev '{}' needs a source path", ch.chr_type))
    };
    Ok(match ch.chr_type.as_str() {
        "null" | "stdio" | "vc" | "pty" => ch.chr_type.clone(),
        "file" | "pipe" => format!("{}:{}", ch.chr_type, path()?),
        "dev" => path()?,
        "tcp" => {
            let s = src.ok_or("tcp chardev needs a source")?;
            let prefix = if ch.protocol.as_deref() == Some("telnet") {
                "telnet"
            } else {
                "tcp"
            };
            format!(
                "{prefix}:{}:{}{}",
                s.host.as_deref().unwrap_or(""),
                s.service.as_deref().unwrap_or(""),
                if s.mode.as_deref() == Some("bind") {
                    ",server,nowait"
                } else {
                    ""
                }
            )
        }
        "udp" => {
            let connect = ch
                .sources
                .iter()
                .find(|s| s.mode.as_deref() != Some("bind"));
            let bind = ch
                .sources
                .iter()
                .find(|s| s.mode.as_deref() == Some("bind"));
            format!(
                "udp:{}:{}@{}:{}",
                connect.and_then(|s| s.host.as_deref()).unwrap_or(""),
                connect.and_then(|s| s.service.as_deref()).unwrap_or(""),
                bind.and_then(|s| s.host.as_deref()).unwrap_or(""),
                bind.and_then(|s| s.service.as_deref()).unwrap_or("0"),
            )
        }
        "unix" => {
            let listen = src.and_then(|s| s.mode.as_deref()) == Some("bind");
            format!(
                "unix:{}{}",
                path()?,
                if listen { ",server,nowait" } else { "" }
            )
        }
        other => return Err(format!("unsupported chardev '{other}'")),
    })
}

fn make_disk(disk: &Disk) -> Result<DeviceDisk, String> {
    let mut x = DeviceDisk {
        pdev_path: disk.source.clone(),
        vdev: Some(disk.target_dev.clone()),
        ..DeviceDisk::default()
    };
    if disk.disk_type == "network" {
        return Err("network disks are not supported by this libxl translation".into());
    }
    let fmt = match disk.driver_type.as_deref() {
        None | Some("raw") => DiskFormat::Raw,
        Some("qcow") => DiskFormat::Qcow,
        Some("qcow2") => DiskFormat::Qcow2,
        Some("vhd") => DiskFormat::Vhd,
        Some("qed") => DiskFormat::Qed,
        Some(o) => return Err(format!("libxenlight does not support disk format {o}")),
    };
    match disk.driver_name.as_deref() {
        Some("tap") | Some("tap2") | Some("qemu") | None => {
            x.format = fmt;
            x.backend = DiskBackend::Qdisk;
        }
        Some("file") => {
            x.format = fmt;
            x.backend = DiskBackend::Qdisk;
        }
        Some("phy") => {
            if fmt != DiskFormat::Raw {
                return Err(
                    "libxenlight does not support non-raw formats with the phy driver".into(),
                );
            }
            x.format = DiskFormat::Raw;
            x.backend = DiskBackend::Phy;
        }
        Some(o) => return Err(format!("libxenlight does not support disk driver {o}")),
    }
    if disk.source.is_none() && disk.device == "cdrom" {
        x.format = DiskFormat::Empty;
    }
    x.removable = 1;
    let readonly = disk.readonly || disk.device == "cdrom";
    x.readwrite = i32::from(!readonly);
    x.is_cdrom = i32::from(disk.device == "cdrom");
    if x.readwrite != 0 {
        match disk.driver_discard.as_deref() {
            Some("unmap") => x.discard_enable = Defbool::True,
            Some("ignore") => x.discard_enable = Defbool::False,
            _ => {}
        }
    }
    Ok(x)
}

fn make_nic(n: &Interface, hvm: bool, devid: i32) -> Result<DeviceNic, String> {
    let mut x = DeviceNic {
        devid,
        ..DeviceNic::default()
    };
    if let Some(m) = &n.mac {
        x.mac = Mac::parse(m).ok_or_else(|| format!("invalid MAC address '{m}'"))?;
    }
    match (hvm, n.model.as_deref()) {
        (true, Some("netfront")) => {
            x.model = Some("netfront".into());
            x.nictype = NicType::Vif;
        }
        (true, Some(m)) => {
            x.model = Some(m.to_string());
            x.nictype = NicType::VifIoemu;
        }
        (true, None) => x.nictype = NicType::VifIoemu,
        (false, _) => x.nictype = NicType::Vif,
    }
    x.ifname.clone_from(&n.target_dev);
    match n.net_type.as_str() {
        "bridge" => x.bridge.clone_from(&n.source),
        "ethernet" => {}
        "network" => {
            return Err(
                "interfaces of type 'network' must be resolved to their bridge before translation"
                    .into(),
            )
        }
        other => return Err(format!("unsupported interface type '{other}'")),
    }
    x.script.clone_from(&n.script);
    if !n.ips.is_empty() {
        x.ip = Some(
            n.ips
                .iter()
                .map(|i| i.address.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if let Some(mtu) = n.mtu {
        x.mtu = i32::try_from(mtu).map_err(|_| format!("MTU {mtu} out of range"))?;
    }
    if let Some(avg) = n.bandwidth_outbound.as_ref().and_then(|b| b.average) {
        // libvirt's average is in KiB/s; libxl takes bytes per interval (50 ms, xl's default).
        let bytes_per_sec = avg
            .checked_mul(1024)
            .ok_or_else(|| format!("bandwidth {avg} out of range"))?;
        x.rate_interval_usecs = 50_000;
        x.rate_bytes_per_interval = bytes_per_sec / 20;
    }
    Ok(x)
}

fn pci_from_address(
    fields: Option<&[(&'static str, u64)]>,
    permissive: bool,
    what: &str,
) -> Result<DevicePci, Error> {
    let fields =
        fields.ok_or_else(|| unsupported(format!("{what}: PCI source address missing")))?;
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
    let narrow = |k: &str, max: u64| {
        let v = get(k);
        if v > max {
            Err(unsupported(format!("{what}: PCI {k} {v:#x} out of range")))
        } else {
            Ok(v)
        }
    };
    Ok(DevicePci {
        domain: i32::try_from(narrow("domain", 0xffff)?).unwrap_or(0),
        bus: u8::try_from(narrow("bus", 0xff)?).unwrap_or(0),
        dev: u8::try_from(narrow("slot", 0x1f)?).unwrap_or(0),
        func: u8::try_from(narrow("function", 7)?).unwrap_or(0),
        permissive,
        ..DevicePci::default()
    })
}

fn vnc_from_graphics(g: &Graphics) -> Result<VncInfo, Error> {
    let mut v = VncInfo {
        enable: Defbool::True,
        findunused: Defbool::False,
        ..VncInfo::default()
    };
    let listen = g.listen.clone().or_else(|| {
        g.listens
            .iter()
            .find(|l| l.listen_type == "address")
            .and_then(|l| l.address.clone())
    });
    v.listen = listen;
    v.passwd.clone_from(&g.passwd);
    if g.autoport != Some(true) {
        if let Some(p) = g.port.filter(|p| *p >= 5900) {
            v.display = p - 5900;
        }
    }
    Ok(v)
}

fn make_vfbs(d: &Domain, c: &mut DomainConfig, hvm: bool) -> Result<(), Error> {
    let mut vnc_seen = false;
    let mut sdl_seen = false;
    for g in &d.devices.graphics {
        let mut vfb = DeviceVfb::default();
        match g.graphics_type.as_str() {
            "vnc" => {
                if vnc_seen {
                    return Err(unsupported("libxl supports only one VNC display"));
                }
                vnc_seen = true;
                vfb.vnc = vnc_from_graphics(g)?;
                vfb.sdl.enable = Defbool::False;
                vfb.keymap.clone_from(&g.keymap);
            }
            "sdl" => {
                if sdl_seen {
                    return Err(unsupported("libxl supports only one SDL display"));
                }
                sdl_seen = true;
                vfb.sdl.enable = Defbool::True;
                vfb.sdl.display.clone_from(&g.display);
                vfb.sdl.xauthority.clone_from(&g.xauth);
                vfb.vnc.enable = Defbool::False;
            }
            "spice" if hvm => {
                let BuildType::Hvm(h) = &mut c.b_info.type_ else {
                    continue;
                };
                h.spice.enable = Defbool::True;
                h.spice.port = g.port.filter(|p| *p > 0).unwrap_or(0);
                h.spice.tls_port = g.tls_port.filter(|p| *p > 0).unwrap_or(0);
                h.spice.host = g.listen.clone();
                h.spice.passwd.clone_from(&g.passwd);
                h.spice.disable_ticketing = Defbool::set(g.passwd.is_none());
                h.spice.agent_mouse = Defbool::set(g.mouse_mode.as_deref() == Some("client"));
                if let Some(cp) = g.clipboard_copypaste {
                    h.spice.vdagent = Defbool::True;
                    h.spice.clipboard_sharing = Defbool::set(cp);
                }
                continue;
            }
            other => {
                return Err(unsupported(format!(
                    "graphics type '{other}' is not supported by libxl"
                )))
            }
        }
        c.vfbs.push(vfb);
        c.vkbs.push(DeviceVkb::default());
    }
    if hvm {
        if let (Some(vfb), BuildType::Hvm(h)) = (c.vfbs.first(), &mut c.b_info.type_) {
            h.vnc = vfb.vnc.clone();
            h.sdl = vfb.sdl.clone();
            h.keymap.clone_from(&vfb.keymap);
        }
    }
    Ok(())
}

fn make_channel(ch: &Chardev) -> Result<DeviceChannel, String> {
    if ch.target_type.as_deref() != Some("xen") {
        return Err(format!(
            "channel target type '{}' is not supported by libxl",
            ch.target_type.as_deref().unwrap_or("")
        ));
    }
    let connection = match ch.chr_type.as_str() {
        "pty" => ChannelKind::Pty,
        "unix" => ChannelKind::Socket {
            path: Some(
                ch.sources
                    .first()
                    .and_then(|s| s.path.clone())
                    .ok_or("a unix channel needs a source path")?,
            ),
        },
        other => {
            return Err(format!(
                "channel source type '{other}' is not supported by libxl"
            ))
        }
    };
    Ok(DeviceChannel {
        name: ch.target_name.clone(),
        connection,
        ..DeviceChannel::default()
    })
}

/// CPUID feature bits by libvirt feature name: (leaf, subleaf, register index eax=0..edx=3, bit).
const CPUID_BITS: &[(&str, u32, Option<u32>, usize, u32)] = &[
    // Leaf 1 EDX.
    ("fpu", 1, None, 3, 0),
    ("vme", 1, None, 3, 1),
    ("de", 1, None, 3, 2),
    ("pse", 1, None, 3, 3),
    ("tsc", 1, None, 3, 4),
    ("msr", 1, None, 3, 5),
    ("pae", 1, None, 3, 6),
    ("mce", 1, None, 3, 7),
    ("cx8", 1, None, 3, 8),
    ("apic", 1, None, 3, 9),
    ("sep", 1, None, 3, 11),
    ("mtrr", 1, None, 3, 12),
    ("pge", 1, None, 3, 13),
    ("mca", 1, None, 3, 14),
    ("cmov", 1, None, 3, 15),
    ("pat", 1, None, 3, 16),
    ("pse36", 1, None, 3, 17),
    ("pn", 1, None, 3, 18),
    ("clflush", 1, None, 3, 19),
    ("ds", 1, None, 3, 21),
    ("acpi", 1, None, 3, 22),
    ("mmx", 1, None, 3, 23),
    ("fxsr", 1, None, 3, 24),
    ("sse", 1, None, 3, 25),
    ("sse2", 1, None, 3, 26),
    ("ss", 1, None, 3, 27),
    ("ht", 1, None, 3, 28),
    ("tm", 1, None, 3, 29),
    ("ia64", 1, None, 3, 30),
    ("pbe", 1, None, 3, 31),
    // Leaf 1 ECX.
    ("pni", 1, None, 2, 0),
    ("pclmuldq", 1, None, 2, 1),
    ("dtes64", 1, None, 2, 2),
    ("monitor", 1, None, 2, 3),
    ("ds_cpl", 1, None, 2, 4),
    ("smx", 1, None, 2, 6),
    ("est", 1, None, 2, 7),
    ("tm2", 1, None, 2, 8),
    ("ssse3", 1, None, 2, 9),
    ("cid", 1, None, 2, 10),
    ("fma", 1, None, 2, 12),
    ("cx16", 1, None, 2, 13),
    ("xtpr", 1, None, 2, 14),
    ("pdcm", 1, None, 2, 15),
    ("pcid", 1, None, 2, 17),
    ("dca", 1, None, 2, 18),
    ("sse4.1", 1, None, 2, 19),
    ("sse4.2", 1, None, 2, 20),
    ("x2apic", 1, None, 2, 21),
    ("movbe", 1, None, 2, 22),
    ("popcnt", 1, None, 2, 23),
    ("tsc-deadline", 1, None, 2, 24),
    ("aes", 1, None, 2, 25),
    ("xsave", 1, None, 2, 26),
    ("osxsave", 1, None, 2, 27),
    ("avx", 1, None, 2, 28),
    ("f16c", 1, None, 2, 29),
    ("rdrand", 1, None, 2, 30),
    ("hypervisor", 1, None, 2, 31),
    // Leaf 7 subleaf 0 EBX.
    ("fsgsbase", 7, Some(0), 1, 0),
    ("tsc_adjust", 7, Some(0), 1, 1),
    ("bmi1", 7, Some(0), 1, 3),
    ("hle", 7, Some(0), 1, 4),
    ("avx2", 7, Some(0), 1, 5),
    ("smep", 7, Some(0), 1, 7),
    ("bmi2", 7, Some(0), 1, 8),
    ("erms", 7, Some(0), 1, 9),
    ("invpcid", 7, Some(0), 1, 10),
    ("rtm", 7, Some(0), 1, 11),
    ("mpx", 7, Some(0), 1, 14),
    ("avx512f", 7, Some(0), 1, 16),
    ("avx512dq", 7, Some(0), 1, 17),
    ("rdseed", 7, Some(0), 1, 18),
    ("adx", 7, Some(0), 1, 19),
    ("smap", 7, Some(0), 1, 20),
    ("avx512ifma", 7, Some(0), 1, 21),
    ("clflushopt", 7, Some(0), 1, 23),
    ("clwb", 7, Some(0), 1, 24),
    ("avx512pf", 7, Some(0), 1, 26),
    ("avx512er", 7, Some(0), 1, 27),
    ("avx512cd", 7, Some(0), 1, 28),
    ("sha-ni", 7, Some(0), 1, 29),
    ("avx512bw", 7, Some(0), 1, 30),
    ("avx512vl", 7, Some(0), 1, 31),
    // Leaf 7 subleaf 0 ECX and EDX.
    ("avx512vbmi", 7, Some(0), 2, 1),
    ("umip", 7, Some(0), 2, 2),
    ("pku", 7, Some(0), 2, 3),
    ("ospke", 7, Some(0), 2, 4),
    ("avx512-vbmi2", 7, Some(0), 2, 6),
    ("gfni", 7, Some(0), 2, 8),
    ("vaes", 7, Some(0), 2, 9),
    ("vpclmulqdq", 7, Some(0), 2, 10),
    ("avx512vnni", 7, Some(0), 2, 11),
    ("avx512bitalg", 7, Some(0), 2, 12),
    ("avx512-vpopcntdq", 7, Some(0), 2, 14),
    ("la57", 7, Some(0), 2, 16),
    ("rdpid", 7, Some(0), 2, 22),
    ("avx512-4vnniw", 7, Some(0), 3, 2),
    ("avx512-4fmaps", 7, Some(0), 3, 3),
    ("md-clear", 7, Some(0), 3, 10),
    ("spec-ctrl", 7, Some(0), 3, 26),
    ("stibp", 7, Some(0), 3, 27),
    ("arch-capabilities", 7, Some(0), 3, 29),
    ("ssbd", 7, Some(0), 3, 31),
    // Leaf 0x80000001 ECX and EDX.
    ("lahf_lm", 0x8000_0001, None, 2, 0),
    ("cmp_legacy", 0x8000_0001, None, 2, 1),
    ("extapic", 0x8000_0001, None, 2, 3),
    ("cr8legacy", 0x8000_0001, None, 2, 4),
    ("abm", 0x8000_0001, None, 2, 5),
    ("sse4a", 0x8000_0001, None, 2, 6),
    ("misalignsse", 0x8000_0001, None, 2, 7),
    ("3dnowprefetch", 0x8000_0001, None, 2, 8),
    ("osvw", 0x8000_0001, None, 2, 9),
    ("ibs", 0x8000_0001, None, 2, 10),
    ("xop", 0x8000_0001, None, 2, 11),
    ("skinit", 0x8000_0001, None, 2, 12),
    ("wdt", 0x8000_0001, None, 2, 13),
    ("lwp", 0x8000_0001, None, 2, 15),
    ("fma4", 0x8000_0001, None, 2, 16),
    ("tce", 0x8000_0001, None, 2, 17),
    ("nodeid_msr", 0x8000_0001, None, 2, 19),
    ("tbm", 0x8000_0001, None, 2, 21),
    ("topoext", 0x8000_0001, None, 2, 22),
    ("perfctr_core", 0x8000_0001, None, 2, 23),
    ("perfctr_nb", 0x8000_0001, None, 2, 24),
    ("syscall", 0x8000_0001, None, 3, 11),
    ("nx", 0x8000_0001, None, 3, 20),
    ("mmxext", 0x8000_0001, None, 3, 22),
    ("fxsr_opt", 0x8000_0001, None, 3, 25),
    ("pdpe1gb", 0x8000_0001, None, 3, 26),
    ("rdtscp", 0x8000_0001, None, 3, 27),
    ("lm", 0x8000_0001, None, 3, 29),
    ("3dnowext", 0x8000_0001, None, 3, 30),
    ("3dnow", 0x8000_0001, None, 3, 31),
];

/// Sets one feature bit in the policy list as `libxl_cpuid_parse_config` does for `name=0|1`: the leaf's
/// entry is created on first use, untouched registers stay unset and untouched bits `x`.
fn set_cpuid(list: &mut Vec<CpuidLeaf>, name: &str, val: bool) -> Result<(), Error> {
    let &(_, leaf, subleaf, reg, bit) = CPUID_BITS
        .iter()
        .find(|e| e.0 == name)
        .ok_or_else(|| unsupported(format!("CPU feature '{name}' is not supported by libxl")))?;
    let idx = match list
        .iter()
        .position(|l| l.leaf == leaf && l.subleaf == subleaf)
    {
        Some(i) => i,
        None => {
            list.push(CpuidLeaf {
                leaf,
                subleaf,
                ..CpuidLeaf::default()
            });
            list.len() - 1
        }
    };
    let r = list[idx].regs[reg].get_or_insert_with(|| "x".repeat(32));
    let pos = 31 - bit as usize;
    r.replace_range(pos..=pos, if val { "1" } else { "0" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_memory_formula() {
        // 4 * (256 * vcpus + 2 * MiB)
        assert_eq!(required_shadow_memkb(1048576, 4), 4 * (1024 + 2048));
        // Extreme inputs do not overflow.
        assert_eq!(
            required_shadow_memkb(u64::MAX, u32::MAX),
            4 * (256 * u64::from(u32::MAX) + 2 * (u64::MAX / 1024))
        );
    }

    #[test]
    fn cpusets() {
        assert_eq!(
            parse_cpuset("0-3,^2,8")
                .unwrap()
                .0
                .into_iter()
                .collect::<Vec<_>>(),
            vec![0, 1, 3, 8]
        );
        assert!(parse_cpuset("3-1").is_err());
        assert!(parse_cpuset("x").is_err());
        assert!(parse_cpuset("0-99999").is_err());
    }

    #[test]
    fn cpuid_masks() {
        let mut l = Vec::new();
        set_cpuid(&mut l, "pni", false).unwrap();
        set_cpuid(&mut l, "tsc", true).unwrap();
        set_cpuid(&mut l, "avx2", true).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].regs[2].as_deref(),
            Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0")
        );
        assert_eq!(
            l[0].regs[3].as_deref(),
            Some("xxxxxxxxxxxxxxxxxxxxxxxxxxx1xxxx")
        );
        assert_eq!(l[1].subleaf, Some(0));
        assert!(set_cpuid(&mut l, "frobnicate", true).is_err());
    }
}
