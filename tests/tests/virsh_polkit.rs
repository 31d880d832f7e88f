//! polkit authentication on virtxend's sockets with a real polkitd on a private system bus: an unprivileged
//! virsh is refused or admitted by polkit's decision, root is trusted, the read-only socket uses the monitor
//! action (granted to everyone by the shipped policy).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::system_bus::{is_root, PolkitEnv};
use e2e::virtxend::{pv_guest_xml, Daemon};

fn policy_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../polkit/data/org.libvirt.unix.policy")
}

fn virsh_as_nobody(d: &Daemon, uri: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "virsh",
            "-c",
            uri,
        ])
        .args(args)
        .env("HOME", &d.dir)
        .output()
        .expect("running virsh as nobody")
}

fn until(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn polkit_decides_for_unprivileged_clients() {
    if !is_root() {
        eprintln!("SKIP: starting polkitd with private mounts needs root");
        return;
    }
    let env = PolkitEnv::start(&[&policy_file()]);
    let d = Daemon::start_with(
        "polkit",
        &["--auth", "polkit"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &env.address)],
    );
    // Root is trusted without asking polkit.
    let f = d.write("g.xml", &pv_guest_xml("pk1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // The read-only socket: org.libvirt.unix.monitor is granted to everyone.
    let ro = format!("xen:///system?socket={}-ro", d.socket.display());
    let o = virsh_as_nobody(&d, &ro, &["-r", "list", "--all"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("pk1"));
    // ... but it cannot change anything: a define through it is refused.
    let f2 = d.write("g2.xml", &pv_guest_xml("pk2"));
    std::fs::set_permissions(&f2, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = virsh_as_nobody(&d, &ro, &["-r", "define", f2.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "define through the read-only socket succeeded"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("read only"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The read-write socket: a rule denying manage to nobody gives libvirt's AUTH_FAILED.
    env.add_rules(
        "10-test.rules",
        "polkit.addRule(function(action, subject) {\n  if (action.id == \"org.libvirt.unix.manage\" && \
         subject.user == \"nobody\") { return polkit.Result.NO; }\n});\n",
    );
    let err = until("the denial", || {
        let o = virsh_as_nobody(&d, &d.uri(), &["list", "--all"]);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        (!o.status.success() && e.contains("access denied by policy")).then_some(e)
    });
    assert!(err.contains("authentication failed"), "{err}");

    // A rule granting it admits the client.
    env.add_rules(
        "10-test.rules",
        "polkit.addRule(function(action, subject) {\n  if (action.id == \"org.libvirt.unix.manage\" && \
         subject.user == \"nobody\") { return polkit.Result.YES; }\n});\n",
    );
    let out = until("the grant", || {
        let o = virsh_as_nobody(&d, &d.uri(), &["list", "--all"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert!(out.contains("pk1"), "{out}");
}
