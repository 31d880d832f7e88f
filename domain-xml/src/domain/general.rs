//! Domain-level elements other than devices: vCPUs, tuning, `<os>`, `<features>`, `<cpu>`, `<clock>`.

use std::fmt;
use std::str::FromStr;

use crate::xml::{on_off, parse_uint, yes_no, Cursor, Element};
use crate::Error;

/// `<maxMemory slots='N' unit='KiB'>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxMemory {
    /// Maximum memory in KiB.
    pub kib: u64,
    /// Number of memory slots.
    pub slots: u32,
}

/// `<vcpu>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vcpu {
    /// Maximum number of vCPUs.
    pub count: u32,
    /// Number of vCPUs online at boot, when less than `count`.
    pub current: Option<u32>,
    /// `placement`: `static` (the default) or `auto`.
    pub placement_auto: bool,
    /// `cpuset`: physical CPUs the vCPUs may run on.
    pub cpuset: Option<String>,
}

impl Vcpu {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let placement_auto = c
            .attr_with("placement", |v| match v {
                "static" => Ok(false),
                "auto" => Ok(true),
                _ => Err("expected 'static' or 'auto'".into()),
            })?
            .unwrap_or(false);
        let cpuset = c.attr("cpuset").map(str::to_string);
        let current = c.attr_parse::<u32>("current")?;
        let count = c.text_with(|t| {
            t.parse::<u32>()
                .map_err(|_| "expected a vCPU count".to_string())
        })?;
        if count == 0 {
            return Err(c.invalid("0", "a domain needs at least one vCPU"));
        }
        if let Some(cur) = current {
            if cur == 0 || cur > count {
                return Err(c.invalid_attr(
                    "current",
                    &cur.to_string(),
                    "must be between 1 and the vCPU count",
                ));
            }
        }
        c.finish()?;
        Ok(Vcpu {
            count,
            current: current.filter(|c| *c != count),
            placement_auto,
            cpuset,
        })
    }

    pub(crate) fn to_element(&self) -> Element {
        Element::new("vcpu")
            .attr(
                "placement",
                if self.placement_auto {
                    "auto"
                } else {
                    "static"
                },
            )
            .opt_attr("cpuset", self.cpuset.as_deref())
            .opt_attr("current", self.current)
            .text(self.count.to_string())
    }

    /// The number of vCPUs online at boot.
    pub fn current(&self) -> u32 {
        self.current.unwrap_or(self.count)
    }
}

/// `<vcpus><vcpu id enabled hotpluggable order/></vcpus>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VcpuState {
    /// vCPU id.
    pub id: u32,
    /// Whether it is online.
    pub enabled: bool,
    /// Whether it can be unplugged.
    pub hotpluggable: Option<bool>,
    /// Hotplug order.
    pub order: Option<u32>,
}

impl VcpuState {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let s = VcpuState {
            id: c.req_attr_parse("id")?,
            enabled: c
                .attr_yes_no("enabled")?
                .ok_or_else(|| Error::MissingAttribute {
                    path: c.attr_path("enabled"),
                })?,
            hotpluggable: c.attr_yes_no("hotpluggable")?,
            order: c.attr_parse("order")?,
        };
        c.finish()?;
        Ok(s)
    }

    pub(crate) fn to_element(&self) -> Element {
        Element::new("vcpu")
            .attr("id", self.id)
            .attr("enabled", yes_no(self.enabled))
            .opt_attr("hotpluggable", self.hotpluggable.map(yes_no))
            .opt_attr("order", self.order)
    }
}

/// `<cputune>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTune {
    /// `<shares>`: scheduler weight.
    pub shares: Option<u64>,
    /// `<period>` in microseconds.
    pub period: Option<u64>,
    /// `<quota>` in microseconds.
    pub quota: Option<i64>,
    /// `<vcpupin vcpu cpuset/>` entries.
    pub vcpupin: Vec<(u32, String)>,
    /// `<emulatorpin cpuset/>`.
    pub emulatorpin: Option<String>,
}

impl CpuTune {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut t = CpuTune::default();
        if let Some(mut s) = c.child("shares")? {
            t.shares = Some(s.text_parse()?);
            s.finish()?;
        }
        if let Some(mut s) = c.child("period")? {
            t.period = Some(s.text_parse()?);
            s.finish()?;
        }
        if let Some(mut s) = c.child("quota")? {
            t.quota = Some(s.text_parse()?);
            s.finish()?;
        }
        for mut p in c.children("vcpupin") {
            let vcpu = p.req_attr_parse("vcpu")?;
            let cpuset = p.req_attr("cpuset")?.to_string();
            p.finish()?;
            t.vcpupin.push((vcpu, cpuset));
        }
        if let Some(mut p) = c.child("emulatorpin")? {
            t.emulatorpin = Some(p.req_attr("cpuset")?.to_string());
            p.finish()?;
        }
        c.finish()?;
        Ok(t)
    }

    pub(crate) fn to_element(&self) -> Option<Element> {
        let mut e = Element::new("cputune");
        if let Some(s) = self.shares {
            e.push(Element::new("shares").text(s.to_string()));
        }
        if let Some(s) = self.period {
            e.push(Element::new("period").text(s.to_string()));
        }
        if let Some(s) = self.quota {
            e.push(Element::new("quota").text(s.to_string()));
        }
        for (v, set) in &self.vcpupin {
            e.push(Element::new("vcpupin").attr("vcpu", v).attr("cpuset", set));
        }
        if let Some(s) = &self.emulatorpin {
            e.push(Element::new("emulatorpin").attr("cpuset", s));
        }
        (!e.is_empty()).then_some(e)
    }
}

/// `<numatune><memory mode nodeset placement/></numatune>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NumaTune {
    /// `mode`: strict, preferred, interleave, restrictive.
    pub mode: Option<String>,
    /// `nodeset`.
    pub nodeset: Option<String>,
    /// `placement`: static or auto.
    pub placement: Option<String>,
    /// `<memnode cellid mode nodeset/>` entries.
    pub memnodes: Vec<(u32, String, String)>,
}

impl NumaTune {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut t = NumaTune::default();
        if let Some(mut m) = c.child("memory")? {
            t.mode = m.attr_with("mode", |v| {
                one_of(v, &["strict", "preferred", "interleave", "restrictive"])
            })?;
            t.nodeset = m.attr("nodeset").map(str::to_string);
            t.placement = m.attr_with("placement", |v| one_of(v, &["static", "auto"]))?;
            m.finish()?;
        }
        for mut m in c.children("memnode") {
            let cellid = m.req_attr_parse("cellid")?;
            let mode = m
                .attr_with("mode", |v| {
                    one_of(v, &["strict", "preferred", "interleave", "restrictive"])
                })?
                .unwrap_or_else(|| "strict".into());
            let nodeset = m.req_attr("nodeset")?.to_string();
            m.finish()?;
            t.memnodes.push((cellid, mode, nodeset));
        }
        c.finish()?;
        Ok(t)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("numatune");
        if self.mode.is_some() || self.nodeset.is_some() || self.placement.is_some() {
            e.push(
                Element::new("memory")
                    .attr("mode", self.mode.as_deref().unwrap_or("strict"))
                    .opt_attr("nodeset", self.nodeset.as_deref())
                    .opt_attr("placement", self.placement.as_deref()),
            );
        }
        for (cell, mode, nodeset) in &self.memnodes {
            e.push(
                Element::new("memnode")
                    .attr("cellid", cell)
                    .attr("mode", mode)
                    .attr("nodeset", nodeset),
            );
        }
        e
    }
}

/// Checks `v` against a list of accepted values.
pub(crate) fn one_of(v: &str, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!("expected one of: {}", allowed.join(", ")))
    }
}

/// The guest type in `<os><type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OsType {
    /// Fully virtualized (`hvm`), machine `xenfv`.
    #[default]
    Hvm,
    /// Paravirtualized (`xen` or `linux`), machine `xenpv`.
    Xen,
    /// Spelled `linux` (libvirt keeps the spelling).
    Linux,
    /// PVH (`xenpvh`).
    Xenpvh,
}

impl OsType {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Hvm => "hvm",
            OsType::Xen => "xen",
            OsType::Linux => "linux",
            OsType::Xenpvh => "xenpvh",
        }
    }
}

impl FromStr for OsType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "hvm" => OsType::Hvm,
            "xen" => OsType::Xen,
            "linux" => OsType::Linux,
            "xenpvh" => OsType::Xenpvh,
            _ => return Err("expected 'hvm', 'xen', 'linux' or 'xenpvh'".into()),
        })
    }
}

/// `<loader>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loader {
    /// Path of the firmware.
    pub path: Option<String>,
    /// `readonly`.
    pub readonly: Option<bool>,
    /// `secure`.
    pub secure: Option<bool>,
    /// `type`: rom or pflash.
    pub loader_type: Option<String>,
}

/// `<os>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Os {
    /// `firmware` attribute (efi or bios).
    pub firmware: Option<String>,
    /// `<firmware><feature enabled name/></firmware>` (secure-boot, enrolled-keys).
    pub firmware_features: Vec<(bool, String)>,
    /// `<type>`.
    pub os_type: OsType,
    /// `arch`.
    pub arch: Option<String>,
    /// `machine`: xenpv, xenfv, xenpvh.
    pub machine: Option<String>,
    /// `<loader>`.
    pub loader: Option<Loader>,
    /// `<nvram>` path.
    pub nvram: Option<String>,
    /// `<kernel>`.
    pub kernel: Option<String>,
    /// `<initrd>`.
    pub initrd: Option<String>,
    /// `<cmdline>`.
    pub cmdline: Option<String>,
    /// `<boot dev>` in order: fd, hd, cdrom, network.
    pub boot: Vec<String>,
    /// `<bootmenu enable>`.
    pub bootmenu: Option<bool>,
    /// `<acpi><table type>` entries (type `slic` for Xen's `acpi_firmware`).
    pub acpi_tables: Vec<(String, String)>,
}

impl Os {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut os = Os {
            firmware: c.attr_with("firmware", |v| one_of(v, &["efi", "bios"]))?,
            ..Os::default()
        };
        if let Some(mut fw) = c.child("firmware")? {
            for mut f in fw.children("feature") {
                let enabled = f
                    .attr_yes_no("enabled")?
                    .ok_or_else(|| Error::MissingAttribute {
                        path: f.attr_path("enabled"),
                    })?;
                let name = f
                    .attr_with("name", |v| one_of(v, &["secure-boot", "enrolled-keys"]))?
                    .ok_or_else(|| Error::MissingAttribute {
                        path: f.attr_path("name"),
                    })?;
                f.finish()?;
                os.firmware_features.push((enabled, name));
            }
            fw.finish()?;
        }
        let mut t = c.req_child("type")?;
        os.arch = t.attr("arch").map(str::to_string);
        os.machine = t.attr_with("machine", |v| one_of(v, &["xenpv", "xenfv", "xenpvh"]))?;
        os.os_type = t.text_with(|v| v.parse())?;
        t.finish()?;
        if let Some(mut l) = c.child("loader")? {
            let t = l.text();
            os.loader = Some(Loader {
                readonly: l.attr_yes_no("readonly")?,
                secure: l.attr_yes_no("secure")?,
                loader_type: l.attr_with("type", |v| one_of(v, &["rom", "pflash"]))?,
                path: (!t.trim().is_empty()).then(|| t.trim().to_string()),
            });
            l.finish()?;
        }
        if let Some(n) = c.child("nvram")? {
            os.nvram = Some(n.text_finish()?);
        }
        if let Some(n) = c.child("kernel")? {
            os.kernel = Some(n.text_finish()?);
        }
        if let Some(n) = c.child("initrd")? {
            os.initrd = Some(n.text_finish()?);
        }
        if let Some(n) = c.child("cmdline")? {
            os.cmdline = Some(n.text_finish()?);
        }
        for mut b in c.children("boot") {
            let dev = b.attr_with("dev", |v| one_of(v, &["fd", "hd", "cdrom", "network"]))?;
            let dev = dev.ok_or_else(|| Error::MissingAttribute {
                path: b.attr_path("dev"),
            })?;
            b.finish()?;
            os.boot.push(dev);
        }
        if let Some(mut b) = c.child("bootmenu")? {
            os.bootmenu = b.attr_yes_no("enable")?;
            b.finish()?;
        }
        if let Some(mut a) = c.child("acpi")? {
            for mut t in a.children("table") {
                let kind = t
                    .attr_with("type", |v| one_of(v, &["raw", "rawset", "slic", "msdm"]))?
                    .ok_or_else(|| Error::MissingAttribute {
                        path: t.attr_path("type"),
                    })?;
                let path = t.text();
                t.finish()?;
                os.acpi_tables.push((kind, path));
            }
            a.finish()?;
        }
        c.finish()?;
        Ok(os)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("os").opt_attr("firmware", self.firmware.as_deref());
        e.push(
            Element::new("type")
                .opt_attr("arch", self.arch.as_deref())
                .opt_attr("machine", self.machine.as_deref())
                .text(self.os_type.as_str()),
        );
        if !self.firmware_features.is_empty() {
            let mut fw = Element::new("firmware");
            for (en, name) in &self.firmware_features {
                fw.push(
                    Element::new("feature")
                        .attr("enabled", yes_no(*en))
                        .attr("name", name),
                );
            }
            e.push(fw);
        }
        if let Some(l) = &self.loader {
            let mut le = Element::new("loader")
                .opt_attr("readonly", l.readonly.map(yes_no))
                .opt_attr("secure", l.secure.map(yes_no))
                .opt_attr("type", l.loader_type.as_deref());
            if let Some(p) = &l.path {
                le = le.text(p);
            }
            e.push(le);
        }
        if let Some(n) = &self.nvram {
            e.push(Element::new("nvram").text(n));
        }
        for (name, v) in [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("cmdline", &self.cmdline),
        ] {
            if let Some(v) = v {
                e.push(Element::new(name).text(v));
            }
        }
        for b in &self.boot {
            e.push(Element::new("boot").attr("dev", b));
        }
        if let Some(b) = self.bootmenu {
            e.push(Element::new("bootmenu").attr("enable", yes_no(b)));
        }
        if !self.acpi_tables.is_empty() {
            let mut a = Element::new("acpi");
            for (kind, path) in &self.acpi_tables {
                a.push(Element::new("table").attr("type", kind).text(path));
            }
            e.push(a);
        }
        e
    }
}

/// `<features>`: each `Some(true)` formats as `<name/>`, `Some(false)` as `<name state='off'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    /// `<acpi/>`.
    pub acpi: Option<bool>,
    /// `<apic/>`.
    pub apic: Option<bool>,
    /// `<pae/>`.
    pub pae: Option<bool>,
    /// `<hap/>`.
    pub hap: Option<bool>,
    /// `<viridian/>`.
    pub viridian: Option<bool>,
    /// `<privnet/>`.
    pub privnet: Option<bool>,
    /// `<xen><e820_host state/></xen>`.
    pub xen_e820_host: Option<bool>,
    /// `<xen><passthrough state mode/></xen>`: state and optional mode (sync_pt, share_pt).
    pub xen_passthrough: Option<(bool, Option<String>)>,
    /// Features always formatted with an explicit state (`<vmport state='off'/>`), in libvirt's order:
    /// pvspinlock, pmu, vmport, smm, vmcoreinfo.
    pub stated: Vec<(String, bool)>,
}

/// Features formatted as `<name state='on|off'/>`, in libvirt's order.
const STATED_FEATURES: &[&str] = &["pvspinlock", "pmu", "vmport", "smm", "vmcoreinfo"];

fn parse_state(c: &mut Cursor<'_>) -> Result<bool, Error> {
    Ok(c.attr_on_off("state")?.unwrap_or(true))
}

fn state_el(name: &str, v: bool) -> Element {
    let e = Element::new(name);
    if v {
        e
    } else {
        e.attr("state", "off")
    }
}

impl Features {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut f = Features::default();
        for (name, slot) in [
            ("acpi", &mut f.acpi),
            ("apic", &mut f.apic),
            ("pae", &mut f.pae),
            ("hap", &mut f.hap),
            ("viridian", &mut f.viridian),
            ("privnet", &mut f.privnet),
        ] {
            if let Some(mut e) = c.child(name)? {
                *slot = Some(parse_state(&mut e)?);
                e.finish()?;
            }
        }
        for name in STATED_FEATURES {
            if let Some(mut e) = c.child(name)? {
                let st = parse_state(&mut e)?;
                e.finish()?;
                f.stated.push((name.to_string(), st));
            }
        }
        if let Some(mut x) = c.child("xen")? {
            if let Some(mut e) = x.child("e820_host")? {
                f.xen_e820_host = Some(parse_state(&mut e)?);
                e.finish()?;
            }
            if let Some(mut e) = x.child("passthrough")? {
                let st = parse_state(&mut e)?;
                let mode = e.attr_with("mode", |v| one_of(v, &["sync_pt", "share_pt"]))?;
                e.finish()?;
                f.xen_passthrough = Some((st, mode));
            }
            x.finish()?;
        }
        c.finish()?;
        Ok(f)
    }

    pub(crate) fn to_element(&self) -> Option<Element> {
        let mut e = Element::new("features");
        for (name, v) in [
            ("acpi", self.acpi),
            ("apic", self.apic),
            ("pae", self.pae),
            ("hap", self.hap),
            ("viridian", self.viridian),
            ("privnet", self.privnet),
        ] {
            if let Some(v) = v {
                e.push(state_el(name, v));
            }
        }
        for (name, v) in &self.stated {
            e.push(Element::new(name.as_str()).attr("state", on_off(*v)));
        }
        if self.xen_e820_host.is_some() || self.xen_passthrough.is_some() {
            let mut x = Element::new("xen");
            if let Some(v) = self.xen_e820_host {
                x.push(Element::new("e820_host").attr("state", on_off(v)));
            }
            if let Some((v, m)) = &self.xen_passthrough {
                x.push(
                    Element::new("passthrough")
                        .attr("state", on_off(*v))
                        .opt_attr("mode", m.as_deref()),
                );
            }
            e.push(x);
        }
        (!e.is_empty()).then_some(e)
    }
}

/// `<cpu><feature policy name/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    /// force, require, optional, disable, forbid.
    pub policy: Option<String>,
    /// Feature name.
    pub name: String,
}

/// `<cpu><numa><cell>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NumaCell {
    /// Cell id.
    pub id: u32,
    /// vCPUs in the cell (a cpuset string such as `0-1`).
    pub cpus: String,
    /// Memory of the cell, KiB.
    pub memory_kib: u64,
    /// `<distances><sibling id value/>` pairs.
    pub distances: Vec<(u32, u32)>,
}

/// `<cpu>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cpu {
    /// `mode`: custom, host-model, host-passthrough, maximum.
    pub mode: Option<String>,
    /// `match`.
    pub match_: Option<String>,
    /// `check`.
    pub check: Option<String>,
    /// `migratable` (host-passthrough, maximum).
    pub migratable: Option<bool>,
    /// `<model>` name with its `fallback` attribute.
    pub model: Option<(String, Option<String>)>,
    /// `<topology sockets dies cores threads/>`.
    pub topology: Option<(u32, Option<u32>, u32, u32)>,
    /// `<feature>` list.
    pub features: Vec<CpuFeature>,
    /// `<numa>` cells.
    pub numa: Vec<NumaCell>,
}

impl Cpu {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut cpu = Cpu {
            mode: c.attr_with("mode", |v| {
                one_of(v, &["custom", "host-model", "host-passthrough", "maximum"])
            })?,
            match_: c.attr_with("match", |v| one_of(v, &["minimum", "exact", "strict"]))?,
            check: c.attr_with("check", |v| one_of(v, &["none", "partial", "full"]))?,
            migratable: c.attr_on_off("migratable")?,
            ..Cpu::default()
        };
        if let Some(mut m) = c.child("model")? {
            let fb = m.attr_with("fallback", |v| one_of(v, &["allow", "forbid"]))?;
            let name = m.text();
            m.finish()?;
            cpu.model = Some((name, fb));
        }
        if let Some(mut t) = c.child("topology")? {
            cpu.topology = Some((
                t.req_attr_parse("sockets")?,
                t.attr_parse("dies")?,
                t.req_attr_parse("cores")?,
                t.req_attr_parse("threads")?,
            ));
            t.finish()?;
        }
        for mut f in c.children("feature") {
            let policy = f.attr_with("policy", |v| {
                one_of(v, &["force", "require", "optional", "disable", "forbid"])
            })?;
            let name = f.req_attr("name")?.to_string();
            f.finish()?;
            cpu.features.push(CpuFeature { policy, name });
        }
        if let Some(mut n) = c.child("numa")? {
            for mut cell in n.children("cell") {
                let id = cell.req_attr_parse("id")?;
                let cpus = cell.req_attr("cpus")?.to_string();
                let unit = cell.attr("unit");
                let mem: u64 = cell.req_attr_parse("memory")?;
                let memory_kib = crate::xml::scale_to_kib(mem, unit)
                    .map_err(|r| cell.invalid_attr("unit", unit.unwrap_or(""), r))?;
                let mut distances = Vec::new();
                if let Some(mut d) = cell.child("distances")? {
                    for mut s in d.children("sibling") {
                        distances.push((s.req_attr_parse("id")?, s.req_attr_parse("value")?));
                        s.finish()?;
                    }
                    d.finish()?;
                }
                cell.finish()?;
                cpu.numa.push(NumaCell {
                    id,
                    cpus,
                    memory_kib,
                    distances,
                });
            }
            n.finish()?;
        }
        c.finish()?;
        Ok(cpu)
    }

    pub(crate) fn to_element(&self) -> Option<Element> {
        let mut e = Element::new("cpu")
            .opt_attr("mode", self.mode.as_deref())
            .opt_attr("match", self.match_.as_deref())
            .opt_attr("check", self.check.as_deref())
            .opt_attr("migratable", self.migratable.map(on_off));
        if let Some((name, fb)) = &self.model {
            e.push(
                Element::new("model")
                    .opt_attr("fallback", fb.as_deref())
                    .text(name),
            );
        }
        if let Some((s, d, c, t)) = self.topology {
            e.push(
                Element::new("topology")
                    .attr("sockets", s)
                    .opt_attr("dies", d)
                    .attr("cores", c)
                    .attr("threads", t),
            );
        }
        for f in &self.features {
            e.push(
                Element::new("feature")
                    .opt_attr("policy", f.policy.as_deref())
                    .attr("name", &f.name),
            );
        }
        if !self.numa.is_empty() {
            let mut n = Element::new("numa");
            for cell in &self.numa {
                let mut ce = Element::new("cell")
                    .attr("id", cell.id)
                    .attr("cpus", &cell.cpus)
                    .attr("memory", cell.memory_kib)
                    .attr("unit", "KiB");
                if !cell.distances.is_empty() {
                    let mut d = Element::new("distances");
                    for (id, v) in &cell.distances {
                        d.push(Element::new("sibling").attr("id", id).attr("value", v));
                    }
                    ce.push(d);
                }
                n.push(ce);
            }
            e.push(n);
        }
        (!e.attrs.is_empty() || !e.is_empty()).then_some(e)
    }
}

/// `<clock><timer>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timer {
    /// Timer name: platform, pit, rtc, hpet, tsc, kvmclock, hypervclock, armvtimer.
    pub name: String,
    /// `present`.
    pub present: Option<bool>,
    /// `tickpolicy`.
    pub tickpolicy: Option<String>,
    /// `track`.
    pub track: Option<String>,
    /// `frequency`.
    pub frequency: Option<u64>,
    /// `mode`: auto, native, emulate, paravirt, smpsafe.
    pub mode: Option<String>,
}

/// `<clock>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// `offset`: utc, localtime, timezone, variable, absolute.
    pub offset: String,
    /// `adjustment`: `reset` or seconds.
    pub adjustment: Option<String>,
    /// `basis`: utc or localtime (variable offset).
    pub basis: Option<String>,
    /// `timezone` (timezone offset).
    pub timezone: Option<String>,
    /// `<timer>` list.
    pub timers: Vec<Timer>,
}

impl Default for Clock {
    /// libvirt's default: `<clock offset='utc'/>`.
    fn default() -> Self {
        Clock {
            offset: "utc".into(),
            adjustment: None,
            basis: None,
            timezone: None,
            timers: Vec::new(),
        }
    }
}

impl Clock {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let offset = c
            .attr_with("offset", |v| {
                one_of(v, &["utc", "localtime", "timezone", "variable", "absolute"])
            })?
            .unwrap_or_else(|| "utc".into());
        let adjustment = c.attr_with("adjustment", |v| {
            if v == "reset" || v.parse::<i64>().is_ok() {
                Ok(v.to_string())
            } else {
                Err("expected 'reset' or a number of seconds".into())
            }
        })?;
        let basis = c.attr_with("basis", |v| one_of(v, &["utc", "localtime"]))?;
        let timezone = c.attr("timezone").map(str::to_string);
        let mut clock = Clock {
            offset,
            adjustment,
            basis,
            timezone,
            timers: Vec::new(),
        };
        for mut t in c.children("timer") {
            let name = t
                .attr_with("name", |v| {
                    one_of(
                        v,
                        &[
                            "platform",
                            "pit",
                            "rtc",
                            "hpet",
                            "tsc",
                            "kvmclock",
                            "hypervclock",
                            "armvtimer",
                        ],
                    )
                })?
                .ok_or_else(|| Error::MissingAttribute {
                    path: t.attr_path("name"),
                })?;
            let timer = Timer {
                name,
                present: t.attr_yes_no("present")?,
                tickpolicy: t.attr_with("tickpolicy", |v| {
                    one_of(v, &["delay", "catchup", "merge", "discard"])
                })?,
                track: t.attr_with("track", |v| {
                    one_of(v, &["boot", "guest", "wall", "realtime"])
                })?,
                frequency: t.attr_parse("frequency")?,
                mode: t.attr_with("mode", |v| {
                    one_of(v, &["auto", "native", "emulate", "paravirt", "smpsafe"])
                })?,
            };
            t.finish()?;
            clock.timers.push(timer);
        }
        c.finish()?;
        // libvirt's post-parse for a variable offset: adjustment 0 and basis utc by default.
        if clock.offset == "variable" {
            clock.adjustment.get_or_insert_with(|| "0".into());
            clock.basis.get_or_insert_with(|| "utc".into());
        }
        Ok(clock)
    }

    pub(crate) fn to_element(&self) -> Element {
        let mut e = Element::new("clock")
            .attr(
                "offset",
                if self.offset.is_empty() {
                    "utc"
                } else {
                    &self.offset
                },
            )
            .opt_attr("timezone", self.timezone.as_deref())
            .opt_attr("adjustment", self.adjustment.as_deref())
            .opt_attr("basis", self.basis.as_deref());
        for t in &self.timers {
            e.push(
                Element::new("timer")
                    .attr("name", &t.name)
                    .opt_attr("present", t.present.map(yes_no))
                    .opt_attr("tickpolicy", t.tickpolicy.as_deref())
                    .opt_attr("track", t.track.as_deref())
                    .opt_attr("frequency", t.frequency)
                    .opt_attr("mode", t.mode.as_deref()),
            );
        }
        e
    }
}

/// An `on_poweroff`/`on_reboot`/`on_crash` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    /// destroy
    Destroy,
    /// restart
    Restart,
    /// rename-restart
    RenameRestart,
    /// preserve
    Preserve,
    /// coredump-destroy
    CoredumpDestroy,
    /// coredump-restart
    CoredumpRestart,
}

impl LifecycleAction {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Destroy => "destroy",
            LifecycleAction::Restart => "restart",
            LifecycleAction::RenameRestart => "rename-restart",
            LifecycleAction::Preserve => "preserve",
            LifecycleAction::CoredumpDestroy => "coredump-destroy",
            LifecycleAction::CoredumpRestart => "coredump-restart",
        }
    }
}

impl FromStr for LifecycleAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "destroy" => LifecycleAction::Destroy,
            "restart" => LifecycleAction::Restart,
            "rename-restart" => LifecycleAction::RenameRestart,
            "preserve" => LifecycleAction::Preserve,
            "coredump-destroy" => LifecycleAction::CoredumpDestroy,
            "coredump-restart" => LifecycleAction::CoredumpRestart,
            _ => return Err("unknown lifecycle action".into()),
        })
    }
}

impl fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a hexadecimal or decimal unsigned value (PCI address parts).
pub(crate) fn parse_hex(v: &str) -> Result<u64, String> {
    parse_uint(v)
}

/// `<pm>`: guest power management.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pm {
    /// `<suspend-to-mem enabled>`.
    pub suspend_to_mem: Option<bool>,
    /// `<suspend-to-disk enabled>`.
    pub suspend_to_disk: Option<bool>,
}

impl Pm {
    pub(crate) fn parse(mut c: Cursor<'_>) -> Result<Self, Error> {
        let mut pm = Pm::default();
        for (name, slot) in [
            ("suspend-to-mem", &mut pm.suspend_to_mem),
            ("suspend-to-disk", &mut pm.suspend_to_disk),
        ] {
            if let Some(mut e) = c.child(name)? {
                *slot = e.attr_yes_no("enabled")?;
                e.finish()?;
            }
        }
        c.finish()?;
        Ok(pm)
    }

    pub(crate) fn to_element(self) -> Option<Element> {
        let mut e = Element::new("pm");
        for (name, v) in [
            ("suspend-to-mem", self.suspend_to_mem),
            ("suspend-to-disk", self.suspend_to_disk),
        ] {
            if let Some(v) = v {
                e.push(Element::new(name).attr("enabled", yes_no(v)));
            }
        }
        (!e.is_empty()).then_some(e)
    }
}
