//! `virsh` runs a guest on xen-hv: `scripts/sandbox up` boots xen-hv in QEMU with the control channel and starts
//! virtxend on it; the stock virsh defines and starts the in-tree `ticker` guest (built by the toolstack through
//! the hypervisor's control interface), lists it running with an ID, reads its console, suspends, resumes,
//! shuts it down, starts it again, destroys it and undefines it. `xl` on the same sandbox sees the same domain.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn script(&self, arg: &str) -> Output {
        Command::new(xtask::workspace_root().join("scripts/sandbox"))
            .arg(arg)
            .env("XEN_RS_SANDBOX_DIR", &self.dir)
            .output()
            .expect("running scripts/sandbox")
    }

    fn uri(&self) -> String {
        format!("xen:///system?socket={}/virtxend-sock", self.dir.display())
    }

    fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .output()
            .expect("running virsh")
    }

    fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "virsh {args:?} failed: {}\n{}",
            text(&o),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("virtxend.log")).unwrap_or_default()
    }

    /// `virsh console` needs a terminal: run it under `script` for `secs`, then detach with Ctrl-].
    fn console(&self, secs: u64) -> String {
        let cmd = format!("virsh -c '{}' console ticker", self.uri());
        let mut child = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running virsh console under script");
        std::thread::sleep(Duration::from_secs(secs));
        if let Some(stdin) = child.stdin.as_mut() {
            use std::io::Write;
            let _ = stdin.write_all(b"\x1d");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("console output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.script("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ticker: tick ")?.parse().ok())
        .next_back()
}

fn xl(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(xtask::build::target_dir().join("debug/xl"))
        .args(args)
        .env("XEN_RS_SANDBOX", dir)
        .env("XEN_RS_STATE_DIR", dir.join("xl"))
        .output()
        .expect("running xl");
    text(&o)
}

#[test]
fn virsh_runs_a_guest_on_xen_hv_in_the_sandbox() {
    let guest = xtask::build::build_guests(&["ticker"]).expect("building the guest")[0]
        .1
        .clone();
    let sb = Sandbox {
        dir: std::env::temp_dir().join(format!("virsh-sandbox-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&sb.dir);
    let up = sb.script("up");
    assert!(up.status.success(), "sandbox up failed: {}", text(&up));

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
    let xl_list = xl(&sb.dir, &["list"]);
    assert!(
        xl_list.lines().any(|l| l.starts_with("ticker ")),
        "{xl_list}"
    );

    // The guest's console output reaches virsh console.
    let con = sb.console(2);
    let before = last_tick(&con).unwrap_or_else(|| panic!("no ticks on the console:\n{con}"));

    // Paused, the guest makes no progress; resumed, it goes on.
    sb.virsh_ok(&["suspend", "ticker"]);
    assert_eq!(sb.virsh_ok(&["domstate", "ticker"]).trim(), "paused");
    sb.virsh_ok(&["resume", "ticker"]);
    assert_eq!(sb.virsh_ok(&["domstate", "ticker"]).trim(), "running");
    let after = last_tick(&sb.console(2)).expect("ticks after resume");
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
        !xl(&sb.dir, &["list"])
            .lines()
            .any(|l| l.starts_with("ticker ")),
        "xl still lists the guest"
    );
}
