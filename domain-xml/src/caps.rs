//! Host capabilities XML (`<capabilities>`, what `virsh capabilities` prints and virt-install and
//! virt-manager read for the guest types, architectures, machines and host CPU), in libvirt's layout
//! (`virCapabilitiesFormatXML`: a blank line after the opening tag, between sections and before the end).

use crate::xml::{Cursor, Element};
use crate::Error;

/// `<cpu id socket_id die_id cluster_id core_id siblings/>` of a NUMA cell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CellCpu {
    /// CPU id.
    pub id: u32,
    /// Topology attributes after `id`, in libvirt's order (`socket_id`, `die_id`, `cluster_id`, `core_id`,
    /// `siblings`).
    pub topology: Vec<(&'static str, String)>,
}

const CELL_CPU_ATTRS: &[&str] = &["socket_id", "die_id", "cluster_id", "core_id", "siblings"];

/// A NUMA cell of the host topology.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cell {
    /// Cell id.
    pub id: u32,
    /// Memory in KiB.
    pub memory_kib: Option<u64>,
    /// `<pages unit size>count</pages>`: (size in KiB, count).
    pub pages: Vec<(u64, u64)>,
    /// `<distances><sibling id value/></distances>`.
    pub distances: Vec<(u32, u32)>,
    /// CPUs.
    pub cpus: Vec<CellCpu>,
}

/// The host CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostCpu {
    /// Architecture.
    pub arch: String,
    /// Model.
    pub model: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// `<topology sockets dies clusters cores threads/>` attributes in order.
    pub topology: Vec<(String, u32)>,
    /// Feature names.
    pub features: Vec<String>,
    /// `<pages unit='KiB' size/>` sizes in KiB.
    pub pages: Vec<u64>,
}

/// `<secmodel>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecModel {
    /// Model (`none`, `dac`, `selinux`, `apparmor`).
    pub model: String,
    /// DOI.
    pub doi: String,
    /// `<baselabel type>label</baselabel>`.
    pub baselabels: Vec<(String, String)>,
}

/// `<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// Host UUID.
    pub uuid: Option<String>,
    /// CPU.
    pub cpu: HostCpu,
    /// Power management states (`suspend_mem`, `suspend_disk`, `suspend_hybrid`); `Some(empty)` is
    /// `<power_management/>`.
    pub power_management: Option<Vec<String>>,
    /// `<iommu support>`.
    pub iommu: Option<bool>,
    /// Live migration supported.
    pub migration_live: bool,
    /// Migration URI transports.
    pub uri_transports: Vec<String>,
    /// NUMA cells.
    pub cells: Vec<Cell>,
    /// Security models.
    pub secmodels: Vec<SecModel>,
}

/// A `<machine>` of a guest architecture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Machine {
    /// Name.
    pub name: String,
    /// `maxCpus`.
    pub max_cpus: Option<u32>,
    /// `canonical`.
    pub canonical: Option<String>,
}

/// A guest feature: name and, for toggles, (default on, toggle allowed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestFeature {
    /// Name (`pae`, `acpi`, `hap`...).
    pub name: String,
    /// `default='on|off'` and `toggle='yes|no'`.
    pub toggle: Option<(bool, bool)>,
}

/// `<guest>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guest {
    /// OS type (`xen`, `hvm`, `xenpvh`).
    pub os_type: String,
    /// Architecture name.
    pub arch: String,
    /// Word size.
    pub wordsize: Option<u32>,
    /// Emulator.
    pub emulator: Option<String>,
    /// Loader.
    pub loader: Option<String>,
    /// Machines.
    pub machines: Vec<Machine>,
    /// Domain types (`xen`) with their own emulator, if any.
    pub domains: Vec<(String, Option<String>)>,
    /// Features.
    pub features: Vec<GuestFeature>,
}

/// Guest features libvirt knows.
pub const GUEST_FEATURES: &[&str] = &[
    "pae",
    "nonpae",
    "ia64_be",
    "acpi",
    "apic",
    "cpuselection",
    "deviceboot",
    "disksnapshot",
    "hap",
    "externalSnapshot",
];

/// A host capabilities document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The host.
    pub host: Host,
    /// Guest types.
    pub guests: Vec<Guest>,
}

fn text(c: Cursor<'_>) -> Result<String, Error> {
    Ok(c.text_finish()?.trim().to_string())
}

fn parse_host(mut h: Cursor<'_>) -> Result<Host, Error> {
    let mut host = Host::default();
    if let Some(u) = h.child("uuid")? {
        host.uuid = Some(text(u)?);
    }
    let mut cpu = h.req_child("cpu")?;
    host.cpu.arch = text(cpu.req_child("arch")?)?;
    if let Some(m) = cpu.child("model")? {
        host.cpu.model = Some(text(m)?);
    }
    if let Some(v) = cpu.child("vendor")? {
        host.cpu.vendor = Some(text(v)?);
    }
    if let Some(mut t) = cpu.child("topology")? {
        for a in ["sockets", "dies", "clusters", "cores", "threads"] {
            if let Some(v) = t.attr_parse::<u32>(a)? {
                host.cpu.topology.push((a.to_string(), v));
            }
        }
        t.finish()?;
    }
    for mut f in cpu.children("feature") {
        host.cpu.features.push(f.req_attr("name")?.to_string());
        f.finish()?;
    }
    for mut p in cpu.children("pages") {
        let unit = p.req_attr("unit")?;
        if unit != "KiB" {
            return Err(p.invalid_attr("unit", unit, "expected 'KiB'"));
        }
        host.cpu.pages.push(p.req_attr_parse("size")?);
        p.finish()?;
    }
    cpu.finish()?;
    if let Some(mut pm) = h.child("power_management")? {
        let mut states = Vec::new();
        for s in ["suspend_mem", "suspend_disk", "suspend_hybrid"] {
            if let Some(x) = pm.child(s)? {
                x.finish()?;
                states.push(s.to_string());
            }
        }
        pm.finish()?;
        host.power_management = Some(states);
    }
    if let Some(mut i) = h.child("iommu")? {
        host.iommu = i.attr_yes_no("support")?;
        i.finish()?;
    }
    if let Some(mut m) = h.child("migration_features")? {
        if let Some(l) = m.child("live")? {
            l.finish()?;
            host.migration_live = true;
        }
        if let Some(mut u) = m.child("uri_transports")? {
            for t in u.children("uri_transport") {
                host.uri_transports.push(text(t)?);
            }
            u.finish()?;
        }
        m.finish()?;
    }
    if let Some(mut t) = h.child("topology")? {
        let mut cells = t.req_child("cells")?;
        cells.attr_parse::<u32>("num")?;
        for mut ce in cells.children("cell") {
            let mut cell = Cell {
                id: ce.req_attr_parse("id")?,
                ..Cell::default()
            };
            if let Some(mut m) = ce.child("memory")? {
                let unit = m.attr("unit").unwrap_or("KiB");
                if unit != "KiB" {
                    return Err(m.invalid_attr("unit", unit, "expected 'KiB'"));
                }
                cell.memory_kib = Some(m.text_parse()?);
                m.finish()?;
            }
            for mut p in ce.children("pages") {
                let size = p.req_attr_parse("size")?;
                p.attr("unit");
                let count = p.text_parse()?;
                p.finish()?;
                cell.pages.push((size, count));
            }
            if let Some(mut d) = ce.child("distances")? {
                for mut s in d.children("sibling") {
                    cell.distances
                        .push((s.req_attr_parse("id")?, s.req_attr_parse("value")?));
                    s.finish()?;
                }
                d.finish()?;
            }
            if let Some(mut cp) = ce.child("cpus")? {
                cp.attr_parse::<u32>("num")?;
                for mut x in cp.children("cpu") {
                    let mut cc = CellCpu {
                        id: x.req_attr_parse("id")?,
                        ..CellCpu::default()
                    };
                    for a in CELL_CPU_ATTRS {
                        if let Some(v) = x.attr(a) {
                            cc.topology.push((a, v.to_string()));
                        }
                    }
                    x.finish()?;
                    cell.cpus.push(cc);
                }
                cp.finish()?;
            }
            ce.finish()?;
            host.cells.push(cell);
        }
        cells.finish()?;
        t.finish()?;
    }
    for mut s in h.children("secmodel") {
        let mut sm = SecModel {
            model: text(s.req_child("model")?)?,
            doi: text(s.req_child("doi")?)?,
            ..SecModel::default()
        };
        for mut b in s.children("baselabel") {
            let t = b.req_attr("type")?.to_string();
            sm.baselabels.push((t, b.text_finish()?));
        }
        s.finish()?;
        host.secmodels.push(sm);
    }
    h.finish()?;
    Ok(host)
}

fn parse_guest(mut g: Cursor<'_>) -> Result<Guest, Error> {
    let mut guest = Guest {
        os_type: text(g.req_child("os_type")?)?,
        ..Guest::default()
    };
    let mut a = g.req_child("arch")?;
    guest.arch = a.req_attr("name")?.to_string();
    if let Some(mut w) = a.child("wordsize")? {
        guest.wordsize = Some(w.text_parse()?);
        w.finish()?;
    }
    if let Some(e) = a.child("emulator")? {
        guest.emulator = Some(text(e)?);
    }
    if let Some(l) = a.child("loader")? {
        guest.loader = Some(text(l)?);
    }
    for mut m in a.children("machine") {
        let max_cpus = m.attr_parse("maxCpus")?;
        let canonical = m.attr("canonical").map(str::to_string);
        guest.machines.push(Machine {
            name: text(m)?,
            max_cpus,
            canonical,
        });
    }
    for mut d in a.children("domain") {
        let t = d.req_attr("type")?.to_string();
        let emu = match d.child("emulator")? {
            Some(e) => Some(text(e)?),
            None => None,
        };
        d.finish()?;
        guest.domains.push((t, emu));
    }
    a.finish()?;
    if let Some(mut f) = g.child("features")? {
        for mut x in f.all_children() {
            let name = x.name().to_string();
            if !GUEST_FEATURES.contains(&name.as_str()) {
                return Err(Error::UnknownElement {
                    path: x.path().to_string(),
                });
            }
            let default = x.attr_on_off("default")?;
            let toggle = x.attr_yes_no("toggle")?;
            x.finish()?;
            guest.features.push(GuestFeature {
                name,
                toggle: match (default, toggle) {
                    (Some(d), Some(t)) => Some((d, t)),
                    (None, None) => None,
                    _ => {
                        return Err(Error::InvalidValue {
                            path: format!("/capabilities/guest/features/{}", guest.features.len()),
                            value: String::new(),
                            reason: "default and toggle go together".into(),
                        })
                    }
                },
            });
        }
        f.finish()?;
    }
    g.finish()?;
    Ok(guest)
}

impl Capabilities {
    /// Parses a `<capabilities>` document.
    pub fn parse(xml: &str) -> Result<Capabilities, Error> {
        let root = Element::parse(xml)?;
        if root.name != "capabilities" {
            return Err(Error::WrongRoot {
                expected: "capabilities".into(),
                found: root.name.clone(),
            });
        }
        let mut c = Cursor::root(&root);
        let host = parse_host(c.req_child("host")?)?;
        let mut guests = Vec::new();
        for g in c.children("guest") {
            guests.push(parse_guest(g)?);
        }
        c.finish()?;
        Ok(Capabilities { host, guests })
    }

    /// Formats the document as libvirt does, ending with a newline.
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<capabilities>\n\n");
        self.host_element().write(&mut s, 1);
        for g in &self.guests {
            s.push('\n');
            guest_element(g).write(&mut s, 1);
        }
        s.push_str("\n</capabilities>\n");
        s
    }

    fn host_element(&self) -> Element {
        let h = &self.host;
        let mut e = Element::new("host");
        if let Some(u) = &h.uuid {
            e.push(Element::new("uuid").text(u.clone()));
        }
        let mut cpu = Element::new("cpu").child(Element::new("arch").text(h.cpu.arch.clone()));
        if let Some(m) = &h.cpu.model {
            cpu.push(Element::new("model").text(m.clone()));
        }
        if let Some(v) = &h.cpu.vendor {
            cpu.push(Element::new("vendor").text(v.clone()));
        }
        if !h.cpu.topology.is_empty() {
            let mut t = Element::new("topology");
            for (k, v) in &h.cpu.topology {
                t.push_attr(k.clone(), v);
            }
            cpu.push(t);
        }
        for f in &h.cpu.features {
            cpu.push(Element::new("feature").attr("name", f));
        }
        for p in &h.cpu.pages {
            cpu.push(Element::new("pages").attr("unit", "KiB").attr("size", p));
        }
        e.push(cpu);
        if let Some(pm) = &h.power_management {
            let mut p = Element::new("power_management");
            for st in pm {
                p.push(Element::new(st.clone()));
            }
            e.push(p);
        }
        if let Some(i) = h.iommu {
            e.push(Element::new("iommu").attr("support", crate::xml::yes_no(i)));
        }
        if h.migration_live || !h.uri_transports.is_empty() {
            let mut m = Element::new("migration_features");
            if h.migration_live {
                m.push(Element::new("live"));
            }
            if !h.uri_transports.is_empty() {
                let mut u = Element::new("uri_transports");
                for t in &h.uri_transports {
                    u.push(Element::new("uri_transport").text(t.clone()));
                }
                m.push(u);
            }
            e.push(m);
        }
        if !h.cells.is_empty() {
            let mut cells = Element::new("cells").attr("num", h.cells.len());
            for c in &h.cells {
                let mut ce = Element::new("cell").attr("id", c.id);
                if let Some(m) = c.memory_kib {
                    ce.push(
                        Element::new("memory")
                            .attr("unit", "KiB")
                            .text(m.to_string()),
                    );
                }
                for (size, count) in &c.pages {
                    ce.push(
                        Element::new("pages")
                            .attr("unit", "KiB")
                            .attr("size", size)
                            .text(count.to_string()),
                    );
                }
                if !c.distances.is_empty() {
                    let mut d = Element::new("distances");
                    for (id, v) in &c.distances {
                        d.push(Element::new("sibling").attr("id", id).attr("value", v));
                    }
                    ce.push(d);
                }
                if !c.cpus.is_empty() {
                    let mut cp = Element::new("cpus").attr("num", c.cpus.len());
                    for x in &c.cpus {
                        let mut xe = Element::new("cpu").attr("id", x.id);
                        for (k, v) in &x.topology {
                            xe.push_attr(*k, v);
                        }
                        cp.push(xe);
                    }
                    ce.push(cp);
                }
                cells.push(ce);
            }
            e.push(Element::new("topology").child(cells));
        }
        for sm in &h.secmodels {
            let mut s = Element::new("secmodel")
                .child(Element::new("model").text(sm.model.clone()))
                .child(Element::new("doi").text(sm.doi.clone()));
            for (t, l) in &sm.baselabels {
                s.push(Element::new("baselabel").attr("type", t).text(l.clone()));
            }
            e.push(s);
        }
        e
    }
}

fn guest_element(g: &Guest) -> Element {
    let mut a = Element::new("arch").attr("name", &g.arch);
    if let Some(w) = g.wordsize {
        a.push(Element::new("wordsize").text(w.to_string()));
    }
    if let Some(e) = &g.emulator {
        a.push(Element::new("emulator").text(e.clone()));
    }
    if let Some(l) = &g.loader {
        a.push(Element::new("loader").text(l.clone()));
    }
    for m in &g.machines {
        a.push(
            Element::new("machine")
                .opt_attr("maxCpus", m.max_cpus)
                .opt_attr("canonical", m.canonical.as_deref())
                .text(m.name.clone()),
        );
    }
    for (t, emu) in &g.domains {
        let mut d = Element::new("domain").attr("type", t);
        if let Some(e) = emu {
            d.push(Element::new("emulator").text(e.clone()));
        }
        a.push(d);
    }
    let mut e = Element::new("guest")
        .child(Element::new("os_type").text(g.os_type.clone()))
        .child(a);
    if !g.features.is_empty() {
        let mut f = Element::new("features");
        for x in &g.features {
            let mut fe = Element::new(x.name.clone());
            if let Some((d, t)) = x.toggle {
                fe.push_attr("default", crate::xml::on_off(d));
                fe.push_attr("toggle", crate::xml::yes_no(t));
            }
            f.push(fe);
        }
        e.push(f);
    }
    e
}
