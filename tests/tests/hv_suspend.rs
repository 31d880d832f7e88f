//! The hypervisor's side of save/restore, on xen-hv in QEMU through the real control channel: a guest that
//! suspends itself (`SCHEDOP_shutdown(SHUTDOWN_suspend)`) stays shut down with reason suspend and its vCPU state
//! kept; `XEN_DOMCTL_gethvmcontext` returns Xen's HVM context records; a checkpoint-style resume (rax set to 1
//! through `sethvmcontext`, then `resumedomain`) lets it go on in the same domain; bad records are refused.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::console::Session;
use e2e::sandbox::{text, Sandbox};
use libxl_rs::transport::{sandbox::SandboxTransport, Transport};
use xen_abi::errno::Errno;
use xen_abi::hvmsave as hs;
use xen_abi::plain::Plain;

fn shutdown_reason(sb: &Sandbox, name: &str) -> Option<char> {
    // `xl list`: the state column's fourth letter is `s` for a shut down domain.
    let l = text(&sb.xl(&["list", name]));
    l.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .and_then(|s| s.chars().nth(3))
}

#[test]
fn a_suspended_guest_keeps_its_state_and_resumes_where_it_stopped() {
    let guest = xtask::build::build_guests(&["suspender"]).expect("building the guest")[0]
        .1
        .clone();
    let sb = Sandbox::up("hv-suspend");
    let cfg = sb.path("suspender.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"suspender\"\ntype = \"pvh\"\nmemory = 8\nvcpus = 1\nkernel = \"{}\"\n\
             on_poweroff = \"preserve\"\n",
            guest.display()
        ),
    )
    .expect("config");
    let o = sb.xl(&["create", "-p", cfg.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "xl create failed: {}", text(&o));
    let mut cmd = Command::new(xtask::build::target_dir().join("debug/xl"));
    cmd.args(["console", "suspender"])
        .env("XEN_RS_SANDBOX", &sb.dir)
        .env("XEN_RS_STATE_DIR", sb.dir.join("xl"));
    let mut con = Session::spawn(cmd).expect("xl console");
    std::thread::sleep(Duration::from_millis(500));
    let o = sb.xl(&["unpause", "suspender"]);
    assert!(o.status.success(), "xl unpause failed: {}", text(&o));
    assert!(
        con.expect("suspender: suspending", Duration::from_secs(60))
            .is_some(),
        "{}\n{}",
        con.output(),
        sb.hv_log()
    );
    let start = Instant::now();
    while shutdown_reason(&sb, "suspender") != Some('s') {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not shut down: {}",
            text(&sb.xl(&["list"]))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = text(&sb.xl(&["list", "suspender"]));
    let id: u16 = list
        .lines()
        .find(|l| l.starts_with("suspender"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("domid in xl list");

    let mut t = SandboxTransport::connect(
        &sb.dir.join("ctl.sock"),
        &sb.dir.join("ram"),
        Duration::from_secs(10),
    )
    .expect("control channel");
    let info = t.get_hvm_context(id, 1).expect("gethvmcontext");
    let recs: Vec<_> = hs::parse(&info).expect("valid records").collect();
    let kinds: Vec<(u16, u16)> = recs.iter().map(|r| (r.typecode, r.instance)).collect();
    assert_eq!(
        kinds,
        [(hs::CPU, 0), (hs::LAPIC, 0), (hs::LAPIC_REGS, 0)],
        "one vCPU's records"
    );
    let mut cpu = hs::HvmHwCpu::read_from(recs[0].data).expect("cpu record");
    assert_eq!(cpu.gprs[hs::GPR_RAX], 0, "the suspend hypercall returns 0");
    assert_ne!(cpu.rip, 0);
    assert_eq!(cpu.msr_efer & (1 << 10), 1 << 10, "long mode");
    assert_eq!(cpu.arbytes[hs::SEG_CS] & (1 << 13), 1 << 13, "64-bit code");

    // Bad records are refused and change nothing.
    let e = t.set_hvm_context(id, b"not a context").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::Einval), "{e}");
    let mut bad = info.clone();
    // A CPU record for a vCPU the domain does not have: the instance of the record after the header.
    bad[hs::DESC_LEN + 24 + 2] = 7;
    let e = t.set_hvm_context(id, &bad).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::Einval), "{e}");
    let e = t.get_hvm_context(4000, 1).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::Esrch), "{e}");

    // A cancelled suspend: the hypercall returns 1 and the guest goes on in the same domain.
    cpu.gprs[hs::GPR_RAX] = 1;
    let mut buf = vec![0u8; info.len()];
    let mut w = hs::Writer::new(
        &mut buf,
        &hs::HvmSaveHeader::read_from(&info[8..]).expect("header"),
    );
    w.push(hs::CPU, 0, cpu.as_bytes());
    w.push(hs::LAPIC, 0, recs[1].data);
    w.push(hs::LAPIC_REGS, 0, recs[2].data);
    let n = w.finish().expect("fits");
    t.set_hvm_context(id, &buf[..n]).expect("sethvmcontext");
    t.resume_domain(id).expect("resumedomain");
    for line in [
        "suspender: suspend returned 1",
        "suspender: count 6",
        "PASS suspender",
    ] {
        assert!(
            con.expect(line, Duration::from_secs(60)).is_some(),
            "{line}: {}\n{}",
            con.output(),
            sb.hv_log()
        );
    }
    let o = sb.xl(&["destroy", "suspender"]);
    assert!(o.status.success(), "{}", text(&o));
}
