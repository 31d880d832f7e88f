//! Domain model -> xl.cfg, in libvirt's key order and value formats.

use domain_xml::domain::{Chardev, Domain, OsType};
use libxl_rs::xlcfg::{Value, XlConfig};

use super::from_cfg::translate_cpu_feature;
use crate::Error;

fn unsupported(m: impl Into<String>) -> Error {
    Error::Unsupported(m.into())
}

/// Builds the xl.cfg libvirt writes for a domain.
///
/// An `<interface type='network'>` needs the bridge of its virtual network, which only the daemon knows: use
/// [`domain_to_xl_config_with_networks`] for those; here they are an error.
pub fn domain_to_xl_config(d: &Domain) -> Result<XlConfig, Error> {
    domain_to_xl_config_with_networks(d, &|_| None)
}

/// As [`domain_to_xl_config`], resolving a virtual network's name to its bridge with `network_bridge` (`None`
/// when the network does not exist or is not active, which is an error as in libvirt).
pub fn domain_to_xl_config_with_networks(
    d: &Domain,
    network_bridge: &dyn Fn(&str) -> Option<String>,
) -> Result<XlConfig, Error> {
    let mut c = XlConfig::new();
    let hvm = d.is_hvm();

    c.set_str("name", &d.name);
    c.set_str(
        "uuid",
        d.uuid
            .as_deref()
            .ok_or_else(|| unsupported("the domain has no UUID"))?,
    );

    // Memory in MiB, rounded up.
    c.set_int("maxmem", to_i64(d.memory_kib.div_ceil(1024))?);
    c.set_int("memory", to_i64(d.current_memory_kib.div_ceil(1024))?);

    // vCPUs.
    if d.vcpu.current() < d.vcpu.count {
        c.set_int("maxvcpus", i64::from(d.vcpu.count));
    }
    c.set_int("vcpus", i64::from(d.vcpu.current()));
    if let Some(set) = &d.vcpu.cpuset {
        c.set_str("cpus", set);
    }

    // Hypervisor features.
    let f = d.features.clone().unwrap_or_default();
    if hvm {
        c.set_int("pae", i64::from(f.pae == Some(true)));
        c.set_int("acpi", i64::from(f.acpi == Some(true)));
        c.set_int("apic", i64::from(f.apic == Some(true)));
        if f.hap == Some(false) {
            c.set_int("hap", 0);
        }
        c.set_int("viridian", i64::from(f.viridian == Some(true)));
    } else if f.xen_e820_host == Some(true) {
        c.set_int("e820_host", 1);
    }
    if let Some((true, mode)) = &f.xen_passthrough {
        c.set_str("passthrough", mode.as_deref().unwrap_or("enabled"));
    }
    for t in &d.clock.timers {
        match t.name.as_str() {
            "tsc" => c.set_str(
                "tsc_mode",
                match t.mode.as_deref() {
                    Some("native") => "native",
                    Some("paravirt") => "native_paravirt",
                    Some("emulate") => "always_emulate",
                    _ => "default",
                },
            ),
            "hpet" if hvm => c.set_int("hpet", i64::from(t.present != Some(false))),
            other => return Err(unsupported(format!("unsupported timer type '{other}'"))),
        }
    }

    // Clock.
    let reset = d.clock.adjustment.as_deref() == Some("reset");
    let localtime = if hvm {
        let (lt, off) = match d.clock.offset.as_str() {
            "variable" => (
                d.clock.basis.as_deref() == Some("localtime"),
                d.clock
                    .adjustment
                    .as_deref()
                    .unwrap_or("0")
                    .parse::<i64>()
                    .map_err(|_| unsupported("unsupported clock adjustment"))?,
            ),
            "utc" | "localtime" if reset => {
                return Err(unsupported("unsupported clock adjustment='reset'"))
            }
            "utc" => (false, 0),
            "localtime" => (true, 0),
            o => return Err(unsupported(format!("unsupported clock offset='{o}'"))),
        };
        c.set_int("rtc_timeoffset", off);
        lt
    } else {
        match d.clock.offset.as_str() {
            "utc" => false,
            "localtime" => true,
            o => return Err(unsupported(format!("unsupported clock offset='{o}'"))),
        }
    };
    c.set_int("localtime", i64::from(localtime));

    c.set_str("on_poweroff", d.on_poweroff.as_str());
    c.set_str("on_reboot", d.on_reboot.as_str());
    c.set_str("on_crash", d.on_crash.as_str());

    if let Some(e) = &d.devices.emulator {
        c.set_str("device_model_override", e);
    }

    format_vfb(&mut c, d, hvm);

    // Network interfaces.
    let mut vifs = Vec::new();
    for n in &d.devices.interfaces {
        let mac = n
            .mac
            .as_deref()
            .ok_or_else(|| unsupported("an interface has no MAC address"))?;
        let mut s = format!("mac={mac}");
        match n.net_type.as_str() {
            "bridge" => {
                let br = n.source.as_deref().unwrap_or("");
                s.push_str(&format!(",bridge={br}"));
                let mut script = n.script.clone();
                if n.virtualport.as_deref() == Some("openvswitch") {
                    script.get_or_insert_with(|| "vif-openvswitch".into());
                    if !n.vlan_tags.is_empty() {
                        if n.vlan_trunk {
                            for t in &n.vlan_tags {
                                s.push_str(&format!(":{t}"));
                            }
                        } else {
                            s.push_str(&format!(".{}", n.vlan_tags[0]));
                        }
                    }
                }
                if !n.ips.is_empty() {
                    s.push_str(&format!(",ip={}", ip_list(n)));
                }
                s.push_str(&format!(
                    ",script={}",
                    script.as_deref().unwrap_or("vif-bridge")
                ));
            }
            "ethernet" => {
                if let Some(sc) = &n.script {
                    s.push_str(&format!(",script={sc}"));
                }
                if !n.ips.is_empty() {
                    s.push_str(&format!(",ip={}", ip_list(n)));
                }
            }
            "network" => {
                let net = n.source.as_deref().unwrap_or("");
                let br = network_bridge(net)
                    .ok_or_else(|| unsupported(format!("network '{net}' is not active")))?;
                s.push_str(&format!(",bridge={br},script=vif-bridge"));
            }
            other => return Err(unsupported(format!("unsupported net type '{other}'"))),
        }
        if let Some(m) = &n.model {
            if hvm && m == "netfront" {
                s.push_str(",type=vif");
            } else {
                s.push_str(&format!(",model={m}"));
            }
        }
        if let Some(t) = &n.target_dev {
            s.push_str(&format!(",vifname={t}"));
        }
        if let Some(avg) = n
            .bandwidth_outbound
            .and_then(|b| b.average)
            .filter(|a| *a > 0)
        {
            s.push_str(&format!(",rate={avg}KB/s"));
        }
        vifs.push(s);
    }
    if !vifs.is_empty() {
        c.set_str_list("vif", vifs);
    }

    // PCI passthrough.
    let mut pcis = Vec::new();
    for h in d
        .devices
        .hostdevs
        .iter()
        .filter(|h| h.hostdev_type == "pci")
    {
        let a = h
            .source_address
            .as_ref()
            .ok_or_else(|| unsupported("a PCI host device has no address"))?;
        let g = |k| a.get(k).unwrap_or(0);
        let perm = match h.write_filtering {
            Some(true) => ",permissive=0",
            Some(false) => ",permissive=1",
            None => "",
        };
        pcis.push(format!(
            "{:04x}:{:02x}:{:02x}.{:x}{perm}",
            g("domain"),
            g("bus"),
            g("slot"),
            g("function")
        ));
    }
    if !pcis.is_empty() {
        c.set_str_list("pci", pcis);
    }

    // Character devices.
    if hvm {
        match d.devices.parallels.first() {
            Some(p) => c.set_str("parallel", chr_string(p)?),
            None => c.set_str("parallel", "none"),
        }
        let serials = &d.devices.serials;
        if serials.is_empty() {
            c.set_str("serial", "none");
        } else if serials.len() == 1 && serials[0].target_port.unwrap_or(0) == 0 {
            c.set_str("serial", chr_string(&serials[0])?);
        } else {
            let maxport = serials
                .iter()
                .map(|s| s.target_port.unwrap_or(0))
                .max()
                .unwrap_or(0);
            let mut list = Vec::new();
            for port in 0..=maxport {
                match serials.iter().find(|s| s.target_port.unwrap_or(0) == port) {
                    Some(s) => list.push(chr_string(s)?),
                    None => list.push("none".to_string()),
                }
            }
            c.set_str_list("serial", list);
        }
    }

    if hvm && !d.devices.sounds.is_empty() {
        let models: Vec<&str> = d.devices.sounds.iter().map(|s| s.model.as_str()).collect();
        c.set_str("soundhw", models.join(","));
    }

    // Operating system and boot.
    if hvm {
        c.set_str("builder", "hvm");
        let pflash =
            d.os.loader
                .as_ref()
                .filter(|l| l.loader_type.as_deref() == Some("pflash"));
        if pflash.is_some() || d.os.firmware.as_deref() == Some("efi") {
            c.set_str("bios", "ovmf");
        }
        if let Some(p) = pflash.and_then(|l| l.path.as_ref()) {
            c.set_str("bios_path_override", p);
        }
        if let Some((_, t)) = d.os.acpi_tables.iter().find(|(k, _)| k == "slic") {
            c.set_str("acpi_firmware", t);
        }
        if let Some(k) = &d.os.kernel {
            c.set_str("kernel", k);
        }
        if let Some(k) = &d.os.initrd {
            c.set_str("ramdisk", k);
        }
        if let Some(k) = &d.os.cmdline {
            c.set_str("cmdline", k);
        }
        let mut boot: String =
            d.os.boot
                .iter()
                .map(|b| match b.as_str() {
                    "fd" => 'a',
                    "cdrom" => 'd',
                    "network" => 'n',
                    _ => 'c',
                })
                .collect();
        if boot.is_empty() {
            boot.push('c');
        }
        c.set_str("boot", boot);
        if let Some(cpu) = &d.cpu {
            if cpu.mode.as_deref() == Some("host-passthrough") {
                let hw_virt_off = cpu.features.iter().any(|f| {
                    matches!(f.policy.as_deref(), Some("disable" | "forbid"))
                        && (f.name == "vmx" || f.name == "svm")
                });
                c.set_int("nestedhvm", i64::from(!hw_virt_off));
            }
        }
    } else {
        if d.os.os_type == OsType::Xenpvh {
            c.set_str("type", "pvh");
        }
        if let Some(b) = &d.bootloader {
            c.set_str("bootloader", b);
        }
        if let Some(b) = &d.bootloader_args {
            c.set_str("bootargs", b);
        }
        if let Some(k) = &d.os.kernel {
            c.set_str("kernel", k);
        }
        if let Some(k) = &d.os.initrd {
            c.set_str("ramdisk", k);
        }
        if let Some(k) = &d.os.cmdline {
            c.set_str("cmdline", k);
        }
    }

    // CPUID.
    if let Some(cpu) = &d.cpu {
        if cpu.mode.as_deref() == Some("host-passthrough") {
            let mut pairs = vec!["host".to_string()];
            for f in &cpu.features {
                let name = translate_cpu_feature(&f.name, false);
                if name == "vmx" || name == "svm" {
                    continue;
                }
                let policy = match f.policy.as_deref() {
                    Some("optional") => "x",
                    Some("disable" | "forbid") => "0",
                    _ => "1",
                };
                pairs.push(format!("{name}={policy}"));
            }
            if pairs.len() > 1 {
                c.set_str("cpuid", pairs.join(","));
            }
        }
    }

    // vNUMA.
    if let Some(cpu) = &d.cpu {
        let nr = cpu.numa.len();
        if nr > 0 {
            let dist = |i: usize, j: usize| -> u32 {
                let explicit = |a: usize, b: usize| {
                    cpu.numa[a]
                        .distances
                        .iter()
                        .find(|(id, _)| *id as usize == b)
                        .map(|(_, v)| *v)
                };
                explicit(i, j)
                    .or_else(|| explicit(j, i))
                    .unwrap_or(if i == j { 10 } else { 20 })
            };
            let mut nodes = Vec::new();
            for (i, cell) in cpu.numa.iter().enumerate() {
                let ds: Vec<String> = (0..nr).map(|j| dist(i, j).to_string()).collect();
                nodes.push(Value::List(vec![
                    Value::Str(format!("pnode={i}")),
                    Value::Str(format!("size={}", cell.memory_kib / 1024)),
                    Value::Str(format!("vcpus={}", cell.cpus)),
                    Value::Str(format!("vdistances={}", ds.join(","))),
                ]));
            }
            c.set("vnuma", Value::List(nodes));
        }
    }

    // xenbus limits.
    for ctl in d
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == "xenbus")
    {
        if let Some(v) = ctl.max_event_channels.filter(|v| *v > 0) {
            c.set_int("max_event_channels", i64::from(v));
        }
        if let Some(v) = ctl.max_grant_frames.filter(|v| *v > 0) {
            c.set_int("max_grant_frames", i64::from(v));
        }
    }

    // Disks.
    let mut disks = Vec::new();
    for disk in d.devices.disks.iter().filter(|d| d.device != "floppy") {
        let format = match disk.driver_type.as_deref() {
            Some("vhd") => "xvhd",
            Some("qcow") => "qcow",
            Some("qcow2") => "qcow2",
            Some("qed") => "qed",
            _ => "raw",
        };
        let mut s = format!("format={format},vdev={},access=", disk.target_dev);
        s.push_str(if disk.readonly {
            "ro"
        } else if disk.shareable {
            "!"
        } else {
            "rw"
        });
        if disk.transient {
            return Err(unsupported("transient disks not supported yet"));
        }
        if let Some(drv) = &disk.driver_name {
            s.push_str(",backendtype=");
            s.push_str(match drv.as_str() {
                "qemu" | "file" => "qdisk",
                "tap" => "tap",
                "phy" => "phy",
                _ => "",
            });
        }
        if disk.device == "cdrom" {
            s.push_str(",devtype=cdrom");
        }
        if let Some(t) = disk_target(disk)? {
            s.push_str(",target=");
            s.push_str(&t);
        }
        disks.push(s);
    }
    if !disks.is_empty() {
        c.set_str_list("disk", disks);
    }

    // SPICE.
    if hvm {
        if let Some(g) = d
            .devices
            .graphics
            .first()
            .filter(|g| g.graphics_type == "spice")
        {
            c.set_int("sdl", 0);
            c.set_int("vnc", 0);
            c.set_int("spice", 1);
            if let Some(a) = g.listens.first().and_then(|l| l.address.as_deref()) {
                c.set_str("spicehost", a);
            }
            c.set_int("spiceport", i64::from(g.port.unwrap_or(0)));
            c.set_int("spicetls_port", i64::from(g.tls_port.unwrap_or(0)));
            match &g.passwd {
                Some(p) => {
                    c.set_int("spicedisable_ticketing", 0);
                    c.set_str("spicepasswd", p);
                }
                None => c.set_int("spicedisable_ticketing", 1),
            }
            match g.mouse_mode.as_deref() {
                Some("server") => c.set_int("spiceagent_mouse", 0),
                Some("client") => {
                    c.set_int("spiceagent_mouse", 1);
                    c.set_int("spicevdagent", 1);
                }
                _ => {}
            }
            if g.clipboard_copypaste == Some(true) {
                c.set_int("spice_clipboard_sharing", 1);
                c.set_int("spicevdagent", 1);
            }
        }
    }

    // USB input devices.
    if hvm {
        let mut usb = Vec::new();
        for i in d
            .devices
            .inputs
            .iter()
            .filter(|i| i.bus.as_deref() == Some("usb"))
        {
            c.set_int("usb", 1);
            usb.push(i.input_type.clone());
        }
        match usb.len() {
            0 => {}
            1 => c.set_str("usbdevice", usb.remove(0)),
            _ => c.set_str_list("usbdevice", usb),
        }
    }

    // USB host devices.
    let usbdevs: Vec<String> = d
        .devices
        .hostdevs
        .iter()
        .filter(|h| h.hostdev_type == "usb")
        .filter_map(|h| h.source_address.as_ref())
        .map(|a| {
            format!(
                "hostbus={:x},hostaddr={:x}",
                a.get("bus").unwrap_or(0),
                a.get("device").unwrap_or(0)
            )
        })
        .collect();
    if !usbdevs.is_empty() {
        c.set_str_list("usbdev", usbdevs);
    }

    // USB controllers.
    let mut ctrls = Vec::new();
    for ctl in d
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == "usb")
    {
        let mut s = String::new();
        match ctl.model.as_deref() {
            None => {}
            Some("qusb1") => s.push_str("type=qusb,version=1,"),
            Some("qusb2") => s.push_str("type=qusb,version=2,"),
            Some(m) => {
                return Err(unsupported(format!(
                    "unsupported USB controller model '{m}'"
                )))
            }
        }
        if let Some(p) = ctl.ports {
            s.push_str(&format!("ports={p:x}"));
        }
        ctrls.push(s);
    }
    if !ctrls.is_empty() {
        c.set_str_list("usbctrl", ctrls);
    }

    // Channels.
    let mut chans = Vec::new();
    for ch in d
        .devices
        .channels
        .iter()
        .filter(|c| c.target_type.as_deref() == Some("xen"))
    {
        let mut s = String::from("connection=");
        match ch.chr_type.as_str() {
            "pty" => s.push_str("pty,"),
            "unix" => {
                s.push_str("socket,");
                if let Some(p) = ch.sources.first().and_then(|s| s.path.as_deref()) {
                    s.push_str(&format!("path={p},"));
                }
            }
            other => {
                return Err(unsupported(format!(
                    "unsupported channel source type '{other}'"
                )))
            }
        }
        s.push_str(&format!("name={}", ch.target_name.as_deref().unwrap_or("")));
        chans.push(s);
    }
    if !chans.is_empty() {
        c.set_str_list("channel", chans);
    }

    if !d.xen_commandline.is_empty() {
        c.set_str_list("device_model_args", d.xen_commandline.iter().cloned());
    }
    Ok(c)
}

fn to_i64(v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| unsupported("value too large"))
}

fn ip_list(n: &domain_xml::domain::Interface) -> String {
    n.ips
        .iter()
        .map(|i| i.address.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_vfb(c: &mut XlConfig, d: &Domain, hvm: bool) {
    if d.devices.graphics.len() != 1 {
        return;
    }
    let g = &d.devices.graphics[0];
    if g.graphics_type == "spice" {
        return;
    }
    let autoport = g.autoport.unwrap_or(false);
    let listen = g.listens.first().and_then(|l| l.address.clone());
    if hvm {
        if g.graphics_type == "sdl" {
            c.set_int("sdl", 1);
            c.set_int("vnc", 0);
            if let Some(v) = &g.display {
                c.set_str("display", v);
            }
            if let Some(v) = &g.xauth {
                c.set_str("xauthority", v);
            }
        } else {
            c.set_int("sdl", 0);
            c.set_int("vnc", 1);
            c.set_int("vncunused", i64::from(autoport));
            if !autoport {
                c.set_int("vncdisplay", i64::from(g.port.unwrap_or(5900)) - 5900);
            }
            if let Some(l) = &listen {
                c.set_str("vnclisten", l);
            }
            if let Some(p) = &g.passwd {
                c.set_str("vncpasswd", p);
            }
            if let Some(k) = &g.keymap {
                c.set_str("keymap", k);
            }
        }
    } else {
        let mut s;
        if g.graphics_type == "sdl" {
            s = "type=sdl".to_string();
            if let Some(v) = &g.display {
                s.push_str(&format!(",display={v}"));
            }
            if let Some(v) = &g.xauth {
                s.push_str(&format!(",xauthority={v}"));
            }
        } else {
            s = format!("type=vnc,vncunused={}", i64::from(autoport));
            if !autoport {
                s.push_str(&format!(
                    ",vncdisplay={}",
                    i64::from(g.port.unwrap_or(5900)) - 5900
                ));
            }
            if let Some(l) = &listen {
                s.push_str(&format!(",vnclisten={l}"));
            }
            if let Some(p) = &g.passwd {
                s.push_str(&format!(",vncpasswd={p}"));
            }
            if let Some(k) = &g.keymap {
                s.push_str(&format!(",keymap={k}"));
            }
        }
        c.set_str_list("vfb", [s]);
    }
}

/// Formats a character device in xend's notation.
fn chr_string(ch: &Chardev) -> Result<String, Error> {
    let src = ch.sources.first();
    let path = src.and_then(|s| s.path.as_deref()).unwrap_or("");
    Ok(match ch.chr_type.as_str() {
        "null" | "stdio" | "vc" | "pty" => ch.chr_type.clone(),
        "file" | "pipe" => format!("{}:{path}", ch.chr_type),
        "dev" => path.to_string(),
        "tcp" => {
            let s = src.cloned().unwrap_or_default();
            format!(
                "{}:{}:{}{}",
                if ch.protocol.as_deref() == Some("telnet") {
                    "telnet"
                } else {
                    "tcp"
                },
                s.host.unwrap_or_default(),
                s.service.unwrap_or_default(),
                if s.mode.as_deref() == Some("bind") {
                    ",server,nowait"
                } else {
                    ""
                }
            )
        }
        "udp" => {
            let conn = ch
                .sources
                .iter()
                .find(|s| s.mode.as_deref() != Some("bind"))
                .cloned()
                .unwrap_or_default();
            let bind = ch
                .sources
                .iter()
                .find(|s| s.mode.as_deref() == Some("bind"))
                .cloned()
                .unwrap_or_default();
            format!(
                "udp:{}:{}@{}:{}",
                conn.host.unwrap_or_default(),
                conn.service.unwrap_or_default(),
                bind.host.unwrap_or_default(),
                bind.service.unwrap_or_default()
            )
        }
        "unix" => format!(
            "unix:{path}{}",
            if src.and_then(|s| s.mode.as_deref()) == Some("bind") {
                ",server,nowait"
            } else {
                ""
            }
        ),
        other => {
            return Err(unsupported(format!(
                "unsupported character device type '{other}'"
            )))
        }
    })
}

fn disk_target(disk: &domain_xml::domain::Disk) -> Result<Option<String>, Error> {
    if disk.disk_type == "volume" {
        return Err(unsupported(format!(
            "disk '{}' uses storage pool volume '{}/{}'; xl.cfg needs its path",
            disk.target_dev,
            disk.source_pool.as_deref().unwrap_or(""),
            disk.source.as_deref().unwrap_or("")
        )));
    }
    if disk.disk_type != "network" {
        return Ok(disk.source.clone().filter(|s| !s.is_empty()));
    }
    if disk.protocol.as_deref() != Some("rbd") {
        return Err(unsupported(format!(
            "unsupported network block protocol '{}'",
            disk.protocol.as_deref().unwrap_or("")
        )));
    }
    let name = disk.source.as_deref().unwrap_or("");
    if name.contains(':') {
        return Err(unsupported(format!(
            "':' is not allowed in the RBD source volume name '{name}'"
        )));
    }
    let mut s = format!("rbd:{name}:auth_supported=none");
    if !disk.hosts.is_empty() {
        s.push_str(":mon_host=");
        for (i, h) in disk.hosts.iter().enumerate() {
            if i > 0 {
                s.push_str("\\\\;");
            }
            let hn = h.name.as_deref().unwrap_or("");
            if hn.contains(':') {
                s.push('[');
                s.push_str(&hn.replace(':', "\\:"));
                s.push(']');
            } else {
                s.push_str(hn);
            }
            if let Some(p) = &h.port {
                s.push_str("\\\\:");
                s.push_str(p);
            }
        }
    }
    Ok(Some(s))
}
