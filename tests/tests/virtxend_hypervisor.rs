//! virtxend's choice of hypervisor: a bad `--hypervisor` or an unreachable one stops the daemon with a clear
//! error instead of serving a fake backend.

use std::process::Command;

use e2e::virtxend::binary;

fn start(hypervisor: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!(
        "virtxend-hv-{}-{}",
        hypervisor.len(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Command::new(binary())
        .args([
            "--config",
            "/dev/null",
            "--auth",
            "none",
            "--hypervisor",
            hypervisor,
        ])
        .arg("--socket")
        .arg(dir.join("sock"))
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .expect("starting virtxend")
}

#[test]
fn unknown_or_unreachable_hypervisors_are_errors() {
    let out = start("vmware");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown --hypervisor 'vmware'"), "{err}");

    let out = start("sandbox:/nonexistent/xen-rs-sandbox");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("virtxend: hypervisor:") && err.contains("ctl.sock"),
        "{err}"
    );
}
