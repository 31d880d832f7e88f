//! The storage pool flow of Ansible's `community.libvirt.virt_pool` module, through python3-libvirt against
//! `virtxend`: it finds pools by name among the active and the defined ones, defines one from XML, builds, starts
//! and refreshes it, gathers the module's facts (info, XML, autostart, persistence, volumes), sets autostart,
//! makes and lists volumes, then destroys, deletes and undefines the pool. The errors the module reports (a
//! pool that is not empty, a volume name with a slash) come back as libvirt errors and change nothing.

use std::process::Command;

use e2e::virtxend::{python, Daemon};

const SCRIPT: &str = r#"
import os, sys, libvirt
uri, target = sys.argv[1], sys.argv[2]
c = libvirt.open(uri)

def find(name):
    # As virt_pool's find_entry: active pools, then defined ones, then a lookup by name.
    names = c.listStoragePools() + c.listDefinedStoragePools()
    return c.storagePoolLookupByName(name) if name in names else None

assert find("ansible") is None
xml = "<pool type='dir'><name>ansible</name><target><path>%s</path></target></pool>" % target
p = c.storagePoolDefineXML(xml, 0)
assert find("ansible") is not None
assert "ansible" in c.listDefinedStoragePools() and "ansible" not in c.listStoragePools()
assert p.isActive() == 0 and p.isPersistent() == 1
p.build(libvirt.VIR_STORAGE_POOL_BUILD_NEW)
assert os.path.isdir(target)
p.create(0)
assert p.isActive() == 1 and "ansible" in c.listStoragePools()
p.refresh(0)

# The facts virt_pool gathers.
state, capacity, allocation, available = p.info()
assert state == libvirt.VIR_STORAGE_POOL_RUNNING, state
assert capacity > 0 and available > 0 and capacity >= available
desc = p.XMLDesc(0)
assert "<path>%s</path>" % target in desc, desc
assert len(p.UUIDString()) == 36
assert p.autostart() == 0
p.setAutostart(1)
assert p.autostart() == 1
assert p.numOfVolumes() == 0 and p.listVolumes() == []

# Volumes.
vol = p.createXML("<volume><name>disk0.qcow2</name><capacity unit='MiB'>64</capacity>"
                  "<target><format type='qcow2'/></target></volume>", 0)
p.createXML("<volume><name>raw0.img</name><capacity unit='MiB'>8</capacity></volume>", 0)
p.refresh(0)
assert sorted(p.listVolumes()) == ["disk0.qcow2", "raw0.img"], p.listVolumes()
assert p.numOfVolumes() == 2
kind, vcap, valloc = vol.info()
assert vcap == 64 << 20, vcap
assert p.storageVolLookupByName("raw0.img").path() == os.path.join(target, "raw0.img")
assert c.storageVolLookupByPath(os.path.join(target, "disk0.qcow2")).name() == "disk0.qcow2"
assert "<format type='qcow2'/>" in vol.XMLDesc(0)

def fails(code, f, *args):
    try:
        f(*args)
    except libvirt.libvirtError as e:
        assert e.get_error_code() == code, (e.get_error_code(), str(e))
        return str(e)
    raise AssertionError("no error from %s" % f.__name__)

# A volume name with a slash is refused.
fails(libvirt.VIR_ERR_OPERATION_INVALID, p.createXML,
      "<volume><name>a/b</name><capacity>1024</capacity></volume>", 0)
# Deleting a pool that still has volumes fails as libvirt's dir backend does (rmdir: a system error) and
# loses nothing.
p.destroy()
assert p.isActive() == 0
msg = fails(libvirt.VIR_ERR_SYSTEM_ERROR, p.delete, libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
assert "Directory not empty" in msg, msg
assert os.path.exists(os.path.join(target, "disk0.qcow2")), msg
p.create(0)
for name in p.listVolumes():
    p.storageVolLookupByName(name).delete(0)
p.refresh(0)
assert p.listVolumes() == []

# Destroy, delete, undefine: what virt_pool's state=deleted / absent does.
p.destroy()
p.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
assert not os.path.exists(target)
p.undefine()
assert find("ansible") is None
print("OK")
"#;

#[test]
fn ansible_virt_pool_flow_through_python_libvirt() {
    let d = Daemon::start("python-pool");
    let target = d.dir.join("ansible-pool");
    let o = Command::new(python())
        .args(["-c", SCRIPT, &d.uri(), target.to_str().expect("utf-8 path")])
        .output()
        .expect("running python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.trim() == "OK",
        "pool flow failed: {out}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
}
