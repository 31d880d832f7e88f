//! The stock Debian `virsh` against `virtxend`: definitions, listings, XML, autostart, host queries, events and
//! the honest failures of lifecycle calls while no hypervisor is attached.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::virtxend::{pv_guest_xml, Daemon};

fn validate(d: &Daemon, name: &str, xml: &str, schema: &str) {
    let p = d.write(name, xml);
    let o = Command::new("virt-xml-validate")
        .arg(&p)
        .arg(schema)
        .output()
        .expect("running virt-xml-validate");
    assert!(
        o.status.success(),
        "{name} fails the {schema} schema: {}\n{xml}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn define_list_dumpxml_dominfo_autostart_undefine() {
    let mut d = Daemon::start("virsh-define");
    let f = d.write("g.xml", &pv_guest_xml("guest1"));
    let out = d.virsh_ok(&["define", f.to_str().unwrap()]);
    assert!(out.contains("Domain 'guest1' defined"), "{out}");

    let list = d.virsh_ok(&["list", "--all"]);
    let row = list
        .lines()
        .find(|l| l.contains("guest1"))
        .expect("guest1 listed");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["-", "guest1", "shut", "off"]
    );
    // Only active domains without --all.
    assert!(!d.virsh_ok(&["list"]).contains("guest1"));

    let xml = d.virsh_ok(&["dumpxml", "guest1"]);
    assert!(xml.contains("<memory unit='KiB'>262144</memory>"), "{xml}");
    assert!(xml.contains("<uuid>"), "a UUID is generated: {xml}");
    validate(&d, "dump.xml", &xml, "domain");
    let info = d.virsh_ok(&["dominfo", "guest1"]);
    for want in [
        "Name:           guest1",
        "State:          shut off",
        "CPU(s):         2",
        "Max memory:     262144 KiB",
        "Persistent:     yes",
        "Autostart:      disable",
        "OS Type:        xen",
    ] {
        assert!(info.contains(want), "dominfo lacks {want:?}:\n{info}");
    }
    assert_eq!(d.virsh_ok(&["domstate", "guest1"]).trim(), "shut off");

    // The persistent file is written atomically and re-read by a restarted daemon.
    let cfg = d.config_dir().join("guest1.xml");
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("<name>guest1</name>"));
    d.virsh_ok(&["autostart", "guest1"]);
    assert!(d
        .config_dir()
        .join("autostart/guest1.xml")
        .symlink_metadata()
        .is_ok());
    assert!(d
        .virsh_ok(&["dominfo", "guest1"])
        .contains("Autostart:      enable"));
    let uuid = d.virsh_ok(&["domuuid", "guest1"]);
    d.restart();
    assert_eq!(
        d.virsh_ok(&["domuuid", "guest1"]),
        uuid,
        "definition survives a restart"
    );
    assert!(d
        .virsh_ok(&["dominfo", "guest1"])
        .contains("Autostart:      enable"));
    // Autostart is honoured at start-up; without a hypervisor it fails and says so, never fakes a start.
    assert!(
        d.log().contains("failed to autostart domain 'guest1'"),
        "{}",
        d.log()
    );
    assert_eq!(d.virsh_ok(&["domstate", "guest1"]).trim(), "shut off");
    d.virsh_ok(&["autostart", "--disable", "guest1"]);
    assert!(d
        .config_dir()
        .join("autostart/guest1.xml")
        .symlink_metadata()
        .is_err());

    // Redefining with a different UUID under the same name is refused.
    let clash = pv_guest_xml("guest1").replace(
        "<name>",
        "<uuid>11111111-2222-3333-4444-555555555555</uuid>\n  <name>",
    );
    let f2 = d.write("clash.xml", &clash);
    let err = d.virsh_err(&["define", f2.to_str().unwrap()]);
    assert!(err.contains("already exists with uuid"), "{err}");

    let out = d.virsh_ok(&["undefine", "guest1"]);
    assert!(out.contains("Domain 'guest1' has been undefined"), "{out}");
    assert!(!cfg.exists());
    assert!(!d.virsh_ok(&["list", "--all"]).contains("guest1"));
}

#[test]
fn errors_have_libvirt_codes_and_messages() {
    let d = Daemon::start("virsh-errors");
    let err = d.virsh_err(&["dominfo", "nosuch"]);
    assert!(err.contains("failed to get domain 'nosuch'"), "{err}");
    let f = d.write("g.xml", &pv_guest_xml("g2"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    // Lifecycle calls fail clearly while no hypervisor is attached, and nothing pretends to run.
    let err = d.virsh_err(&["start", "g2"]);
    assert!(err.contains("no hypervisor connection"), "{err}");
    assert_eq!(d.virsh_ok(&["domstate", "g2"]).trim(), "shut off");
    let err = d.virsh_err(&["destroy", "g2"]);
    assert!(err.contains("domain is not running"), "{err}");
    let err = d.virsh_err(&["suspend", "g2"]);
    assert!(err.contains("domain is not running"), "{err}");
    // Bad definitions are refused with the path of the problem.
    let bad = d.write(
        "bad.xml",
        &pv_guest_xml("x").replace("</domain>", "<bogus/></domain>"),
    );
    let err = d.virsh_err(&["define", bad.to_str().unwrap()]);
    assert!(err.contains("bogus"), "{err}");
    let kvm = d.write(
        "kvm.xml",
        &pv_guest_xml("k").replace("type='xen'", "type='kvm'"),
    );
    let err = d.virsh_err(&["define", kvm.to_str().unwrap()]);
    assert!(err.contains("not supported by the Xen driver"), "{err}");
    // --validate checks libvirt's RelaxNG schema first.
    let err = d.virsh_err(&["define", "--validate", bad.to_str().unwrap()]);
    assert!(
        err.contains("XML document failed to validate against schema"),
        "{err}"
    );
    let ok = d.write("ok.xml", &pv_guest_xml("valid1"));
    d.virsh_ok(&["define", "--validate", ok.to_str().unwrap()]);
    let notxml = d.write("n.xml", "this is not xml <");
    let err = d.virsh_err(&["define", notxml.to_str().unwrap()]);
    assert!(err.contains("XML error"), "{err}");
}

#[test]
fn host_queries_and_capabilities_validate() {
    let d = Daemon::start("virsh-host");
    let v = d.virsh_ok(&["version"]);
    assert!(v.contains("Running hypervisor: Xen 4.17.0"), "{v}");
    assert_eq!(d.virsh_ok(&["uri"]).trim(), d.uri());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(d.virsh_ok(&["hostname"]).trim(), host.trim());
    let ni = d.virsh_ok(&["nodeinfo"]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(ni.contains(&format!("CPU(s):              {cpus}")), "{ni}");
    assert!(ni.contains("CPU model:           x86_64"), "{ni}");
    let caps = d.virsh_ok(&["capabilities"]);
    assert!(
        caps.contains("<machine>xenpv</machine>") && caps.contains("<os_type>hvm</os_type>"),
        "{caps}"
    );
    validate(&d, "caps.xml", &caps, "capability");
    let dc = d.virsh_ok(&["domcapabilities"]);
    assert!(dc.contains("<domain>xen</domain>"), "{dc}");
    validate(&d, "domcaps.xml", &dc, "domaincaps");
    let dc = d.virsh_ok(&["domcapabilities", "--machine", "xenfv"]);
    assert!(dc.contains("<machine>xenfv</machine>"), "{dc}");
    let err = d.virsh_err(&["domcapabilities", "--virttype", "kvm"]);
    assert!(err.contains("unknown virttype"), "{err}");
    assert!(d.virsh_ok(&["sysinfo"]).contains("<sysinfo type='smbios'>"));
    assert!(d.virsh_ok(&["freecell"]).contains("Total:"));
    assert_eq!(d.virsh_ok(&["maxvcpus"]).trim(), "128");
}

#[test]
fn event_loop_receives_lifecycle_events() {
    let d = Daemon::start("virsh-events");
    let mut ev = Command::new("virsh")
        .args(["-c", &d.uri(), "event", "--loop", "--all", "--timeout", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting virsh event");
    // Wait until the registration is in place: virsh registers right after connecting.
    std::thread::sleep(Duration::from_millis(1500));
    let f = d.write("g.xml", &pv_guest_xml("evguest"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    // Redefining keeps the UUID (a definition without one would get a new UUID and be refused).
    let again = d.write("again.xml", &d.virsh_ok(&["dumpxml", "evguest"]));
    d.virsh_ok(&["define", again.to_str().unwrap()]);
    d.virsh_ok(&["undefine", "evguest"]);
    let _ = ev.kill();
    let out = ev.wait_with_output().expect("virsh event output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("event 'lifecycle' for domain 'evguest': Defined Added"),
        "{text}"
    );
    assert!(
        text.contains("event 'lifecycle' for domain 'evguest': Defined Updated"),
        "{text}"
    );
    assert!(
        text.contains("event 'lifecycle' for domain 'evguest': Undefined Removed"),
        "{text}"
    );
}

#[test]
fn console_of_inactive_domain_is_refused() {
    let d = Daemon::start("virsh-console");
    let f = d.write("g.xml", &pv_guest_xml("c1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    let err = d.virsh_err(&["console", "c1"]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn domxml_from_native_and_to_native_xen_xl() {
    let d = Daemon::start("virsh-native");
    let cfg = d.write(
        "guest.cfg",
        "name = \"n1\"\nmemory = 512\nvcpus = 2\ntype = \"pv\"\nkernel = \"/boot/vmlinuz\"\n",
    );
    let xml = d.virsh_ok(&["domxml-from-native", "xen-xl", cfg.to_str().unwrap()]);
    for want in [
        "<name>n1</name>",
        "<memory unit='KiB'>524288</memory>",
        "<kernel>/boot/vmlinuz</kernel>",
        "machine='xenpv'",
    ] {
        assert!(xml.contains(want), "from-native lacks {want:?}: {xml}");
    }
    validate(&d, "native.xml", &xml, "domain");
    // The converted XML defines, and converts back.
    let f = d.write("n1.xml", &xml);
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    let back = d.virsh_ok(&["domxml-to-native", "xen-xl", f.to_str().unwrap()]);
    assert!(
        back.contains("name = \"n1\"") && back.contains("vcpus = 2"),
        "{back}"
    );
    let err = d.virsh_err(&["domxml-from-native", "xen-sxpr", cfg.to_str().unwrap()]);
    assert!(err.contains("unsupported config type xen-sxpr"), "{err}");
    let bad = d.write("bad.cfg", "bogus line\n");
    let err = d.virsh_err(&["domxml-from-native", "xen-xl", bad.to_str().unwrap()]);
    assert!(err.contains("configuration file syntax error"), "{err}");
}

#[test]
fn read_only_socket_allows_queries_and_refuses_changes() {
    let d = Daemon::start("virsh-ro");
    let f = d.write("g.xml", &pv_guest_xml("ro1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    let ro_uri = format!("xen:///system?socket={}-ro", d.socket.display());
    let virsh_ro = |args: &[&str]| {
        Command::new("virsh")
            .args(["-r", "-c", &ro_uri])
            .args(args)
            .output()
            .expect("virsh")
    };
    let o = virsh_ro(&["list", "--all"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ro1"));
    let o = virsh_ro(&["undefine", "ro1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("read only access prevents virDomainUndefineFlags"),
        "{err}"
    );
    let o = virsh_ro(&["dumpxml", "--security-info", "ro1"]);
    assert!(!o.status.success());
    assert!(
        d.virsh_ok(&["list", "--all"]).contains("ro1"),
        "still defined"
    );
}

#[test]
fn sigterm_removes_the_sockets_and_keeps_definitions() {
    let mut d = Daemon::start("virsh-sigterm");
    let f = d.write("g.xml", &pv_guest_xml("keep1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    assert!(d.terminate(), "clean exit on SIGTERM:\n{}", d.log());
    assert!(!d.socket.exists());
    assert!(!PathBuf::from(format!("{}-ro", d.socket.display())).exists());
    d.restart();
    assert!(d.virsh_ok(&["list", "--all"]).contains("keep1"));
}

#[test]
fn memory_and_vcpu_configuration_of_an_inactive_domain() {
    let d = Daemon::start("virsh-config");
    let f = d.write("g.xml", &pv_guest_xml("cfg1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    d.virsh_ok(&["setmaxmem", "cfg1", "1G", "--config"]);
    d.virsh_ok(&["setmem", "cfg1", "512M", "--config"]);
    d.virsh_ok(&["setvcpus", "cfg1", "4", "--maximum", "--config"]);
    d.virsh_ok(&["setvcpus", "cfg1", "3", "--config"]);
    let info = d.virsh_ok(&["dominfo", "cfg1"]);
    assert!(info.contains("Max memory:     1048576 KiB"), "{info}");
    assert!(info.contains("Used memory:    524288 KiB"), "{info}");
    assert!(info.contains("CPU(s):         3"), "{info}");
    let xml = d.virsh_ok(&["dumpxml", "cfg1"]);
    assert!(
        xml.contains("<vcpu placement='static' current='3'>4</vcpu>"),
        "{xml}"
    );
    let saved = std::fs::read_to_string(d.config_dir().join("cfg1.xml")).unwrap();
    assert!(
        saved.contains("<currentMemory unit='KiB'>524288</currentMemory>"),
        "{saved}"
    );
    let err = d.virsh_err(&["setmem", "cfg1", "2G", "--config"]);
    assert!(
        err.contains("cannot set memory higher than max memory"),
        "{err}"
    );
    let err = d.virsh_err(&["setvcpus", "cfg1", "8", "--config"]);
    assert!(
        err.contains("greater than max allowable vcpus for the domain"),
        "{err}"
    );
    let err = d.virsh_err(&["setmem", "cfg1", "256M", "--live"]);
    assert!(err.contains("domain is not running"), "{err}");
    assert_eq!(
        d.virsh_ok(&["vcpucount", "cfg1", "--config", "--maximum"])
            .trim(),
        "4"
    );
}

#[test]
fn attach_and_detach_devices_in_the_persistent_configuration() {
    let d = Daemon::start("virsh-devices");
    let f = d.write("g.xml", &pv_guest_xml("dev1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    let img = d.write("d.img", "");
    let img = img.to_str().unwrap();
    d.virsh_ok(&["attach-disk", "dev1", img, "xvdb", "--config"]);
    let err = d.virsh_err(&["attach-disk", "dev1", img, "xvdb", "--config"]);
    assert!(err.contains("already exists"), "{err}");
    d.virsh_ok(&[
        "attach-interface",
        "dev1",
        "bridge",
        "br0",
        "--mac",
        "52:54:00:11:22:33",
        "--config",
    ]);
    let xml = d.virsh_ok(&["dumpxml", "dev1"]);
    assert!(
        xml.contains(&format!("<source file='{img}'/>")) && xml.contains("<target dev='xvdb'"),
        "{xml}"
    );
    assert!(xml.contains("<mac address='52:54:00:11:22:33'/>"), "{xml}");
    assert!(std::fs::read_to_string(d.config_dir().join("dev1.xml"))
        .unwrap()
        .contains("xvdb"));
    // Live changes need a running domain.
    let err = d.virsh_err(&["attach-disk", "dev1", img, "xvdc"]);
    assert!(err.contains("domain is not running"), "{err}");
    d.virsh_ok(&["detach-disk", "dev1", "xvdb", "--config"]);
    d.virsh_ok(&[
        "detach-interface",
        "dev1",
        "bridge",
        "--mac",
        "52:54:00:11:22:33",
        "--config",
    ]);
    let xml = d.virsh_ok(&["dumpxml", "dev1"]);
    assert!(
        !xml.contains("xvdb") && !xml.contains("52:54:00:11:22:33"),
        "{xml}"
    );
    let err = d.virsh_err(&["detach-disk", "dev1", "xvdz", "--config"]);
    assert!(!err.is_empty());
}

#[test]
fn rename_freecell_and_managedsave_remove() {
    let d = Daemon::start("virsh-rename");
    let f = d.write("g.xml", &pv_guest_xml("old1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    d.virsh_ok(&["autostart", "old1"]);
    let uuid = d.virsh_ok(&["domuuid", "old1"]);
    d.virsh_ok(&["domrename", "old1", "new1"]);
    assert_eq!(d.virsh_ok(&["domuuid", "new1"]), uuid);
    assert!(d
        .virsh_err(&["dominfo", "old1"])
        .contains("failed to get domain"));
    assert!(d.config_dir().join("new1.xml").exists() && !d.config_dir().join("old1.xml").exists());
    assert!(d
        .config_dir()
        .join("autostart/new1.xml")
        .symlink_metadata()
        .is_ok());
    assert!(d
        .config_dir()
        .join("autostart/old1.xml")
        .symlink_metadata()
        .is_err());
    let f2 = d.write("g2.xml", &pv_guest_xml("other"));
    d.virsh_ok(&["define", f2.to_str().unwrap()]);
    let err = d.virsh_err(&["domrename", "new1", "other"]);
    assert!(err.contains("already exists"), "{err}");
    let cells = d.virsh_ok(&["freecell", "--all"]);
    assert!(cells.contains("0:") && cells.contains("Total:"), "{cells}");
    d.virsh_ok(&["managedsave-remove", "new1"]);
}

#[test]
fn list_filters() {
    let d = Daemon::start("virsh-filters");
    for n in ["fa", "fb"] {
        let f = d.write(&format!("{n}.xml"), &pv_guest_xml(n));
        d.virsh_ok(&["define", f.to_str().unwrap()]);
    }
    d.virsh_ok(&["autostart", "fa"]);
    let names = |args: &[&str]| {
        let mut a = vec!["list", "--name"];
        a.extend_from_slice(args);
        let out = d.virsh_ok(&a);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&["--all"]), ["fa", "fb"]);
    assert_eq!(names(&["--all", "--autostart"]), ["fa"]);
    assert_eq!(names(&["--all", "--no-autostart"]), ["fb"]);
    assert_eq!(names(&["--state-shutoff", "--state-running"]), ["fa", "fb"]);
    assert_eq!(names(&["--state-running"]), Vec::<String>::new());
    assert_eq!(names(&["--all", "--persistent"]), ["fa", "fb"]);
    assert_eq!(names(&["--all", "--transient"]), Vec::<String>::new());
    assert_eq!(names(&["--all", "--with-snapshot"]), Vec::<String>::new());
    assert_eq!(names(&["--all", "--without-managed-save"]), ["fa", "fb"]);
    let stats = d.virsh_ok(&["domstats", "--state", "fb"]);
    assert!(
        stats.contains("Domain: 'fb'") && stats.contains("state.state=5"),
        "{stats}"
    );
    let err = d.virsh_err(&["domstats", "--block", "--enforce", "fb"]);
    assert!(err.contains("not supported"), "{err}");
}
