//! virsh's storage commands against `virtxend`, which serves pools and volumes itself (through xen-storage):
//! the RPC wiring of pools, volumes, streams (plain and sparse) and pool events.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::virtxend::Daemon;

#[test]
fn pools_volumes_and_streams_over_rpc() {
    let d = Daemon::start("virsh-storage");
    let target = d.dir.join("pool");
    let t = target.to_str().unwrap();
    let ev = Command::new("virsh")
        .args([
            "-c",
            &d.uri(),
            "pool-event",
            "--loop",
            "--event",
            "lifecycle",
            "--timeout",
            "6",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting virsh pool-event");
    std::thread::sleep(Duration::from_millis(1000));
    d.virsh_ok(&["pool-define-as", "p1", "dir", "--target", t]);
    d.virsh_ok(&["pool-build", "p1"]);
    d.virsh_ok(&["pool-start", "p1"]);
    d.virsh_ok(&["pool-autostart", "p1"]);
    let list = d.virsh_ok(&["pool-list", "--all"]);
    let row = list.lines().find(|l| l.contains("p1")).expect("p1 listed");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["p1", "active", "yes"]
    );
    assert!(d
        .virsh_ok(&["pool-info", "p1"])
        .contains("State:          running"));
    assert!(d
        .virsh_ok(&["pool-dumpxml", "p1"])
        .contains(&format!("<path>{t}</path>")));
    // The pool definition lives beside the domain definitions, as /etc/libvirt/storage does.
    assert!(d.dir.join("storage/p1.xml").exists());

    d.virsh_ok(&["vol-create-as", "p1", "q.qcow2", "16M", "--format", "qcow2"]);
    d.virsh_ok(&["vol-create-as", "p1", "r.raw", "1M"]);
    let vols = d.virsh_ok(&["vol-list", "p1"]);
    assert!(vols.contains("q.qcow2") && vols.contains("r.raw"), "{vols}");
    let info = d.virsh_ok(&["vol-info", "--pool", "p1", "q.qcow2"]);
    assert!(info.contains("Capacity:       16.00 MiB"), "{info}");
    let err = d.virsh_err(&["vol-info", "--pool", "p1", "nosuch"]);
    assert!(err.contains("no storage vol with matching"), "{err}");

    // Upload then download, plain and sparse.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = d.write("up.bin", "");
    std::fs::write(&up, &data).unwrap();
    d.virsh_ok(&["vol-upload", "--pool", "p1", "r.raw", up.to_str().unwrap()]);
    for sparse in [false, true] {
        let down = d.dir.join(format!("down-{sparse}.bin"));
        let mut args = vec![
            "vol-download",
            "--pool",
            "p1",
            "r.raw",
            down.to_str().unwrap(),
        ];
        if sparse {
            args.insert(1, "--sparse");
        }
        d.virsh_ok(&args);
        let got = std::fs::read(&down).unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert_eq!(&got[..data.len()], &data[..], "sparse={sparse}");
        assert!(got[data.len()..].iter().all(|b| *b == 0));
    }

    d.virsh_ok(&["vol-delete", "--pool", "p1", "q.qcow2"]);
    assert!(!target.join("q.qcow2").exists());
    d.virsh_ok(&["pool-destroy", "p1"]);
    d.virsh_ok(&["pool-undefine", "p1"]);
    assert!(!d.virsh_ok(&["pool-list", "--all"]).contains("p1"));
    // virsh flushes its event lines when it exits at the timeout.
    let out = String::from_utf8_lossy(&ev.wait_with_output().unwrap().stdout).into_owned();
    for want in [
        "pool p1: Defined",
        "pool p1: Started",
        "pool p1: Stopped",
        "pool p1: Undefined",
    ] {
        assert!(out.contains(want), "pool events lack {want}: {out}");
    }
}
