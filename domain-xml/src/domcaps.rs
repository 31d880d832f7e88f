//! Domain capabilities XML (`<domainCapabilities>`, what `virsh domcapabilities` prints and virt-install and
//! virt-manager read to choose firmware, devices and CPU modes), with libvirt's layout from
//! `virDomainCapsFormat`.

use crate::xml::{yes_no, Cursor, Element};
use crate::Error;

/// `<enum name><value/>...</enum>`: the values a setting may take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapsEnum {
    /// The setting's name (`diskDevice`, `bus`, `type`...).
    pub name: String,
    /// Allowed values.
    pub values: Vec<String>,
}

impl CapsEnum {
    /// An enum with the given values.
    pub fn new(name: &str, values: &[&str]) -> CapsEnum {
        CapsEnum {
            name: name.into(),
            values: values.iter().map(|v| (*v).to_string()).collect(),
        }
    }

    fn parse(mut c: Cursor<'_>) -> Result<CapsEnum, Error> {
        let name = c.req_attr("name")?.to_string();
        let mut values = Vec::new();
        for v in c.children("value") {
            values.push(v.text_finish()?);
        }
        c.finish()?;
        Ok(CapsEnum { name, values })
    }

    fn to_element(&self) -> Element {
        let mut e = Element::new("enum").attr("name", &self.name);
        for v in &self.values {
            e.push(Element::new("value").text(v.clone()));
        }
        e
    }
}

/// A capability with `supported='yes|no'` and enums (a device, `<os>`, a feature).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Supported {
    /// The element name.
    pub name: String,
    /// Whether it is supported.
    pub supported: bool,
    /// Its enums.
    pub enums: Vec<CapsEnum>,
}

impl Supported {
    /// A supported capability with enums.
    pub fn yes(name: &str, enums: Vec<CapsEnum>) -> Supported {
        Supported {
            name: name.into(),
            supported: true,
            enums,
        }
    }

    /// An unsupported capability.
    pub fn no(name: &str) -> Supported {
        Supported {
            name: name.into(),
            supported: false,
            enums: Vec::new(),
        }
    }

    fn parse_parts(c: &mut Cursor<'_>) -> Result<(bool, Vec<CapsEnum>), Error> {
        let supported = c
            .attr_yes_no("supported")?
            .ok_or_else(|| Error::MissingAttribute {
                path: c.attr_path("supported"),
            })?;
        let mut enums = Vec::new();
        for e in c.children("enum") {
            enums.push(CapsEnum::parse(e)?);
        }
        Ok((supported, enums))
    }

    fn parse(mut c: Cursor<'_>) -> Result<Supported, Error> {
        let name = c.name().to_string();
        let (supported, enums) = Self::parse_parts(&mut c)?;
        c.finish()?;
        Ok(Supported {
            name,
            supported,
            enums,
        })
    }

    fn to_element(&self) -> Element {
        let mut e = Element::new(self.name.clone()).attr("supported", yes_no(self.supported));
        for en in &self.enums {
            e.push(en.to_element());
        }
        e
    }
}

/// `<os>` with its firmware loader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapsOs {
    /// Whether `<os>` settings are supported.
    pub supported: bool,
    /// Enums of `<os>` (`firmware`).
    pub enums: Vec<CapsEnum>,
    /// `<loader>`: supported, firmware paths, enums (`type`, `readonly`, `secure`).
    pub loader: Option<(bool, Vec<String>, Vec<CapsEnum>)>,
}

/// A `<cpu><mode>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuModeCaps {
    /// `host-passthrough`, `maximum`, `host-model` or `custom`.
    pub name: String,
    /// Whether it is supported.
    pub supported: bool,
    /// Enums (`hostPassthroughMigratable`, `maximumMigratable`).
    pub enums: Vec<CapsEnum>,
    /// host-model: `<model fallback>name</model>`.
    pub host_model: Option<(String, Option<String>)>,
    /// host-model: `<vendor>`.
    pub vendor: Option<String>,
    /// host-model: `<feature policy name/>`.
    pub features: Vec<(String, String)>,
    /// custom: `<model usable vendor>name</model>`.
    pub models: Vec<(String, String, Option<String>)>,
}

const CPU_MODES: &[&str] = &["host-passthrough", "maximum", "host-model", "custom"];

/// Device elements of `<devices>`.
pub const DEVICE_NAMES: &[&str] = &[
    "disk",
    "graphics",
    "video",
    "hostdev",
    "rng",
    "filesystem",
    "tpm",
    "redirdev",
    "channel",
    "crypto",
    "interface",
    "panic",
    "console",
];

/// Feature elements of `<features>`.
pub const FEATURE_NAMES: &[&str] = &[
    "gic",
    "vmcoreinfo",
    "genid",
    "backingStoreInput",
    "backup",
    "async-teardown",
    "s390-pv",
    "sev",
    "sgx",
    "hyperv",
];

/// A domain capabilities document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainCaps {
    /// Emulator path.
    pub path: String,
    /// Virtualization type (`xen`).
    pub domain: String,
    /// Machine type.
    pub machine: Option<String>,
    /// Architecture.
    pub arch: String,
    /// Maximum vCPUs.
    pub vcpu_max: Option<u32>,
    /// IOThreads.
    pub iothreads: Option<bool>,
    /// `<memoryBacking>`.
    pub memory_backing: Option<Supported>,
    /// `<os>`.
    pub os: Option<CapsOs>,
    /// CPU modes.
    pub cpu_modes: Vec<CpuModeCaps>,
    /// Devices.
    pub devices: Vec<Supported>,
    /// Features.
    pub features: Vec<Supported>,
}

fn text(c: &mut Cursor<'_>, name: &str) -> Result<String, Error> {
    Ok(c.req_child(name)?.text_finish()?.trim().to_string())
}

impl DomainCaps {
    /// Parses a `<domainCapabilities>` document.
    pub fn parse(xml: &str) -> Result<DomainCaps, Error> {
        let root = Element::parse(xml)?;
        if root.name != "domainCapabilities" {
            return Err(Error::WrongRoot {
                expected: "domainCapabilities".into(),
                found: root.name.clone(),
            });
        }
        let mut c = Cursor::root(&root);
        let mut d = DomainCaps {
            path: text(&mut c, "path")?,
            domain: text(&mut c, "domain")?,
            ..DomainCaps::default()
        };
        if let Some(m) = c.child("machine")? {
            d.machine = Some(m.text_finish()?.trim().to_string());
        }
        d.arch = text(&mut c, "arch")?;
        if let Some(mut v) = c.child("vcpu")? {
            d.vcpu_max = Some(v.req_attr_parse("max")?);
            v.finish()?;
        }
        if let Some(mut i) = c.child("iothreads")? {
            d.iothreads = i.attr_yes_no("supported")?;
            i.finish()?;
        }
        if let Some(m) = c.child("memoryBacking")? {
            d.memory_backing = Some(Supported::parse(m)?);
        }
        if let Some(mut o) = c.child("os")? {
            let (supported, enums) = Supported::parse_parts(&mut o)?;
            let mut os = CapsOs {
                supported,
                enums,
                loader: None,
            };
            if let Some(mut l) = o.child("loader")? {
                let mut values = Vec::new();
                for v in l.children("value") {
                    values.push(v.text_finish()?);
                }
                let (sup, enums) = Supported::parse_parts(&mut l)?;
                l.finish()?;
                os.loader = Some((sup, values, enums));
            }
            o.finish()?;
            d.os = Some(os);
        }
        if let Some(mut cpu) = c.child("cpu")? {
            for mut m in cpu.children("mode") {
                let name = m.req_attr("name")?.to_string();
                if !CPU_MODES.contains(&name.as_str()) {
                    return Err(m.invalid_attr("name", &name, "unknown CPU mode"));
                }
                let (supported, enums) = Supported::parse_parts(&mut m)?;
                let mut mode = CpuModeCaps {
                    name,
                    supported,
                    enums,
                    ..CpuModeCaps::default()
                };
                for mut model in m.children("model") {
                    let fallback = model.attr("fallback").map(str::to_string);
                    let usable = model.attr("usable").map(str::to_string);
                    let vendor = model.attr("vendor").map(str::to_string);
                    let n = model.text_finish()?.trim().to_string();
                    match usable {
                        Some(u) => mode.models.push((n, u, vendor)),
                        None => mode.host_model = Some((n, fallback)),
                    }
                }
                if let Some(v) = m.child("vendor")? {
                    mode.vendor = Some(v.text_finish()?.trim().to_string());
                }
                for mut f in m.children("feature") {
                    let policy = f.req_attr("policy")?.to_string();
                    let name = f.req_attr("name")?.to_string();
                    f.finish()?;
                    mode.features.push((policy, name));
                }
                m.finish()?;
                d.cpu_modes.push(mode);
            }
            cpu.finish()?;
        }
        if let Some(mut devs) = c.child("devices")? {
            for dev in devs.all_children() {
                if !DEVICE_NAMES.contains(&dev.name()) {
                    return Err(Error::UnknownElement {
                        path: dev.path().to_string(),
                    });
                }
                d.devices.push(Supported::parse(dev)?);
            }
            devs.finish()?;
        }
        if let Some(mut fs) = c.child("features")? {
            for f in fs.all_children() {
                if !FEATURE_NAMES.contains(&f.name()) {
                    return Err(Error::UnknownElement {
                        path: f.path().to_string(),
                    });
                }
                d.features.push(Supported::parse(f)?);
            }
            fs.finish()?;
        }
        c.finish()?;
        Ok(d)
    }

    /// Formats the document as libvirt does, ending with a newline.
    pub fn to_xml(&self) -> String {
        self.to_element().to_xml()
    }

    /// Builds the formatted element tree.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("domainCapabilities");
        e.push(Element::new("path").text(self.path.clone()));
        e.push(Element::new("domain").text(self.domain.clone()));
        if let Some(m) = &self.machine {
            e.push(Element::new("machine").text(m.clone()));
        }
        e.push(Element::new("arch").text(self.arch.clone()));
        if let Some(v) = self.vcpu_max {
            e.push(Element::new("vcpu").attr("max", v));
        }
        if let Some(i) = self.iothreads {
            e.push(Element::new("iothreads").attr("supported", yes_no(i)));
        }
        if let Some(m) = &self.memory_backing {
            e.push(m.to_element());
        }
        if let Some(os) = &self.os {
            let mut o = Element::new("os").attr("supported", yes_no(os.supported));
            for en in &os.enums {
                o.push(en.to_element());
            }
            if let Some((sup, values, enums)) = &os.loader {
                let mut l = Element::new("loader").attr("supported", yes_no(*sup));
                for v in values {
                    l.push(Element::new("value").text(v.clone()));
                }
                for en in enums {
                    l.push(en.to_element());
                }
                o.push(l);
            }
            e.push(o);
        }
        if !self.cpu_modes.is_empty() {
            let mut cpu = Element::new("cpu");
            for m in &self.cpu_modes {
                let mut me = Element::new("mode")
                    .attr("name", &m.name)
                    .attr("supported", yes_no(m.supported));
                for en in &m.enums {
                    me.push(en.to_element());
                }
                if let Some((n, fb)) = &m.host_model {
                    me.push(
                        Element::new("model")
                            .opt_attr("fallback", fb.as_deref())
                            .text(n.clone()),
                    );
                }
                if let Some(v) = &m.vendor {
                    me.push(Element::new("vendor").text(v.clone()));
                }
                for (p, n) in &m.features {
                    me.push(Element::new("feature").attr("policy", p).attr("name", n));
                }
                for (n, usable, vendor) in &m.models {
                    me.push(
                        Element::new("model")
                            .attr("usable", usable)
                            .opt_attr("vendor", vendor.as_deref())
                            .text(n.clone()),
                    );
                }
                cpu.push(me);
            }
            e.push(cpu);
        }
        if !self.devices.is_empty() {
            let mut d = Element::new("devices");
            for dev in &self.devices {
                d.push(dev.to_element());
            }
            e.push(d);
        }
        if !self.features.is_empty() {
            let mut f = Element::new("features");
            for x in &self.features {
                f.push(x.to_element());
            }
            e.push(f);
        }
        e
    }
}
