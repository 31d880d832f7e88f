//! Virtual network XML (`<network>`), as far as virt-install and virt-manager read and write it, with
//! libvirt's element order and layout (`virNetworkDefFormatBuf`).

use crate::xml::{yes_no, Cursor, Element};
use crate::Error;

/// Forward modes libvirt knows.
pub const FORWARD_MODES: &[&str] = &[
    "nat",
    "route",
    "open",
    "bridge",
    "private",
    "vepa",
    "passthrough",
    "hostdev",
];

/// `<forward>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    /// Mode (`nat` when absent).
    pub mode: String,
    /// `dev`: the host interface traffic leaves through.
    pub dev: Option<String>,
    /// `<nat><address start end/></nat>`.
    pub nat_address: Option<(String, String)>,
    /// `<nat><port start end/></nat>`.
    pub nat_port: Option<(u16, u16)>,
    /// `<nat ipv6='yes'>`.
    pub nat_ipv6: Option<bool>,
    /// `<interface dev/>` pool.
    pub interfaces: Vec<String>,
    /// `<pf dev/>`.
    pub pf: Option<String>,
}

/// `<bridge>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bridge {
    /// Bridge device name.
    pub name: Option<String>,
    /// Spanning tree.
    pub stp: Option<bool>,
    /// Forward delay.
    pub delay: Option<u32>,
    /// `macTableManager`: kernel or libvirt.
    pub mac_table_manager: Option<String>,
    /// firewalld zone.
    pub zone: Option<String>,
}

/// A DHCP `<range start end/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpRange {
    /// First address.
    pub start: String,
    /// Last address.
    pub end: String,
}

/// A DHCP `<host mac id name ip/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpHost {
    /// MAC address (IPv4).
    pub mac: Option<String>,
    /// DUID (IPv6).
    pub id: Option<String>,
    /// Host name.
    pub name: Option<String>,
    /// Address.
    pub ip: Option<String>,
}

/// `<ip>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkIp {
    /// `family`: ipv4 (default) or ipv6.
    pub family: Option<String>,
    /// Address.
    pub address: String,
    /// Netmask (IPv4).
    pub netmask: Option<String>,
    /// Prefix length.
    pub prefix: Option<u32>,
    /// `localPtr`.
    pub local_ptr: Option<bool>,
    /// `<tftp root/>`.
    pub tftp_root: Option<String>,
    /// DHCP ranges (`Some(empty)` keeps an empty `<dhcp>`).
    pub dhcp_ranges: Vec<DhcpRange>,
    /// DHCP hosts.
    pub dhcp_hosts: Vec<DhcpHost>,
    /// `<bootp file server/>`.
    pub bootp: Option<(String, Option<String>)>,
    /// Whether a `<dhcp>` element is present.
    pub dhcp: bool,
}

/// A DNS `<host ip><hostname/>...</host>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsHost {
    /// Address.
    pub ip: String,
    /// Host names.
    pub hostnames: Vec<String>,
}

/// `<dns>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// `enable`.
    pub enable: Option<bool>,
    /// `forwardPlainNames`.
    pub forward_plain_names: Option<bool>,
    /// `<forwarder addr domain/>`.
    pub forwarders: Vec<(Option<String>, Option<String>)>,
    /// `<txt name value/>`.
    pub txts: Vec<(String, String)>,
    /// Hosts.
    pub hosts: Vec<DnsHost>,
}

/// `<route>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// Family.
    pub family: Option<String>,
    /// Destination network.
    pub address: String,
    /// Prefix length.
    pub prefix: Option<u32>,
    /// Netmask.
    pub netmask: Option<String>,
    /// Gateway.
    pub gateway: String,
    /// Metric.
    pub metric: Option<u32>,
}

/// A virtual network definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// `connections` (live XML only).
    pub connections: Option<u32>,
    /// `ipv6='yes'`: guest-to-guest IPv6 without a gateway address.
    pub ipv6: Option<bool>,
    /// `trustGuestRxFilters`.
    pub trust_guest_rx_filters: Option<bool>,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Forwarding; `None` is an isolated network.
    pub forward: Option<Forward>,
    /// Bridge.
    pub bridge: Option<Bridge>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Bridge MAC address.
    pub mac: Option<String>,
    /// `<domain name localOnly/>`.
    pub domain: Option<(String, Option<bool>)>,
    /// DNS.
    pub dns: Option<Dns>,
    /// Addresses.
    pub ips: Vec<NetworkIp>,
    /// Static routes.
    pub routes: Vec<Route>,
    /// Port groups: (name, default).
    pub portgroups: Vec<(String, Option<bool>)>,
}

fn text(c: Cursor<'_>) -> Result<String, Error> {
    Ok(c.text_finish()?.trim().to_string())
}

fn parse_forward(mut f: Cursor<'_>) -> Result<Forward, Error> {
    let mode = f.attr("mode").unwrap_or("nat").to_string();
    if !FORWARD_MODES.contains(&mode.as_str()) {
        return Err(f.invalid_attr("mode", &mode, "unknown forward mode"));
    }
    let mut fw = Forward {
        mode,
        dev: f.attr("dev").map(str::to_string),
        ..Forward::default()
    };
    if let Some(mut n) = f.child("nat")? {
        fw.nat_ipv6 = n.attr_yes_no("ipv6")?;
        if let Some(mut a) = n.child("address")? {
            fw.nat_address = Some((
                a.req_attr("start")?.to_string(),
                a.req_attr("end")?.to_string(),
            ));
            a.finish()?;
        }
        if let Some(mut p) = n.child("port")? {
            let start: u16 = p.req_attr_parse("start")?;
            let end: u16 = p.req_attr_parse("end")?;
            if start > end {
                return Err(p.invalid_attr(
                    "end",
                    &end.to_string(),
                    "the port range ends before it starts",
                ));
            }
            fw.nat_port = Some((start, end));
            p.finish()?;
        }
        n.finish()?;
    }
    for mut i in f.children("interface") {
        fw.interfaces.push(i.req_attr("dev")?.to_string());
        i.finish()?;
    }
    if let Some(mut p) = f.child("pf")? {
        fw.pf = Some(p.req_attr("dev")?.to_string());
        p.finish()?;
    }
    f.finish()?;
    Ok(fw)
}

fn parse_ip(mut i: Cursor<'_>) -> Result<NetworkIp, Error> {
    let family = match i.attr("family") {
        Some(f @ ("ipv4" | "ipv6")) => Some(f.to_string()),
        Some(f) => return Err(i.invalid_attr("family", f, "expected 'ipv4' or 'ipv6'")),
        None => None,
    };
    let address = i.req_attr("address")?.to_string();
    let v6 = family.as_deref() == Some("ipv6") || address.contains(':');
    let parsed: Result<std::net::IpAddr, _> = address.parse();
    if parsed.map(|a| a.is_ipv6() != v6).unwrap_or(true) {
        return Err(i.invalid_attr(
            "address",
            &address,
            "not an address of the network's family",
        ));
    }
    let mut ip = NetworkIp {
        family,
        address,
        netmask: i.attr("netmask").map(str::to_string),
        prefix: i.attr_parse("prefix")?,
        local_ptr: i.attr_yes_no("localPtr")?,
        ..NetworkIp::default()
    };
    if let Some(m) = &ip.netmask {
        let ok = !v6 && m.parse::<std::net::Ipv4Addr>().is_ok();
        if !ok {
            return Err(i.invalid_attr(
                "netmask",
                m,
                "a netmask is an IPv4 address, for IPv4 networks only",
            ));
        }
        if let Some(p) = ip.prefix {
            return Err(i.invalid_attr(
                "prefix",
                &p.to_string(),
                "give either a netmask or a prefix",
            ));
        }
    }
    if let Some(p) = ip.prefix {
        if p > if v6 { 128 } else { 32 } {
            return Err(i.invalid_attr("prefix", &p.to_string(), "prefix too long"));
        }
    }
    if let Some(mut t) = i.child("tftp")? {
        ip.tftp_root = Some(t.req_attr("root")?.to_string());
        t.finish()?;
    }
    if let Some(mut d) = i.child("dhcp")? {
        ip.dhcp = true;
        for mut r in d.children("range") {
            ip.dhcp_ranges.push(DhcpRange {
                start: r.req_attr("start")?.to_string(),
                end: r.req_attr("end")?.to_string(),
            });
            r.finish()?;
        }
        for mut h in d.children("host") {
            ip.dhcp_hosts.push(DhcpHost {
                mac: h.attr("mac").map(str::to_string),
                id: h.attr("id").map(str::to_string),
                name: h.attr("name").map(str::to_string),
                ip: h.attr("ip").map(str::to_string),
            });
            h.finish()?;
        }
        if let Some(mut b) = d.child("bootp")? {
            ip.bootp = Some((
                b.req_attr("file")?.to_string(),
                b.attr("server").map(str::to_string),
            ));
            b.finish()?;
        }
        d.finish()?;
    }
    i.finish()?;
    Ok(ip)
}

fn parse_dns(mut d: Cursor<'_>) -> Result<Dns, Error> {
    let mut dns = Dns {
        enable: d.attr_yes_no("enable")?,
        forward_plain_names: d.attr_yes_no("forwardPlainNames")?,
        ..Dns::default()
    };
    for mut f in d.children("forwarder") {
        let addr = f.attr("addr").map(str::to_string);
        let domain = f.attr("domain").map(str::to_string);
        f.finish()?;
        dns.forwarders.push((addr, domain));
    }
    for mut t in d.children("txt") {
        dns.txts.push((
            t.req_attr("name")?.to_string(),
            t.req_attr("value")?.to_string(),
        ));
        t.finish()?;
    }
    for mut h in d.children("host") {
        let ip = h.req_attr("ip")?.to_string();
        let mut names = Vec::new();
        for n in h.children("hostname") {
            names.push(text(n)?);
        }
        h.finish()?;
        dns.hosts.push(DnsHost {
            ip,
            hostnames: names,
        });
    }
    d.finish()?;
    Ok(dns)
}

impl Network {
    /// Parses a `<network>` document.
    pub fn parse(xml: &str) -> Result<Network, Error> {
        let root = Element::parse(xml)?;
        if root.name != "network" {
            return Err(Error::WrongRoot {
                expected: "network".into(),
                found: root.name.clone(),
            });
        }
        let mut c = Cursor::root(&root);
        let mut n = Network {
            connections: c.attr_parse("connections")?,
            ipv6: c.attr_yes_no("ipv6")?,
            trust_guest_rx_filters: c.attr_yes_no("trustGuestRxFilters")?,
            name: text(c.req_child("name")?)?,
            ..Network::default()
        };
        if n.name.is_empty() || n.name.contains('/') {
            return Err(Error::InvalidValue {
                path: "/network/name".into(),
                value: n.name,
                reason: "a network name must be non-empty and contain no '/'".into(),
            });
        }
        if let Some(mut u) = c.child("uuid")? {
            n.uuid = Some(u.text_with(crate::domain::parse_uuid)?);
        }
        if let Some(t) = c.child("title")? {
            n.title = Some(t.text_finish()?);
        }
        if let Some(t) = c.child("description")? {
            n.description = Some(t.text_finish()?);
        }
        if let Some(f) = c.child("forward")? {
            n.forward = Some(parse_forward(f)?);
        }
        if let Some(mut b) = c.child("bridge")? {
            n.bridge = Some(Bridge {
                name: b.attr("name").map(str::to_string),
                stp: b.attr_on_off("stp")?,
                delay: b.attr_parse("delay")?,
                mac_table_manager: match b.attr("macTableManager") {
                    Some(m @ ("kernel" | "libvirt")) => Some(m.to_string()),
                    Some(m) => {
                        return Err(b.invalid_attr(
                            "macTableManager",
                            m,
                            "expected 'kernel' or 'libvirt'",
                        ))
                    }
                    None => None,
                },
                zone: b.attr("zone").map(str::to_string),
            });
            b.finish()?;
        }
        if let Some(mut m) = c.child("mtu")? {
            n.mtu = Some(m.req_attr_parse("size")?);
            m.finish()?;
        }
        if let Some(mut m) = c.child("mac")? {
            n.mac = Some(m.req_attr("address")?.to_string());
            m.finish()?;
        }
        if let Some(mut d) = c.child("domain")? {
            n.domain = Some((d.req_attr("name")?.to_string(), d.attr_yes_no("localOnly")?));
            d.finish()?;
        }
        if let Some(d) = c.child("dns")? {
            n.dns = Some(parse_dns(d)?);
        }
        for i in c.children("ip") {
            n.ips.push(parse_ip(i)?);
        }
        for mut r in c.children("route") {
            n.routes.push(Route {
                family: r.attr("family").map(str::to_string),
                address: r.req_attr("address")?.to_string(),
                prefix: r.attr_parse("prefix")?,
                netmask: r.attr("netmask").map(str::to_string),
                gateway: r.req_attr("gateway")?.to_string(),
                metric: r.attr_parse("metric")?,
            });
            r.finish()?;
        }
        for mut p in c.children("portgroup") {
            n.portgroups
                .push((p.req_attr("name")?.to_string(), p.attr_yes_no("default")?));
            p.finish()?;
        }
        c.finish()?;
        Ok(n)
    }

    /// Formats the network as libvirt does, ending with a newline.
    pub fn to_xml(&self) -> String {
        self.to_element().to_xml()
    }

    /// Builds the formatted element tree.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("network")
            .opt_attr("connections", self.connections)
            .opt_attr("ipv6", self.ipv6.map(yes_no))
            .opt_attr(
                "trustGuestRxFilters",
                self.trust_guest_rx_filters.map(yes_no),
            );
        e.push(Element::new("name").text(self.name.clone()));
        if let Some(u) = &self.uuid {
            e.push(Element::new("uuid").text(u.clone()));
        }
        if let Some(t) = &self.title {
            e.push(Element::new("title").text(t.clone()));
        }
        if let Some(d) = &self.description {
            e.push(Element::new("description").text(d.clone()));
        }
        if let Some(f) = &self.forward {
            let mut fe = Element::new("forward")
                .opt_attr("dev", f.dev.as_deref())
                .attr("mode", &f.mode);
            if f.nat_address.is_some() || f.nat_port.is_some() || f.nat_ipv6.is_some() {
                let mut nat = Element::new("nat").opt_attr("ipv6", f.nat_ipv6.map(yes_no));
                if let Some((s, en)) = &f.nat_address {
                    nat.push(Element::new("address").attr("start", s).attr("end", en));
                }
                if let Some((s, en)) = f.nat_port {
                    nat.push(Element::new("port").attr("start", s).attr("end", en));
                }
                fe.push(nat);
            }
            if let Some(pf) = &f.pf {
                fe.push(Element::new("pf").attr("dev", pf));
            }
            for i in &f.interfaces {
                fe.push(Element::new("interface").attr("dev", i));
            }
            e.push(fe);
        }
        if let Some(b) = &self.bridge {
            e.push(
                Element::new("bridge")
                    .opt_attr("name", b.name.as_deref())
                    .opt_attr("zone", b.zone.as_deref())
                    .opt_attr("stp", b.stp.map(crate::xml::on_off))
                    .opt_attr("delay", b.delay)
                    .opt_attr("macTableManager", b.mac_table_manager.as_deref()),
            );
        }
        if let Some(m) = self.mtu {
            e.push(Element::new("mtu").attr("size", m));
        }
        if let Some(m) = &self.mac {
            e.push(Element::new("mac").attr("address", m));
        }
        if let Some((name, local)) = &self.domain {
            e.push(
                Element::new("domain")
                    .attr("name", name)
                    .opt_attr("localOnly", local.map(yes_no)),
            );
        }
        if let Some(d) = &self.dns {
            let mut de = Element::new("dns")
                .opt_attr("enable", d.enable.map(yes_no))
                .opt_attr("forwardPlainNames", d.forward_plain_names.map(yes_no));
            for (addr, dom) in &d.forwarders {
                de.push(
                    Element::new("forwarder")
                        .opt_attr("domain", dom.as_deref())
                        .opt_attr("addr", addr.as_deref()),
                );
            }
            for (name, value) in &d.txts {
                de.push(Element::new("txt").attr("name", name).attr("value", value));
            }
            for h in &d.hosts {
                let mut he = Element::new("host").attr("ip", &h.ip);
                for n in &h.hostnames {
                    he.push(Element::new("hostname").text(n.clone()));
                }
                de.push(he);
            }
            e.push(de);
        }
        for ip in &self.ips {
            let mut ie = Element::new("ip")
                .opt_attr("family", ip.family.as_deref())
                .attr("address", &ip.address)
                .opt_attr("netmask", ip.netmask.as_deref())
                .opt_attr("prefix", ip.prefix)
                .opt_attr("localPtr", ip.local_ptr.map(yes_no));
            if let Some(t) = &ip.tftp_root {
                ie.push(Element::new("tftp").attr("root", t));
            }
            if ip.dhcp {
                let mut d = Element::new("dhcp");
                for r in &ip.dhcp_ranges {
                    d.push(
                        Element::new("range")
                            .attr("start", &r.start)
                            .attr("end", &r.end),
                    );
                }
                for h in &ip.dhcp_hosts {
                    d.push(
                        Element::new("host")
                            .opt_attr("mac", h.mac.as_deref())
                            .opt_attr("id", h.id.as_deref())
                            .opt_attr("name", h.name.as_deref())
                            .opt_attr("ip", h.ip.as_deref()),
                    );
                }
                if let Some((file, server)) = &ip.bootp {
                    d.push(
                        Element::new("bootp")
                            .attr("file", file)
                            .opt_attr("server", server.as_deref()),
                    );
                }
                ie.push(d);
            }
            e.push(ie);
        }
        for r in &self.routes {
            e.push(
                Element::new("route")
                    .opt_attr("family", r.family.as_deref())
                    .attr("address", &r.address)
                    .opt_attr("prefix", r.prefix)
                    .opt_attr("netmask", r.netmask.as_deref())
                    .attr("gateway", &r.gateway)
                    .opt_attr("metric", r.metric),
            );
        }
        for (name, default) in &self.portgroups {
            e.push(
                Element::new("portgroup")
                    .attr("name", name)
                    .opt_attr("default", default.map(yes_no)),
            );
        }
        e
    }
}
