//! python3-libvirt against `virtxend`: the same scenario as the virsh test through the Python bindings, with an
//! event loop receiving lifecycle events and the libvirt error codes checked.

use std::process::Command;

use e2e::virtxend::{pv_guest_xml, python, Daemon};

const SCRIPT: &str = r#"
import sys, threading, time, libvirt
uri, xml = sys.argv[1], sys.argv[2]
libvirt.virEventRegisterDefaultImpl()
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()
c = libvirt.open(uri)
assert c.getType() == "Xen", c.getType()
assert c.getVersion() >= 4000000
assert c.getLibVersion() == 9000000
assert c.getURI().startswith("xen:///system"), c.getURI()
assert c.isSecure() == 1
assert c.isAlive() == 1
info = c.getInfo()
assert info[0] == "x86_64" and info[1] > 0 and info[2] > 0, info
assert c.getFreeMemory() > 0
assert "<capabilities>" in c.getCapabilities()
assert "<domainCapabilities>" in c.getDomainCapabilities()
assert c.getMaxVcpus(None) == 128
events = []
got = threading.Event()
def cb(conn, dom, event, detail, opaque):
    events.append((dom.name(), event, detail))
    got.set()
cbid = c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)
# Every id virt-manager registers is accepted.
others = [c.domainEventRegisterAny(None, i, lambda *a: None, None) for i in (13, 10, 15, 19, 18)]
meta_events = []
others.append(c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    lambda conn, dom, mtype, nsuri, opaque: meta_events.append((dom.name(), mtype, nsuri)), None))
closed = []
c.registerCloseCallback(lambda *a: closed.append(a), None)
d = c.defineXML(xml)
assert d.name() == "pyguest" and d.ID() == -1
assert not d.isActive() and d.isPersistent()
assert d.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF, d.info()
assert d.info()[1] == 262144 and d.info()[3] == 2, d.info()
assert d.state() == [libvirt.VIR_DOMAIN_SHUTOFF, 0]
assert d.maxMemory() == 262144 and d.maxVcpus() == 2 and d.OSType() == "xen"
assert d.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 2
assert d.hasManagedSaveImage() == 0
assert "<name>pyguest</name>" in d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
assert c.lookupByUUIDString(d.UUIDString()).name() == "pyguest"
assert [x.name() for x in c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)] == ["pyguest"]
assert c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) == []
assert c.listDefinedDomains() == ["pyguest"] and c.numOfDomains() == 0 and c.listDomainsID() == []
d.setAutostart(1)
assert d.autostart() == 1
d.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, "a title", None, None, 0)
assert d.metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None, 0) == "a title"
stats = c.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
assert stats[0][1]["state.state"] == libvirt.VIR_DOMAIN_SHUTOFF, stats
try:
    c.lookupByName("nosuch"); raise SystemExit("lookup of an unknown name succeeded")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, e.get_error_code()
try:
    d.create(); raise SystemExit("create succeeded without a hypervisor")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED and "no hypervisor" in str(e), e
    assert e.get_error_domain() == libvirt.VIR_FROM_LIBXL
try:
    d.destroy(); raise SystemExit("destroy of an inactive domain succeeded")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID, e.get_error_code()
try:
    c.nodeDeviceLookupByName("x"); raise SystemExit("unimplemented call succeeded")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT, e.get_error_code()
d.undefine()
deadline = time.time() + 5
while len(events) < 2 and time.time() < deadline:
    time.sleep(0.05)
assert events == [("pyguest", 0, 0), ("pyguest", 1, 0)], events
assert meta_events == [("pyguest", libvirt.VIR_DOMAIN_METADATA_TITLE, None)], meta_events
c.domainEventDeregisterAny(cbid)
for o in others:
    c.domainEventDeregisterAny(o)
c.unregisterCloseCallback()
c.close()
print("OK")
"#;

#[test]
fn python_libvirt_scenario() {
    let d = Daemon::start("python");
    let o = Command::new(python())
        .args(["-c", SCRIPT, &d.uri(), &pv_guest_xml("pyguest")])
        .output()
        .expect("running python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.trim() == "OK",
        "python scenario failed: {out}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
}
