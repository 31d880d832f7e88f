//! Lifecycle tests against the in-memory hypervisor model.

use super::*;
use crate::builder::tests::kernel;
use crate::transport::fake::FakeXen;

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xl-life-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("vmlinuz"), kernel(true, 0x10_0000, &[0x90; 64])).expect("kernel");
        Self { dir }
    }

    fn cfg(&self, text: &str) -> DomainConfig {
        DomainConfig::from_xlcfg(&XlConfig::parse(text).expect("xl.cfg"), &self.dir)
            .expect("config")
    }

    fn ts(&self, x: &FakeXen) -> Toolstack<FakeXen> {
        Toolstack::new(x.clone(), Registry::new(self.dir.join("state")))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn xlcfg_keys_become_a_domain_config() {
    let env = Env::new("cfg");
    let c = env.cfg(
        "name = \"web\"\ntype = \"pvh\"\nmemory = 64\nmaxmem = 96\nvcpus = 2\nkernel = \"vmlinuz\"\n\
         root = \"/dev/xvda1\"\nextra = \"console=hvc0\"\non_reboot = \"destroy\"\non_crash = \"preserve\"\n\
         uuid = \"8f2d0e2a-1b3c-4d5e-9f60-718293a4b5c6\"\n",
    );
    assert_eq!((c.memory_mib, c.max_memory_mib, c.vcpus), (64, 96, 2));
    assert_eq!(c.cmdline, "root=/dev/xvda1 console=hvc0");
    assert_eq!(c.kernel, env.dir.join("vmlinuz"));
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (Action::Destroy, Action::Destroy, Action::Preserve)
    );
    assert_eq!(format_uuid(&c.uuid), "8f2d0e2a-1b3c-4d5e-9f60-718293a4b5c6");
    let bad = |t: &str| {
        DomainConfig::from_xlcfg(&XlConfig::parse(t).expect("parse"), &env.dir)
            .expect_err("invalid")
            .to_string()
    };
    assert!(bad("name=\"a\"\ntype=\"hvm\"\nkernel=\"k\"\n").contains("only type=\"pvh\""));
    assert!(bad("name=\"a\"\n").contains("no kernel"));
    assert!(bad("kernel=\"k\"\n").contains("no name"));
    assert!(bad("name=\"a\"\nkernel=\"k\"\non_crash=\"explode\"\n").contains("not a valid action"));
    assert!(bad("name=\"a\"\nkernel=\"k\"\nuuid=\"xyz\"\n").contains("malformed"));
}

#[test]
fn create_list_pause_destroy() {
    let env = Env::new("basic");
    let x = FakeXen::new(512 << 20);
    let mut ts = env.ts(&x);
    let c = env.cfg("name = \"guest1\"\nmemory = 32\nvcpus = 2\nkernel = \"vmlinuz\"\n");
    let id = ts.create(&c, false).expect("create");
    assert_eq!(id, 1);
    assert!(ts
        .create(&c, false)
        .expect_err("same name")
        .to_string()
        .contains("already exists"));
    let l = ts.list().expect("list");
    assert_eq!(l.iter().map(|d| d.domid).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(l[1].current_memkb, 32 * 1024);
    assert_eq!(l[1].state(), "r-----");
    assert_eq!(ts.lookup("guest1").expect("by name"), 1);
    assert_eq!(ts.lookup("1").expect("by id"), 1);
    assert_eq!(ts.registry.name_of(0).as_deref(), Some("Domain-0"));
    ts.pause(1).expect("pause");
    assert_eq!(ts.info(1).expect("info").state(), "--p---");
    ts.unpause(1).expect("unpause");
    ts.destroy(1).expect("destroy");
    assert!(matches!(ts.info(1), Err(Error::NoSuchDomain(_))));
    assert!(matches!(ts.lookup("guest1"), Err(Error::NoSuchDomain(_))));
    assert!(matches!(ts.destroy(1), Err(Error::NoSuchDomain(_))));
    assert_eq!(ts.list().expect("list").len(), 1);
    // Created paused stays paused.
    let id = ts.create(&c, true).expect("create paused");
    assert!(ts.info(id).expect("info").paused);
}

#[test]
fn shutdown_and_reboot_shut_the_domain_down_with_the_reason() {
    let env = Env::new("req");
    let x = FakeXen::default();
    let mut ts = env.ts(&x);
    let id = ts
        .create(
            &env.cfg("name=\"g\"\nmemory=16\nkernel=\"vmlinuz\"\n"),
            false,
        )
        .expect("create");
    ts.shutdown(id).expect("shutdown");
    ts.reboot(id).expect("reboot");
    assert_eq!(x.state.borrow().domains[&id].shutdown_requests, vec![0, 1]);
    // Xen shuts the domain down at once with the first reason; the exit watcher then applies on_poweroff.
    assert_eq!(ts.info(id).expect("info").shutdown, Some(0));
    assert_eq!(ts.info(id).expect("info").state(), "---s--");
    assert!(ts.shutdown(77).is_err());
}

#[test]
fn on_actions_follow_the_shutdown_reason() {
    let env = Env::new("act");
    let x = FakeXen::default();
    let mut ts = env.ts(&x);
    let c = env.cfg(
        "name=\"g\"\nmemory=16\nkernel=\"vmlinuz\"\non_poweroff=\"destroy\"\non_reboot=\"restart\"\n\
         on_crash=\"preserve\"\n",
    );
    let id = ts.create(&c, false).expect("create");
    // Reboot -> restart: a new domain with the same name, the old one gone.
    x.guest_shutdown(id, schedop::SHUTDOWN_REBOOT);
    let h = ts.handle_exits().expect("handle");
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].action, h[0].reason), (Action::Restart, Some(1)));
    let new = h[0].new_domid.expect("restarted");
    assert_ne!(new, id);
    assert!(ts.info(id).is_err());
    assert_eq!(ts.lookup("g").expect("name"), new);
    assert!(ts.info(new).expect("info").running);
    // Crash -> preserve: stays, shut down, with reason 'c'.
    x.guest_shutdown(new, schedop::SHUTDOWN_CRASH);
    assert!(ts.handle_exits().expect("handle").is_empty());
    assert_eq!(ts.info(new).expect("info").state(), "---sc-");
    // Poweroff -> destroy.
    ts.destroy(new).expect("destroy");
    let id = ts.create(&c, false).expect("create");
    x.guest_shutdown(id, schedop::SHUTDOWN_POWEROFF);
    let h = ts.handle_exits().expect("handle");
    assert_eq!((h[0].action, h[0].new_domid), (Action::Destroy, None));
    assert!(ts.info(id).is_err());
}

#[test]
fn a_suspended_domain_is_left_to_its_saver() {
    let env = Env::new("susp");
    let x = FakeXen::default();
    let mut ts = env.ts(&x);
    let c = env.cfg("name=\"s\"\nmemory=16\nkernel=\"vmlinuz\"\non_poweroff=\"destroy\"\n");
    let id = ts.create(&c, false).expect("create");
    // The guest suspends (SCHEDOP_shutdown with SHUTDOWN_suspend): no on_* action, no exit reported.
    x.guest_shutdown(id, schedop::SHUTDOWN_SUSPEND);
    assert!(ts.handle_exits().expect("handle").is_empty());
    assert_eq!(ts.info(id).expect("still there").shutdown, Some(2));
    assert_eq!(ts.lookup("s").expect("still named"), id);
    // Once the saver destroys it, it is forgotten like any domain that vanished.
    x.state.borrow_mut().domains.remove(&id);
    let h = ts.handle_exits().expect("handle");
    assert_eq!((h[0].domid, h[0].reason), (id, None));
}

#[test]
fn watch_returns_when_the_domain_is_gone_and_follows_restarts() {
    let env = Env::new("watch");
    let x = FakeXen::default();
    let mut ts = env.ts(&x);
    let c = env.cfg("name=\"w\"\nmemory=16\nkernel=\"vmlinuz\"\n");
    let id = ts.create(&c, false).expect("create");
    ts.transport
        .bind_virq(xen_abi::memres::VIRQ_DOM_EXC)
        .expect("bind");
    x.guest_shutdown(id, schedop::SHUTDOWN_REBOOT);
    let mut seen = Vec::new();
    // After the restart the new domain powers off; the fake delivers that once the watcher asks again.
    let x2 = x.clone();
    let r = ts.watch(id, Some(Duration::from_secs(5)), |h| {
        seen.push((h.domid, h.action));
        if let Some(n) = h.new_domid {
            x2.guest_shutdown(n, schedop::SHUTDOWN_POWEROFF);
        }
    });
    r.expect("watch");
    assert_eq!(seen, vec![(id, Action::Restart), (id + 1, Action::Destroy)]);
    assert_eq!(ts.list().expect("list").len(), 1);
}

#[test]
fn physinfo_reports_the_host() {
    let env = Env::new("phys");
    let x = FakeXen::new(1 << 30);
    let mut ts = env.ts(&x);
    let p = ts.physinfo().expect("physinfo");
    assert_eq!((p.nr_cpus, p.total_pages), (2, 262_144));
}
