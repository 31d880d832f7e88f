//! Host facts: node information, free memory, sysinfo, capabilities and domain capabilities.
//!
//! While no hypervisor is attached the node numbers come from the host Linux kernel (`/proc/meminfo`,
//! `/proc/cpuinfo`, `sysconf`) and the SMBIOS data from `/sys/class/dmi/id`; the hypervisor integration will
//! replace them with xen-hv's physinfo.

use std::fmt::Write as _;

use crate::proto::{code, edomain, RpcError};

/// Host CPU and memory facts (`virNodeInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// CPU model string (libvirt puts the architecture here).
    pub model: String,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Online CPUs.
    pub cpus: i32,
    /// CPU frequency in MHz.
    pub mhz: i32,
    /// NUMA nodes.
    pub nodes: i32,
    /// Sockets per node.
    pub sockets: i32,
    /// Cores per socket.
    pub cores: i32,
    /// Threads per core.
    pub threads: i32,
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn online_cpus() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(1)
}

/// Reads the node information from the host.
pub fn node_info() -> NodeInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "cpu MHz").then(|| v.trim().parse::<f64>().ok())?
        })
        .map(|f| f as i32)
        .unwrap_or(0);
    let cpus = online_cpus();
    NodeInfo {
        model: std::env::consts::ARCH.to_string(),
        memory_kib: meminfo("MemTotal").unwrap_or(0),
        cpus,
        mhz,
        nodes: 1,
        sockets: 1,
        cores: cpus,
        threads: 1,
    }
}

/// Free host memory in bytes (`MemAvailable`).
pub fn free_memory() -> u64 {
    meminfo("MemAvailable").unwrap_or(0).saturating_mul(1024)
}

/// Escapes text for XML content or attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\'' => o.push_str("&apos;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

fn dmi(name: &str) -> Option<String> {
    let v = std::fs::read_to_string(format!("/sys/class/dmi/id/{name}")).ok()?;
    let v = v.trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// The host's SMBIOS data in libvirt's `<sysinfo>` format.
pub fn sysinfo_xml() -> String {
    let mut s = String::from("<sysinfo type='smbios'>\n");
    let groups: [(&str, &[(&str, &str)]); 2] = [
        (
            "bios",
            &[
                ("vendor", "bios_vendor"),
                ("version", "bios_version"),
                ("date", "bios_date"),
            ],
        ),
        (
            "system",
            &[
                ("manufacturer", "sys_vendor"),
                ("product", "product_name"),
                ("version", "product_version"),
                ("uuid", "product_uuid"),
                ("family", "product_family"),
            ],
        ),
    ];
    for (group, entries) in groups {
        let present: Vec<(&str, String)> = entries
            .iter()
            .filter_map(|(n, f)| dmi(f).map(|v| (*n, v)))
            .collect();
        if present.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  <{group}>");
        for (n, v) in present {
            let _ = writeln!(s, "    <entry name='{n}'>{}</entry>", esc(&v));
        }
        let _ = writeln!(s, "  </{group}>");
    }
    s.push_str("</sysinfo>\n");
    s
}

/// The host UUID: SMBIOS product UUID, else derived from /etc/machine-id.
pub fn host_uuid() -> String {
    if let Some(u) = dmi("product_uuid").and_then(|u| domain_xml::domain::parse_uuid(&u).ok()) {
        return u;
    }
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    domain_xml::domain::parse_uuid(id.trim())
        .unwrap_or_else(|_| "00000000-0000-0000-0000-000000000000".into())
}

/// Most vCPUs a guest may have (xen-hv's limit, as libxl's `HVM_MAX_VCPUS`).
pub const MAX_VCPUS: i32 = 128;

fn guest_arch_block(s: &mut String, os_type: &str, machine: &str, hvm: bool) {
    let arch = std::env::consts::ARCH;
    let _ = writeln!(
        s,
        "  <guest>\n    <os_type>{os_type}</os_type>\n    <arch name='{arch}'>"
    );
    s.push_str("      <wordsize>64</wordsize>\n");
    let _ = writeln!(s, "      <machine>{machine}</machine>");
    s.push_str("      <domain type='xen'/>\n    </arch>\n");
    if hvm {
        s.push_str("    <features>\n      <pae/>\n      <nonpae/>\n      <acpi default='on' toggle='yes'/>\n      <apic default='on' toggle='no'/>\n      <hap default='on' toggle='yes'/>\n    </features>\n");
    }
    s.push_str("  </guest>\n");
}

/// The driver's capabilities XML (`virsh capabilities`).
pub fn capabilities_xml() -> String {
    let n = node_info();
    let mut s = String::from("<capabilities>\n\n  <host>\n");
    let _ = writeln!(s, "    <uuid>{}</uuid>", host_uuid());
    let _ = writeln!(
        s,
        "    <cpu>\n      <arch>{}</arch>\n    </cpu>",
        std::env::consts::ARCH
    );
    s.push_str("    <power_management/>\n    <migration_features>\n      <live/>\n    </migration_features>\n");
    let _ = writeln!(
        s,
        "    <topology>\n      <cells num='1'>\n        <cell id='0'>\n          <memory unit='KiB'>{}</memory>\n          <cpus num='{}'>",
        n.memory_kib, n.cpus
    );
    for i in 0..n.cpus {
        let _ = writeln!(s, "            <cpu id='{i}'/>");
    }
    s.push_str(
        "          </cpus>\n        </cell>\n      </cells>\n    </topology>\n  </host>\n\n",
    );
    guest_arch_block(&mut s, "xen", "xenpv", false);
    s.push('\n');
    guest_arch_block(&mut s, "hvm", "xenfv", true);
    s.push_str("\n</capabilities>\n");
    s
}

/// The domain capabilities XML for the requested virt type, architecture and machine.
pub fn domain_capabilities_xml(
    arch: Option<&str>,
    machine: Option<&str>,
    virttype: Option<&str>,
) -> Result<String, RpcError> {
    let host_arch = std::env::consts::ARCH;
    if let Some(v) = virttype {
        if v != "xen" {
            return Err(RpcError::new(
                code::INVALID_ARG,
                edomain::LIBXL,
                format!("invalid argument: unknown virttype: {v}"),
            ));
        }
    }
    let arch = arch.unwrap_or(host_arch);
    if arch != host_arch {
        return Err(RpcError::new(
            code::INVALID_ARG,
            edomain::LIBXL,
            format!("invalid argument: unsupported architecture: {arch}"),
        ));
    }
    let machine = machine.unwrap_or("xenpv");
    if !matches!(machine, "xenpv" | "xenfv" | "xenpvh") {
        return Err(RpcError::new(
            code::INVALID_ARG,
            edomain::LIBXL,
            format!("invalid argument: unsupported machine type: {machine}"),
        ));
    }
    let mut s =
        String::from("<domainCapabilities>\n  <path>/usr/lib/xen/bin/qemu-system-i386</path>\n");
    let _ = writeln!(
        s,
        "  <domain>xen</domain>\n  <machine>{machine}</machine>\n  <arch>{arch}</arch>\n  <vcpu max='{MAX_VCPUS}'/>\n  <iothreads supported='no'/>"
    );
    s.push_str("  <os supported='yes'>\n");
    if machine == "xenfv" {
        s.push_str("    <enum name='firmware'>\n      <value>bios</value>\n    </enum>\n");
    }
    s.push_str("    <loader supported='no'/>\n  </os>\n");
    s.push_str("  <cpu>\n    <mode name='host-passthrough' supported='no'/>\n    <mode name='maximum' supported='no'/>\n    <mode name='host-model' supported='no'/>\n    <mode name='custom' supported='no'/>\n  </cpu>\n");
    s.push_str("  <devices>\n");
    s.push_str("    <disk supported='yes'>\n      <enum name='diskDevice'>\n        <value>disk</value>\n        <value>cdrom</value>\n      </enum>\n      <enum name='bus'>\n        <value>ide</value>\n        <value>scsi</value>\n        <value>xen</value>\n      </enum>\n    </disk>\n");
    s.push_str("    <graphics supported='yes'>\n      <enum name='type'>\n        <value>vnc</value>\n      </enum>\n    </graphics>\n");
    s.push_str("    <video supported='yes'>\n      <enum name='modelType'>\n        <value>vga</value>\n        <value>cirrus</value>\n        <value>xen</value>\n      </enum>\n    </video>\n");
    s.push_str("    <hostdev supported='no'/>\n  </devices>\n");
    s.push_str("  <features>\n    <gic supported='no'/>\n    <vmcoreinfo supported='no'/>\n    <genid supported='no'/>\n    <sev supported='no'/>\n  </features>\n</domainCapabilities>\n");
    Ok(s)
}
