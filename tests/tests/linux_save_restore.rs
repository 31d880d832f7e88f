//! Save, restore, managed save and snapshots of a running Debian kernel on xen-hv, driven by the stock virsh
//! against the sandbox. The guest runs a counter on its console (`tick-N` every second); every scenario checks
//! that the restored guest goes on counting from where it was saved, takes typed input, and still answers the
//! toolstack's shutdown request (its xenstore nodes came back with it).
//!
//! Saving is Xen's cooperative suspend: virtxend writes `suspend` to the guest's control/shutdown node, the
//! guest's PV drivers freeze it and vCPU 0 calls `SCHEDOP_shutdown(SHUTDOWN_suspend)`; its memory and HVM
//! context go to the file; restoring builds a new domain from them and the guest finds itself resumed.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::console::Session;
use e2e::guest_kernel;
use e2e::sandbox::{display, text, Sandbox};

const PROMPT: &str = "xenrs-guest# ";

fn define(sb: &Sandbox, name: &str, disk: Option<&Path>) {
    define_smp(sb, name, disk, 1);
}

fn define_smp(sb: &Sandbox, name: &str, disk: Option<&Path>, vcpus: u32) {
    let (vmlinux, initramfs) = guest_kernel();
    let disk = disk.map_or(String::new(), |d| {
        format!(
            "  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source file='{}'/>\n      <target dev='xvda' bus='xen'/>\n    </disk>\n  </devices>\n",
            display(d)
        )
    });
    let xml = format!(
        "<domain type='xen'>\n  <name>{name}</name>\n  <memory unit='MiB'>160</memory>\n  <vcpu>{vcpus}</vcpu>\n  \
         <os>\n    <type arch='x86_64' machine='xenpvh'>xenpvh</type>\n    <kernel>{}</kernel>\n    \
         <initrd>{}</initrd>\n    <cmdline>console=hvc0 quiet</cmdline>\n  </os>\n  \
         <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n\
         {disk}</domain>\n",
        display(&vmlinux),
        display(&initramfs)
    );
    let path = sb.path(&format!("{name}.xml"));
    std::fs::write(&path, xml).expect("writing the domain XML");
    sb.virsh_ok(&["define", &display(&path)]);
}

/// The ticks the counter printed in `out`, in order.
fn ticks(out: &str) -> Vec<u64> {
    out.split("tick-")
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Waits until the console shows a tick of at least `n`; returns the highest tick seen.
fn wait_tick(sb: &Sandbox, con: &mut Session, from: usize, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = con.output();
        let seen = ticks(&out[from.min(out.len())..]);
        if let Some(&max) = seen.iter().max() {
            if max >= n {
                return max;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no tick-{n} on the console:\n{}\n--- daemon ---\n{}\n--- xen-hv ---\n{}",
            con.output(),
            sb.log(),
            sb.hv_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for `virsh domstate --reason` to read `want` (or to start with it, when `want` names no reason).
fn wait_state(sb: &Sandbox, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = sb.virsh(&["domstate", "--reason", name]);
        let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if state == want || (!want.contains('(') && state.starts_with(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is '{state}', not '{want}'\n{}",
            sb.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the domain, waits for the shell and starts the counter; returns the console.
fn start_counting(sb: &Sandbox, name: &str) -> Session {
    sb.virsh_ok(&["start", name]);
    let mut con = sb.console(name);
    assert!(
        con.expect(PROMPT, Duration::from_secs(180)).is_some(),
        "no shell prompt:\n{}\n--- xen-hv ---\n{}",
        con.output(),
        sb.hv_log()
    );
    con.send_line("i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done &")
        .expect("typing");
    wait_tick(sb, &mut con, 0, 3);
    con
}

/// Attaches a console to the restored guest and checks that its counter resumes after `last` (not from 0) but
/// before `not_after`, and that a typed command runs.
fn check_resumed(sb: &Sandbox, name: &str, last: u64, not_after: u64) -> Session {
    let mut con = sb.console(name);
    let max = wait_tick(sb, &mut con, 0, last + 2);
    let seen = ticks(&con.output());
    let first_new = seen
        .iter()
        .copied()
        .find(|&t| t > last)
        .expect("a new tick");
    assert!(
        first_new <= not_after,
        "the counter jumped from {last} to {first_new} (max {max}): it did not resume from the saved point\n{}",
        con.output()
    );
    assert!(
        !seen.contains(&0),
        "the counter started again from 0: the guest rebooted\n{}",
        con.output()
    );
    let from = con.output().len();
    con.send_line("echo alive-$((6*7))").expect("typing");
    assert!(
        con.expect_from(from, "alive-42", Duration::from_secs(60))
            .is_some(),
        "typed input does not reach the restored guest:\n{}",
        con.output()
    );
    con
}

#[test]
fn save_restore_and_managed_save_of_a_running_linux_guest() {
    let sb = Sandbox::up("linux-save");
    define(&sb, "linux", None);
    let mut con = start_counting(&sb, "linux");

    // virsh save: the domain stops (reason saved) and the file carries its XML.
    let image = sb.path("linux.save");
    let before = wait_tick(&sb, &mut con, 0, 4);
    let t0 = Instant::now();
    sb.virsh_ok(&["save", "linux", &display(&image)]);
    println!(
        "virsh save of a 160 MiB guest: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    drop(con);
    wait_state(&sb, "linux", "shut off (saved)");
    let size = std::fs::metadata(&image).expect("save image").len();
    println!("save image: {} KiB", size / 1024);
    let xml = sb.virsh_ok(&["save-image-dumpxml", &display(&image)]);
    assert!(xml.contains("<name>linux</name>"), "{xml}");

    let t0 = Instant::now();
    sb.virsh_ok(&["restore", &display(&image)]);
    println!("virsh restore: {:.2} s", t0.elapsed().as_secs_f64());
    wait_state(&sb, "linux", "running (restored)");
    // Ticks printed between the last one seen and the suspend may still be in the saved ring.
    let con = check_resumed(&sb, "linux", before, before + 4);
    drop(con);

    // Managed save: `virsh start` restores it.
    let mut con = sb.console("linux");
    let last = wait_tick(&sb, &mut con, 0, before + 4);
    sb.virsh_ok(&["managedsave", "linux"]);
    drop(con);
    wait_state(&sb, "linux", "shut off (saved)");
    let info = sb.virsh_ok(&["dominfo", "linux"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes")),
        "{info}"
    );
    sb.virsh_ok(&["start", "linux"]);
    wait_state(&sb, "linux", "running (restored)");
    let info = sb.virsh_ok(&["dominfo", "linux"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("no")),
        "the image is consumed by the start: {info}"
    );
    let _con = check_resumed(&sb, "linux", last, last + 4);

    // The restored guest still answers the toolstack's shutdown request.
    sb.virsh_ok(&["shutdown", "linux"]);
    wait_state(&sb, "linux", "shut off (shutdown)");

    // A garbage file is refused cleanly and the daemon goes on.
    let junk = sb.path("junk.save");
    std::fs::write(&junk, b"this is not a save image").expect("junk");
    let o = sb.virsh(&["restore", &display(&junk)]);
    assert!(!o.status.success(), "{}", text(&o));
    sb.virsh_ok(&["list", "--all"]);
}

#[test]
fn snapshot_of_a_running_linux_guest_reverts_to_its_counter() {
    let sb = Sandbox::up("linux-snap");
    let disk = sb.path("disk.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", &display(&disk), "64M"])
        .output()
        .expect("qemu-img");
    assert!(o.status.success(), "{}", text(&o));
    define(&sb, "linux", Some(&disk));
    let mut con = start_counting(&sb, "linux");

    // A snapshot of the running guest (memory and disk); it goes on running.
    let at = wait_tick(&sb, &mut con, 0, 4);
    let t0 = Instant::now();
    sb.virsh_ok(&["snapshot-create-as", "linux", "counting"]);
    println!(
        "snapshot-create-as (memory + disk): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    wait_state(&sb, "linux", "running");
    let xml = sb.virsh_ok(&["snapshot-dumpxml", "linux", "counting"]);
    assert!(xml.contains("<state>running</state>"), "{xml}");
    assert!(xml.contains("<memory snapshot='internal'"), "{xml}");
    let o = std::process::Command::new("qemu-img")
        .args(["snapshot", "-l", &display(&disk)])
        .output()
        .expect("qemu-img");
    assert!(text(&o).contains("counting"), "{}", text(&o));
    // More progress after the snapshot.
    let from = con.output().len();
    let later = wait_tick(&sb, &mut con, from, at + 8);
    drop(con);

    // Revert: the guest is back at the snapshot's count, not where it had got to.
    let t0 = Instant::now();
    sb.virsh_ok(&["snapshot-revert", "linux", "counting"]);
    println!("snapshot-revert: {:.2} s", t0.elapsed().as_secs_f64());
    wait_state(&sb, "linux", "running (from snapshot)");
    let _con = check_resumed(&sb, "linux", at, at + 4);
    assert!(at + 4 < later, "the counter had moved on to {later}");

    // Reverting to a missing snapshot is a clean error that changes nothing.
    let o = sb.virsh(&["snapshot-revert", "linux", "missing"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing"), "{}", text(&o));
    wait_state(&sb, "linux", "running (from snapshot)");
    sb.virsh_ok(&["destroy", "linux"]);
}

#[test]
fn snapshot_of_a_two_vcpu_linux_guest() {
    let sb = Sandbox::up("linux-snap-smp");
    define_smp(&sb, "linux2", None, 2);
    let mut con = start_counting(&sb, "linux2");
    let at = wait_tick(&sb, &mut con, 0, 4);
    sb.virsh_ok(&["snapshot-create-as", "linux2", "two"]);
    let from = con.output().len();
    let later = wait_tick(&sb, &mut con, from, at + 8);
    drop(con);
    sb.virsh_ok(&["snapshot-revert", "linux2", "two"]);
    let mut con = check_resumed(&sb, "linux2", at, at + 4);
    assert!(at + 4 < later);
    let from = con.output().len();
    con.send_line("cat /sys/devices/system/cpu/online")
        .expect("typing");
    assert!(
        con.expect_from(from, "0-1", Duration::from_secs(60))
            .is_some(),
        "{}",
        con.output()
    );
}

/// One QMP command on a fresh connection to `sock` (after the capabilities handshake); the reply line.
fn qmp(sock: &Path, cmd: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).expect("QMP socket");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).expect("QMP greeting");
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .expect("QMP");
    line.clear();
    r.read_line(&mut line).expect("QMP");
    w.write_all(cmd.as_bytes()).expect("QMP");
    w.write_all(b"\n").expect("QMP");
    // Skip asynchronous events.
    loop {
        line.clear();
        r.read_line(&mut line).expect("QMP reply");
        if !line.contains("\"event\"") {
            return line;
        }
    }
}

fn wait_qmp(sock: &Path, cmd: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if sock.exists() {
            let reply = qmp(sock, cmd);
            if reply.contains(want) {
                return;
            }
            assert!(!reply.contains("\"failed\""), "{reply}");
        }
        assert!(Instant::now() < deadline, "no {want} from {cmd}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The same guest under QEMU's own PVH loader (no hypervisor), saved with QEMU's migration to a file and
/// loaded back: (save seconds, restore seconds, image bytes).
fn native_save_restore(dir: &Path) -> (f64, f64, u64) {
    let (vmlinux, initramfs) = guest_kernel();
    let image = dir.join("native.state");
    let _ = std::fs::remove_file(&image);
    let machine = |sock: &Path, incoming: bool| {
        let mut m = e2e::qemu::Machine::new(e2e::Arch::X86_64, vmlinux.clone());
        m.smp = 1;
        m.mem_mib = 160;
        m.initrd = Some(initramfs.clone());
        m.append = "console=ttyS0 quiet".to_string();
        m.extra = vec![
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", display(sock)),
        ];
        if incoming {
            m.extra.push("-incoming".into());
            m.extra.push(format!("exec:cat {}", display(&image)));
        }
        m
    };
    let sock = dir.join("qmp-a.sock");
    let _ = std::fs::remove_file(&sock);
    let mut s = Session::spawn(machine(&sock, false).command()).expect("QEMU");
    assert!(
        s.expect(PROMPT, Duration::from_secs(180)).is_some(),
        "{}",
        s.output()
    );
    let t0 = Instant::now();
    let reply = qmp(
        &sock,
        &format!(
            "{{\"execute\":\"migrate\",\"arguments\":{{\"uri\":\"exec:cat > {}\"}}}}",
            display(&image)
        ),
    );
    assert!(reply.contains("return"), "{reply}");
    wait_qmp(&sock, "{\"execute\":\"query-migrate\"}", "\"completed\"");
    let save = t0.elapsed().as_secs_f64();
    drop(s);
    let size = std::fs::metadata(&image).expect("state").len();
    let sock = dir.join("qmp-b.sock");
    let _ = std::fs::remove_file(&sock);
    let t0 = Instant::now();
    let mut s = Session::spawn(machine(&sock, true).command()).expect("QEMU");
    wait_qmp(&sock, "{\"execute\":\"query-status\"}", "\"running\"");
    let restore = t0.elapsed().as_secs_f64();
    // The first byte typed into a freshly loaded serial port can be lost: start with an empty line.
    s.send_line("").expect("typing");
    std::thread::sleep(Duration::from_millis(500));
    s.send_line("echo back-$((6*7))").expect("typing");
    assert!(
        s.expect("back-42", Duration::from_secs(60)).is_some(),
        "{}",
        s.output()
    );
    (save, restore, size)
}

#[test]
#[ignore = "a benchmark: scripts/bench-save-restore runs it"]
fn bench_save_restore() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let sb = Sandbox::up("linux-save-bench");
    define(&sb, "linux", None);
    let con = start_counting(&sb, "linux");
    drop(con);
    let image = sb.path("bench.save");
    let (mut save, mut restore, mut nsave, mut nrestore) = (vec![], vec![], vec![], vec![]);
    let (mut size, mut nsize) = (0, 0);
    for _ in 0..rounds {
        let t0 = Instant::now();
        sb.virsh_ok(&["save", "linux", &display(&image)]);
        save.push(t0.elapsed().as_secs_f64());
        size = std::fs::metadata(&image).expect("image").len();
        let t0 = Instant::now();
        sb.virsh_ok(&["restore", &display(&image)]);
        restore.push(t0.elapsed().as_secs_f64());
        let (s, r, n) = native_save_restore(&sb.dir);
        nsave.push(s);
        nrestore.push(r);
        nsize = n;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "save and restore of a running 160 MiB Linux guest, median of {rounds} (TCG, 1 vCPU):"
    );
    println!(
        "  xen-hv, virsh save:            {:.2} s  {save:.2?}, image {} MiB",
        median(&mut save),
        size >> 20
    );
    println!(
        "  xen-hv, virsh restore:         {:.2} s  {restore:.2?}",
        median(&mut restore)
    );
    println!(
        "  QEMU migrate to a file:        {:.2} s  {nsave:.2?}, image {} MiB",
        median(&mut nsave),
        nsize >> 20
    );
    println!(
        "  QEMU -incoming from the file:  {:.2} s  {nrestore:.2?}",
        median(&mut nrestore)
    );
}
