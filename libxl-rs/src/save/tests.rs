//! Save and restore against the in-memory hypervisor model, with a test double playing the guest.

use std::path::PathBuf;

use super::*;
use crate::builder::tests::kernel;
use crate::lifecycle::Registry;
use crate::transport::fake::{context_of, FakeXen};
use crate::xlcfg::XlConfig;

struct Env {
    dir: PathBuf,
    x: FakeXen,
}

impl Env {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xl-save-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("vmlinuz"), kernel(true, 0x10_0000, &[0x90; 64])).expect("kernel");
        Self {
            dir,
            x: FakeXen::default(),
        }
    }

    fn cfg(&self) -> DomainConfig {
        let text = "name=\"g\"\nmemory=16\nvcpus=2\nkernel=\"vmlinuz\"\n\
                    uuid=\"8f2d0e2a-1b3c-4d5e-9f60-718293a4b5c6\"\n";
        DomainConfig::from_xlcfg(&XlConfig::parse(text).expect("xl.cfg"), &self.dir)
            .expect("config")
    }

    fn ts(&self) -> Toolstack<FakeXen> {
        let mut ts = Toolstack::new(self.x.clone(), Registry::new(self.dir.join("state")));
        ts.xenstore = true;
        ts
    }

    fn domains(&self) -> Vec<u16> {
        self.x.state.borrow().domains.keys().copied().collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The xenstored plus the guest's PV drivers: a guest with `suspends` acknowledges a suspend request and
/// shuts down with reason suspend, as Linux's `do_suspend` ends in `SCHEDOP_shutdown`.
struct Guest {
    store: Store,
    x: FakeXen,
    suspends: bool,
}

impl Guest {
    fn new(env: &Env) -> Self {
        Self {
            store: Store::new(),
            x: env.x.clone(),
            suspends: true,
        }
    }

    /// The guest of `domid` boots: its PV drivers announce what they support.
    fn boot(&mut self, domid: u16, features: &[&str]) {
        self.store.introduce(domid, "g", 16384);
        let home = Store::home(domid);
        for f in features {
            self.store.set(&format!("{home}/control/feature-{f}"), b"1");
        }
        self.store.set(&format!("{home}/data/greeting"), b"hello");
    }

    fn node(&self, domid: u16, rel: &str) -> Option<Vec<u8>> {
        self.store
            .get(&format!("{}/{rel}", Store::home(domid)))
            .map(<[u8]>::to_vec)
    }
}

impl GuestStore for Guest {
    fn request_suspend(&mut self, domid: u16) -> Result<bool, Error> {
        let asked = self.store.request_suspend(domid)?;
        if asked && self.suspends {
            self.store
                .set(&format!("{}/control/shutdown", Store::home(domid)), b"");
            self.x.guest_shutdown(domid, schedop::SHUTDOWN_SUSPEND);
        }
        Ok(asked)
    }
    fn cancel_suspend(&mut self, domid: u16) {
        self.store.cancel_suspend(domid);
    }
    fn nodes(&mut self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, Error> {
        GuestStore::nodes(&mut self.store, domid)
    }
    fn restore_domain(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        self.store.restore_domain(domid, name, memory_kib, nodes)
    }
    fn release(&mut self, domid: u16) {
        GuestStore::release(&mut self.store, domid);
    }
}

fn cpu(rip: u64, rax: u64) -> HvmHwCpu {
    let mut c = HvmHwCpu {
        rip,
        cr3: 0x1234_5000,
        ..HvmHwCpu::default()
    };
    c.gprs[hvmsave::GPR_RAX] = rax;
    c.gprs[3] = 0x5151;
    c
}

/// A running guest of 16 MiB and 2 vCPUs with distinct memory and processor state.
fn running_guest(env: &Env, ts: &mut Toolstack<FakeXen>, g: &mut Guest, paused: bool) -> u16 {
    let id = ts.create(&env.cfg(), paused).expect("create");
    g.boot(id, &["suspend", "poweroff"]);
    // Page 0x200 all zeroes, page 0x300 with a pattern, the rest as the model left it.
    assert!(env.x.write_guest(id, 0x200 * 4096, &[0u8; 4096]));
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    assert!(env.x.write_guest(id, 0x300 * 4096, &pattern));
    let ctx = context_of(&[
        (0, cpu(0xffff_ffff_8100_0000, 0)),
        (1, cpu(0xffff_ffff_8100_1000, 77)),
    ]);
    env.x
        .state
        .borrow_mut()
        .domains
        .get_mut(&id)
        .expect("dom")
        .hvm_context = Some(ctx);
    id
}

fn memory(x: &FakeXen, domid: u16) -> Vec<u8> {
    x.read_guest(domid, 0, 16 << 20).expect("all RAM")
}

/// The frames an image has pages for.
fn saved_frames(image: &[u8]) -> Vec<u64> {
    let mut r = Reader::new(image);
    r.header().expect("header");
    while r.record().expect("record").0 != rec::LIBXC_CONTEXT {}
    r.xc_headers().expect("xc");
    let mut out = Vec::new();
    loop {
        let (kind, body) = r.record().expect("record");
        match kind {
            xc::PAGE_DATA => out.extend(stream::decode_page_data(&body).expect("pages").0),
            xc::END => return out,
            _ => {}
        }
    }
}

fn options(after: AfterSave) -> SaveOptions {
    SaveOptions {
        after,
        suspend_timeout: Duration::from_secs(5),
    }
}

#[test]
fn save_and_restore_bring_back_memory_rings_vcpu_state_and_xenstore() {
    let env = Env::new("round");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = running_guest(&env, &mut ts, &mut g, false);
    let before = memory(&env.x, id);
    let ctx_before = env.x.state.borrow().domains[&id].context();
    let (console_gfn, store_gfn) = {
        let st = env.x.state.borrow();
        let p = &st.domains[&id].params;
        (
            p[&memres::HVM_PARAM_CONSOLE_PFN],
            p[&memres::HVM_PARAM_STORE_PFN],
        )
    };
    let mut image = Vec::new();
    ts.save(id, &mut image, &mut g, &options(AfterSave::Stop))
        .expect("save");
    // The domain is gone and forgotten; the request was taken by the guest.
    assert_eq!(env.domains(), vec![0]);
    assert!(ts.registry.get(id).is_none());
    // Zero pages are not in the image.
    let frames = saved_frames(&image);
    assert!(!frames.contains(&0x200));
    assert!(frames.contains(&0x300));
    let nonzero: Vec<u64> = (0..4096u64)
        .filter(|f| before[*f as usize * 4096..][..4096].iter().any(|b| *b != 0))
        .collect();
    assert_eq!(
        frames, nonzero,
        "the empty rings and the zeroed page are left out"
    );
    assert_eq!(frames.len(), 4093);

    let new = ts
        .restore(&env.cfg(), &image[..], &mut g, false)
        .expect("restore");
    assert_ne!(new, id);
    assert_eq!(memory(&env.x, new), before, "every byte of RAM");
    let st = env.x.state.borrow();
    let d = &st.domains[&new];
    assert_eq!(d.create.handle, env.cfg().uuid);
    assert_eq!((d.create.max_vcpus, d.max_memkb), (2, 16 * 1024));
    assert_eq!(d.e820.len(), 3, "the same memory map");
    assert_eq!(
        d.hvm_context.as_ref(),
        Some(&ctx_before),
        "vCPU state loaded"
    );
    assert!(d.vcpus.is_empty(), "no boot entry state");
    assert_eq!(d.online_vcpus(), vec![0, 1]);
    assert!(!d.paused, "started");
    // The rings are where they were, on fresh channels for the control domain.
    assert_eq!(d.params[&memres::HVM_PARAM_CONSOLE_PFN], console_gfn);
    assert_eq!(d.params[&memres::HVM_PARAM_STORE_PFN], store_gfn);
    assert_eq!(d.unbound, vec![(1, 0), (2, 0)]);
    assert_eq!(d.params[&memres::HVM_PARAM_CONSOLE_EVTCHN], 1);
    assert_eq!(d.params[&memres::HVM_PARAM_STORE_EVTCHN], 2);
    drop(st);
    // Its xenstore: the guest's nodes under the new ID, nothing pending, and it still answers requests.
    assert_eq!(g.node(new, "data/greeting").as_deref(), Some(&b"hello"[..]));
    assert_eq!(g.node(new, "control/shutdown").as_deref(), Some(&b""[..]));
    assert_eq!(
        g.node(new, "domid"),
        Some(new.to_string().into_bytes()),
        "its new ID"
    );
    assert!(g.store.request_shutdown(new, "poweroff"));
    assert_eq!(ts.lookup("g").expect("by name"), new);
    let cfg = ts.registry.get(new).expect("recorded");
    assert_eq!((cfg.memory_mib, cfg.vcpus), (16, 2));
    // Saving the restored domain gives the same image shape again.
    let mut again = Vec::new();
    ts.save(new, &mut again, &mut g, &options(AfterSave::Stop))
        .expect("save again");
    assert_eq!(saved_frames(&again), frames);
}

#[test]
fn a_snapshot_lets_the_guest_go_on_as_a_cancelled_suspend() {
    let env = Env::new("cont");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = running_guest(&env, &mut ts, &mut g, false);
    let mut image = Vec::new();
    ts.save(id, &mut image, &mut g, &options(AfterSave::Continue))
        .expect("save");
    let st = env.x.state.borrow();
    let d = &st.domains[&id];
    assert_eq!((d.shutdown, d.resumed, d.paused), (None, 1, false));
    // The suspend hypercall returns 1 on vCPU 0; the other vCPU is untouched.
    let recs: Vec<_> = hvmsave::parse(d.hvm_context.as_deref().expect("ctx"))
        .expect("records")
        .collect();
    let rax = |i: usize| HvmHwCpu::read_from(recs[i].data).expect("cpu").gprs[0];
    assert_eq!((recs[0].instance, rax(0)), (0, 1));
    assert_eq!((recs[1].instance, rax(1)), (1, 77));
    drop(st);
    // The image holds the state at suspend time (rax 0), so a restore returns 0 from the hypercall.
    let new = ts
        .restore(
            &DomainConfig {
                name: "copy".into(),
                ..env.cfg()
            },
            &image[..],
            &mut g,
            true,
        )
        .expect("restore");
    let st = env.x.state.borrow();
    let recs: Vec<_> = hvmsave::parse(st.domains[&new].hvm_context.as_deref().expect("ctx"))
        .expect("records")
        .collect();
    assert_eq!(HvmHwCpu::read_from(recs[0].data).expect("cpu").gprs[0], 0);
    assert!(st.domains[&new].paused, "left paused");
}

#[test]
fn a_paused_domain_is_suspended_and_paused_again() {
    let env = Env::new("paused");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = running_guest(&env, &mut ts, &mut g, true);
    let mut image = Vec::new();
    ts.save(id, &mut image, &mut g, &options(AfterSave::Continue))
        .expect("save");
    let d = env.x.state.borrow().domains[&id].clone();
    assert_eq!((d.paused, d.shutdown, d.resumed), (true, None, 1));
}

#[test]
fn a_guest_without_suspend_support_is_refused_and_keeps_running() {
    let env = Env::new("nosusp");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = ts.create(&env.cfg(), false).expect("create");
    g.boot(id, &["poweroff", "reboot"]);
    let mut image = Vec::new();
    let e = ts
        .save(id, &mut image, &mut g, &options(AfterSave::Stop))
        .expect_err("refused");
    assert!(matches!(e, Error::NoSuspend(d) if d == id), "{e}");
    assert!(e.to_string().contains("does not support suspend"), "{e}");
    assert!(image.is_empty());
    assert_eq!(g.node(id, "control/shutdown").as_deref(), Some(&b""[..]));
    assert!(ts.info(id).expect("still there").running);
    // Domains this toolstack did not build are refused too.
    let e = ts
        .save(0, &mut image, &mut g, &options(AfterSave::Stop))
        .expect_err("dom0");
    assert!(e.to_string().contains("layout is unknown"), "{e}");
}

#[test]
fn a_guest_that_does_not_act_times_out_and_keeps_running() {
    let env = Env::new("slow");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = running_guest(&env, &mut ts, &mut g, false);
    g.suspends = false;
    let mut image = Vec::new();
    let e = ts
        .save(
            id,
            &mut image,
            &mut g,
            &SaveOptions {
                after: AfterSave::Stop,
                suspend_timeout: Duration::from_millis(50),
            },
        )
        .expect_err("timeout");
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(e.to_string().contains("to suspend"), "{e}");
    assert!(image.is_empty());
    // The request is withdrawn, so a late guest does not suspend with nobody saving it.
    assert_eq!(g.node(id, "control/shutdown").as_deref(), Some(&b""[..]));
    assert!(ts.info(id).expect("still there").running);
}

/// A target that fails once `room` bytes are written.
struct Full {
    room: usize,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room < buf.len() {
            return Err(std::io::Error::other("no space left on device"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SaveTarget for Full {
    fn commit(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_image_that_cannot_be_written_leaves_the_domain_running() {
    let env = Env::new("full");
    let mut ts = env.ts();
    let mut g = Guest::new(&env);
    let id = running_guest(&env, &mut ts, &mut g, false);
    let e = ts
        .save(
            id,
            &mut Full { room: 3 << 20 },
            &mut g,
            &options(AfterSave::Stop),
        )
        .expect_err("disk full");
    assert!(e.to_string().contains("no space left"), "{e}");
    let d = env.x.state.borrow().domains[&id].clone();
    assert_eq!((d.shutdown, d.resumed, d.paused), (None, 1, false));
    assert!(ts.registry.get(id).is_some());
}

fn valid_image(env: &Env, g: &mut Guest) -> Vec<u8> {
    let mut ts = env.ts();
    let id = running_guest(env, &mut ts, g, false);
    let mut image = Vec::new();
    ts.save(id, &mut image, g, &options(AfterSave::Stop))
        .expect("save");
    image
}

/// Changes or drops (`None`) a record, given whether it is in the libxc part, its type and body.
type Edit = dyn Fn(bool, u32, Vec<u8>) -> Option<(u32, Vec<u8>)>;

/// Rewrites an image record by record.
fn rewrite(image: &[u8], edit: &Edit) -> Vec<u8> {
    let mut r = Reader::new(image);
    r.header().expect("header");
    let mut out = Vec::new();
    stream::write_header(&mut out).expect("header");
    let mut inner = false;
    loop {
        let (kind, body) = r.record().expect("record");
        let done = !inner && kind == rec::END;
        let enters = !inner && kind == rec::LIBXC_CONTEXT;
        let leaves = inner && kind == xc::END;
        if let Some((k, b)) = edit(inner, kind, body) {
            stream::write_record(&mut out, k, &[&b]).expect("record");
        }
        if enters {
            let mut xch = [0u8; 40];
            r.xc_headers().expect("xc");
            let mut w = &mut xch[..];
            stream::write_xc_headers(&mut w, 0, 0).expect("xc");
            out.extend_from_slice(&xch);
            inner = true;
        }
        if leaves {
            inner = false;
        }
        if done {
            return out;
        }
    }
}

#[test]
fn truncated_and_malformed_images_are_refused_and_leave_nothing_behind() {
    let env = Env::new("bad");
    let mut g = Guest::new(&env);
    let image = valid_image(&env, &mut g);
    let mut ts = env.ts();
    let refused = |ts: &mut Toolstack<FakeXen>, g: &mut Guest, img: &[u8]| -> String {
        let e = ts
            .restore(&env.cfg(), img, g, false)
            .expect_err("refused")
            .to_string();
        assert_eq!(env.domains(), vec![0], "no domain left: {e}");
        assert!(ts.registry.domids().is_empty(), "{e}");
        e
    };
    // Truncated anywhere: in the header, a record header, the pages, the context, before the end.
    for cut in [
        0,
        7,
        16,
        20,
        60,
        100,
        image.len() / 2,
        image.len() - 9,
        image.len() - 1,
    ] {
        let e = refused(&mut ts, &mut g, &image[..cut]);
        assert!(e.contains("truncated"), "cut at {cut}: {e}");
    }
    assert!(
        refused(&mut ts, &mut g, b"not a save image at all").contains("not a xen-rs save image")
    );
    // An unknown mandatory record is refused; an unknown optional one is skipped.
    let unknown = rewrite(&image, &|inner, k, b| {
        Some(if !inner && k == rec::XENSTORE_DATA {
            (0x4242, b)
        } else {
            (k, b)
        })
    });
    assert!(refused(&mut ts, &mut g, &unknown).contains("unknown type 0x4242"));
    let optional = rewrite(&image, &|inner, k, b| {
        Some(if !inner && k == rec::XENSTORE_DATA {
            (rec::OPTIONAL | 7, b)
        } else {
            (k, b)
        })
    });
    let id = ts
        .restore(&env.cfg(), &optional[..], &mut g, true)
        .expect("optional records are skipped");
    ts.destroy(id).expect("destroy");
    // A page outside the domain's memory.
    let outside = rewrite(&image, &|inner, k, mut b| {
        if inner && k == xc::PAGE_DATA {
            b[8..16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        }
        Some((k, b))
    });
    assert!(refused(&mut ts, &mut g, &outside).contains("outside the domain's memory"));
    // No vCPU state, vCPU state without vCPU 0, an unknown HVM parameter, no layout.
    let no_ctx = rewrite(&image, &|inner, k, b| {
        (!(inner && k == xc::HVM_CONTEXT)).then_some((k, b))
    });
    assert!(refused(&mut ts, &mut g, &no_ctx).contains("no vCPU state"));
    let no_cpu0 = rewrite(&image, &|inner, k, b| {
        Some(if inner && k == xc::HVM_CONTEXT {
            (k, context_of(&[(1, cpu(1, 0))]))
        } else {
            (k, b)
        })
    });
    assert!(refused(&mut ts, &mut g, &no_cpu0).contains("no state for vCPU 0"));
    let param = rewrite(&image, &|inner, k, b| {
        Some(if inner && k == xc::HVM_PARAMS {
            (k, stream::encode_params(&[(17, 4094), (99, 1)]))
        } else {
            (k, b)
        })
    });
    assert!(refused(&mut ts, &mut g, &param).contains("HVM parameter 99"));
    let no_layout = rewrite(&image, &|inner, k, b| {
        (inner || k != rec::DOMAIN_LAYOUT).then_some((k, b))
    });
    assert!(refused(&mut ts, &mut g, &no_layout).contains("no domain layout"));
    // A context that is not Xen's records.
    let garbage_ctx = rewrite(&image, &|inner, k, b| {
        Some(if inner && k == xc::HVM_CONTEXT {
            (k, vec![1; 24])
        } else {
            (k, b)
        })
    });
    assert!(refused(&mut ts, &mut g, &garbage_ctx).contains("HVM context"));
    // A xenstore node outside the domain's home.
    let escape = rewrite(&image, &|inner, k, b| {
        Some(if !inner && k == rec::XENSTORE_DATA {
            (k, stream::encode_nodes(&[("../0/x".into(), b"1".to_vec())]))
        } else {
            (k, b)
        })
    });
    assert!(refused(&mut ts, &mut g, &escape).contains("cannot be restored"));
    assert!(g.store.get("/local/domain/0/x").is_none());
    // The same image restores fine, and only under a free name.
    let id = ts
        .restore(&env.cfg(), &image[..], &mut g, false)
        .expect("the original restores");
    let e = ts
        .restore(&env.cfg(), &image[..], &mut g, false)
        .expect_err("name taken");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(env.domains(), vec![0, id]);
}

#[test]
fn a_guest_using_xenstore_needs_a_xenstored_to_be_restored() {
    let env = Env::new("nostore");
    let mut g = Guest::new(&env);
    let image = valid_image(&env, &mut g);
    let mut ts = env.ts();
    ts.xenstore = false;
    let e = ts
        .restore(&env.cfg(), &image[..], &mut g, false)
        .expect_err("no xenstored");
    assert!(e.to_string().contains("no xenstored"), "{e}");
    assert_eq!(env.domains(), vec![0]);
}
