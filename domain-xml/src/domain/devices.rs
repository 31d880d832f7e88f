//! `<devices>`: disks, controllers, interfaces, character devices, inputs, graphics, sound, video, host
//! devices, memory balloon and RNG.

use super::general::{one_of, parse_hex};
use super::Os;
use crate::xml::{yes_no, Cursor, Element};
use crate::{Error, FormatFlags};

/// A device address (`<address type=...>`), formatted in libvirt's attribute order for its type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// `type`: pci, drive, usb, virtio-serial, ccid, xen... `None` inside `<hostdev><source>`.
    pub addr_type: Option<String>,
    /// The attributes after `type`, in libvirt's order, with their numeric values.
    pub fields: Vec<(&'static str, u64)>,
}

const PCI_FIELDS: &[&str] = &["domain", "bus", "slot", "function"];
const DRIVE_FIELDS: &[&str] = &["controller", "bus", "target", "unit"];
const USB_FIELDS: &[&str] = &["bus", "port", "device"];
const SERIAL_FIELDS: &[&str] = &["controller", "bus", "port"];

impl Address {
    fn fields_for(t: &str) -> Option<&'static [&'static str]> {
        Some(match t {
            "pci" => PCI_FIELDS,
            "drive" => DRIVE_FIELDS,
            "usb" => USB_FIELDS,
            "virtio-serial" | "ccid" => SERIAL_FIELDS,
            _ => return None,
        })
    }

    /// Parses an address; `default_type` is used when the element has no `type` (hostdev sources).
    pub(crate) fn parse(mut c: Cursor<'_>, default_type: Option<&str>) -> Result<Self, Error> {
        let t = c.attr("type");
        let kind = t.or(default_type).ok_or_else(|| Error::MissingAttribute {
            path: c.attr_path("type"),
        })?;
        let names = Self::fields_for(kind)
            .ok_or_else(|| c.invalid_attr("type", kind, "unsupported address type"))?;
        let mut fields = Vec::new();
        for name in names {
            if let Some(v) = c.attr_with(name, parse_hex)? {
                fields.push((*name, v));
            }
        }
        c.finish()?;
        Ok(Address {
            addr_type: t.map(str::to_string),
            fields,
        })
    }

    /// The value of a field.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    pub(crate) fn to_element(&self, hex_pci: bool) -> Element {
        let mut e = Element::new("address").opt_attr("type", self.addr_type.as_deref());
        for (k, v) in &self.fields {
            let s = if hex_pci {
                match *k {
                    "domain" => format!("0x{v:04x}"),
                    "bus" | "slot" => format!("0x{v:02x}"),
                    "function" => format!("0x{v:x}"),
                    _ => v.to_string(),
                }
            } else {
                v.to_string()
            };
            e.push_attr(*k, s);
        }
        e
    }

    fn is_pci(&self, default_pci: bool) -> bool {
        match &self.addr_type {
            Some(t) => t == "pci",
            None => default_pci,
        }
    }
}

/// `<host name port/>` of a network disk source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskHost {
    /// Host name or address.
    pub name: Option<String>,
    /// Port.
    pub port: Option<String>,
    /// `transport`: tcp, unix, rdma.
    pub transport: Option<String>,
    /// `socket` path for unix transport.
    pub socket: Option<String>,
}

/// `<auth username><secret type usage|uuid/></auth>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskAuth {
    /// The user name.
    pub username: String,
    /// Secret type: ceph or iscsi.
    pub secret_type: String,
    /// Secret usage name.
    pub usage: Option<String>,
    /// Secret UUID.
    pub uuid: Option<String>,
}

impl DiskAuth {
    fn parse(mut a: Cursor<'_>) -> Result<Self, Error> {
        let username = a.req_attr("username")?.to_string();
        let mut sec = a.req_child("secret")?;
        let auth = DiskAuth {
            username,
            secret_type: sec
                .attr_with("type", |v| one_of(v, &["ceph", "iscsi"]))?
                .ok_or_else(|| Error::MissingAttribute {
                    path: sec.attr_path("type"),
                })?,
            usage: sec.attr("usage").map(str::to_string),
            uuid: sec.attr("uuid").map(str::to_string),
        };
        sec.finish()?;
        a.finish()?;
        Ok(auth)
    }

    fn to_element(&self) -> Element {
        Element::new("auth").attr("username", &self.username).child(
            Element::new("secret")
                .attr("type", &self.secret_type)
                .opt_attr("usage", self.usage.as_deref())
                .opt_attr("uuid", self.uuid.as_deref()),
        )
    }
}

/// `<disk>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disk {
    /// `type`: file, block, network, dir, volume.
    pub disk_type: String,
    /// `device`: disk, cdrom, floppy, lun.
    pub device: String,
    /// `<driver name>`: phy, tap, tap2, qemu, file.
    pub driver_name: Option<String>,
    /// `<driver type>`: raw, qcow, qcow2, vhd, qed...
    pub driver_type: Option<String>,
    /// `<driver cache>`.
    pub driver_cache: Option<String>,
    /// `<driver io>`.
    pub driver_io: Option<String>,
    /// `<driver discard>`.
    pub driver_discard: Option<String>,
    /// `file`, `dev` or `dir` of the source, or the network `name`.
    pub source: Option<String>,
    /// Storage pool of a `type='volume'` disk (`source` holds the volume name).
    pub source_pool: Option<String>,
    /// `mode` of a volume source: host or direct (iSCSI pools).
    pub source_mode: Option<String>,
    /// Network protocol (rbd, nbd, iscsi...).
    pub protocol: Option<String>,
    /// Network hosts.
    pub hosts: Vec<DiskHost>,
    /// Network authentication.
    pub auth: Option<DiskAuth>,
    /// True when `<auth>` was given under `<disk>` (libvirt's older placement) rather than under `<source>`;
    /// libvirt formats it back where it was found.
    pub auth_in_disk: bool,
    /// `<target dev>`.
    pub target_dev: String,
    /// `<target bus>`.
    pub target_bus: Option<String>,
    /// `<target tray>`.
    pub target_tray: Option<String>,
    /// `<readonly/>`.
    pub readonly: bool,
    /// `<shareable/>`.
    pub shareable: bool,
    /// `<transient/>`: changes are discarded when the guest stops.
    pub transient: bool,
    /// `<serial>`.
    pub serial: Option<String>,
    /// `<boot order>`.
    pub boot_order: Option<u32>,
    /// `<address>`.
    pub address: Option<Address>,
}

/// Reads `<boot order='N'/>`.
fn parse_boot(c: &mut Cursor<'_>) -> Result<Option<u32>, Error> {
    match c.child("boot")? {
        None => Ok(None),
        Some(mut b) => {
            let o = b.req_attr_parse::<u32>("order")?;
            if o == 0 {
                return Err(b.invalid_attr("order", "0", "boot order starts at 1"));
            }
            b.finish()?;
            Ok(Some(o))
        }
    }
}

impl Disk {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut d = Disk {
            disk_type: c
                .attr_with("type", |v| {
                    one_of(v, &["file", "block", "network", "dir", "volume"])
                })?
                .unwrap_or_else(|| "file".into()),
            device: c
                .attr_with("device", |v| one_of(v, &["disk", "cdrom", "floppy", "lun"]))?
                .unwrap_or_else(|| "disk".into()),
            ..Disk::default()
        };
        if let Some(mut dr) = c.child("driver")? {
            d.driver_name = dr.attr("name").map(str::to_string);
            d.driver_type = dr.attr("type").map(str::to_string);
            d.driver_cache = dr.attr_with("cache", |v| {
                one_of(
                    v,
                    &[
                        "default",
                        "none",
                        "writethrough",
                        "writeback",
                        "directsync",
                        "unsafe",
                    ],
                )
            })?;
            d.driver_io = dr.attr_with("io", |v| one_of(v, &["threads", "native", "io_uring"]))?;
            d.driver_discard = dr.attr_with("discard", |v| one_of(v, &["unmap", "ignore"]))?;
            dr.finish()?;
        }
        if let Some(a) = c.child("auth")? {
            if d.disk_type != "network" {
                return Err(Error::UnknownElement {
                    path: a.path().to_string(),
                });
            }
            d.auth = Some(DiskAuth::parse(a)?);
            d.auth_in_disk = true;
        }
        if let Some(mut s) = c.child("source")? {
            match d.disk_type.as_str() {
                "file" => d.source = s.attr("file").map(str::to_string),
                "block" => d.source = s.attr("dev").map(str::to_string),
                "dir" => d.source = s.attr("dir").map(str::to_string),
                "volume" => {
                    d.source_pool = Some(s.req_attr("pool")?.to_string());
                    d.source = Some(s.req_attr("volume")?.to_string());
                    d.source_mode = s.attr_with("mode", |v| one_of(v, &["host", "direct"]))?;
                }
                "network" => {
                    d.protocol = Some(s.req_attr("protocol")?.to_string());
                    d.source = s.attr("name").map(str::to_string);
                    for mut h in s.children("host") {
                        d.hosts.push(DiskHost {
                            name: h.attr("name").map(str::to_string),
                            port: h.attr("port").map(str::to_string),
                            transport: h.attr("transport").map(str::to_string),
                            socket: h.attr("socket").map(str::to_string),
                        });
                        h.finish()?;
                    }
                    if let Some(a) = s.child("auth")? {
                        d.auth = Some(DiskAuth::parse(a)?);
                    }
                }
                _ => {}
            }
            s.finish()?;
        }
        let mut t = c.req_child("target")?;
        d.target_dev = t.req_attr("dev")?.to_string();
        d.target_bus = t.attr_with("bus", |v| {
            one_of(
                v,
                &[
                    "ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd",
                ],
            )
        })?;
        d.target_tray = t.attr_with("tray", |v| one_of(v, &["open", "closed"]))?;
        t.finish()?;
        if let Some(r) = c.child("readonly")? {
            r.finish()?;
            d.readonly = true;
        }
        if let Some(r) = c.child("shareable")? {
            r.finish()?;
            d.shareable = true;
        }
        if let Some(r) = c.child("transient")? {
            r.finish()?;
            d.transient = true;
        }
        if let Some(s) = c.child("serial")? {
            d.serial = Some(s.text_finish()?);
        }
        d.boot_order = parse_boot(&mut c)?;
        if let Some(a) = c.child("address")? {
            d.address = Some(Address::parse(a, None)?);
        }
        c.finish()?;
        Ok(d)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("disk")
            .attr("type", &self.disk_type)
            .attr("device", &self.device);
        if self.driver_name.is_some()
            || self.driver_type.is_some()
            || self.driver_cache.is_some()
            || self.driver_io.is_some()
            || self.driver_discard.is_some()
        {
            e.push(
                Element::new("driver")
                    .opt_attr("name", self.driver_name.as_deref())
                    .opt_attr("type", self.driver_type.as_deref())
                    .opt_attr("cache", self.driver_cache.as_deref())
                    .opt_attr("io", self.driver_io.as_deref())
                    .opt_attr("discard", self.driver_discard.as_deref()),
            );
        }
        let src_attr = match self.disk_type.as_str() {
            "block" => "dev",
            "dir" => "dir",
            "network" => "name",
            _ => "file",
        };
        if self.disk_type == "network" {
            let mut s = Element::new("source")
                .opt_attr("protocol", self.protocol.as_deref())
                .opt_attr("name", self.source.as_deref());
            for h in &self.hosts {
                s.push(
                    Element::new("host")
                        .opt_attr("name", h.name.as_deref())
                        .opt_attr("port", h.port.as_deref())
                        .opt_attr("transport", h.transport.as_deref())
                        .opt_attr("socket", h.socket.as_deref()),
                );
            }
            if let Some(a) = self.auth.as_ref().filter(|_| !self.auth_in_disk) {
                s.push(a.to_element());
            }
            if let Some(a) = self.auth.as_ref().filter(|_| self.auth_in_disk) {
                e.push(a.to_element());
            }
            e.push(s);
        } else if self.disk_type == "volume" {
            e.push(
                Element::new("source")
                    .opt_attr("pool", self.source_pool.as_deref())
                    .opt_attr("volume", self.source.as_deref())
                    .opt_attr("mode", self.source_mode.as_deref()),
            );
        } else if let Some(src) = &self.source {
            e.push(Element::new("source").attr(src_attr, src));
        }
        e.push(
            Element::new("target")
                .attr("dev", &self.target_dev)
                .opt_attr("bus", self.target_bus.as_deref())
                .opt_attr("tray", self.target_tray.as_deref()),
        );
        if self.readonly {
            e.push(Element::new("readonly"));
        }
        if self.shareable {
            e.push(Element::new("shareable"));
        }
        if self.transient {
            e.push(Element::new("transient"));
        }
        if let Some(s) = &self.serial {
            e.push(Element::new("serial").text(s));
        }
        if let Some(o) = self.boot_order {
            e.push(Element::new("boot").attr("order", o));
        }
        if let Some(a) = &self.address {
            e.push(a.to_element(a.is_pci(false)));
        }
        e
    }
}

/// `<controller>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Controller {
    /// `type`: xenbus, ide, usb, scsi, sata, virtio-serial, pci...
    pub controller_type: String,
    /// `index`.
    pub index: u32,
    /// `model`.
    pub model: Option<String>,
    /// `ports` (usb, virtio-serial).
    pub ports: Option<u32>,
    /// `maxGrantFrames` (xenbus).
    pub max_grant_frames: Option<u32>,
    /// `maxEventChannels` (xenbus).
    pub max_event_channels: Option<u32>,
    /// `<master startport>` (USB companion controllers).
    pub master_startport: Option<u32>,
    /// `<address>`.
    pub address: Option<Address>,
}

impl Controller {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let ct = c
            .attr_with("type", |v| {
                one_of(
                    v,
                    &[
                        "xenbus",
                        "ide",
                        "fdc",
                        "scsi",
                        "sata",
                        "virtio-serial",
                        "ccid",
                        "usb",
                        "pci",
                    ],
                )
            })?
            .ok_or_else(|| Error::MissingAttribute {
                path: c.attr_path("type"),
            })?;
        let ctl = Controller {
            index: c.attr_parse("index")?.unwrap_or(0),
            model: c.attr("model").map(str::to_string),
            ports: c.attr_parse("ports")?,
            max_grant_frames: c.attr_parse("maxGrantFrames")?,
            max_event_channels: c.attr_parse("maxEventChannels")?,
            master_startport: match c.child("master")? {
                Some(mut m) => {
                    let v = m.req_attr_parse("startport")?;
                    m.finish()?;
                    Some(v)
                }
                None => None,
            },
            address: match c.child("address")? {
                Some(a) => Some(Address::parse(a, None)?),
                None => None,
            },
            controller_type: ct,
        };
        c.finish()?;
        Ok(ctl)
    }

    pub(crate) fn to_element(&self) -> Element {
        Element::new("controller")
            .attr("type", &self.controller_type)
            .attr("index", self.index)
            .opt_attr("model", self.model.as_deref())
            .opt_attr("ports", self.ports)
            .opt_attr("maxGrantFrames", self.max_grant_frames)
            .opt_attr("maxEventChannels", self.max_event_channels)
            .opt_child(
                self.master_startport
                    .map(|p| Element::new("master").attr("startport", p)),
            )
            .opt_child(self.address.as_ref().map(|a| a.to_element(a.is_pci(false))))
    }
}

/// `<ip address family prefix/>` of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpAddr {
    /// The address.
    pub address: String,
    /// ipv4 or ipv6.
    pub family: Option<String>,
    /// Prefix length.
    pub prefix: Option<u32>,
}

/// `<interface>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// `type`: bridge, network, ethernet, hostdev, direct, user.
    pub net_type: String,
    /// `managed` (hostdev).
    pub managed: Option<bool>,
    /// `<mac address>`.
    pub mac: Option<String>,
    /// `<driver name>` (hostdev: xen or vfio; others: qemu, vhost).
    pub driver_name: Option<String>,
    /// `<source bridge|network|dev>`.
    pub source: Option<String>,
    /// `<source><address>` of a hostdev interface.
    pub source_address: Option<Address>,
    /// `<vlan><tag id/>` list with `trunk`.
    pub vlan_tags: Vec<u32>,
    /// `<vlan trunk='yes'>`.
    pub vlan_trunk: bool,
    /// `<virtualport type>`.
    pub virtualport: Option<String>,
    /// `<virtualport><parameters .../>` in libvirt's order (managerid, typeid, typeidversion, instanceid,
    /// interfaceid, profileid).
    pub virtualport_params: Vec<(&'static str, String)>,
    /// `<bandwidth><outbound average peak burst/>` in KB/s.
    pub bandwidth_outbound: Option<Bandwidth>,
    /// `<bandwidth><inbound average peak burst/>`.
    pub bandwidth_inbound: Option<Bandwidth>,
    /// `<ip>` list.
    pub ips: Vec<IpAddr>,
    /// `<script path>`.
    pub script: Option<String>,
    /// `<target dev>`.
    pub target_dev: Option<String>,
    /// `<model type>`.
    pub model: Option<String>,
    /// `<link state>`: up or down.
    pub link_state: Option<String>,
    /// `<mtu size>`.
    pub mtu: Option<u32>,
    /// `<boot order>`.
    pub boot_order: Option<u32>,
    /// `<address>`.
    pub address: Option<Address>,
}

/// A `<bandwidth>` direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// Average rate, KB/s.
    pub average: Option<u64>,
    /// Peak rate, KB/s.
    pub peak: Option<u64>,
    /// Burst size, KB.
    pub burst: Option<u64>,
}

impl Bandwidth {
    fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let b = Bandwidth {
            average: c.attr_parse("average")?,
            peak: c.attr_parse("peak")?,
            burst: c.attr_parse("burst")?,
        };
        c.finish()?;
        Ok(b)
    }

    fn to_element(self, name: &str) -> Element {
        Element::new(name)
            .opt_attr("average", self.average)
            .opt_attr("peak", self.peak)
            .opt_attr("burst", self.burst)
    }
}

impl Interface {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut n = Interface {
            net_type: c
                .attr_with("type", |v| {
                    one_of(
                        v,
                        &[
                            "bridge",
                            "network",
                            "ethernet",
                            "hostdev",
                            "direct",
                            "user",
                            "vhostuser",
                        ],
                    )
                })?
                .ok_or_else(|| Error::MissingAttribute {
                    path: c.attr_path("type"),
                })?,
            managed: c.attr_yes_no("managed")?,
            ..Interface::default()
        };
        if let Some(mut m) = c.child("mac")? {
            let a = m.req_attr("address")?;
            let mac = parse_mac(a).map_err(|r| m.invalid_attr("address", a, r))?;
            m.finish()?;
            n.mac = Some(mac);
        }
        if let Some(mut d) = c.child("driver")? {
            n.driver_name = d.attr("name").map(str::to_string);
            d.finish()?;
        }
        if let Some(mut s) = c.child("source")? {
            match n.net_type.as_str() {
                "bridge" => n.source = Some(s.req_attr("bridge")?.to_string()),
                "network" => n.source = Some(s.req_attr("network")?.to_string()),
                "direct" => n.source = Some(s.req_attr("dev")?.to_string()),
                "hostdev" => {
                    if let Some(a) = s.child("address")? {
                        n.source_address = Some(Address::parse(a, None)?);
                    }
                }
                _ => {}
            }
            s.finish()?;
        }
        if let Some(mut v) = c.child("vlan")? {
            n.vlan_trunk = v.attr_yes_no("trunk")?.unwrap_or(false);
            for mut t in v.children("tag") {
                n.vlan_tags.push(t.req_attr_parse("id")?);
                t.finish()?;
            }
            v.finish()?;
        }
        if let Some(mut v) = c.child("virtualport")? {
            n.virtualport = v.attr_with("type", |v| {
                one_of(v, &["openvswitch", "802.1Qbg", "802.1Qbh", "midonet"])
            })?;
            if let Some(mut p) = v.child("parameters")? {
                for key in VPORT_PARAMS {
                    if let Some(val) = p.attr(key) {
                        n.virtualport_params.push((key, val.to_string()));
                    }
                }
                p.finish()?;
            }
            v.finish()?;
        }
        if let Some(mut b) = c.child("bandwidth")? {
            if let Some(o) = b.child("inbound")? {
                n.bandwidth_inbound = Some(Bandwidth::parse(o)?);
            }
            if let Some(o) = b.child("outbound")? {
                n.bandwidth_outbound = Some(Bandwidth::parse(o)?);
            }
            b.finish()?;
        }
        for mut ip in c.children("ip") {
            let address = ip.req_attr("address")?.to_string();
            n.ips.push(IpAddr {
                family: ip.attr_with("family", |v| one_of(v, &["ipv4", "ipv6"]))?,
                prefix: ip.attr_parse("prefix")?,
                address,
            });
            ip.finish()?;
        }
        if let Some(mut s) = c.child("script")? {
            n.script = Some(s.req_attr("path")?.to_string());
            s.finish()?;
        }
        if let Some(mut t) = c.child("target")? {
            n.target_dev = Some(t.req_attr("dev")?.to_string());
            t.finish()?;
        }
        if let Some(mut m) = c.child("model")? {
            n.model = Some(m.req_attr("type")?.to_string());
            m.finish()?;
        }
        if let Some(mut l) = c.child("link")? {
            n.link_state = l.attr_with("state", |v| one_of(v, &["up", "down"]))?;
            l.finish()?;
        }
        if let Some(mut m) = c.child("mtu")? {
            n.mtu = Some(m.req_attr_parse("size")?);
            m.finish()?;
        }
        n.boot_order = parse_boot(&mut c)?;
        if let Some(a) = c.child("address")? {
            n.address = Some(Address::parse(a, None)?);
        }
        c.finish()?;
        Ok(n)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("interface").attr("type", &self.net_type);
        if self.net_type == "hostdev" {
            e.push_attr("managed", yes_no(self.managed.unwrap_or(false)));
        }
        if let Some(m) = &self.mac {
            e.push(Element::new("mac").attr("address", m));
        }
        let driver = self
            .driver_name
            .as_ref()
            .map(|d| Element::new("driver").attr("name", d));
        if self.net_type == "hostdev" {
            e = e.opt_child(driver.clone());
            let mut s = Element::new("source");
            if let Some(a) = &self.source_address {
                s.push(a.to_element(true));
            }
            e.push(s);
        } else if let Some(s) = &self.source {
            let attr = match self.net_type.as_str() {
                "network" => "network",
                "direct" => "dev",
                _ => "bridge",
            };
            e.push(Element::new("source").attr(attr, s));
        }
        if !self.vlan_tags.is_empty() {
            let mut v = Element::new("vlan");
            if self.vlan_trunk {
                v.push_attr("trunk", "yes");
            }
            for t in &self.vlan_tags {
                v.push(Element::new("tag").attr("id", t));
            }
            e.push(v);
        }
        if let Some(v) = &self.virtualport {
            let mut vp = Element::new("virtualport").attr("type", v);
            if !self.virtualport_params.is_empty() {
                let mut p = Element::new("parameters");
                for (k, val) in &self.virtualport_params {
                    p.push_attr(*k, val);
                }
                vp.push(p);
            }
            e.push(vp);
        }
        if self.bandwidth_inbound.is_some() || self.bandwidth_outbound.is_some() {
            let mut b = Element::new("bandwidth");
            if let Some(i) = self.bandwidth_inbound {
                b.push(i.to_element("inbound"));
            }
            if let Some(o) = self.bandwidth_outbound {
                b.push(o.to_element("outbound"));
            }
            e.push(b);
        }
        for ip in &self.ips {
            e.push(
                Element::new("ip")
                    .attr("address", &ip.address)
                    .opt_attr("family", ip.family.as_deref())
                    .opt_attr("prefix", ip.prefix),
            );
        }
        if let Some(s) = &self.script {
            e.push(Element::new("script").attr("path", s));
        }
        if let Some(t) = &self.target_dev {
            e.push(Element::new("target").attr("dev", t));
        }
        if let Some(m) = &self.model {
            e.push(Element::new("model").attr("type", m));
        }
        if self.net_type != "hostdev" {
            e = e.opt_child(driver);
        }
        if let Some(l) = &self.link_state {
            e.push(Element::new("link").attr("state", l));
        }
        if let Some(m) = self.mtu {
            e.push(Element::new("mtu").attr("size", m));
        }
        if let Some(o) = self.boot_order {
            e.push(Element::new("boot").attr("order", o));
        }
        if let Some(a) = &self.address {
            e.push(a.to_element(a.is_pci(false)));
        }
        e
    }
}

/// `<virtualport><parameters>` attributes in libvirt's order.
const VPORT_PARAMS: [&str; 6] = [
    "managerid",
    "typeid",
    "typeidversion",
    "instanceid",
    "interfaceid",
    "profileid",
];

/// Parses and normalises a MAC address to lower-case colon form.
pub fn parse_mac(v: &str) -> Result<String, String> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 6 {
        return Err("expected a MAC address of six hexadecimal octets".into());
    }
    let mut out = Vec::new();
    for p in parts {
        let b = u8::from_str_radix(p, 16)
            .map_err(|_| "expected a MAC address of six hexadecimal octets".to_string())?;
        if p.is_empty() || p.len() > 2 {
            return Err("expected a MAC address of six hexadecimal octets".into());
        }
        out.push(format!("{b:02x}"));
    }
    Ok(out.join(":"))
}

/// A `<source>` of a character device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChardevSource {
    /// `mode`: bind or connect.
    pub mode: Option<String>,
    /// `path` (file, unix, dev, pipe, pty).
    pub path: Option<String>,
    /// `host` (tcp, udp).
    pub host: Option<String>,
    /// `service` (tcp, udp).
    pub service: Option<String>,
}

/// A character device: `<serial>`, `<parallel>`, `<console>` or `<channel>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chardev {
    /// `type`: pty, file, unix, tcp, udp, null, vc, stdio, dev, pipe.
    pub chr_type: String,
    /// `<source>` elements (udp has two).
    pub sources: Vec<ChardevSource>,
    /// `<protocol type>` (tcp: raw, telnet).
    pub protocol: Option<String>,
    /// `<target type>`.
    pub target_type: Option<String>,
    /// `<target port>`.
    pub target_port: Option<u32>,
    /// `<target name>` (channels).
    pub target_name: Option<String>,
    /// `tty`: the pty's path on an active domain (runtime state, not in the inactive configuration).
    pub tty: Option<String>,
    /// `<address>`.
    pub address: Option<Address>,
}

impl Chardev {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut d = Chardev {
            chr_type: c
                .attr_with("type", |v| {
                    one_of(
                        v,
                        &[
                            "pty", "file", "unix", "tcp", "udp", "null", "vc", "stdio", "dev",
                            "pipe", "spicevmc",
                        ],
                    )
                })?
                .unwrap_or_else(|| "pty".into()),
            tty: c.attr("tty").map(str::to_string),
            ..Chardev::default()
        };
        for mut s in c.children("source") {
            d.sources.push(ChardevSource {
                mode: s.attr_with("mode", |v| one_of(v, &["bind", "connect"]))?,
                path: s.attr("path").map(str::to_string),
                host: s.attr("host").map(str::to_string),
                service: s.attr("service").map(str::to_string),
            });
            s.finish()?;
        }
        if let Some(mut p) = c.child("protocol")? {
            d.protocol =
                p.attr_with("type", |v| one_of(v, &["raw", "telnet", "telnets", "tls"]))?;
            p.finish()?;
        }
        if let Some(mut t) = c.child("target")? {
            d.target_type = t.attr("type").map(str::to_string);
            d.target_port = t.attr_parse("port")?;
            d.target_name = t.attr("name").map(str::to_string);
            t.finish()?;
        }
        if let Some(a) = c.child("address")? {
            d.address = Some(Address::parse(a, None)?);
        }
        c.finish()?;
        Ok(d)
    }

    pub(crate) fn to_element(&self, name: &str, flags: FormatFlags) -> Element {
        let mut e = Element::new(name).attr("type", &self.chr_type);
        if !flags.contains(FormatFlags::INACTIVE) {
            e = e.opt_attr("tty", self.tty.as_deref());
        }
        for s in &self.sources {
            // A pty's path is runtime state: libvirt omits it from the inactive configuration.
            if self.chr_type == "pty" && flags.contains(FormatFlags::INACTIVE) {
                continue;
            }
            e.push(
                Element::new("source")
                    .opt_attr("mode", s.mode.as_deref())
                    .opt_attr("host", s.host.as_deref())
                    .opt_attr("service", s.service.as_deref())
                    .opt_attr("path", s.path.as_deref()),
            );
        }
        if let Some(p) = &self.protocol {
            e.push(Element::new("protocol").attr("type", p));
        }
        if self.target_type.is_some() || self.target_port.is_some() || self.target_name.is_some() {
            e.push(
                Element::new("target")
                    .opt_attr("type", self.target_type.as_deref())
                    .opt_attr("name", self.target_name.as_deref())
                    .opt_attr("port", self.target_port),
            );
        }
        if let Some(a) = &self.address {
            e.push(a.to_element(a.is_pci(false)));
        }
        e
    }
}

/// `<input type bus/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Input {
    /// mouse, keyboard, tablet, passthrough, evdev.
    pub input_type: String,
    /// ps2, usb, xen, virtio.
    pub bus: Option<String>,
    /// `<address>`.
    pub address: Option<Address>,
}

impl Input {
    pub(crate) fn parse(mut c: Cursor<'_>, os: &Os) -> Result<Self, Error> {
        let input_type = c
            .attr_with("type", |v| one_of(v, &["mouse", "keyboard", "tablet"]))?
            .ok_or_else(|| Error::MissingAttribute {
                path: c.attr_path("type"),
            })?;
        let mut bus = c.attr_with("bus", |v| one_of(v, &["ps2", "usb", "xen", "virtio"]))?;
        // libvirt's default bus: usb for tablets, ps2 for HVM guests, xen for PV guests.
        if bus.is_none() {
            bus = Some(if input_type == "tablet" {
                "usb".into()
            } else if os.os_type == super::OsType::Hvm {
                "ps2".into()
            } else {
                "xen".into()
            });
        }
        let address = match c.child("address")? {
            Some(a) => Some(Address::parse(a, None)?),
            None => None,
        };
        c.finish()?;
        Ok(Input {
            input_type,
            bus,
            address,
        })
    }

    pub(crate) fn to_element(&self) -> Element {
        Element::new("input")
            .attr("type", &self.input_type)
            .opt_attr("bus", self.bus.as_deref())
            .opt_child(self.address.as_ref().map(|a| a.to_element(a.is_pci(false))))
    }
}

/// `<listen type address|network|socket/>` of a graphics device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphicsListen {
    /// address, network, socket, none.
    pub listen_type: String,
    /// `address`.
    pub address: Option<String>,
    /// `network`.
    pub network: Option<String>,
    /// `socket`.
    pub socket: Option<String>,
}

/// `<graphics>` (vnc, spice, sdl).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graphics {
    /// vnc, spice, sdl.
    pub graphics_type: String,
    /// `port` (-1 for automatic).
    pub port: Option<i32>,
    /// `tlsPort` (spice).
    pub tls_port: Option<i32>,
    /// `autoport`.
    pub autoport: Option<bool>,
    /// Legacy `listen` attribute.
    pub listen: Option<String>,
    /// `keymap`.
    pub keymap: Option<String>,
    /// `passwd`: formatted only with [`FormatFlags::SECURE`].
    pub passwd: Option<String>,
    /// `display` (sdl).
    pub display: Option<String>,
    /// `xauth` (sdl).
    pub xauth: Option<String>,
    /// `fullscreen` (sdl).
    pub fullscreen: Option<bool>,
    /// `<listen>` children.
    pub listens: Vec<GraphicsListen>,
    /// `<mouse mode>` (spice).
    pub mouse_mode: Option<String>,
    /// `<clipboard copypaste>` (spice).
    pub clipboard_copypaste: Option<bool>,
    /// `websocket` port (vnc).
    pub websocket: Option<i32>,
    /// `sharePolicy` (vnc).
    pub share_policy: Option<String>,
    /// `defaultMode` (spice): any, secure, insecure.
    pub default_mode: Option<String>,
    /// `<channel name mode>` (spice) pairs.
    pub spice_channels: Vec<(String, String)>,
    /// `<image compression>` (spice).
    pub image_compression: Option<String>,
    /// `<streaming mode>` (spice).
    pub streaming_mode: Option<String>,
    /// `<filetransfer enable>` (spice).
    pub filetransfer: Option<bool>,
    /// `<gl enable rendernode>` (spice).
    pub gl: Option<(bool, Option<String>)>,
}

impl Graphics {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let gt = c
            .attr_with("type", |v| one_of(v, &["vnc", "spice", "sdl"]))?
            .ok_or_else(|| Error::MissingAttribute {
                path: c.attr_path("type"),
            })?;
        let mut g = Graphics {
            port: c.attr_parse("port")?,
            tls_port: c.attr_parse("tlsPort")?,
            autoport: c.attr_yes_no("autoport")?,
            listen: c.attr("listen").map(str::to_string),
            keymap: c.attr("keymap").map(str::to_string),
            passwd: c.attr("passwd").map(str::to_string),
            display: c.attr("display").map(str::to_string),
            xauth: c.attr("xauth").map(str::to_string),
            fullscreen: c.attr_yes_no("fullscreen")?,
            websocket: c.attr_parse("websocket")?,
            share_policy: c.attr_with("sharePolicy", |v| {
                one_of(v, &["allow-exclusive", "force-shared", "ignore"])
            })?,
            default_mode: c
                .attr_with("defaultMode", |v| one_of(v, &["any", "secure", "insecure"]))?,
            graphics_type: gt,
            ..Graphics::default()
        };
        for mut l in c.children("listen") {
            g.listens.push(GraphicsListen {
                listen_type: l
                    .attr_with("type", |v| {
                        one_of(v, &["address", "network", "socket", "none"])
                    })?
                    .ok_or_else(|| Error::MissingAttribute {
                        path: l.attr_path("type"),
                    })?,
                address: l.attr("address").map(str::to_string),
                network: l.attr("network").map(str::to_string),
                socket: l.attr("socket").map(str::to_string),
            });
            l.finish()?;
        }
        for mut ch in c.children("channel") {
            let name = ch
                .attr_with("name", |v| {
                    one_of(
                        v,
                        &[
                            "main",
                            "display",
                            "inputs",
                            "cursor",
                            "playback",
                            "record",
                            "smartcard",
                            "usbredir",
                        ],
                    )
                })?
                .ok_or_else(|| Error::MissingAttribute {
                    path: ch.attr_path("name"),
                })?;
            let mode = ch
                .attr_with("mode", |v| one_of(v, &["any", "secure", "insecure"]))?
                .ok_or_else(|| Error::MissingAttribute {
                    path: ch.attr_path("mode"),
                })?;
            ch.finish()?;
            g.spice_channels.push((name, mode));
        }
        if let Some(mut m) = c.child("image")? {
            g.image_compression = m.attr_with("compression", |v| {
                one_of(v, &["auto_glz", "auto_lz", "quic", "glz", "lz", "off"])
            })?;
            m.finish()?;
        }
        if let Some(mut m) = c.child("streaming")? {
            g.streaming_mode = m.attr_with("mode", |v| one_of(v, &["filter", "all", "off"]))?;
            m.finish()?;
        }
        if let Some(mut m) = c.child("mouse")? {
            g.mouse_mode = m.attr_with("mode", |v| one_of(v, &["server", "client"]))?;
            m.finish()?;
        }
        if let Some(mut m) = c.child("clipboard")? {
            g.clipboard_copypaste = m.attr_yes_no("copypaste")?;
            m.finish()?;
        }
        if let Some(mut m) = c.child("filetransfer")? {
            g.filetransfer = m.attr_yes_no("enable")?;
            m.finish()?;
        }
        if let Some(mut m) = c.child("gl")? {
            let en = m.attr_yes_no("enable")?.unwrap_or(false);
            let rn = m.attr("rendernode").map(str::to_string);
            m.finish()?;
            g.gl = Some((en, rn));
        }
        c.finish()?;
        // libvirt mirrors the legacy listen attribute and the first address listen.
        if g.listens.is_empty() {
            if let Some(l) = &g.listen {
                g.listens.push(GraphicsListen {
                    listen_type: "address".into(),
                    address: Some(l.clone()),
                    ..GraphicsListen::default()
                });
            }
        } else if g.listen.is_none() && g.listens[0].listen_type == "address" {
            g.listen = g.listens[0].address.clone();
        }
        // libvirt's port semantics: a VNC display without a port, or with the legacy -1, allocates one
        // automatically; SPICE does when both ports are -1; automatic ports are not kept in a definition.
        match g.graphics_type.as_str() {
            "vnc" => {
                let auto_by_port = matches!(g.port, None | Some(-1));
                let auto = g.autoport.unwrap_or(auto_by_port);
                g.autoport = Some(auto);
                if matches!(g.port, Some(0 | -1)) {
                    g.port = None;
                }
            }
            "spice" => {
                let legacy = g.port == Some(-1) && g.tls_port == Some(-1);
                let auto = g.autoport.unwrap_or(false) || legacy;
                g.autoport = Some(auto);
                if auto {
                    g.port = None;
                    g.tls_port = None;
                }
                g.port = g.port.filter(|p| *p != 0);
                g.tls_port = g.tls_port.filter(|p| *p != 0);
            }
            _ => {}
        }
        Ok(g)
    }

    pub(crate) fn to_element(&self, flags: FormatFlags) -> Element {
        let mut e = Element::new("graphics").attr("type", &self.graphics_type);
        match self.graphics_type.as_str() {
            "sdl" => {
                e = e
                    .opt_attr("display", self.display.as_deref())
                    .opt_attr("xauth", self.xauth.as_deref())
                    .opt_attr("fullscreen", self.fullscreen.map(yes_no));
            }
            "vnc" => {
                let auto = self.autoport.unwrap_or(false);
                let port = self.port.filter(|p| *p != 0);
                let port = match port {
                    Some(p) if !auto || !flags.contains(FormatFlags::INACTIVE) => Some(p),
                    _ if auto => Some(-1),
                    _ => None,
                };
                e = e
                    .opt_attr("port", port)
                    .opt_attr("autoport", self.autoport.map(yes_no))
                    .opt_attr("websocket", self.websocket)
                    .opt_attr("listen", self.listen.as_deref())
                    .opt_attr("keymap", self.keymap.as_deref())
                    .opt_attr("sharePolicy", self.share_policy.as_deref());
            }
            _ => {
                e = e
                    .opt_attr("port", self.port)
                    .opt_attr("tlsPort", self.tls_port)
                    .opt_attr("autoport", self.autoport.map(yes_no))
                    .opt_attr("websocket", self.websocket)
                    .opt_attr("listen", self.listen.as_deref())
                    .opt_attr("keymap", self.keymap.as_deref())
                    .opt_attr("defaultMode", self.default_mode.as_deref())
                    .opt_attr("sharePolicy", self.share_policy.as_deref());
            }
        }
        if flags.contains(FormatFlags::SECURE) {
            e = e.opt_attr("passwd", self.passwd.as_deref());
        }
        for l in &self.listens {
            e.push(
                Element::new("listen")
                    .attr("type", &l.listen_type)
                    .opt_attr("address", l.address.as_deref())
                    .opt_attr("network", l.network.as_deref())
                    .opt_attr("socket", l.socket.as_deref()),
            );
        }
        for (n, m) in &self.spice_channels {
            e.push(Element::new("channel").attr("name", n).attr("mode", m));
        }
        if let Some(m) = &self.image_compression {
            e.push(Element::new("image").attr("compression", m));
        }
        if let Some(m) = &self.streaming_mode {
            e.push(Element::new("streaming").attr("mode", m));
        }
        if let Some(m) = &self.mouse_mode {
            e.push(Element::new("mouse").attr("mode", m));
        }
        if let Some(c) = self.clipboard_copypaste {
            e.push(Element::new("clipboard").attr("copypaste", yes_no(c)));
        }
        if let Some(f) = self.filetransfer {
            e.push(Element::new("filetransfer").attr("enable", yes_no(f)));
        }
        if let Some((en, rn)) = &self.gl {
            e.push(
                Element::new("gl")
                    .attr("enable", yes_no(*en))
                    .opt_attr("rendernode", rn.as_deref()),
            );
        }
        e
    }
}

/// `<sound model>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sound {
    /// sb16, es1370, pcspk, ac97, ich6, ich9, usb...
    pub model: String,
    /// `<address>`.
    pub address: Option<Address>,
}

/// `<video><model type vram heads primary/></video>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Video {
    /// cirrus, vga, xen, qxl, virtio, none; `default` until a driver's post-parse picks one.
    pub model_type: String,
    /// `vram` KiB.
    pub vram: Option<u64>,
    /// `ram` KiB (qxl).
    pub ram: Option<u64>,
    /// `heads`.
    pub heads: Option<u32>,
    /// `primary`.
    pub primary: Option<bool>,
    /// `<address>`.
    pub address: Option<Address>,
}

impl Video {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut v = Video {
            model_type: "default".into(),
            ..Video::default()
        };
        if let Some(mut m) = c.child("model")? {
            v.model_type = m
                .attr_with("type", |v| {
                    one_of(
                        v,
                        &[
                            "default", "cirrus", "vga", "xen", "qxl", "virtio", "vmvga", "bochs",
                            "none",
                        ],
                    )
                })?
                .unwrap_or_else(|| "default".into());
            v.ram = m.attr_parse("ram")?;
            v.vram = m.attr_parse("vram")?;
            v.heads = m.attr_parse("heads")?;
            v.primary = m.attr_yes_no("primary")?;
            m.finish()?;
        }
        if let Some(a) = c.child("address")? {
            v.address = Some(Address::parse(a, None)?);
        }
        c.finish()?;
        Ok(v)
    }

    pub(crate) fn to_element(&self) -> Element {
        Element::new("video")
            .child(
                Element::new("model")
                    .attr("type", &self.model_type)
                    .opt_attr("ram", self.ram)
                    .opt_attr("vram", self.vram)
                    .opt_attr("heads", self.heads)
                    .opt_attr("primary", self.primary.map(yes_no)),
            )
            .opt_child(self.address.as_ref().map(|a| a.to_element(a.is_pci(false))))
    }
}

/// `<hostdev mode='subsystem' type='pci|usb'>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hostdev {
    /// pci or usb.
    pub hostdev_type: String,
    /// `managed`.
    pub managed: bool,
    /// `<driver name>` (xen).
    pub driver_name: Option<String>,
    /// `<source writeFiltering>` (pci).
    pub write_filtering: Option<bool>,
    /// `<source><vendor id>` (usb).
    pub vendor: Option<String>,
    /// `<source><product id>` (usb).
    pub product: Option<String>,
    /// `<source><address>`.
    pub source_address: Option<Address>,
    /// Guest `<address>`.
    pub address: Option<Address>,
}

impl Hostdev {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        c.attr_with("mode", |v| one_of(v, &["subsystem"]))?;
        let ht = c
            .attr_with("type", |v| one_of(v, &["pci", "usb"]))?
            .ok_or_else(|| Error::MissingAttribute {
                path: c.attr_path("type"),
            })?;
        let mut h = Hostdev {
            managed: c.attr_yes_no("managed")?.unwrap_or(false),
            ..Hostdev::default()
        };
        if let Some(mut d) = c.child("driver")? {
            h.driver_name = d.attr("name").map(str::to_string);
            d.finish()?;
        }
        let mut s = c.req_child("source")?;
        h.write_filtering = s.attr_yes_no("writeFiltering")?;
        if let Some(mut v) = s.child("vendor")? {
            h.vendor = Some(v.req_attr("id")?.to_string());
            v.finish()?;
        }
        if let Some(mut v) = s.child("product")? {
            h.product = Some(v.req_attr("id")?.to_string());
            v.finish()?;
        }
        if let Some(a) = s.child("address")? {
            h.source_address = Some(Address::parse(a, Some(&ht))?);
        }
        s.finish()?;
        if let Some(a) = c.child("address")? {
            h.address = Some(Address::parse(a, None)?);
        }
        c.finish()?;
        h.hostdev_type = ht;
        Ok(h)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("hostdev")
            .attr("mode", "subsystem")
            .attr("type", &self.hostdev_type)
            .attr("managed", yes_no(self.managed));
        if let Some(d) = &self.driver_name {
            e.push(Element::new("driver").attr("name", d));
        }
        let mut s =
            Element::new("source").opt_attr("writeFiltering", self.write_filtering.map(yes_no));
        if let Some(v) = &self.vendor {
            s.push(Element::new("vendor").attr("id", v));
        }
        if let Some(v) = &self.product {
            s.push(Element::new("product").attr("id", v));
        }
        if let Some(a) = &self.source_address {
            s.push(a.to_element(self.hostdev_type == "pci"));
        }
        e.push(s);
        if let Some(a) = &self.address {
            e.push(a.to_element(a.is_pci(false)));
        }
        e
    }
}

/// `<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rng {
    /// Device model (virtio).
    pub model: String,
    /// Backend model (random).
    pub backend_model: String,
    /// Backend device path.
    pub backend_path: Option<String>,
}

/// `<devices>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    /// `<emulator>`.
    pub emulator: Option<String>,
    /// `<disk>` list.
    pub disks: Vec<Disk>,
    /// `<controller>` list.
    pub controllers: Vec<Controller>,
    /// `<interface>` list.
    pub interfaces: Vec<Interface>,
    /// `<serial>` list.
    pub serials: Vec<Chardev>,
    /// `<parallel>` list.
    pub parallels: Vec<Chardev>,
    /// `<console>` list.
    pub consoles: Vec<Chardev>,
    /// `<channel>` list.
    pub channels: Vec<Chardev>,
    /// `<input>` list.
    pub inputs: Vec<Input>,
    /// `<graphics>` list.
    pub graphics: Vec<Graphics>,
    /// `<sound>` list.
    pub sounds: Vec<Sound>,
    /// `<video>` list.
    pub videos: Vec<Video>,
    /// `<hostdev>` list.
    pub hostdevs: Vec<Hostdev>,
    /// `<redirdev bus type>` (USB redirection) as (bus, type).
    pub redirdevs: Vec<(String, String)>,
    /// `<memballoon model>`.
    pub memballoon: Option<String>,
    /// `<rng>` list.
    pub rngs: Vec<Rng>,
}

impl Devices {
    pub(crate) fn parse(mut c: Cursor<'_>, os: &Os) -> Result<Self, Error> {
        let mut d = Devices::default();
        for mut ch in c.all_children() {
            match ch.name() {
                "emulator" => {
                    if d.emulator.is_some() {
                        return Err(Error::Duplicate {
                            path: ch.path().to_string(),
                        });
                    }
                    d.emulator = Some(ch.text_finish()?);
                }
                "disk" => d.disks.push(Disk::parse(ch)?),
                "controller" => d.controllers.push(Controller::parse(ch)?),
                "interface" => d.interfaces.push(Interface::parse(ch)?),
                "serial" => d.serials.push(Chardev::parse(ch)?),
                "parallel" => d.parallels.push(Chardev::parse(ch)?),
                "console" => d.consoles.push(Chardev::parse(ch)?),
                "channel" => d.channels.push(Chardev::parse(ch)?),
                "input" => d.inputs.push(Input::parse(ch, os)?),
                "graphics" => d.graphics.push(Graphics::parse(ch)?),
                "sound" => {
                    let model = ch
                        .attr_with("model", |v| {
                            one_of(
                                v,
                                &[
                                    "sb16", "es1370", "pcspk", "ac97", "ich6", "ich9", "usb",
                                    "ich7",
                                ],
                            )
                        })?
                        .ok_or_else(|| Error::MissingAttribute {
                            path: ch.attr_path("model"),
                        })?;
                    let address = match ch.child("address")? {
                        Some(a) => Some(Address::parse(a, None)?),
                        None => None,
                    };
                    ch.finish()?;
                    d.sounds.push(Sound { model, address });
                }
                "video" => d.videos.push(Video::parse(ch)?),
                "hostdev" => d.hostdevs.push(Hostdev::parse(ch)?),
                "redirdev" => {
                    let bus = ch
                        .attr_with("bus", |v| one_of(v, &["usb"]))?
                        .unwrap_or_else(|| "usb".into());
                    let t = ch
                        .attr_with("type", |v| one_of(v, &["spicevmc", "tcp"]))?
                        .ok_or_else(|| Error::MissingAttribute {
                            path: ch.attr_path("type"),
                        })?;
                    ch.finish()?;
                    d.redirdevs.push((bus, t));
                }
                "memballoon" => {
                    let m = ch
                        .attr_with("model", |v| one_of(v, &["xen", "virtio", "none"]))?
                        .ok_or_else(|| Error::MissingAttribute {
                            path: ch.attr_path("model"),
                        })?;
                    ch.finish()?;
                    d.memballoon = Some(m);
                }
                "rng" => {
                    let model = ch.req_attr("model")?.to_string();
                    let mut b = ch.req_child("backend")?;
                    let backend_model = b.req_attr("model")?.to_string();
                    let p = b.text();
                    b.finish()?;
                    ch.finish()?;
                    d.rngs.push(Rng {
                        model,
                        backend_model,
                        backend_path: (!p.trim().is_empty()).then(|| p.trim().to_string()),
                    });
                }
                _ => {
                    return Err(Error::UnknownElement {
                        path: ch.path().to_string(),
                    })
                }
            }
        }
        c.finish()?;
        Ok(d)
    }

    pub(crate) fn to_element(&self, flags: FormatFlags) -> Element {
        let mut e = Element::new("devices");
        if let Some(em) = &self.emulator {
            e.push(Element::new("emulator").text(em));
        }
        for x in &self.disks {
            e.push(x.to_element());
        }
        for x in &self.controllers {
            e.push(x.to_element());
        }
        for x in &self.interfaces {
            e.push(x.to_element());
        }
        for x in &self.serials {
            e.push(x.to_element("serial", flags));
        }
        for x in &self.parallels {
            e.push(x.to_element("parallel", flags));
        }
        for x in &self.consoles {
            e.push(x.to_element("console", flags));
        }
        for x in &self.channels {
            e.push(x.to_element("channel", flags));
        }
        for x in &self.inputs {
            e.push(x.to_element());
        }
        for x in &self.graphics {
            e.push(x.to_element(flags));
        }
        for x in &self.sounds {
            e.push(
                Element::new("sound")
                    .attr("model", &x.model)
                    .opt_child(x.address.as_ref().map(|a| a.to_element(a.is_pci(false)))),
            );
        }
        for x in &self.videos {
            e.push(x.to_element());
        }
        for x in &self.hostdevs {
            e.push(x.to_element());
        }
        for (bus, t) in &self.redirdevs {
            e.push(Element::new("redirdev").attr("bus", bus).attr("type", t));
        }
        if let Some(m) = &self.memballoon {
            e.push(Element::new("memballoon").attr("model", m));
        }
        for r in &self.rngs {
            let mut b = Element::new("backend").attr("model", &r.backend_model);
            if let Some(p) = &r.backend_path {
                b = b.text(p);
            }
            e.push(Element::new("rng").attr("model", &r.model).child(b));
        }
        e
    }
}
