//! `xl` drives xen-hv in QEMU through the sandbox transport: `scripts/sandbox up` boots the machine (RAM in a
//! shared file, the control channel on COM2) with the control-channel mux and virtxend; `xl create` builds an
//! in-tree test guest (`smp`, three vCPUs) through the hypervisor's control interface and the RAM file, `xl list` shows it, its
//! console output arrives through the console ring, the guest powers off (preserved), `xl destroy` removes
//! it, and `scripts/sandbox down` leaves nothing running.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::sandbox::{text, Sandbox};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < timeout {
        match f() {
            None => return,
            Some(s) => last = s,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last seen:\n{last}");
}

#[test]
fn xl_builds_runs_and_destroys_an_in_tree_guest_on_xen_hv_in_qemu() {
    let guest = xtask::build::build_guests(&["smp"]).expect("building the guest")[0]
        .1
        .clone();
    let sb = Sandbox {
        dir: std::env::temp_dir().join(format!("xl-qemu-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&sb.dir);
    let up = sb.script("up");
    assert!(up.status.success(), "sandbox up failed: {}", text(&up));
    let out = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        out.contains(&format!(
            "LIBVIRT_DEFAULT_URI=xen:///system?socket={}/virtxend-sock",
            sb.dir.display()
        )),
        "{out}"
    );
    let pids = sb.pids();
    assert_eq!(pids.len(), 3, "qemu, mux and virtxend recorded");

    let info = sb.xl(&["info"]);
    assert!(info.status.success(), "{}", text(&info));
    let info = text(&info);
    assert!(info.contains("nr_cpus                : 2\n"), "{info}");
    assert!(info.contains("xen_version            : 4.17\n"), "{info}");

    let cfg = sb.dir.join("smp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"smp\"\ntype = \"pvh\"\nmemory = 16\nvcpus = 3\nkernel = \"{}\"\n\
             on_poweroff = \"preserve\"\n",
            guest.display()
        ),
    )
    .expect("config");
    let o = sb.xl(&["create", cfg.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "xl create failed: {}", text(&o));
    let o = sb.xl(&["list"]);
    let list = text(&o);
    assert!(
        list.lines()
            .any(|l| l.starts_with("smp                                          1    16 ")),
        "{list}"
    );

    // The guest's console_io output arrives in its console ring, where `xl console` reads it.
    let mut con = Command::new(xtask::build::target_dir().join("debug/xl"))
        .args(["console", "smp"])
        .env("XEN_RS_SANDBOX", &sb.dir)
        .env("XEN_RS_STATE_DIR", sb.dir.join("xl"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("xl console");
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = con.stdout.take().expect("stdout");
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 256];
        while let Ok(n) = stdout.read(&mut b) {
            if n == 0 {
                break;
            }
            sink.lock().expect("sink").extend_from_slice(&b[..n]);
        }
    });
    wait_for(
        "the guest's PASS line on the console",
        Duration::from_secs(120),
        || {
            let s = String::from_utf8_lossy(&got.lock().expect("sink")).into_owned();
            (!s.contains("PASS smp")).then_some(s)
        },
    );
    let console = String::from_utf8_lossy(&got.lock().expect("sink")).into_owned();
    assert!(
        console.contains("smp: ok   vCPUs 1 and 2 ran and finished"),
        "{console}"
    );

    // It powered off; on_poweroff = "preserve" keeps it, shut down, until it is destroyed.
    wait_for("the guest to shut down", Duration::from_secs(60), || {
        let l = text(&sb.xl(&["list", "smp"]));
        let preserved = l.lines().any(|l| {
            l.starts_with("smp                                          1    16 ")
                && l.contains("---s--")
        });
        (!preserved).then_some(l)
    });
    let o = sb.xl(&["destroy", "smp"]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = con.wait();
    let list = text(&sb.xl(&["list"]));
    assert!(!list.contains("smp"), "{list}");

    let down = sb.script("down");
    assert!(down.status.success(), "{}", text(&down));
    std::thread::sleep(Duration::from_millis(200));
    for p in pids {
        assert!(!alive(p), "process {p} still running after sandbox down");
    }
}
