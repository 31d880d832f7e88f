//! An unmodified Debian kernel on xen-hv, started by the stock virsh: `scripts/sandbox up` boots xen-hv in QEMU
//! and starts virtxend; virsh defines a PVH domain whose `<os>` names the vmlinux from Debian's linux-image
//! package and the busybox initramfs, starts it, and `virsh console` reaches a shell on hvc0 (the console ring
//! served by the control domain's console daemon, input signalled on the console event channel). A command
//! typed there runs; `reboot` in the guest and `virsh reboot` (through xenstore's control/shutdown, served by
//! the control domain's xenstored) come back through on_reboot=restart; `poweroff` in the guest and
//! `virsh shutdown` shut the domain off cleanly with their lifecycle events.
//!
//! `bench_linux_boot` (ignored; `scripts/bench-linux-boot` runs it) times `virsh start` to the shell prompt
//! against the same kernel and initramfs booted directly by QEMU's PVH loader.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::console::Session;
use e2e::sandbox::{display, Sandbox};
use e2e::{guest_kernel, qemu, Arch};

const PROMPT: &str = "xenrs-guest# ";

fn define_linux(sb: &Sandbox, name: &str, vmlinux: &Path, initramfs: &Path) {
    define_linux_smp(sb, name, vmlinux, initramfs, 1);
}

fn define_linux_smp(sb: &Sandbox, name: &str, vmlinux: &Path, initramfs: &Path, vcpus: u32) {
    let xml = format!(
        "<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='MiB'>160</memory>\n  <vcpu>{vcpus}</vcpu>\n  \
         <os>\n    <type arch='x86_64' machine='xenpvh'>xenpvh</type>\n    <kernel>{}</kernel>\n    \
         <initrd>{}</initrd>\n    <cmdline>console=hvc0 quiet</cmdline>\n  </os>\n  \
         <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n\
         </domain>\n",
        display(vmlinux),
        display(initramfs)
    );
    let path = sb.path(&format!("{name}.xml"));
    std::fs::write(&path, xml).expect("writing the domain XML");
    sb.virsh_ok(&["define", &display(&path)]);
}

/// `virsh start` then a console until the shell prompt; returns the console and the seconds it took.
fn start_to_prompt(sb: &Sandbox, name: &str) -> (Session, f64) {
    let t0 = Instant::now();
    sb.virsh_ok(&["start", name]);
    // The console daemon keeps what the guest printed before anyone attached, so attaching after the start
    // loses nothing.
    let mut con = sb.console(name);
    let at = con.expect(PROMPT, Duration::from_secs(180));
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        at.is_some(),
        "no shell prompt on hvc0:\n{}\n--- xen-hv ---\n{}",
        con.output(),
        sb.hv_log()
    );
    (con, secs)
}

fn wait_state(sb: &Sandbox, name: &str, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let o = sb.virsh(&["domstate", name]);
        let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if state == want || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn debian_kernel_on_xen_hv_reaches_a_shell_through_virsh() {
    let (vmlinux, initramfs) = guest_kernel();
    let version = std::fs::read_to_string(vmlinux.with_file_name("version"))
        .expect("kernel version")
        .trim()
        .to_string();
    let sb = Sandbox::up("linux-sandbox");
    define_linux(&sb, "linux", &vmlinux, &initramfs);
    let events_file = sb.path("events.txt");
    let mut events = Command::new("virsh")
        .args(["-c", &sb.uri(), "event", "--loop", "--event", "lifecycle"])
        .stdout(std::fs::File::create(&events_file).expect("events file"))
        .spawn()
        .expect("virsh event --loop");
    std::thread::sleep(Duration::from_millis(500));

    let (mut con, secs) = start_to_prompt(&sb, "linux");
    println!("xen-hv: virsh start to the shell prompt on hvc0: {secs:.2} s");
    let list = sb.virsh_ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("linux") && l.contains("running")),
        "{list}"
    );

    // A command typed on the console runs in the guest.
    let from = con.output().len();
    con.send_line("echo hello-$((6*7)); uname -r; cat /proc/cmdline")
        .expect("typing");
    let answer = con.expect_from(from, "hello-42", Duration::from_secs(60));
    assert!(
        answer.is_some(),
        "the command did not run:\n{}",
        con.output()
    );
    assert!(
        con.expect_from(from, &version, Duration::from_secs(30))
            .is_some(),
        "uname -r did not print {version}:\n{}",
        con.output()
    );
    assert!(
        con.expect_from(from, "console=hvc0 quiet", Duration::from_secs(30))
            .is_some(),
        "{}",
        con.output()
    );

    // `reboot` in the guest resets it through the ACPI reset register; on_reboot=restart builds it again.
    con.send_line("reboot").expect("typing");
    assert!(
        con.expect_from(from, "Requesting system reboot", Duration::from_secs(60))
            .is_some(),
        "{}",
        con.output()
    );
    let from = con.output().len();
    // The new domain boots under the same name and ID, and the attached console stays connected to it.
    assert!(
        con.expect_from(from, PROMPT, Duration::from_secs(180))
            .is_some(),
        "no prompt after the reboot:\n{}\n--- xen-hv ---\n{}",
        con.output(),
        sb.hv_log()
    );
    assert_eq!(
        wait_state(&sb, "linux", "running", Duration::from_secs(10)),
        "running"
    );
    let list = sb.virsh_ok(&["list"]);
    assert!(list.contains("linux"), "{list}");

    // `virsh reboot` asks the guest through xenstore's control/shutdown (its PV control driver runs the
    // orderly reboot), as Xen's toolstack does.
    let from = con.output().len();
    sb.virsh_ok(&["reboot", "linux"]);
    assert!(
        con.expect_from(from, "Requesting system reboot", Duration::from_secs(60))
            .is_some(),
        "the guest did not reboot itself:\n{}",
        con.output()
    );
    assert!(
        con.expect_from(from, PROMPT, Duration::from_secs(180))
            .is_some(),
        "no prompt after virsh reboot:\n{}",
        con.output()
    );

    // `poweroff` in the guest enters ACPI S5: the domain shuts down and on_poweroff=destroy removes it.
    let from = con.output().len();
    con.send_line("poweroff").expect("typing");
    assert!(
        con.expect_from(from, "Requesting system poweroff", Duration::from_secs(60))
            .is_some(),
        "{}",
        con.output()
    );
    assert_eq!(
        wait_state(&sb, "linux", "shut off", Duration::from_secs(30)),
        "shut off",
        "{}",
        sb.log()
    );
    let reason = sb.virsh_ok(&["domstate", "--reason", "linux"]);
    assert!(reason.contains("shut off (shutdown)"), "{reason}");

    // `virsh shutdown` of a running guest: it powers itself off cleanly.
    drop(con);
    let (mut con, _) = start_to_prompt(&sb, "linux");
    let from = con.output().len();
    sb.virsh_ok(&["shutdown", "linux"]);
    assert!(
        con.expect_from(from, "Requesting system poweroff", Duration::from_secs(60))
            .is_some(),
        "the guest did not power itself off:\n{}",
        con.output()
    );
    assert_eq!(
        wait_state(&sb, "linux", "shut off", Duration::from_secs(30)),
        "shut off"
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let seen = std::fs::read_to_string(&events_file).unwrap_or_default();
    for e in ["Started Booted", "Shutdown Finished", "Stopped Shutdown"] {
        assert!(
            seen.contains(&format!("event 'lifecycle' for domain 'linux': {e}")),
            "no {e} event:\n{seen}"
        );
    }
    let hv = sb.hv_log();
    assert_eq!(hv.matches("shut down (reboot)").count(), 2, "{hv}");
    assert_eq!(hv.matches("shut down (poweroff)").count(), 2, "{hv}");
    assert!(hv.contains("shut down (poweroff)"), "{hv}");
    assert!(!hv.contains("FATAL"), "{hv}");
}

#[test]
fn debian_kernel_on_xen_hv_runs_on_two_vcpus() {
    // The secondary vCPU comes up the way Linux starts CPUs on x86: the MADT lists it, INIT and start-up IPIs
    // through the x2APIC start it in real mode, and it joins with its own Xen timer and event channels
    // (paravirtual spinlocks wait in SCHEDOP_poll).
    let (vmlinux, initramfs) = guest_kernel();
    let sb = Sandbox::up("linux-smp");
    define_linux_smp(&sb, "smp", &vmlinux, &initramfs, 2);
    let (mut con, secs) = start_to_prompt(&sb, "smp");
    println!("xen-hv: 2 vCPUs, virsh start to the shell prompt: {secs:.2} s");
    let from = con.output().len();
    con.send_line("echo online=$(cat /sys/devices/system/cpu/online)")
        .expect("typing");
    assert!(
        con.expect_from(from, "online=0-1", Duration::from_secs(60))
            .is_some(),
        "{}",
        con.output()
    );
    let info = sb.virsh_ok(&["dominfo", "smp"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("CPU(s):") && l.trim_end().ends_with('2')),
        "{info}"
    );
    sb.virsh_ok(&["destroy", "smp"]);
    let hv = sb.hv_log();
    assert!(
        !hv.contains("FATAL") && !hv.contains("triple fault"),
        "{hv}"
    );
}

/// The same kernel, initramfs and command line booted directly by QEMU's PVH loader: seconds to the prompt.
fn native_boot() -> f64 {
    let (vmlinux, initramfs) = guest_kernel();
    let mut m = qemu::Machine::new(Arch::X86_64, vmlinux);
    m.smp = 1;
    m.initrd = Some(initramfs);
    m.append = "console=ttyS0 quiet".to_string();
    let mut s = Session::spawn(m.command()).expect("starting QEMU");
    assert!(
        s.expect(PROMPT, Duration::from_secs(180)).is_some(),
        "{}",
        s.output()
    );
    let secs = s.elapsed().as_secs_f64();
    s.send_line("poweroff").expect("typing");
    let _ = s.wait_exit(Duration::from_secs(30));
    secs
}

#[test]
#[ignore = "a benchmark: scripts/bench-linux-boot runs it"]
fn bench_linux_boot() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (vmlinux, initramfs) = guest_kernel();
    let sb = Sandbox::up("linux-bench");
    define_linux(&sb, "linux", &vmlinux, &initramfs);
    let mut native = Vec::new();
    let mut hv = Vec::new();
    for _ in 0..rounds {
        native.push(native_boot());
        let (con, secs) = start_to_prompt(&sb, "linux");
        drop(con);
        sb.virsh_ok(&["destroy", "linux"]);
        hv.push(secs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (n, h) = (median(&mut native), median(&mut hv));
    println!(
        "linux boot to shell prompt, median of {rounds} (same kernel, initramfs, 1 vCPU, TCG):"
    );
    println!("  QEMU PVH loader (no hypervisor):   {n:.2} s   {native:.2?}");
    println!("  xen-hv, virsh start -> hvc0 prompt: {h:.2} s   {hv:.2?}");
    println!("  ratio: {:.2}x", h / n);
}
