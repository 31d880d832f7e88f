//! virtxend under systemd's protocols, with systemd's own tools: socket activation through
//! `systemd-socket-activate` (the sockets the packaged units pass, by name) and readiness through
//! `NOTIFY_SOCKET` (what `Type=notify` waits for).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::console::Session;
use e2e::virtxend::binary;

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("virtxend-sd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    dir
}

fn virsh(uri: &str, args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("running virsh")
}

#[test]
fn socket_activation_serves_both_passed_sockets() {
    let dir = tempdir("activate");
    let (rw, ro) = (dir.join("virtxend-sock"), dir.join("virtxend-sock-ro"));
    let conf = dir.join("virtxend.conf");
    std::fs::write(&conf, "auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n").unwrap();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&rw)
        .arg("-l")
        .arg(&ro)
        .arg("--fdname=virtxend.socket:virtxend-ro.socket");
    cmd.arg(binary()).arg("--config").arg(&conf);
    cmd.arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    // The sockets are systemd-socket-activate's: the daemon must not bind paths of its own.
    cmd.arg("--socket").arg(dir.join("not-used"));
    let mut s = Session::spawn(cmd).expect("starting systemd-socket-activate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(rw.exists() && ro.exists()) {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen:\n{}",
            s.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first client starts the daemon with both sockets.
    let out = virsh(
        &format!("xen:///system?socket={}", rw.display()),
        &["version"],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.output()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Running hypervisor: Xen"));
    // The read-only socket is the one named virtxend-ro.socket: queries work, changes are refused.
    let ro_uri = format!("xen:///system?socket={}", ro.display());
    let out = virsh(&ro_uri, &["-r", "list", "--all"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.output()
    );
    let xml = dir.join("g.xml");
    std::fs::write(&xml, e2e::virtxend::pv_guest_xml("sd1")).unwrap();
    let out = virsh(&ro_uri, &["define", xml.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a change through the read-only socket succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("not-used").exists(),
        "the daemon bound its own socket despite activation"
    );
    drop(s.send_raw(b""));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readiness_is_notified() {
    let dir = tempdir("notify");
    let notify = dir.join("notify");
    let listener = UnixDatagram::bind(&notify).expect("binding the notification socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(binary())
        .arg("--socket")
        .arg(dir.join("sock"))
        .arg("--config")
        .arg("/dev/null")
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--auth")
        .arg("none")
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting virtxend");
    let mut buf = [0u8; 64];
    let got = listener
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    // Ready means serving: a client connects right away.
    let out = virsh(
        &format!("xen:///system?socket={}", dir.join("sock").display()),
        &["uri"],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.ok().as_deref(), Some("READY=1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
