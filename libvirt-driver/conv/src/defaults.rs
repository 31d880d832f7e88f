//! The defaults libvirt fills in when its libxl driver parses a domain definition: libvirt's generic
//! post-parse steps (console for serial 0, implicit video for a display, drive addresses and their controllers,
//! generated UUID and MAC addresses) and the libxl driver's own callbacks (`libxlDomainDefPostParse`,
//! `libxlDomainDeviceDefPostParse`: PV console, implicit mouse and keyboard, PAE for x86_64 HVM, Xen balloon,
//! xenbus controller, Xen PCI backend, video model and VRAM, raw disk format, `qemu` driver for network disks).
//!
//! The daemon applies [`apply_libxl_defaults`] to every definition it accepts (`virsh define`), so that
//! `virsh dumpxml` shows what libvirt's libxl driver shows; the xl.cfg translation applies it too.

use domain_xml::domain::{Address, Chardev, Controller, Domain, Input, OsType, Video};

/// Applies libvirt's and its libxl driver's post-parse defaults to a parsed definition.
pub fn apply_libxl_defaults(d: &mut Domain) {
    let hvm = d.os.os_type == OsType::Hvm;
    if d.uuid.is_none() {
        d.uuid = Some(uuid::Uuid::new_v4().to_string());
    }
    // The guest's architecture and machine from the host capabilities (x86_64 Xen).
    if d.os.arch.is_none() {
        d.os.arch = Some("x86_64".into());
    }
    if d.os.machine.is_none() {
        d.os.machine = Some(
            match d.os.os_type {
                OsType::Hvm => "xenfv",
                OsType::Xenpvh => "xenpvh",
                _ => "xenpv",
            }
            .into(),
        );
    }

    // Device callbacks.
    for c in &mut d.devices.consoles {
        if c.target_type.is_none() && !hvm {
            c.target_type = Some("xen".into());
        }
    }
    for h in &mut d.devices.hostdevs {
        if h.hostdev_type == "pci" && h.driver_name.is_none() {
            h.driver_name = Some("xen".into());
        }
    }
    for n in &mut d.devices.interfaces {
        if n.net_type == "hostdev" && n.driver_name.is_none() {
            n.driver_name = Some("xen".into());
        }
        if n.mac.is_none() {
            n.mac = Some(random_mac());
        }
    }
    for disk in &mut d.devices.disks {
        if disk.disk_type == "network" && disk.driver_name.is_none() {
            disk.driver_name = Some("qemu".into());
        }
        if disk.driver_type.is_none() {
            disk.driver_type = Some("raw".into());
        }
    }

    // Drive addresses and the implicit IDE/SCSI controllers.
    let mut need_ide = false;
    let mut need_scsi = false;
    for disk in &mut d.devices.disks {
        let idx = disk_index(&disk.target_dev);
        match (disk.target_bus.as_deref(), idx) {
            (Some("ide"), Some(i)) => {
                need_ide = true;
                disk.address.get_or_insert(Address {
                    addr_type: Some("drive".into()),
                    fields: vec![
                        ("controller", i / 4),
                        ("bus", (i % 4) / 2),
                        ("target", 0),
                        ("unit", i % 2),
                    ],
                });
            }
            (Some("scsi"), Some(i)) => {
                need_scsi = true;
                disk.address.get_or_insert(Address {
                    addr_type: Some("drive".into()),
                    fields: vec![
                        ("controller", i / 7),
                        ("bus", 0),
                        ("target", 0),
                        ("unit", i % 7),
                    ],
                });
            }
            _ => {}
        }
    }
    let ctl = &mut d.devices.controllers;
    if !ctl.iter().any(|c| c.controller_type == "xenbus") {
        ctl.insert(
            0,
            Controller {
                controller_type: "xenbus".into(),
                index: 0,
                ..Controller::default()
            },
        );
    }
    for (needed, kind) in [(need_ide, "ide"), (need_scsi, "scsi")] {
        if needed && !ctl.iter().any(|c| c.controller_type == kind) {
            ctl.push(Controller {
                controller_type: kind.into(),
                index: 0,
                ..Controller::default()
            });
        }
    }

    // Consoles: PV guests always have a PV console; HVM guests mirror serial 0.
    let dev = &mut d.devices;
    if !hvm && dev.consoles.is_empty() {
        dev.consoles.push(Chardev {
            chr_type: "pty".into(),
            target_type: Some("xen".into()),
            target_port: Some(0),
            ..Chardev::default()
        });
    }
    if hvm && dev.consoles.is_empty() {
        if let Some(s) = dev.serials.first() {
            dev.consoles.push(Chardev {
                chr_type: s.chr_type.clone(),
                sources: s.sources.clone(),
                protocol: s.protocol.clone(),
                target_type: Some("serial".into()),
                target_port: Some(0),
                target_name: None,
                tty: s.tty.clone(),
                address: None,
            });
        }
    }

    // Implicit mouse and keyboard, appended when missing.
    let bus = if hvm { "ps2" } else { "xen" };
    for t in ["mouse", "keyboard"] {
        if !dev
            .inputs
            .iter()
            .any(|i| i.input_type == t && i.bus.as_deref() == Some(bus))
        {
            dev.inputs.push(Input {
                input_type: t.into(),
                bus: Some(bus.into()),
                address: None,
            });
        }
    }

    // A display gets a video device; the model and VRAM follow libxl's device model (upstream QEMU).
    if !dev.graphics.is_empty() && dev.videos.is_empty() {
        dev.videos.push(Video {
            model_type: "default".into(),
            ..Video::default()
        });
    }
    for (i, v) in dev.videos.iter_mut().enumerate() {
        if v.model_type == "default" {
            v.model_type = if hvm { "cirrus" } else { "xen" }.into();
        }
        if hvm && v.vram.unwrap_or(0) == 0 {
            v.vram = match v.model_type.as_str() {
                "vga" | "xen" => Some(16 * 1024),
                "cirrus" => Some(8 * 1024),
                "qxl" => Some(128 * 1024),
                _ => v.vram,
            };
        }
        if v.heads.is_none() && v.model_type != "none" {
            v.heads = Some(1);
        }
        if i == 0 && v.primary.is_none() && v.model_type != "none" {
            v.primary = Some(true);
        }
    }

    if dev.memballoon.is_none() {
        dev.memballoon = Some("xen".into());
    }

    // x86_64 HVM guests always have PAE; vNUMA needs ACPI.
    if hvm && d.os.arch.as_deref().is_none_or(|a| a == "x86_64") {
        let numa = d.cpu.as_ref().is_some_and(|c| !c.numa.is_empty());
        let f = d.features.get_or_insert_with(Default::default);
        f.pae = Some(true);
        if numa {
            f.acpi = Some(true);
        }
    }
}

/// A MAC address with Xen's OUI (00:16:3e), as libvirt's libxl driver generates.
pub fn random_mac() -> String {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    format!("00:16:3e:{:02x}:{:02x}:{:02x}", b[0] & 0x7f, b[1], b[2])
}

/// The index of a disk from its name: `hda` is 0, `hdc` 2, `sdb` 1, `xvdaa` 26.
pub fn disk_index(name: &str) -> Option<u64> {
    let letters = ["xvd", "hd", "sd", "vd", "fd"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    let letters = letters.trim_end_matches(|c: char| c.is_ascii_digit());
    if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    let mut idx: u64 = 0;
    for c in letters.chars() {
        idx = idx
            .checked_mul(26)?
            .checked_add(c as u64 - 'a' as u64 + 1)?;
    }
    Some(idx - 1)
}
