//! The `libxl_domain_config` structure and its members, as Xen 4.17's `libxl_types.idl` declares them.

use serde_json::{Map, Value};

use super::json::{array_json, invalid, libxl_enum, libxl_struct, object, Field, Json};
use super::types::{Bitmap, CpuidPolicyList, Defbool, KeyValueList, Mac, Uuid};
use super::ConfigError;

/// `LIBXL_MEMKB_DEFAULT`: a memory size left to libxl.
pub const MEMKB_DEFAULT: u64 = u64::MAX;
/// `LIBXL_MAX_GRANT_DEFAULT` for the unsigned grant limits.
pub const MAX_GRANT_DEFAULT: u32 = u32::MAX;
/// The default of libxl's `devid` members: libxl picks the next free id.
pub const DEVID_DEFAULT: i32 = -1;
/// `LIBXL_DOMAIN_SCHED_PARAM_*_DEFAULT`.
pub const SCHED_PARAM_DEFAULT: i32 = -1;
/// `LIBXL_INVALID_GFN`.
pub const INVALID_GFN: u64 = u64::MAX;

libxl_enum! {
    /// `libxl_domain_type`.
    pub enum DomainType default Invalid {
        /// Not set.
        Invalid = "invalid",
        /// Fully virtualized with a device model.
        Hvm = "hvm",
        /// Paravirtualized.
        Pv = "pv",
        /// PVH.
        Pvh = "pvh",
    }
}

libxl_enum! {
    /// `libxl_rdm_reserve_strategy`.
    pub enum RdmReserveStrategy default Ignore {
        /// Reserve nothing.
        Ignore = "ignore",
        /// Reserve the host's reserved device memory.
        Host = "host",
    }
}

libxl_enum! {
    /// `libxl_rdm_reserve_policy`.
    pub enum RdmReservePolicy default Invalid {
        /// Not set.
        Invalid = "invalid",
        /// Fail on conflicts.
        Strict = "strict",
        /// Warn on conflicts.
        Relaxed = "relaxed",
    }
}

libxl_enum! {
    /// `libxl_channel_connection`.
    pub enum ChannelConnection default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// A pty.
        Pty = "pty",
        /// A listening Unix socket.
        Socket = "socket",
    }
}

libxl_enum! {
    /// `libxl_device_model_version`.
    pub enum DeviceModelVersion default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// qemu-dm (historical).
        QemuXenTraditional = "qemu_xen_traditional",
        /// Upstream QEMU.
        QemuXen = "qemu_xen",
    }
}

libxl_enum! {
    /// `libxl_disk_format`.
    pub enum DiskFormat default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// qcow.
        Qcow = "qcow",
        /// qcow2.
        Qcow2 = "qcow2",
        /// VHD.
        Vhd = "vhd",
        /// Raw.
        Raw = "raw",
        /// An empty CD-ROM drive.
        Empty = "empty",
        /// QED.
        Qed = "qed",
    }
}

libxl_enum! {
    /// `libxl_disk_backend`.
    pub enum DiskBackend default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// blkback.
        Phy = "phy",
        /// blktap.
        Tap = "tap",
        /// QEMU's qdisk.
        Qdisk = "qdisk",
        /// Only the xenstore data.
        Standalone = "standalone",
    }
}

libxl_enum! {
    /// `libxl_disk_specification`.
    pub enum DiskSpecification default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// Xen PV block.
        Xen = "xen",
        /// virtio-blk.
        Virtio = "virtio",
    }
}

libxl_enum! {
    /// `libxl_disk_transport`.
    pub enum DiskTransport default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// virtio-mmio.
        Mmio = "mmio",
    }
}

libxl_enum! {
    /// `libxl_nic_type`.
    pub enum NicType default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// An emulated NIC with a PV path.
        VifIoemu = "vif_ioemu",
        /// PV only.
        Vif = "vif",
    }
}

libxl_enum! {
    /// `libxl_action_on_shutdown`.
    pub enum ActionOnShutdown default Destroy {
        /// Destroy the domain.
        Destroy = "destroy",
        /// Restart it.
        Restart = "restart",
        /// Rename and restart.
        RestartRename = "restart_rename",
        /// Keep it.
        Preserve = "preserve",
        /// Dump core, then destroy.
        CoredumpDestroy = "coredump_destroy",
        /// Dump core, then restart.
        CoredumpRestart = "coredump_restart",
        /// Soft reset.
        SoftReset = "soft_reset",
    }
}

libxl_enum! {
    /// `libxl_tsc_mode`.
    pub enum TscMode default Default {
        /// Xen's default.
        Default = "default",
        /// Always emulate.
        AlwaysEmulate = "always_emulate",
        /// Native.
        Native = "native",
        /// Native paravirtualized.
        NativeParavirt = "native_paravirt",
    }
}

libxl_enum! {
    /// `libxl_gfx_passthru_kind`.
    pub enum GfxPassthruKind default Default {
        /// Default.
        Default = "default",
        /// Intel IGD.
        Igd = "igd",
    }
}

libxl_enum! {
    /// `libxl_timer_mode`.
    pub enum TimerMode default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// Delay for missed ticks.
        DelayForMissedTicks = "delay_for_missed_ticks",
        /// No delay for missed ticks.
        NoDelayForMissedTicks = "no_delay_for_missed_ticks",
        /// No missed ticks pending.
        NoMissedTicksPending = "no_missed_ticks_pending",
        /// One missed tick pending.
        OneMissedTickPending = "one_missed_tick_pending",
    }
}

libxl_enum! {
    /// `libxl_bios_type`.
    pub enum BiosType default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// ROMBIOS.
        Rombios = "rombios",
        /// SeaBIOS.
        Seabios = "seabios",
        /// OVMF (UEFI).
        Ovmf = "ovmf",
    }
}

libxl_enum! {
    /// `libxl_scheduler`.
    pub enum Scheduler default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// SEDF.
        Sedf = "sedf",
        /// Credit.
        Credit = "credit",
        /// Credit2.
        Credit2 = "credit2",
        /// ARINC 653.
        Arinc653 = "arinc653",
        /// RTDS.
        Rtds = "rtds",
        /// Null.
        Null = "null",
    }
}

libxl_enum! {
    /// `libxl_vga_interface_type`.
    pub enum VgaInterfaceType default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// Cirrus.
        Cirrus = "cirrus",
        /// Standard VGA.
        Std = "std",
        /// No VGA.
        None = "none",
        /// QXL.
        Qxl = "qxl",
    }
}

libxl_enum! {
    /// `libxl_vendor_device`.
    pub enum VendorDevice default None {
        /// None.
        None = "none",
        /// The XenServer device.
        Xenserver = "xenserver",
    }
}

libxl_enum! {
    /// `libxl_hdtype`.
    pub enum HdType default Ide {
        /// IDE.
        Ide = "ide",
        /// AHCI.
        Ahci = "ahci",
    }
}

libxl_enum! {
    /// `libxl_vuart_type`.
    pub enum VuartType default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// SBSA UART.
        SbsaUart = "sbsa_uart",
    }
}

libxl_enum! {
    /// `libxl_vkb_backend`.
    pub enum VkbBackend default Unknown {
        /// Not set.
        Unknown = "unknown",
        /// QEMU.
        Qemu = "qemu",
        /// Linux.
        Linux = "linux",
    }
}

libxl_enum! {
    /// `libxl_passthrough`.
    pub enum Passthrough default Default {
        /// Default.
        Default = "default",
        /// Disabled.
        Disabled = "disabled",
        /// Enabled.
        Enabled = "enabled",
        /// Sync page tables.
        SyncPt = "sync_pt",
        /// Shared page tables.
        SharePt = "share_pt",
    }
}

libxl_enum! {
    /// `libxl_gic_version`.
    pub enum GicVersion default Default {
        /// Default.
        Default = "default",
        /// GICv2.
        V2 = "v2",
        /// GICv3.
        V3 = "v3",
    }
}

libxl_enum! {
    /// `libxl_tee_type`.
    pub enum TeeType default None {
        /// None.
        None = "none",
        /// OP-TEE.
        Optee = "optee",
    }
}

libxl_enum! {
    /// `libxl_altp2m_mode`.
    pub enum Altp2mMode default Disabled {
        /// Disabled.
        Disabled = "disabled",
        /// Mixed.
        Mixed = "mixed",
        /// External.
        External = "external",
        /// Limited.
        Limited = "limited",
    }
}

libxl_enum! {
    /// `libxl_usbctrl_type`.
    pub enum UsbctrlType default Auto {
        /// Auto.
        Auto = "auto",
        /// PV.
        Pv = "pv",
        /// Emulated by the device model.
        Devicemodel = "devicemodel",
        /// QEMU's PV USB backend.
        Qusb = "qusb",
    }
}

libxl_enum! {
    /// `libxl_usbdev_type`.
    pub enum UsbdevType default Hostdev {
        /// A host device.
        Hostdev = "hostdev",
    }
}

libxl_struct! {
    /// `libxl_ioport_range`.
    pub struct IoportRange {
        /// First port.
        "first" first: u32,
        /// Number of ports.
        "number" number: u32,
    }
}

libxl_struct! {
    /// `libxl_iomem_range`.
    pub struct IomemRange {
        /// First host frame.
        "start" start: u64,
        /// Number of frames.
        "number" number: u64,
        /// First guest frame.
        "gfn" gfn: u64 = INVALID_GFN,
    }
}

libxl_struct! {
    /// `libxl_vga_interface_info`.
    pub struct VgaInterfaceInfo {
        /// The emulated card.
        "kind" kind: VgaInterfaceType,
    }
}

libxl_struct! {
    /// `libxl_vnc_info`.
    pub struct VncInfo {
        /// Whether VNC is on.
        "enable" enable: Defbool,
        /// `address[:port]` to listen on.
        "listen" listen: Option<String>,
        /// Password.
        "passwd" passwd: Option<String>,
        /// Display number.
        "display" display: i32,
        /// Find an unused port.
        "findunused" findunused: Defbool,
    }
}

libxl_struct! {
    /// `libxl_spice_info`.
    pub struct SpiceInfo {
        /// Whether SPICE is on.
        "enable" enable: Defbool,
        /// Port.
        "port" port: i32,
        /// TLS port.
        "tls_port" tls_port: i32,
        /// Address to bind.
        "host" host: Option<String>,
        /// Allow connections without a password.
        "disable_ticketing" disable_ticketing: Defbool,
        /// Password.
        "passwd" passwd: Option<String>,
        /// Agent mouse.
        "agent_mouse" agent_mouse: Defbool,
        /// vdagent.
        "vdagent" vdagent: Defbool,
        /// Clipboard sharing.
        "clipboard_sharing" clipboard_sharing: Defbool,
        /// Number of USB redirection channels.
        "usbredirection" usbredirection: i32,
        /// Image compression.
        "image_compression" image_compression: Option<String>,
        /// Video streaming.
        "streaming_video" streaming_video: Option<String>,
    }
}

libxl_struct! {
    /// `libxl_sdl_info`.
    pub struct SdlInfo {
        /// Whether SDL is on.
        "enable" enable: Defbool,
        /// OpenGL.
        "opengl" opengl: Defbool,
        /// X display.
        "display" display: Option<String>,
        /// Xauthority file.
        "xauthority" xauthority: Option<String>,
    }
}

libxl_struct! {
    /// `libxl_domain_create_info`.
    pub struct CreateInfo {
        /// Domain type.
        "type" type_: DomainType,
        /// Hardware-assisted paging.
        "hap" hap: Defbool,
        /// Out-of-sync shadow page tables.
        "oos" oos: Defbool,
        /// XSM SSID reference.
        "ssidref" ssidref: u32,
        /// XSM label.
        "ssid_label" ssid_label: Option<String>,
        /// Domain name.
        "name" name: Option<String>,
        /// Requested domain id.
        "domid" domid: u32,
        /// UUID.
        "uuid" uuid: Uuid,
        /// Extra xenstore data.
        "xsdata" xsdata: KeyValueList,
        /// Platform data.
        "platformdata" platformdata: KeyValueList,
        /// CPU pool id.
        "poolid" poolid: u32,
        /// CPU pool name.
        "pool_name" pool_name: Option<String>,
        /// Run hotplug scripts from libxl.
        "run_hotplug_scripts" run_hotplug_scripts: Defbool,
        /// This is a driver domain.
        "driver_domain" driver_domain: Defbool,
        /// IOMMU passthrough mode.
        "passthrough" passthrough: Passthrough,
        /// xend's suspend event channel compatibility.
        "xend_suspend_evtchn_compat" xend_suspend_evtchn_compat: Defbool,
    }
}

libxl_struct! {
    /// `libxl_domain_sched_params`.
    pub struct DomainSchedParams {
        /// Scheduler.
        "sched" sched: Scheduler,
        /// Credit weight.
        "weight" weight: i32 = SCHED_PARAM_DEFAULT,
        /// Credit cap.
        "cap" cap: i32 = SCHED_PARAM_DEFAULT,
        /// Period.
        "period" period: i32 = SCHED_PARAM_DEFAULT,
        /// Budget.
        "budget" budget: i32 = SCHED_PARAM_DEFAULT,
        /// Extra time.
        "extratime" extratime: i32 = SCHED_PARAM_DEFAULT,
        /// Slice (SEDF).
        "slice" slice: i32 = SCHED_PARAM_DEFAULT,
        /// Latency (SEDF).
        "latency" latency: i32 = SCHED_PARAM_DEFAULT,
    }
}

libxl_struct! {
    /// `libxl_vnode_info`: one virtual NUMA node.
    pub struct VnodeInfo {
        /// Memory of the node.
        "memkb" memkb: u64 = MEMKB_DEFAULT,
        /// Distances to every node.
        "distances" distances: Vec<u32>,
        /// Physical node.
        "pnode" pnode: u32,
        /// vCPUs of the node.
        "vcpus" vcpus: Bitmap,
    }
}

libxl_struct! {
    /// `libxl_rdm_reserve`.
    pub struct RdmReserve {
        /// Strategy.
        "strategy" strategy: RdmReserveStrategy,
        /// Policy.
        "policy" policy: RdmReservePolicy,
    }
}

libxl_struct! {
    /// The HVM member of the build information's `type` union.
    pub struct HvmInfo {
        /// hvmloader path.
        "firmware" firmware: Option<String>,
        /// BIOS.
        "bios" bios: BiosType,
        /// PAE.
        "pae" pae: Defbool,
        /// APIC (deprecated by `b_info.apic`).
        "apic" apic: Defbool,
        /// ACPI (deprecated by `b_info.acpi`).
        "acpi" acpi: Defbool,
        /// ACPI S3.
        "acpi_s3" acpi_s3: Defbool,
        /// ACPI S4.
        "acpi_s4" acpi_s4: Defbool,
        /// ACPI laptop/slate switch.
        "acpi_laptop_slate" acpi_laptop_slate: Defbool,
        /// NX.
        "nx" nx: Defbool,
        /// Viridian.
        "viridian" viridian: Defbool,
        /// Viridian enlightenments enabled.
        "viridian_enable" viridian_enable: Bitmap,
        /// Viridian enlightenments disabled.
        "viridian_disable" viridian_disable: Bitmap,
        /// Time offset.
        "timeoffset" timeoffset: Option<String>,
        /// HPET.
        "hpet" hpet: Defbool,
        /// Virtual platform timer alignment.
        "vpt_align" vpt_align: Defbool,
        /// MMIO hole size.
        "mmio_hole_memkb" mmio_hole_memkb: u64 = MEMKB_DEFAULT,
        /// Timer mode (deprecated by `b_info.timer_mode`).
        "timer_mode" timer_mode: TimerMode,
        /// Nested HVM (deprecated by `b_info.nested_hvm`).
        "nested_hvm" nested_hvm: Defbool,
        /// altp2m (deprecated by `b_info.altp2m`).
        "altp2m" altp2m: Defbool,
        /// System firmware (OVMF) path.
        "system_firmware" system_firmware: Option<String>,
        /// SMBIOS firmware.
        "smbios_firmware" smbios_firmware: Option<String>,
        /// ACPI firmware.
        "acpi_firmware" acpi_firmware: Option<String>,
        /// Disk controller type.
        "hdtype" hdtype: HdType,
        /// No graphics.
        "nographic" nographic: Defbool,
        /// VGA.
        "vga" vga: VgaInterfaceInfo,
        /// VNC.
        "vnc" vnc: VncInfo,
        /// Keyboard map.
        "keymap" keymap: Option<String>,
        /// SDL.
        "sdl" sdl: SdlInfo,
        /// SPICE.
        "spice" spice: SpiceInfo,
        /// Graphics passthrough.
        "gfx_passthru" gfx_passthru: Defbool,
        /// Graphics passthrough kind.
        "gfx_passthru_kind" gfx_passthru_kind: GfxPassthruKind,
        /// Serial device.
        "serial" serial: Option<String>,
        /// Boot order (`c`, `d`, `n`).
        "boot" boot: Option<String>,
        /// USB.
        "usb" usb: Defbool,
        /// USB version.
        "usbversion" usbversion: i32,
        /// USB device.
        "usbdevice" usbdevice: Option<String>,
        /// Emulated USB keyboard device.
        "vkb_device" vkb_device: Defbool,
        /// Sound hardware.
        "soundhw" soundhw: Option<String>,
        /// Xen platform PCI device.
        "xen_platform_pci" xen_platform_pci: Defbool,
        /// USB devices.
        "usbdevice_list" usbdevice_list: Vec<String>,
        /// Vendor device.
        "vendor_device" vendor_device: VendorDevice,
        /// VM generation id (hex string).
        "ms_vm_genid" ms_vm_genid: Option<String>,
        /// Serial devices.
        "serial_list" serial_list: Vec<String>,
        /// Reserved device memory.
        "rdm" rdm: RdmReserve,
        /// RDM memory boundary.
        "rdm_mem_boundary_memkb" rdm_mem_boundary_memkb: u64 = MEMKB_DEFAULT,
        /// MCA capabilities.
        "mca_caps" mca_caps: u64,
    }
}

libxl_struct! {
    /// The PV member of the build information's `type` union.
    pub struct PvInfo {
        /// Kernel (deprecated by `b_info.kernel`).
        "kernel" kernel: Option<String>,
        /// Slack memory.
        "slack_memkb" slack_memkb: u64 = MEMKB_DEFAULT,
        /// Bootloader (deprecated by `b_info.bootloader`).
        "bootloader" bootloader: Option<String>,
        /// Bootloader arguments (deprecated by `b_info.bootloader_args`).
        "bootloader_args" bootloader_args: Vec<String>,
        /// Command line (deprecated by `b_info.cmdline`).
        "cmdline" cmdline: Option<String>,
        /// Ramdisk (deprecated by `b_info.ramdisk`).
        "ramdisk" ramdisk: Option<String>,
        /// Host E820 map.
        "e820_host" e820_host: Defbool,
    }
}

libxl_struct! {
    /// The PVH member of the build information's `type` union.
    pub struct PvhInfo {
        /// Run under the PV shim.
        "pvshim" pvshim: Defbool,
        /// Shim path.
        "pvshim_path" pvshim_path: Option<String>,
        /// Shim command line.
        "pvshim_cmdline" pvshim_cmdline: Option<String>,
        /// Extra shim command line.
        "pvshim_extra" pvshim_extra: Option<String>,
    }
}

/// The build information's keyed union, selected by the domain type; written as `"type.<variant>"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BuildType {
    /// Not set.
    #[default]
    Invalid,
    /// HVM.
    Hvm(Box<HvmInfo>),
    /// PV.
    Pv(PvInfo),
    /// PVH.
    Pvh(PvhInfo),
}

impl BuildType {
    /// The union for `t` with every member at its default.
    pub fn for_type(t: DomainType) -> BuildType {
        match t {
            DomainType::Invalid => BuildType::Invalid,
            DomainType::Hvm => BuildType::Hvm(Box::default()),
            DomainType::Pv => BuildType::Pv(PvInfo::default()),
            DomainType::Pvh => BuildType::Pvh(PvhInfo::default()),
        }
    }

    /// The domain type selecting this variant.
    pub fn domain_type(&self) -> DomainType {
        match self {
            BuildType::Invalid => DomainType::Invalid,
            BuildType::Hvm(_) => DomainType::Hvm,
            BuildType::Pv(_) => DomainType::Pv,
            BuildType::Pvh(_) => DomainType::Pvh,
        }
    }
}

/// Finds the single `"<key>.<variant>"` member of a keyed union.
fn take_union(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<(String, Value, String)>, ConfigError> {
    let prefix = format!("{key}.");
    let keys: Vec<String> = map
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect();
    if keys.len() > 1 {
        return Err(invalid(
            &format!("{path}.{}", keys[1]),
            &Value::Null,
            "a union has one member only",
        ));
    }
    Ok(keys.into_iter().next().and_then(|k| {
        let v = map.remove(&k)?;
        let variant = k[prefix.len()..].to_string();
        Some((variant, v, format!("{path}.{k}")))
    }))
}

impl Field for BuildType {
    fn emit(&self, key: &str, _default: &Self, map: &mut Map<String, Value>) {
        let (name, v) = match self {
            BuildType::Invalid => ("invalid", Value::Object(Map::new())),
            BuildType::Hvm(h) => ("hvm", h.to_json()),
            BuildType::Pv(p) => ("pv", p.to_json()),
            BuildType::Pvh(p) => ("pvh", p.to_json()),
        };
        map.insert(format!("{key}.{name}"), v);
    }

    fn take(
        map: &mut Map<String, Value>,
        key: &str,
        path: &str,
        default: Self,
    ) -> Result<Self, ConfigError> {
        let Some((variant, v, p)) = take_union(map, key, path)? else {
            return Ok(default);
        };
        Ok(match variant.as_str() {
            "hvm" => BuildType::Hvm(Box::new(HvmInfo::from_json(&v, &p)?)),
            "pv" => BuildType::Pv(PvInfo::from_json(&v, &p)?),
            "pvh" => BuildType::Pvh(PvhInfo::from_json(&v, &p)?),
            "invalid" => {
                super::json::no_unknown(&object(&v, &p)?, &p)?;
                BuildType::Invalid
            }
            _ => return Err(ConfigError::UnknownKey { path: p }),
        })
    }
}

libxl_struct! {
    /// The Arm members of the build information.
    pub struct ArchArm {
        /// GIC version.
        "gic_version" gic_version: GicVersion,
        /// Virtual UART.
        "vuart" vuart: VuartType,
    }
}

libxl_struct! {
    /// The x86 members of the build information.
    pub struct ArchX86 {
        /// Relaxed MSR handling.
        "msr_relaxed" msr_relaxed: Defbool,
    }
}

libxl_struct! {
    /// `libxl_domain_build_info`.
    pub struct BuildInfo {
        /// Maximum vCPUs.
        "max_vcpus" max_vcpus: i32,
        /// vCPUs online at boot.
        "avail_vcpus" avail_vcpus: Bitmap,
        /// CPU affinity of all vCPUs.
        "cpumap" cpumap: Bitmap,
        /// NUMA node affinity.
        "nodemap" nodemap: Bitmap,
        /// Per-vCPU hard affinity.
        "vcpu_hard_affinity" vcpu_hard_affinity: Vec<Bitmap>,
        /// Per-vCPU soft affinity.
        "vcpu_soft_affinity" vcpu_soft_affinity: Vec<Bitmap>,
        /// Automatic NUMA placement.
        "numa_placement" numa_placement: Defbool,
        /// TSC mode.
        "tsc_mode" tsc_mode: TscMode,
        /// Maximum memory.
        "max_memkb" max_memkb: u64 = MEMKB_DEFAULT,
        /// Memory at boot.
        "target_memkb" target_memkb: u64 = MEMKB_DEFAULT,
        /// Video memory.
        "video_memkb" video_memkb: u64 = MEMKB_DEFAULT,
        /// Shadow page-table memory.
        "shadow_memkb" shadow_memkb: u64 = MEMKB_DEFAULT,
        /// IOMMU page-table memory.
        "iommu_memkb" iommu_memkb: u64 = MEMKB_DEFAULT,
        /// RTC offset in seconds.
        "rtc_timeoffset" rtc_timeoffset: u32,
        /// XSM SSID after build.
        "exec_ssidref" exec_ssidref: u32,
        /// XSM label after build.
        "exec_ssid_label" exec_ssid_label: Option<String>,
        /// RTC in local time.
        "localtime" localtime: Defbool,
        /// Forbid migration.
        "disable_migrate" disable_migrate: Defbool,
        /// CPUID policy.
        "cpuid" cpuid: CpuidPolicyList,
        /// First block device name.
        "blkdev_start" blkdev_start: Option<String>,
        /// Virtual NUMA nodes.
        "vnuma_nodes" vnuma_nodes: Vec<VnodeInfo>,
        /// Maximum grant frames.
        "max_grant_frames" max_grant_frames: u32 = MAX_GRANT_DEFAULT,
        /// Maximum maptrack frames.
        "max_maptrack_frames" max_maptrack_frames: u32 = MAX_GRANT_DEFAULT,
        /// Device model version.
        "device_model_version" device_model_version: DeviceModelVersion,
        /// Device model in a stub domain.
        "device_model_stubdomain" device_model_stubdomain: Defbool,
        /// Stub domain memory.
        "stubdomain_memkb" stubdomain_memkb: u64 = MEMKB_DEFAULT,
        /// Stub domain kernel.
        "stubdomain_kernel" stubdomain_kernel: Option<String>,
        /// Stub domain command line.
        "stubdomain_cmdline" stubdomain_cmdline: Option<String>,
        /// Stub domain ramdisk.
        "stubdomain_ramdisk" stubdomain_ramdisk: Option<String>,
        /// Device model binary.
        "device_model" device_model: Option<String>,
        /// Device model SSID.
        "device_model_ssidref" device_model_ssidref: u32,
        /// Device model XSM label.
        "device_model_ssid_label" device_model_ssid_label: Option<String>,
        /// User the device model runs as.
        "device_model_user" device_model_user: Option<String>,
        /// Extra device model arguments.
        "extra" extra: Vec<String>,
        /// Extra device model arguments for PV guests.
        "extra_pv" extra_pv: Vec<String>,
        /// Extra device model arguments for HVM guests.
        "extra_hvm" extra_hvm: Vec<String>,
        /// Scheduler parameters.
        "sched_params" sched_params: DomainSchedParams,
        /// I/O port ranges to pass through.
        "ioports" ioports: Vec<IoportRange>,
        /// IRQs to pass through.
        "irqs" irqs: Vec<u32>,
        /// I/O memory to pass through.
        "iomem" iomem: Vec<IomemRange>,
        /// Claim memory up front.
        "claim_mode" claim_mode: Defbool,
        /// Event channels.
        "event_channels" event_channels: u32,
        /// Kernel.
        "kernel" kernel: Option<String>,
        /// Kernel command line.
        "cmdline" cmdline: Option<String>,
        /// Ramdisk.
        "ramdisk" ramdisk: Option<String>,
        /// Device tree.
        "device_tree" device_tree: Option<String>,
        /// ACPI.
        "acpi" acpi: Defbool,
        /// Bootloader.
        "bootloader" bootloader: Option<String>,
        /// Bootloader arguments.
        "bootloader_args" bootloader_args: Vec<String>,
        /// Timer mode.
        "timer_mode" timer_mode: TimerMode,
        /// Nested virtualization.
        "nested_hvm" nested_hvm: Defbool,
        /// APIC.
        "apic" apic: Defbool,
        /// Restrict the device model.
        "dm_restrict" dm_restrict: Defbool,
        /// TEE.
        "tee" tee: TeeType,
        /// The type-specific members.
        "type" type_: BuildType,
        /// Arm members.
        "arch_arm" arch_arm: ArchArm,
        /// x86 members.
        "arch_x86" arch_x86: ArchX86,
        /// altp2m mode.
        "altp2m" altp2m: Altp2mMode,
        /// VM trace buffer size.
        "vmtrace_buf_kb" vmtrace_buf_kb: i32,
        /// Virtual PMU.
        "vpmu" vpmu: Defbool,
    }
}

libxl_struct! {
    /// `libxl_device_vfb`.
    pub struct DeviceVfb {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// VNC.
        "vnc" vnc: VncInfo,
        /// SDL.
        "sdl" sdl: SdlInfo,
        /// Keyboard map.
        "keymap" keymap: Option<String>,
    }
}

libxl_struct! {
    /// `libxl_device_vkb`.
    pub struct DeviceVkb {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// Backend type.
        "backend_type" backend_type: VkbBackend,
        /// Unique id.
        "unique_id" unique_id: Option<String>,
        /// No keyboard.
        "feature_disable_keyboard" feature_disable_keyboard: bool,
        /// No pointer.
        "feature_disable_pointer" feature_disable_pointer: bool,
        /// Absolute pointer.
        "feature_abs_pointer" feature_abs_pointer: bool,
        /// Raw pointer.
        "feature_raw_pointer" feature_raw_pointer: bool,
        /// Multi-touch.
        "feature_multi_touch" feature_multi_touch: bool,
        /// Width.
        "width" width: u32,
        /// Height.
        "height" height: u32,
        /// Multi-touch width.
        "multi_touch_width" multi_touch_width: u32,
        /// Multi-touch height.
        "multi_touch_height" multi_touch_height: u32,
        /// Multi-touch contacts.
        "multi_touch_num_contacts" multi_touch_num_contacts: u32,
    }
}

libxl_struct! {
    /// `libxl_device_disk`.
    pub struct DeviceDisk {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Path of the image or device.
        "pdev_path" pdev_path: Option<String>,
        /// Virtual device name (`xvda`, `hda`).
        "vdev" vdev: Option<String>,
        /// Backend.
        "backend" backend: DiskBackend,
        /// Image format.
        "format" format: DiskFormat,
        /// Hotplug script.
        "script" script: Option<String>,
        /// Removable.
        "removable" removable: i32,
        /// Writable.
        "readwrite" readwrite: i32,
        /// CD-ROM.
        "is_cdrom" is_cdrom: i32,
        /// O_DIRECT is safe.
        "direct_io_safe" direct_io_safe: bool,
        /// Discard.
        "discard_enable" discard_enable: Defbool,
        /// Specification.
        "specification" specification: DiskSpecification,
        /// Transport.
        "transport" transport: DiskTransport,
        /// virtio-mmio IRQ.
        "irq" irq: u32,
        /// virtio-mmio base.
        "base" base: u64,
        /// COLO.
        "colo_enable" colo_enable: Defbool,
        /// COLO restore.
        "colo_restore_enable" colo_restore_enable: Defbool,
        /// COLO host.
        "colo_host" colo_host: Option<String>,
        /// COLO port.
        "colo_port" colo_port: i32,
        /// COLO export.
        "colo_export" colo_export: Option<String>,
        /// COLO active disk.
        "active_disk" active_disk: Option<String>,
        /// COLO hidden disk.
        "hidden_disk" hidden_disk: Option<String>,
        /// Trusted backend.
        "trusted" trusted: Defbool,
    }
}

libxl_struct! {
    /// `libxl_device_nic` (the COLO members are not modelled).
    pub struct DeviceNic {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// MTU.
        "mtu" mtu: i32,
        /// Emulated model.
        "model" model: Option<String>,
        /// MAC address.
        "mac" mac: Mac,
        /// IP address.
        "ip" ip: Option<String>,
        /// Bridge.
        "bridge" bridge: Option<String>,
        /// Backend interface name.
        "ifname" ifname: Option<String>,
        /// Hotplug script.
        "script" script: Option<String>,
        /// NIC type.
        "nictype" nictype: NicType,
        /// Rate limit: bytes per interval.
        "rate_bytes_per_interval" rate_bytes_per_interval: u64,
        /// Rate limit: interval.
        "rate_interval_usecs" rate_interval_usecs: u32,
        /// Gateway device.
        "gatewaydev" gatewaydev: Option<String>,
        /// Trusted backend.
        "trusted" trusted: Defbool,
    }
}

libxl_struct! {
    /// `libxl_device_pci`.
    pub struct DevicePci {
        /// Function.
        "func" func: u8,
        /// Device.
        "dev" dev: u8,
        /// Bus.
        "bus" bus: u8,
        /// Domain (segment).
        "domain" domain: i32,
        /// Guest devfn.
        "vdevfn" vdevfn: u32,
        /// Virtual function mask.
        "vfunc_mask" vfunc_mask: u32,
        /// MSI translation.
        "msitranslate" msitranslate: bool,
        /// Power management.
        "power_mgmt" power_mgmt: bool,
        /// Permissive config space.
        "permissive" permissive: bool,
        /// Seize from its driver.
        "seize" seize: bool,
        /// RDM policy.
        "rdm_policy" rdm_policy: RdmReservePolicy,
        /// Name.
        "name" name: Option<String>,
    }
}

libxl_struct! {
    /// `libxl_device_rdm`.
    pub struct DeviceRdm {
        /// Start.
        "start" start: u64,
        /// Size.
        "size" size: u64,
        /// Policy.
        "policy" policy: RdmReservePolicy,
    }
}

libxl_struct! {
    /// `libxl_device_dtdev`.
    pub struct DeviceDtdev {
        /// Device tree path.
        "path" path: Option<String>,
    }
}

libxl_struct! {
    /// `libxl_device_vtpm`.
    pub struct DeviceVtpm {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// UUID.
        "uuid" uuid: Uuid,
    }
}

libxl_struct! {
    /// `libxl_device_p9`.
    pub struct DeviceP9 {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Mount tag.
        "tag" tag: Option<String>,
        /// Host path.
        "path" path: Option<String>,
        /// Security model.
        "security_model" security_model: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
    }
}

libxl_struct! {
    /// `libxl_device_pvcallsif`.
    pub struct DevicePvcallsif {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
    }
}

/// The channel's keyed union, selected by `connection`; written as `"connection.<variant>"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChannelKind {
    /// Not set.
    #[default]
    Unknown,
    /// A pty.
    Pty,
    /// A listening Unix socket at `path`.
    Socket {
        /// Socket path.
        path: Option<String>,
    },
}

impl Field for ChannelKind {
    fn emit(&self, key: &str, _default: &Self, map: &mut Map<String, Value>) {
        let (name, v) = match self {
            ChannelKind::Unknown => ("unknown", Map::new()),
            ChannelKind::Pty => ("pty", Map::new()),
            ChannelKind::Socket { path } => {
                let mut m = Map::new();
                if let Some(p) = path {
                    m.insert("path".into(), Value::String(p.clone()));
                }
                ("socket", m)
            }
        };
        map.insert(format!("{key}.{name}"), Value::Object(v));
    }

    fn take(
        map: &mut Map<String, Value>,
        key: &str,
        path: &str,
        default: Self,
    ) -> Result<Self, ConfigError> {
        let Some((variant, v, p)) = take_union(map, key, path)? else {
            return Ok(default);
        };
        let mut m = object(&v, &p)?;
        let kind = match ChannelConnection::from_name(&variant) {
            Some(ChannelConnection::Unknown) => ChannelKind::Unknown,
            Some(ChannelConnection::Pty) => ChannelKind::Pty,
            Some(ChannelConnection::Socket) => ChannelKind::Socket {
                path: Field::take(&mut m, "path", &p, None)?,
            },
            None => return Err(ConfigError::UnknownKey { path: p }),
        };
        super::json::no_unknown(&m, &p)?;
        Ok(kind)
    }
}

libxl_struct! {
    /// `libxl_device_channel`.
    pub struct DeviceChannel {
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// Channel name.
        "name" name: Option<String>,
        /// Connection.
        "connection" connection: ChannelKind,
    }
}

libxl_struct! {
    /// `libxl_device_usbctrl`.
    pub struct DeviceUsbctrl {
        /// Controller type.
        "type" type_: UsbctrlType,
        /// Device id.
        "devid" devid: i32 = DEVID_DEFAULT,
        /// USB version.
        "version" version: i32,
        /// Number of ports.
        "ports" ports: i32,
        /// Backend domain id.
        "backend_domid" backend_domid: u32,
        /// Backend domain name.
        "backend_domname" backend_domname: Option<String>,
    }
}

/// The USB device's keyed union (`type`); libxl has one variant, a host device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsbHostdev {
    /// Host bus.
    pub hostbus: u8,
    /// Host address.
    pub hostaddr: u8,
}

impl Field for UsbHostdev {
    fn emit(&self, key: &str, _default: &Self, map: &mut Map<String, Value>) {
        let mut m = Map::new();
        if self.hostbus != 0 {
            m.insert("hostbus".into(), Value::from(self.hostbus));
        }
        if self.hostaddr != 0 {
            m.insert("hostaddr".into(), Value::from(self.hostaddr));
        }
        map.insert(format!("{key}.hostdev"), Value::Object(m));
    }

    fn take(
        map: &mut Map<String, Value>,
        key: &str,
        path: &str,
        default: Self,
    ) -> Result<Self, ConfigError> {
        let Some((variant, v, p)) = take_union(map, key, path)? else {
            return Ok(default);
        };
        if UsbdevType::from_name(&variant).is_none() {
            return Err(ConfigError::UnknownKey { path: p });
        }
        let mut m = object(&v, &p)?;
        let d = UsbHostdev {
            hostbus: Field::take(&mut m, "hostbus", &p, 0)?,
            hostaddr: Field::take(&mut m, "hostaddr", &p, 0)?,
        };
        super::json::no_unknown(&m, &p)?;
        Ok(d)
    }
}

libxl_struct! {
    /// `libxl_device_usbdev`.
    pub struct DeviceUsbdev {
        /// Controller device id.
        "ctrl" ctrl: i32 = DEVID_DEFAULT,
        /// Port.
        "port" port: i32,
        /// The host device.
        "type" hostdev: UsbHostdev,
    }
}

array_json!(
    Bitmap,
    VnodeInfo,
    IoportRange,
    IomemRange,
    DeviceDisk,
    DeviceNic,
    DevicePci,
    DeviceRdm,
    DeviceDtdev,
    DeviceVfb,
    DeviceVkb,
    DeviceVtpm,
    DeviceP9,
    DevicePvcallsif,
    DeviceChannel,
    DeviceUsbctrl,
    DeviceUsbdev
);

libxl_struct! {
    /// `libxl_domain_config`: everything libxl needs to create a domain.
    pub struct DomainConfig {
        /// Creation information.
        "c_info" c_info: CreateInfo,
        /// Build information.
        "b_info" b_info: BuildInfo,
        /// Disks.
        "disks" disks: Vec<DeviceDisk>,
        /// Network interfaces.
        "nics" nics: Vec<DeviceNic>,
        /// PCI passthrough devices.
        "pcidevs" pcidevs: Vec<DevicePci>,
        /// Reserved device memory regions.
        "rdms" rdms: Vec<DeviceRdm>,
        /// Device tree passthrough devices.
        "dtdevs" dtdevs: Vec<DeviceDtdev>,
        /// Virtual framebuffers.
        "vfbs" vfbs: Vec<DeviceVfb>,
        /// Virtual keyboards.
        "vkbs" vkbs: Vec<DeviceVkb>,
        /// vTPMs.
        "vtpms" vtpms: Vec<DeviceVtpm>,
        /// 9pfs shares.
        "p9s" p9s: Vec<DeviceP9>,
        /// PV calls interfaces.
        "pvcallsifs" pvcallsifs: Vec<DevicePvcallsif>,
        /// Channels.
        "channels" channels: Vec<DeviceChannel>,
        /// USB controllers.
        "usbctrls" usbctrls: Vec<DeviceUsbctrl>,
        /// USB devices.
        "usbdevs" usbdevs: Vec<DeviceUsbdev>,
        /// Action on power-off.
        "on_poweroff" on_poweroff: ActionOnShutdown,
        /// Action on reboot.
        "on_reboot" on_reboot: ActionOnShutdown,
        /// Action on watchdog.
        "on_watchdog" on_watchdog: ActionOnShutdown,
        /// Action on crash.
        "on_crash" on_crash: ActionOnShutdown,
        /// Action on soft reset.
        "on_soft_reset" on_soft_reset: ActionOnShutdown,
    }
}

impl DomainConfig {
    /// A configuration of type `t` (sets `c_info.type` and selects the build information's union member).
    pub fn new(t: DomainType) -> DomainConfig {
        let mut c = DomainConfig::default();
        c.c_info.type_ = t;
        c.b_info.type_ = BuildType::for_type(t);
        c
    }

    /// The JSON value libxl writes for this configuration.
    pub fn to_json_value(&self) -> Value {
        self.to_json()
    }

    /// The JSON text exactly as libxl writes it: yajl's beautified layout (four-space indentation,
    /// `"key": value`, an empty object as `{`, a blank line and `}`), ending with a newline.
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        yajl_write(&self.to_json(), 0, &mut out);
        out.push('\n');
        out
    }

    /// Reads libxl's JSON form.
    pub fn from_json_str(text: &str) -> Result<DomainConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        DomainConfig::from_json_value(&v)
    }

    /// Reads a parsed JSON value.
    pub fn from_json_value(v: &Value) -> Result<DomainConfig, ConfigError> {
        let mut c = DomainConfig::from_json(v, "$")?;
        // libxl_domain_config_from_json: the union follows c_info.type when the JSON has no union member.
        if c.b_info.type_ == BuildType::Invalid && c.c_info.type_ != DomainType::Invalid {
            c.b_info.type_ = BuildType::for_type(c.c_info.type_);
        }
        Ok(c)
    }
}

fn yajl_indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str("    ");
    }
}

/// Writes `v` as yajl's generator does with `yajl_gen_beautify` and a four-space indent string.
fn yajl_write(v: &Value, depth: usize, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                yajl_indent(depth + 1, out);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                yajl_write(x, depth + 1, out);
            }
            out.push('\n');
            yajl_indent(depth, out);
            out.push('}');
        }
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                yajl_indent(depth + 1, out);
                yajl_write(x, depth + 1, out);
            }
            out.push('\n');
            yajl_indent(depth, out);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yajl_layout() {
        let mut c = DomainConfig::new(DomainType::Pv);
        c.c_info.name = Some("g".into());
        c.b_info.avail_vcpus = Bitmap::first(2);
        let s = c.to_json_string();
        let want = "{\n    \"c_info\": {\n        \"type\": \"pv\",\n        \"name\": \"g\"\n    },\n    \"b_info\": {\n        \"avail_vcpus\": [\n            0,\n            1\n        ],\n        \"sched_params\": {\n\n        },\n        \"type.pv\": {\n\n        },\n        \"arch_arm\": {\n\n        },\n        \"arch_x86\": {\n\n        }\n    }\n}\n";
        assert_eq!(s, want);
        assert_eq!(DomainConfig::from_json_str(&s).unwrap(), c);
    }
}
