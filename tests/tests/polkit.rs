//! Authorization through a real polkitd on a real (private) system bus: the decisions the daemon relies on.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use e2e::system_bus::{is_root, wait_for, PolkitEnv};
use polkit::{Authority, Decision, Subject, ACTION_MANAGE, ACTION_MONITOR};

const NOBODY: u32 = 65534;

fn policy_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../polkit/data/org.libvirt.unix.policy")
}

/// A process running as `nobody`, the unprivileged peer whose rights are checked.
fn unprivileged_process() -> Child {
    Command::new("setpriv")
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
            "sleep",
            "60",
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("starting a process as nobody")
}

#[test]
fn polkitd_decides_for_an_unprivileged_user() {
    if !is_root() {
        eprintln!("SKIP: starting polkitd with private mounts needs root");
        return;
    }
    let env = PolkitEnv::start(&[&policy_file()]);
    let authority = Authority::at(&env.address).expect("connecting to the private system bus");
    let mut child = unprivileged_process();
    let subject = Subject::from_peer(child.id(), NOBODY).expect("reading the peer's start time");

    // The read-only socket's action is granted to everyone by the shipped policy.
    assert_eq!(
        authority.check(&subject, ACTION_MONITOR, false).unwrap(),
        Decision::Authorized
    );
    // Managing needs an administrator: not authorized, only a challenge an agent would have to answer.
    assert_eq!(
        authority.check(&subject, ACTION_MANAGE, false).unwrap(),
        Decision::Challenge
    );
    assert_eq!(
        authority.check(&subject, ACTION_MANAGE, true).unwrap(),
        Decision::Challenge
    );

    // A rule that forbids the action outright gives a plain denial.
    env.add_rules(
        "10-test.rules",
        "polkit.addRule(function(action, subject) {\n  if (action.id == \"org.libvirt.unix.manage\" && \
         subject.user == \"nobody\") { return polkit.Result.NO; }\n});\n",
    );
    wait_for(
        || {
            authority
                .check(&subject, ACTION_MANAGE, false)
                .map(|d| d == Decision::Denied { dismissed: false })
                .unwrap_or(false)
        },
        "polkitd to apply the denying rule",
    );

    // A rules file that grants the user the action changes polkitd's answer.
    env.add_rules(
        "10-test.rules",
        "polkit.addRule(function(action, subject) {\n  if (action.id == \"org.libvirt.unix.manage\" && \
         subject.user == \"nobody\") { return polkit.Result.YES; }\n});\n",
    );
    wait_for(
        || {
            authority
                .check(&subject, ACTION_MANAGE, false)
                .map(|d| d == Decision::Authorized)
                .unwrap_or(false)
        },
        "polkitd to apply the new rule",
    );

    let _ = child.kill();
    let _ = child.wait();
}
