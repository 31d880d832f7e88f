//! xl.cfg -> domain model.

use domain_xml::domain::{
    Address, Chardev, ChardevSource, Clock, Controller, Cpu, CpuFeature, Devices, Disk, DiskHost,
    Domain, Features, Graphics, GraphicsListen, Hostdev, Input, Interface, IpAddr, LifecycleAction,
    Loader, NumaCell, Os, OsType, Sound, Timer, Vcpu,
};
use libxl_rs::xlcfg::{DiskSpec, Value, VifSpec, XlCfgError, XlConfig};

use super::FIRMWARE_DIR;
use crate::Error;

/// libvirt's `MIN_XEN_GUEST_SIZE` (MiB): the default `memory` is twice this.
const MIN_XEN_GUEST_SIZE_MIB: u64 = 64;

fn verr(conf: &XlConfig, key: &str, message: impl Into<String>) -> Error {
    Error::XlCfg(conf.value_error(key, message))
}

/// Builds the domain model libvirt produces from an xl.cfg file, including its post-parse defaults.
pub fn xl_config_to_domain(conf: &XlConfig) -> Result<Domain, Error> {
    let name = conf
        .get_str("name")?
        .ok_or_else(|| verr(conf, "name", "the domain name is missing"))?;
    let mut d = Domain::new("xen", name);
    d.uuid = Some(match conf.get_str("uuid")? {
        Some(u) => domain_xml::domain::parse_uuid(u).map_err(|r| verr(conf, "uuid", r))?,
        None => uuid::Uuid::new_v4().to_string(),
    });

    // General metadata: the guest type.
    let os_type = match conf.get_str("type")? {
        Some("pv") => OsType::Linux,
        Some("pvh") => OsType::Xenpvh,
        Some("hvm") => OsType::Hvm,
        Some(other) => {
            return Err(verr(
                conf,
                "type",
                format!("type '{other}' is not supported"),
            ))
        }
        None => match conf.get_str("builder")? {
            Some("hvm") => OsType::Hvm,
            _ => OsType::Linux,
        },
    };
    let hvm = os_type == OsType::Hvm;
    d.os = Os {
        os_type,
        arch: Some("x86_64".into()),
        machine: Some(
            match os_type {
                OsType::Hvm => "xenfv",
                OsType::Xenpvh => "xenpvh",
                _ => "xenpv",
            }
            .into(),
        ),
        ..Os::default()
    };

    // Memory (MiB in xl.cfg).
    let memory = uint(conf, "memory")?.unwrap_or(MIN_XEN_GUEST_SIZE_MIB * 2);
    let maxmem = uint(conf, "maxmem")?.unwrap_or(memory);
    d.memory_kib = maxmem
        .checked_mul(1024)
        .ok_or_else(|| verr(conf, "maxmem", "the memory size is too large"))?;
    d.current_memory_kib = memory
        .checked_mul(1024)
        .ok_or_else(|| verr(conf, "memory", "the memory size is too large"))?;

    // Lifecycle actions.
    d.on_poweroff = action(conf, "on_poweroff", LifecycleAction::Destroy)?;
    d.on_reboot = action(conf, "on_reboot", LifecycleAction::Restart)?;
    d.on_crash = action(conf, "on_crash", LifecycleAction::Restart)?;

    // vCPUs.
    let vcpus = uint(conf, "vcpus")?.unwrap_or(1);
    let maxvcpus = match uint(conf, "maxvcpus")? {
        Some(m) => m,
        None => vcpus,
    };
    d.vcpu = Vcpu {
        count: u32::try_from(maxvcpus).map_err(|_| verr(conf, "maxvcpus", "too many vCPUs"))?,
        current: None,
        placement_auto: false,
        cpuset: conf.get_str("cpus")?.map(str::to_string),
    };
    if vcpus < maxvcpus {
        d.vcpu.current = Some(vcpus as u32);
    }

    // Hypervisor features and timers.
    let mut features = Features::default();
    let mut timers = Vec::new();
    if let Some(tsc) = conf.get_str("tsc_mode")? {
        timers.push(Timer {
            name: "tsc".into(),
            present: Some(true),
            mode: Some(
                match tsc {
                    "always_emulate" => "emulate",
                    "native" => "native",
                    "native_paravirt" => "paravirt",
                    _ => "auto",
                }
                .into(),
            ),
            ..Timer::default()
        });
    }
    if let Some(p) = conf.get_str("passthrough")? {
        features.xen_passthrough = Some(match p {
            "disabled" => (false, None),
            "enabled" => (true, None),
            "sync_pt" | "share_pt" => (true, Some(p.to_string())),
            _ => {
                return Err(verr(
                    conf,
                    "passthrough",
                    format!("invalid passthrough mode '{p}'"),
                ))
            }
        });
    }
    if hvm {
        if xen_bool(conf, "pae", true)? {
            features.pae = Some(true);
        }
        if xen_bool(conf, "acpi", true)? {
            features.acpi = Some(true);
        }
        if xen_bool(conf, "apic", true)? {
            features.apic = Some(true);
        }
        if !xen_bool(conf, "hap", true)? {
            features.hap = Some(false);
        }
        if xen_bool(conf, "viridian", false)? {
            features.viridian = Some(true);
        }
        if conf.contains("hpet") {
            timers.push(Timer {
                name: "hpet".into(),
                present: Some(xen_bool(conf, "hpet", false)?),
                ..Timer::default()
            });
        }
    } else if xen_bool(conf, "e820_host", false)? {
        features.xen_e820_host = Some(true);
    }
    if features != Features::default() {
        d.features = Some(features);
    }

    // Clock.
    let localtime = xen_bool(conf, "localtime", false)?;
    d.clock = if hvm {
        let off = conf.get_int("rtc_timeoffset")?.unwrap_or(0);
        Clock {
            offset: "variable".into(),
            adjustment: Some(off.to_string()),
            basis: Some(if localtime { "localtime" } else { "utc" }.into()),
            timezone: None,
            timers,
        }
    } else {
        Clock {
            offset: if localtime { "localtime" } else { "utc" }.into(),
            adjustment: Some("reset".into()),
            basis: None,
            timezone: None,
            timers,
        }
    };

    let mut dev = Devices {
        emulator: match conf.get_str("device_model_override")? {
            Some(e) => Some(e.to_string()),
            None => conf.get_str("device_model")?.map(str::to_string),
        },
        ..Devices::default()
    };

    // Network interfaces.
    if let Some(s) = conf.get("vif") {
        if let Value::List(items) = &s.value {
            for item in items {
                if let Value::Str(spec) = item {
                    dev.interfaces.push(parse_vif(spec, s.line)?);
                }
            }
        }
    }

    // PCI passthrough.
    if let Some(pcis) = conf.get_str_list("pci")? {
        for p in pcis {
            dev.hostdevs
                .push(parse_pci(p).map_err(|m| verr(conf, "pci", m))?);
        }
    }

    // Sound.
    if hvm {
        if let Some(s) = conf.get_str("soundhw")? {
            let models: Vec<&str> = if s == "all" {
                vec!["sb16", "es1370"]
            } else {
                s.split(',').collect()
            };
            for m in models {
                if ![
                    "sb16", "es1370", "pcspk", "ac97", "ich6", "ich9", "usb", "ich7",
                ]
                .contains(&m)
                {
                    return Err(verr(conf, "soundhw", format!("unknown sound model '{m}'")));
                }
                dev.sounds.push(Sound {
                    model: m.to_string(),
                    address: None,
                });
            }
        }
    }

    // Framebuffer.
    parse_vfb(conf, hvm, &mut dev)?;

    // Character devices.
    if hvm {
        if let Some(p) = conf.get_str("parallel")? {
            if p != "none" {
                let mut c = parse_chr(p).map_err(|m| verr(conf, "parallel", m))?;
                c.target_port = Some(0);
                dev.parallels.push(c);
            }
        }
        match conf.get("serial").map(|s| &s.value) {
            Some(Value::List(items)) => {
                for (port, item) in items.iter().enumerate() {
                    let Value::Str(v) = item else {
                        return Err(verr(conf, "serial", "expected a list of strings"));
                    };
                    if v == "none" {
                        continue;
                    }
                    let mut c = parse_chr(v).map_err(|m| verr(conf, "serial", m))?;
                    c.target_port = Some(port as u32);
                    dev.serials.push(c);
                }
            }
            Some(_) => {
                let v = conf.get_str("serial")?.unwrap_or("none");
                if v != "none" {
                    let mut c = parse_chr(v).map_err(|m| verr(conf, "serial", m))?;
                    c.target_port = Some(0);
                    dev.serials.push(c);
                }
            }
            None => {}
        }
    } else {
        dev.consoles.push(Chardev {
            chr_type: "pty".into(),
            target_type: Some("xen".into()),
            target_port: Some(0),
            ..Chardev::default()
        });
    }

    // Boot: firmware, kernel, boot order, nested HVM.
    let cmdline = parse_cmdline(conf)?;
    if hvm {
        if conf.get_str("bios")? == Some("ovmf") {
            let path = match conf.get_str("bios_path_override")? {
                Some(p) => p.to_string(),
                None => format!("{FIRMWARE_DIR}/ovmf.bin"),
            };
            d.os.loader = Some(Loader {
                path: Some(path),
                readonly: Some(true),
                secure: None,
                loader_type: Some("pflash".into()),
            });
        } else {
            d.os.loader = Some(Loader {
                path: Some(format!("{FIRMWARE_DIR}/hvmloader")),
                readonly: None,
                secure: None,
                loader_type: Some("rom".into()),
            });
        }
        if let Some(t) = conf.get_str("acpi_firmware")? {
            d.os.acpi_tables.push(("slic".into(), t.to_string()));
        }
        d.os.kernel = conf.get_str("kernel")?.map(str::to_string);
        d.os.initrd = conf.get_str("ramdisk")?.map(str::to_string);
        d.os.cmdline = cmdline;
        let boot = conf.get_str("boot")?.unwrap_or("c");
        for ch in boot.chars().take(4) {
            d.os.boot.push(
                match ch {
                    'a' => "fd",
                    'd' => "cdrom",
                    'n' => "network",
                    _ => "hd",
                }
                .into(),
            );
        }
        if conf.contains("nestedhvm") {
            let on = xen_bool(conf, "nestedhvm", false)?;
            let cpu = d.cpu.get_or_insert_with(|| Cpu {
                mode: Some("host-passthrough".into()),
                ..Cpu::default()
            });
            if !on {
                cpu.features.push(CpuFeature {
                    policy: Some("disable".into()),
                    name: "vmx".into(),
                });
            }
        }
    } else {
        d.bootloader = conf.get_str("bootloader")?.map(str::to_string);
        d.bootloader_args = conf.get_str("bootargs")?.map(str::to_string);
        d.os.kernel = conf.get_str("kernel")?.map(str::to_string);
        d.os.initrd = conf.get_str("ramdisk")?.map(str::to_string);
        d.os.cmdline = cmdline;
    }

    parse_vnuma(conf, &mut d)?;

    // xenbus limits: libvirt always adds the xenbus controller.
    let mut xenbus = Controller {
        controller_type: "xenbus".into(),
        index: 0,
        ..Controller::default()
    };
    if let Some(v) = uint(conf, "max_event_channels")?.filter(|v| *v > 0) {
        xenbus.max_event_channels =
            Some(u32::try_from(v).map_err(|_| verr(conf, "max_event_channels", "too large"))?);
    }
    if let Some(v) = uint(conf, "max_grant_frames")?.filter(|v| *v > 0) {
        xenbus.max_grant_frames =
            Some(u32::try_from(v).map_err(|_| verr(conf, "max_grant_frames", "too large"))?);
    }
    dev.controllers.push(xenbus);

    parse_cpuid(conf, &mut d)?;

    // Disks.
    if let Some(s) = conf.get("disk") {
        if let Value::List(items) = &s.value {
            for item in items {
                if let Value::Str(spec) = item {
                    let ds = DiskSpec::parse(spec, "disk", s.line)?;
                    dev.disks.push(disk_from_spec(&ds, hvm).map_err(|m| {
                        Error::XlCfg(XlCfgError::Value {
                            line: s.line,
                            key: "disk".into(),
                            message: m,
                        })
                    })?);
                }
            }
        }
    }

    parse_spice(conf, hvm, &mut dev)?;

    // USB input devices.
    if hvm {
        if let Some(list) = conf.get_str_list("usbdevice")? {
            for v in list {
                let t = match v {
                    "tablet" => "tablet",
                    "mouse" => "mouse",
                    "keyboard" => "keyboard",
                    _ => continue,
                };
                dev.inputs.push(Input {
                    input_type: t.into(),
                    bus: Some("usb".into()),
                    address: None,
                });
            }
        }
    }

    // USB host devices.
    if let Some(list) = conf.get_str_list("usbdev")? {
        for v in list {
            let mut bus = None;
            let mut addr = None;
            for kv in v.split(',') {
                match kv.trim().split_once('=') {
                    Some(("hostbus", b)) => bus = Some(b),
                    Some(("hostaddr", a)) => addr = Some(a),
                    _ => {}
                }
            }
            let (Some(b), Some(a)) = (bus, addr) else {
                return Err(verr(
                    conf,
                    "usbdev",
                    format!("'{v}' needs hostbus and hostaddr"),
                ));
            };
            let b = u64::from_str_radix(b, 16)
                .map_err(|_| verr(conf, "usbdev", format!("invalid hostbus '{b}'")))?;
            let a = u64::from_str_radix(a, 16)
                .map_err(|_| verr(conf, "usbdev", format!("invalid hostaddr '{a}'")))?;
            dev.hostdevs.push(Hostdev {
                hostdev_type: "usb".into(),
                managed: false,
                source_address: Some(Address {
                    addr_type: None,
                    fields: vec![("bus", b), ("device", a)],
                }),
                ..Hostdev::default()
            });
        }
    }

    // USB controllers.
    if let Some(list) = conf.get_str_list("usbctrl")? {
        for v in list {
            let mut version = 2;
            let mut ports = 8;
            let mut kind = None;
            for kv in v.split(',') {
                match kv.trim().split_once('=') {
                    Some(("type", t)) => kind = Some(t),
                    Some(("version", x)) => {
                        version = i64::from_str_radix(x, 16)
                            .map_err(|_| verr(conf, "usbctrl", format!("invalid version '{x}'")))?
                    }
                    Some(("ports", x)) => {
                        ports = u32::from_str_radix(x, 16)
                            .map_err(|_| verr(conf, "usbctrl", format!("invalid ports '{x}'")))?
                    }
                    _ => {}
                }
            }
            if kind.is_some_and(|k| !k.starts_with("qusb")) {
                continue;
            }
            let index = dev
                .controllers
                .iter()
                .filter(|c| c.controller_type == "usb")
                .count() as u32;
            dev.controllers.push(Controller {
                controller_type: "usb".into(),
                index,
                model: Some(if version == 1 { "qusb1" } else { "qusb2" }.into()),
                ports: Some(ports),
                ..Controller::default()
            });
        }
    }

    // Channels.
    if let Some(list) = conf.get_str_list("channel")? {
        for v in list {
            let mut connection = "";
            let mut name = None;
            let mut path = None;
            for kv in v.split(',') {
                match kv.trim().split_once('=') {
                    Some(("connection", c)) => connection = c,
                    Some(("name", n)) => name = Some(n.to_string()),
                    Some(("path", p)) => path = Some(p.to_string()),
                    _ => {}
                }
            }
            let (chr_type, sources) = if connection.starts_with("socket") {
                (
                    "unix",
                    vec![ChardevSource {
                        mode: Some("bind".into()),
                        path,
                        ..ChardevSource::default()
                    }],
                )
            } else if connection.starts_with("pty") {
                ("pty", Vec::new())
            } else {
                return Err(verr(
                    conf,
                    "channel",
                    format!("unsupported channel connection '{connection}'"),
                ));
            };
            dev.channels.push(Chardev {
                chr_type: chr_type.into(),
                sources,
                target_type: Some("xen".into()),
                target_name: name,
                ..Chardev::default()
            });
        }
    }

    // Device model arguments (xen namespace).
    if let Some(list) = conf.get_str_list("device_model_args")? {
        d.xen_commandline = list.into_iter().map(str::to_string).collect();
    }

    d.devices = dev;
    crate::defaults::apply_libxl_defaults(&mut d);
    Ok(d)
}

fn uint(conf: &XlConfig, key: &str) -> Result<Option<u64>, Error> {
    match conf.get_int(key)? {
        None => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| verr(conf, key, "expected a non-negative integer")),
    }
}

/// libvirt's `xenConfigGetBool`: an integer is true when non-zero, a string only when it is "1".
fn xen_bool(conf: &XlConfig, key: &str, default: bool) -> Result<bool, Error> {
    match conf.get(key).map(|s| &s.value) {
        None => Ok(default),
        Some(Value::Int(i)) => Ok(*i != 0),
        Some(Value::Str(s)) => Ok(s == "1"),
        Some(Value::List(_)) => Err(verr(conf, key, "expected a boolean")),
    }
}

fn action(conf: &XlConfig, key: &str, default: LifecycleAction) -> Result<LifecycleAction, Error> {
    match conf.get_str(key)? {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| verr(conf, key, format!("unexpected value '{v}'"))),
    }
}

fn parse_cmdline(conf: &XlConfig) -> Result<Option<String>, Error> {
    let cmdline = conf.get_str("cmdline")?;
    let root = conf.get_str("root")?;
    let extra = conf.get_str("extra")?;
    Ok(match (cmdline, root, extra) {
        (Some(c), _, _) => Some(c.to_string()),
        (None, Some(r), Some(e)) => Some(format!("root={r} {e}")),
        (None, Some(r), None) => Some(format!("root={r}")),
        (None, None, Some(e)) => Some(e.to_string()),
        (None, None, None) => None,
    })
}

fn parse_vif(spec: &str, line: usize) -> Result<Interface, Error> {
    let v = VifSpec::parse(spec, "vif", line)?;
    let err = |m: String| {
        Error::XlCfg(XlCfgError::Value {
            line,
            key: "vif".into(),
            message: m,
        })
    };
    let mut net = Interface {
        mac: Some(match v.get("mac") {
            Some(m) => domain_xml::domain::parse_mac(m).map_err(err)?,
            None => crate::defaults::random_mac(),
        }),
        ..Interface::default()
    };
    let script = v.get("script").filter(|s| !s.is_empty());
    let bridge = v.get("bridge").filter(|b| !b.is_empty());
    if bridge.is_some() || matches!(script, Some("vif-bridge" | "vif-vnic")) {
        net.net_type = "bridge".into();
        if let Some(b) = bridge {
            if let Some((name, tag)) = b.split_once('.') {
                net.source = Some(name.into());
                net.vlan_tags = vec![tag
                    .parse()
                    .map_err(|_| err(format!("invalid VLAN tag '{tag}'")))?];
                net.virtualport = Some("openvswitch".into());
            } else if b.contains(':') {
                let mut parts = b.split(':');
                net.source = parts.next().map(str::to_string);
                for t in parts {
                    net.vlan_tags.push(
                        t.parse()
                            .map_err(|_| err(format!("invalid VLAN trunk '{t}'")))?,
                    );
                }
                net.vlan_trunk = true;
                net.virtualport = Some("openvswitch".into());
            } else {
                net.source = Some(b.into());
            }
        }
    } else {
        net.net_type = "ethernet".into();
    }
    if let Some(ips) = v.get("ip") {
        for ip in ips.split(' ').filter(|s| !s.is_empty()) {
            let family = if ip.parse::<std::net::Ipv4Addr>().is_ok() {
                "ipv4"
            } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                "ipv6"
            } else {
                return Err(err(format!("invalid IP address '{ip}'")));
            };
            net.ips.push(IpAddr {
                address: ip.into(),
                family: Some(family.into()),
                prefix: None,
            });
        }
    }
    net.script = script.map(str::to_string);
    if let Some(m) = v.get("model").filter(|m| !m.is_empty()) {
        net.model = Some(m.into());
    } else if v.get("type") == Some("vif") {
        net.model = Some("netfront".into());
    }
    net.target_dev = v
        .get("vifname")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(rate) = v.get("rate") {
        let kbps = parse_rate(rate).map_err(err)?;
        net.bandwidth_outbound = Some(domain_xml::domain::Bandwidth {
            average: Some(kbps),
            peak: None,
            burst: None,
        });
    }
    Ok(net)
}

/// Parses a vif `rate` (`N[GMK]{B,b}/s[@interval]`) into KB/s as libvirt does.
fn parse_rate(rate: &str) -> Result<u64, String> {
    let r = rate.split('@').next().unwrap_or("");
    let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = &r[digits.len()..];
    let bad = || format!("invalid rate '{rate}'");
    let (mult, rest) = match rest.chars().next() {
        Some('G') => (1024 * 1024, &rest[1..]),
        Some('M') => (1024, &rest[1..]),
        Some('K') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let bits = match rest {
        "B/s" => false,
        "b/s" => true,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    Ok(if bits { v / 8 } else { v })
}

fn parse_pci(entry: &str) -> Result<Hostdev, String> {
    let bad = || format!("malformed PCI address '{entry}'");
    let (addr, opts) = match entry.split_once(',') {
        Some((a, o)) => (a, Some(o)),
        None => (entry, None),
    };
    let parts: Vec<&str> = addr.splitn(3, ':').collect();
    let (domain, bus, rest) = match parts.as_slice() {
        [d, b, r] => (u64::from_str_radix(d, 16).map_err(|_| bad())?, *b, *r),
        [b, r] => (0, *b, *r),
        _ => return Err(bad()),
    };
    let bus = u64::from_str_radix(bus, 16).map_err(|_| bad())?;
    let (slot, func) = rest.split_once('.').ok_or_else(bad)?;
    let slot = u64::from_str_radix(slot, 16).map_err(|_| bad())?;
    let func = u64::from_str_radix(func, 16).map_err(|_| bad())?;
    let mut write_filtering = None;
    if let Some(opts) = opts {
        for o in opts.split(',') {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("malformed PCI options '{opts}'"))?;
            if k == "permissive" {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("invalid permissive value '{v}'"))?;
                write_filtering = Some(n == 0);
            }
        }
    }
    Ok(Hostdev {
        hostdev_type: "pci".into(),
        managed: false,
        write_filtering,
        source_address: Some(Address {
            addr_type: None,
            fields: vec![
                ("domain", domain),
                ("bus", bus),
                ("slot", slot),
                ("function", func),
            ],
        }),
        ..Hostdev::default()
    })
}

/// Parses a character device in xend's notation (`pty`, `file:/path`, `tcp:host:port,server`, `/dev/ttyS0`...).
fn parse_chr(value: &str) -> Result<Chardev, String> {
    let mut c = Chardev::default();
    if value.starts_with('/') {
        c.chr_type = "dev".into();
        c.sources.push(ChardevSource {
            path: Some(value.into()),
            ..ChardevSource::default()
        });
        return Ok(c);
    }
    let (prefix, rest) = value.split_once(':').unwrap_or((value, ""));
    let kind = if prefix.starts_with("telnet") {
        c.protocol = Some("telnet".into());
        "tcp"
    } else {
        match prefix {
            "pty" | "file" | "pipe" | "tcp" | "udp" | "unix" | "null" | "vc" | "stdio" => prefix,
            _ => return Err(format!("unknown character device type '{prefix}'")),
        }
    };
    c.chr_type = kind.into();
    match kind {
        "file" | "pipe" => c.sources.push(ChardevSource {
            path: Some(rest.into()),
            ..ChardevSource::default()
        }),
        "tcp" => {
            let (host, svc) = rest
                .split_once(':')
                .ok_or_else(|| "malformed character device string".to_string())?;
            let (svc, opts) = svc.split_once(',').unwrap_or((svc, ""));
            let listen = opts.split(',').any(|o| o == "server");
            c.sources.push(ChardevSource {
                mode: Some(if listen { "bind" } else { "connect" }.into()),
                host: (!host.is_empty()).then(|| host.to_string()),
                service: Some(svc.into()),
                path: None,
            });
            c.protocol.get_or_insert_with(|| "raw".into());
        }
        "udp" => {
            let (chost, rest2) = rest
                .split_once(':')
                .ok_or_else(|| "malformed character device string".to_string())?;
            let (csvc, bind) = match rest2.split_once('@') {
                Some((s, b)) => (s, Some(b)),
                None => (rest2, None),
            };
            c.sources.push(ChardevSource {
                mode: Some("connect".into()),
                host: (!chost.is_empty()).then(|| chost.to_string()),
                service: Some(csvc.into()),
                path: None,
            });
            if let Some(b) = bind {
                let (bh, bs) = b
                    .split_once(':')
                    .ok_or_else(|| "malformed character device string".to_string())?;
                c.sources.push(ChardevSource {
                    mode: Some("bind".into()),
                    host: (!bh.is_empty()).then(|| bh.to_string()),
                    service: Some(bs.into()),
                    path: None,
                });
            }
        }
        "unix" => {
            let (path, opts) = rest.split_once(',').unwrap_or((rest, ""));
            let listen = opts.split(',').any(|o| o == "server");
            c.sources.push(ChardevSource {
                mode: Some(if listen { "bind" } else { "connect" }.into()),
                path: Some(path.into()),
                ..ChardevSource::default()
            });
        }
        _ => {}
    }
    Ok(c)
}

fn parse_vfb(conf: &XlConfig, hvm: bool, dev: &mut Devices) -> Result<(), Error> {
    if hvm {
        if xen_bool(conf, "vnc", false)? {
            let autoport = xen_bool(conf, "vncunused", true)?;
            let port = if autoport {
                -1
            } else {
                i32::try_from(uint(conf, "vncdisplay")?.unwrap_or(0))
                    .ok()
                    .and_then(|n| n.checked_add(5900))
                    .ok_or_else(|| verr(conf, "vncdisplay", "the display number is too large"))?
            };
            let listen = conf.get_str("vnclisten")?.map(str::to_string);
            dev.graphics.push(Graphics {
                graphics_type: "vnc".into(),
                port: Some(port),
                autoport: Some(autoport),
                listen: listen.clone(),
                keymap: conf.get_str("keymap")?.map(str::to_string),
                passwd: conf.get_str("vncpasswd")?.map(str::to_string),
                listens: vec![GraphicsListen {
                    listen_type: "address".into(),
                    address: listen,
                    ..GraphicsListen::default()
                }],
                ..Graphics::default()
            });
        } else if xen_bool(conf, "sdl", false)? {
            dev.graphics.push(Graphics {
                graphics_type: "sdl".into(),
                display: conf.get_str("display")?.map(str::to_string),
                xauth: conf.get_str("xauthority")?.map(str::to_string),
                ..Graphics::default()
            });
        }
        return Ok(());
    }
    let Some(vfbs) = conf.get_str_list("vfb")? else {
        return Ok(());
    };
    let Some(vfb) = vfbs.first() else {
        return Ok(());
    };
    let sdl = vfb.contains("type=sdl");
    let mut g = Graphics {
        graphics_type: if sdl { "sdl" } else { "vnc" }.into(),
        ..Graphics::default()
    };
    let mut listen = None;
    let mut autoport = false;
    let mut port = None;
    for kv in vfb.split(',') {
        let Some((k, v)) = kv.trim().split_once('=') else {
            break;
        };
        match (sdl, k) {
            (false, "vncunused") => autoport = v == "1",
            (false, "vnclisten") => listen = Some(v.to_string()),
            (false, "vncpasswd") => g.passwd = Some(v.to_string()),
            (false, "keymap") => g.keymap = Some(v.to_string()),
            (false, "vncdisplay") => {
                let n: i32 = v
                    .parse()
                    .map_err(|_| verr(conf, "vfb", format!("invalid vncdisplay value '{v}'")))?;
                port =
                    Some(n.checked_add(5900).ok_or_else(|| {
                        verr(conf, "vfb", format!("invalid vncdisplay value '{v}'"))
                    })?);
            }
            (true, "display") => g.display = Some(v.to_string()),
            (true, "xauthority") => g.xauth = Some(v.to_string()),
            _ => {}
        }
    }
    if !sdl {
        g.autoport = Some(autoport);
        g.port = Some(if autoport { -1 } else { port.unwrap_or(5900) });
        g.listen = listen.clone();
        g.listens = vec![GraphicsListen {
            listen_type: "address".into(),
            address: listen,
            ..GraphicsListen::default()
        }];
    }
    dev.graphics.push(g);
    Ok(())
}

fn parse_spice(conf: &XlConfig, hvm: bool, dev: &mut Devices) -> Result<(), Error> {
    if !hvm || !xen_bool(conf, "spice", false)? {
        return Ok(());
    }
    let listen = conf.get_str("spicehost")?.map(str::to_string);
    let port_of = |key: &str| -> Result<i32, Error> {
        i32::try_from(uint(conf, key)?.unwrap_or(0)).map_err(|_| verr(conf, key, "invalid port"))
    };
    let tls = port_of("spicetls_port")?;
    let port = port_of("spiceport")?;
    let passwd = if xen_bool(conf, "spicedisable_ticketing", false)? {
        None
    } else {
        Some(
            conf.get_str("spicepasswd")?
                .ok_or_else(|| verr(conf, "spicepasswd", "the setting is missing"))?
                .to_string(),
        )
    };
    let g = Graphics {
        graphics_type: "spice".into(),
        port: (port != 0).then_some(port),
        tls_port: (tls != 0).then_some(tls),
        autoport: Some(port == 0 && tls == 0),
        listen: listen.clone(),
        passwd,
        listens: vec![GraphicsListen {
            listen_type: "address".into(),
            address: listen,
            ..GraphicsListen::default()
        }],
        mouse_mode: Some(
            if xen_bool(conf, "spiceagent_mouse", false)? {
                "client"
            } else {
                "server"
            }
            .into(),
        ),
        clipboard_copypaste: Some(xen_bool(conf, "spice_clipboard_sharing", false)?),
        ..Graphics::default()
    };
    // libvirt replaces any VNC/SDL display with the SPICE one.
    dev.graphics = vec![g];
    Ok(())
}

fn parse_cpuid(conf: &XlConfig, d: &mut Domain) -> Result<(), Error> {
    let Some(s) = conf.get_str("cpuid")? else {
        return Ok(());
    };
    let mut pairs = s.split(',');
    let first = pairs.next().unwrap_or("");
    let cpu = d.cpu.get_or_insert_with(|| Cpu {
        mode: Some("host-passthrough".into()),
        ..Cpu::default()
    });
    if first.is_empty() {
        return Ok(());
    }
    if first != "host" {
        return Err(verr(
            conf,
            "cpuid",
            format!("cpuid starting with '{first}' is not supported, only the libxl format is"),
        ));
    }
    for p in pairs {
        let (name, val) = p
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| verr(conf, "cpuid", format!("invalid cpuid element '{p}'")))?;
        let policy = match val {
            "1" => "force",
            "0" => "disable",
            "x" | "k" | "s" => "optional",
            _ => return Err(verr(conf, "cpuid", format!("invalid cpuid value '{p}'"))),
        };
        cpu.features.push(CpuFeature {
            policy: Some(policy.into()),
            name: translate_cpu_feature(name, true).to_string(),
        });
    }
    Ok(())
}

/// libvirt's CPU feature names and libxl's, where they differ.
const CPU_FEATURE_NAMES: &[(&str, &str)] = &[
    ("cx16", "cmpxchg16"),
    ("cid", "cntxid"),
    ("ds_cpl", "dscpl"),
    ("pclmuldq", "pclmulqdq"),
    ("pni", "sse3"),
    ("ht", "htt"),
    ("pn", "psn"),
    ("clflush", "clfsh"),
    ("sep", "sysenter"),
    ("cx8", "cmpxchg8"),
    ("nodeid_msr", "nodeid"),
    ("cr8legacy", "altmovcr8"),
    ("lahf_lm", "lahfsahf"),
    ("cmp_legacy", "cmplegacy"),
    ("fxsr_opt", "ffxsr"),
    ("pdpe1gb", "page1gb"),
    ("spec-ctrl", "ibrsb"),
];

/// Translates a CPU feature name from libxl's spelling (`from_libxl`) or to it.
pub(crate) fn translate_cpu_feature(name: &str, from_libxl: bool) -> &str {
    for (lv, lx) in CPU_FEATURE_NAMES {
        if from_libxl && *lx == name {
            return lv;
        }
        if !from_libxl && *lv == name {
            return lx;
        }
    }
    name
}

fn parse_vnuma(conf: &XlConfig, d: &mut Domain) -> Result<(), Error> {
    let Some(s) = conf.get("vnuma") else {
        return Ok(());
    };
    let Value::List(nodes) = &s.value else {
        return Ok(());
    };
    let nr = nodes.len();
    let mut cells = Vec::new();
    let mut total_vcpus = 0u64;
    for (i, node) in nodes.iter().enumerate() {
        let Value::List(items) = node else {
            return Err(verr(conf, "vnuma", format!("vnode {i} is not a list")));
        };
        let mut pnode = None;
        let mut size = None;
        let mut cpus = None;
        let mut distances = Vec::new();
        for it in items {
            let Value::Str(kv) = it else {
                return Err(verr(
                    conf,
                    "vnuma",
                    format!("vnode {i} has a non-string entry"),
                ));
            };
            let (k, v) = kv
                .rsplit_once('=')
                .ok_or_else(|| verr(conf, "vnuma", format!("invalid vnode entry '{kv}'")))?;
            if v.is_empty() {
                continue;
            }
            if k.starts_with("pnode") {
                let p: usize = v.parse().ok().filter(|p| *p < nr).ok_or_else(|| {
                    verr(conf, "vnuma", format!("vnode {i} has invalid pnode '{v}'"))
                })?;
                pnode = Some(p);
            } else if k.starts_with("size") {
                size = Some(
                    v.parse::<u64>()
                        .map_err(|_| verr(conf, "vnuma", format!("invalid size '{v}'")))?,
                );
            } else if k.starts_with("vcpus") {
                total_vcpus += cpuset_count(v)
                    .ok_or_else(|| verr(conf, "vnuma", format!("invalid vcpus '{v}'")))?;
                cpus = Some(v.to_string());
            } else if k.starts_with("vdistances") {
                let ds: Vec<&str> = v.split(',').collect();
                if ds.len() != nr {
                    return Err(verr(
                        conf,
                        "vnuma",
                        format!("vnode {i} has {} distances for {nr} vnodes", ds.len()),
                    ));
                }
                for (j, dv) in ds.iter().enumerate() {
                    distances.push((
                        j as u32,
                        dv.parse()
                            .map_err(|_| verr(conf, "vnuma", format!("invalid distance '{dv}'")))?,
                    ));
                }
            } else {
                return Err(verr(
                    conf,
                    "vnuma",
                    format!("invalid configuration for vnode {i}"),
                ));
            }
        }
        let (Some(_), Some(cpus), Some(size)) = (pnode, cpus, size.filter(|s| *s > 0)) else {
            return Err(verr(
                conf,
                "vnuma",
                format!("incomplete configuration for vnode {i}"),
            ));
        };
        cells.push(NumaCell {
            id: i as u32,
            cpus,
            memory_kib: size
                .checked_mul(1024)
                .ok_or_else(|| verr(conf, "vnuma", format!("vnode {i} size is too large")))?,
            distances,
        });
    }
    if u64::from(d.vcpu.count) < total_vcpus {
        return Err(verr(
            conf,
            "vnuma",
            format!(
                "the vnodes hold {total_vcpus} vCPUs, more than the {} maxvcpus",
                d.vcpu.count
            ),
        ));
    }
    d.cpu = Some(Cpu {
        numa: cells,
        ..Cpu::default()
    });
    Ok(())
}

/// Counts the CPUs in a cpuset string such as `0-3,8`.
fn cpuset_count(s: &str) -> Option<u64> {
    let mut n = 0;
    for part in s.split(',') {
        if let Some((a, b)) = part.split_once('-') {
            let a: u64 = a.trim().parse().ok()?;
            let b: u64 = b.trim().parse().ok()?;
            if b < a {
                return None;
            }
            n = u64::checked_add(n, b - a + 1)?;
        } else {
            part.trim().parse::<u64>().ok()?;
            n += 1;
        }
    }
    Some(n)
}

fn disk_from_spec(ds: &DiskSpec, hvm: bool) -> Result<Disk, String> {
    let mut disk = Disk {
        target_dev: ds.vdev.clone(),
        readonly: ds.readonly,
        device: "disk".into(),
        ..Disk::default()
    };
    let mut network = false;
    if let Some(t) = ds.target.as_deref().filter(|t| !t.is_empty()) {
        if let Some(rbd) = t.strip_prefix("rbd:") {
            network = true;
            parse_rbd(&rbd.replace("\\\\", "\\"), &mut disk)?;
        } else {
            disk.source = Some(t.to_string());
        }
    }
    if ds.devtype.as_deref() == Some("cdrom") {
        disk.driver_name = Some("qemu".into());
        disk.disk_type = "file".into();
        disk.device = "cdrom".into();
        disk.driver_type = Some("raw".into());
    } else {
        disk.driver_type = match ds.format.as_deref() {
            Some("qcow") => Some("qcow".into()),
            Some("qcow2") => Some("qcow2".into()),
            Some("vhd") => Some("vhd".into()),
            Some("qed") => Some("qed".into()),
            Some("empty") => None,
            _ => Some("raw".into()),
        };
        match ds.backendtype.as_deref() {
            Some("tap") => {
                disk.driver_name = Some("tap".into());
                disk.disk_type = "file".into();
            }
            Some("phy") => {
                disk.driver_name = Some("phy".into());
                disk.disk_type = "block".into();
            }
            Some("standalone") => {
                return Err("disk backend 'standalone' is not supported".into());
            }
            _ => {
                disk.driver_name = Some("qemu".into());
                disk.disk_type = if network { "network" } else { "file" }.into();
            }
        }
    }
    disk.target_bus = Some(
        if ds.vdev.starts_with("xvd") || !hvm {
            "xen"
        } else if ds.vdev.starts_with("sd") {
            "scsi"
        } else {
            "ide"
        }
        .into(),
    );
    Ok(disk)
}

/// Parses QEMU's `rbd:pool/image[@snap][:opt=val...]` string (after the `rbd:` prefix).
fn parse_rbd(s: &str, disk: &mut Disk) -> Result<(), String> {
    // Split on ':' not preceded by a backslash.
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push('\\');
                    cur.push(n);
                }
            }
            ':' => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    let mut it = fields.into_iter();
    let name = it.next().unwrap_or_default();
    disk.protocol = Some("rbd".into());
    disk.source = Some(name);
    for opt in it {
        let (k, v) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
        match k {
            "id" => {
                disk.auth.get_or_insert_with(Default::default).username = v.to_string();
            }
            "mon_host" => {
                for h in v.split("\\;") {
                    let (name, port) = match h.rsplit_once("\\:") {
                        Some((n, p)) => (n, Some(p.to_string())),
                        None => (h, None),
                    };
                    let name = name.trim_start_matches('[').trim_end_matches(']');
                    disk.hosts.push(DiskHost {
                        name: Some(name.replace("\\:", ":")),
                        port,
                        ..DiskHost::default()
                    });
                }
            }
            "auth_supported" | "conf" | "key" => {}
            _ => {}
        }
    }
    Ok(())
}
