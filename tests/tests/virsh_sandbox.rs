//! `virsh` runs a guest on xen-hv: `scripts/sandbox up` boots xen-hv in QEMU with the control channel and starts
//! virtxend on it; the stock virsh defines and starts the in-tree `ticker` guest (built by the toolstack through
//! the hypervisor's control interface), lists it running with an ID, reads its console, suspends, resumes,
//! shuts it down, starts it again, destroys it and undefines it. `xl` on the same sandbox sees the same domain.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::sandbox::{text, Sandbox};

/// What `virsh console ticker` shows in `secs` seconds (it is detached with Ctrl-] afterwards).
fn console(sb: &Sandbox, secs: u64) -> String {
    let mut con = sb.console("ticker");
    std::thread::sleep(Duration::from_secs(secs));
    let _ = con.send_raw(b"\x1d");
    con.wait_exit(Duration::from_secs(10));
    con.output()
}

fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ticker: tick ")?.parse().ok())
        .next_back()
}

#[test]
fn virsh_runs_a_guest_on_xen_hv_in_the_sandbox() {
    let guest = xtask::build::build_guests(&["ticker"]).expect("building the guest")[0]
        .1
        .clone();
    let sb = Sandbox::up("virsh-sandbox");

    let xml = sb.dir.join("ticker.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='xen'>\n  <name>ticker</name>\n  <memory unit='MiB'>16</memory>\n  <vcpu>1</vcpu>\n  \
             <os>\n    <type arch='x86_64' machine='xenpvh'>xenpvh</type>\n    <kernel>{}</kernel>\n  </os>\n\
             </domain>\n",
            guest.display()
        ),
    )
    .expect("writing the definition");
    sb.virsh_ok(&["define", xml.to_str().expect("utf-8 path")]);
    // A subscribed client receives the lifecycle events of everything below.
    let events_file = sb.dir.join("events.txt");
    let mut events = Command::new("virsh")
        .args(["-c", &sb.uri(), "event", "--loop", "--event", "lifecycle"])
        .stdout(std::fs::File::create(&events_file).expect("events file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("virsh event --loop");
    std::thread::sleep(Duration::from_millis(500));
    sb.virsh_ok(&["start", "ticker"]);

    let list = sb.virsh_ok(&["list"]);
    let row = list
        .lines()
        .find(|l| l.contains("ticker"))
        .unwrap_or_else(|| panic!("not listed:\n{list}"));
    let id: u32 = row
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{row}"));
    assert!(id >= 1 && row.contains("running"), "{row}");
    let info = sb.virsh_ok(&["dominfo", "ticker"]);
    assert!(
        info.contains("State:          running") && info.contains("OS Type:        xenpvh"),
        "{info}"
    );
    // The toolstack's registry is shared with xl.
    let xl_list = text(&sb.xl(&["list"]));
    assert!(
        xl_list.lines().any(|l| l.starts_with("ticker ")),
        "{xl_list}"
    );

    // The guest's console output reaches virsh console.
    let con = console(&sb, 2);
    let before = last_tick(&con).unwrap_or_else(|| panic!("no ticks on the console:\n{con}"));

    // Paused, the guest makes no progress; resumed, it goes on.
    sb.virsh_ok(&["suspend", "ticker"]);
    assert_eq!(sb.virsh_ok(&["domstate", "ticker"]).trim(), "paused");
    sb.virsh_ok(&["resume", "ticker"]);
    assert_eq!(sb.virsh_ok(&["domstate", "ticker"]).trim(), "running");
    let after = last_tick(&console(&sb, 2)).expect("ticks after resume");
    assert!(
        after > before,
        "the guest did not run on after resume ({before} -> {after})"
    );

    // A shutdown request stops the domain.
    sb.virsh_ok(&["shutdown", "ticker"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = sb.virsh_ok(&["domstate", "ticker"]);
        if state.trim() == "shut off" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {state} after shutdown\n{}",
            sb.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Started again, then destroyed and undefined.
    sb.virsh_ok(&["start", "ticker"]);
    assert!(sb.virsh_ok(&["list"]).contains("ticker"));
    sb.virsh_ok(&["destroy", "ticker"]);
    assert_eq!(
        sb.virsh_ok(&["domstate", "--reason", "ticker"]).trim(),
        "shut off (destroyed)"
    );
    assert!(sb
        .virsh_ok(&["list", "--all"])
        .lines()
        .any(|l| l.contains("ticker") && l.contains("shut off")));
    sb.virsh_ok(&["undefine", "ticker"]);
    assert!(!sb.virsh_ok(&["list", "--all"]).contains("ticker"));
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let seen = std::fs::read_to_string(&events_file).unwrap_or_default();
    for e in [
        "Started Booted",
        "Suspended Paused",
        "Resumed Unpaused",
        "Stopped Shutdown",
        "Stopped Destroyed",
        "Undefined Removed",
    ] {
        assert!(
            seen.contains(&format!("event 'lifecycle' for domain 'ticker': {e}")),
            "no {e} event:\n{seen}"
        );
    }
    assert!(
        !text(&sb.xl(&["list"]))
            .lines()
            .any(|l| l.starts_with("ticker ")),
        "xl still lists the guest"
    );
}
