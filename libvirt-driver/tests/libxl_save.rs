//! The libxl backend's save and restore over the sandbox transport: the real backend (toolstack, console
//! daemon and xenstored, exit watcher) drives a model hypervisor (`xen_abi::ctlserver` over a domain table
//! whose guest memory is a RAM file), and the test plays the guest: its xenstore and console rings in that
//! memory, and its suspend.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain_xml::domain::Domain;
use libvirt_driver::backend::{AfterSave, Backend};
use libvirt_driver::libxl_backend::LibxlBackend;
use libvirt_driver::proto::code;
use libxl_rs::transport::any::Target;
use xen_abi::ctlframe::{self, Decoded, Hello};
use xen_abi::ctlserver;
use xen_abi::domctl::{self, dominf, GetDomainInfo};
use xen_abi::errno::Errno;
use xen_abi::hvmsave::{self, HvmHwCpu};
use xen_abi::memres;
use xen_abi::plain::Plain;
use xen_abi::sysctl::Physinfo;
use xen_abi::xen::VcpuHvmContext;

const RAM_PAGES: u64 = 16384;

#[derive(Default)]
struct Dom {
    create: domctl::CreateDomain,
    max_kb: u64,
    p2m: BTreeMap<u64, u64>,
    booted: bool,
    hvm: Option<Vec<u8>>,
    paused: bool,
    shutdown: Option<u32>,
    params: BTreeMap<u32, u64>,
    ports: u32,
    resumed: u32,
}

struct Model {
    ram: File,
    next_mfn: u64,
    free: Vec<u64>,
    doms: BTreeMap<u16, Dom>,
    next_domid: u16,
}

fn context(cpus: &[(u16, HvmHwCpu)]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + cpus.len() * (8 + std::mem::size_of::<HvmHwCpu>())];
    let header = hvmsave::HvmSaveHeader {
        magic: hvmsave::FILE_MAGIC,
        version: hvmsave::FILE_VERSION,
        ..hvmsave::HvmSaveHeader::default()
    };
    let mut w = hvmsave::Writer::new(&mut buf, &header);
    for (id, cpu) in cpus {
        w.push(hvmsave::CPU, *id, cpu.as_bytes());
    }
    let n = w.finish().expect("room");
    buf.truncate(n);
    buf
}

fn cpu0(ctx: &[u8]) -> HvmHwCpu {
    hvmsave::parse(ctx)
        .expect("records")
        .find(|r| r.typecode == hvmsave::CPU && r.instance == 0)
        .and_then(|r| HvmHwCpu::read_from(r.data))
        .expect("vCPU 0")
}

impl ctlserver::Backend for Model {
    fn hello(&self) -> Hello {
        Hello {
            version: ctlframe::PROTOCOL_VERSION,
            ram_bytes: RAM_PAGES * 4096,
            nr_cpus: 2,
            xen_version: (4 << 16) | 19,
        }
    }
    fn create_domain(&mut self, _domid: u16, req: &domctl::CreateDomain) -> Result<u16, Errno> {
        self.next_domid += 1;
        let dom = Dom {
            create: *req,
            paused: true,
            ..Dom::default()
        };
        self.doms.insert(self.next_domid, dom);
        Ok(self.next_domid)
    }
    fn destroy_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let d = self.doms.remove(&domid).ok_or(Errno::Esrch)?;
        self.free.extend(d.p2m.values());
        Ok(())
    }
    fn set_paused(&mut self, domid: u16, paused: bool) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if !paused && domid != 0 && !d.booted && d.hvm.is_none() {
            return Err(Errno::Einval);
        }
        d.paused = paused;
        Ok(())
    }
    fn domain_info(&mut self, domid: u16) -> Option<GetDomainInfo> {
        let (id, d) = self.doms.range(domid..).next()?;
        let mut flags = dominf::HVM_GUEST;
        if d.paused {
            flags |= dominf::PAUSED;
        } else if d.shutdown.is_none() {
            flags |= dominf::RUNNING;
        }
        if let Some(r) = d.shutdown {
            flags |= dominf::SHUTDOWN | (r << dominf::SHUTDOWN_SHIFT);
        }
        Some(GetDomainInfo {
            domain: *id,
            flags,
            tot_pages: d.p2m.len() as u64,
            max_pages: d.max_kb / 4,
            nr_online_vcpus: 1,
            handle: d.create.handle,
            ..GetDomainInfo::default()
        })
    }
    fn set_max_mem(&mut self, domid: u16, kb: u64) -> Result<(), Errno> {
        self.doms.get_mut(&domid).ok_or(Errno::Esrch)?.max_kb = kb;
        Ok(())
    }
    fn populate(&mut self, domid: u16, gfn: u64) -> Result<(), Errno> {
        let mfn = match self.free.pop() {
            Some(m) => m,
            None if self.next_mfn < RAM_PAGES => {
                self.next_mfn += 1;
                self.next_mfn - 1
            }
            None => return Err(Errno::Enomem),
        };
        self.ram
            .write_at(&[0xdd; 4096], mfn * 4096)
            .map_err(|_| Errno::Eio)?;
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        d.p2m.insert(gfn, mfn);
        Ok(())
    }
    fn set_vcpu_context(&mut self, domid: u16, _: u32, _: &VcpuHvmContext) -> Result<(), Errno> {
        self.doms.get_mut(&domid).ok_or(Errno::Esrch)?.booted = true;
        Ok(())
    }
    fn set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        d.params.insert(index, value);
        Ok(())
    }
    fn get_param(&mut self, domid: u16, index: u32) -> Result<u64, Errno> {
        let d = self.doms.get(&domid).ok_or(Errno::Esrch)?;
        Ok(d.params.get(&index).copied().unwrap_or(0))
    }
    fn remote_shutdown(&mut self, domid: u16, reason: u32) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        d.shutdown.get_or_insert(reason);
        Ok(())
    }
    fn physinfo(&mut self) -> Physinfo {
        Physinfo {
            nr_cpus: 2,
            total_pages: RAM_PAGES,
            ..Physinfo::default()
        }
    }
    fn translate(&mut self, domid: u16, gfn: u64) -> Result<u64, Errno> {
        let d = self.doms.get(&domid).ok_or(Errno::Esrch)?;
        d.p2m.get(&gfn).copied().ok_or(Errno::Einval)
    }
    fn bind_virq(&mut self, _virq: u32) -> Result<u32, Errno> {
        Ok(3)
    }
    fn alloc_unbound(&mut self, dom: u16, _remote: u16) -> Result<u32, Errno> {
        let d = self.doms.get_mut(&dom).ok_or(Errno::Esrch)?;
        d.ports += 1;
        Ok(d.ports)
    }
    fn set_memory_map(&mut self, domid: u16, _: &[xen_abi::xen::E820Entry]) -> Result<(), Errno> {
        self.doms.get(&domid).map(|_| ()).ok_or(Errno::Esrch)
    }
    fn bind_interdomain(&mut self, dom: u16, port: u32) -> Result<u32, Errno> {
        let d = self.doms.get(&dom).ok_or(Errno::Esrch)?;
        if port == 0 || port > d.ports {
            return Err(Errno::Einval);
        }
        Ok(100 + u32::from(dom) * 10 + port)
    }
    fn send(&mut self, _local: u32) -> Result<(), Errno> {
        Ok(())
    }
    fn close(&mut self, _local: u32) -> Result<(), Errno> {
        Ok(())
    }
    fn poll_notified(&mut self, _out: &mut [u32]) -> usize {
        0
    }
    fn get_hvm_context(&mut self, domid: u16, out: &mut [u8]) -> Result<usize, (Errno, usize)> {
        let d = self.doms.get(&domid).ok_or((Errno::Esrch, 0))?;
        if !d.paused && d.shutdown.is_none() {
            return Err((Errno::Ebusy, 0));
        }
        let ctx = d.hvm.clone().unwrap_or_else(|| {
            let cpu = HvmHwCpu {
                rip: 0x10_0000,
                ..HvmHwCpu::default()
            };
            context(&[(0, cpu)])
        });
        let o = out
            .get_mut(..ctx.len())
            .ok_or((Errno::Enobufs, ctx.len()))?;
        o.copy_from_slice(&ctx);
        Ok(ctx.len())
    }
    fn set_hvm_context(&mut self, domid: u16, records: &[u8]) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        let _checked = hvmsave::parse(records).map_err(|_| Errno::Einval)?;
        d.hvm = Some(records.to_vec());
        Ok(())
    }
    fn resume_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if d.shutdown != Some(2) {
            return Err(Errno::Einval);
        }
        d.shutdown = None;
        d.resumed += 1;
        Ok(())
    }
}

fn serve(model: Arc<Mutex<Model>>, mut s: UnixStream) {
    let mut rx = Vec::new();
    let mut buf = [0u8; 65536];
    let mut out = vec![0u8; ctlframe::HEADER_LEN + ctlframe::MAX_PAYLOAD];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rx.extend_from_slice(&buf[..n]);
        loop {
            match ctlframe::decode(&rx) {
                Decoded::Frame { header, consumed } => {
                    let payload = rx[ctlframe::HEADER_LEN..consumed].to_vec();
                    rx.drain(..consumed);
                    let mut m = model.lock().expect("model");
                    if let Some(len) = ctlserver::handle(&mut *m, &header, &payload, &mut out) {
                        if s.write_all(&out[..len]).is_err() {
                            return;
                        }
                    }
                }
                Decoded::Garbage { skip, .. } => {
                    rx.drain(..skip);
                }
                Decoded::NeedMore => break,
            }
        }
    }
}

/// An ELF64 PVH kernel: one PT_LOAD at `paddr` and the PHYS32_ENTRY note (entry = paddr).
fn kernel(paddr: u64, body: &[u8]) -> Vec<u8> {
    let note_at = 64 + 2 * 56;
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend_from_slice(&v.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(paddr as u32).to_le_bytes());
    let data_at = 256;
    let mut f = vec![0u8; data_at + body.len()];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    let p16 = |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let p64 = |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    p16(&mut f, 16, 2);
    p16(&mut f, 18, 62);
    f[20] = 1;
    p64(&mut f, 24, paddr);
    p64(&mut f, 32, 64);
    p16(&mut f, 52, 64);
    p16(&mut f, 54, 56);
    p16(&mut f, 56, 2);
    f[64] = 1;
    p64(&mut f, 64 + 8, data_at as u64);
    p64(&mut f, 64 + 16, paddr);
    p64(&mut f, 64 + 24, paddr);
    p64(&mut f, 64 + 32, body.len() as u64);
    p64(&mut f, 64 + 40, body.len() as u64);
    f[120] = 4;
    p64(&mut f, 120 + 8, note_at as u64);
    p64(&mut f, 120 + 32, note.len() as u64);
    p64(&mut f, 120 + 40, note.len() as u64);
    f[note_at..note_at + note.len()].copy_from_slice(&note);
    f[data_at..].copy_from_slice(body);
    f
}

struct Sandbox {
    dir: PathBuf,
    model: Arc<Mutex<Model>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sandbox {
    fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("virtxend-save-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ram = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("ram"))
            .expect("ram");
        ram.set_len(RAM_PAGES * 4096).expect("size");
        let mut doms = BTreeMap::new();
        doms.insert(0, Dom::default());
        let model = Arc::new(Mutex::new(Model {
            ram,
            next_mfn: 256,
            free: Vec::new(),
            doms,
            next_domid: 0,
        }));
        let listener = UnixListener::bind(dir.join("ctl.sock")).expect("listen");
        let m = model.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || serve(m, s));
            }
        });
        std::fs::write(dir.join("vmlinuz"), kernel(0x10_0000, &[0xf4; 512])).expect("kernel");
        Self { dir, model }
    }

    fn def(&self, name: &str) -> Domain {
        let xml = format!(
            "<domain type='xen'><name>{name}</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa{}</uuid>\
             <memory unit='KiB'>16384</memory><currentMemory unit='KiB'>16384</currentMemory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='xenpvh'>xenpvh</type><kernel>{}</kernel></os></domain>",
            name.len() % 10,
            self.dir.join("vmlinuz").display()
        );
        Domain::parse(&xml).expect("xml")
    }

    /// Reads or writes guest memory within one page.
    fn page(&self, domid: u16, gfn: u64) -> (File, u64) {
        let m = self.model.lock().expect("model");
        let mfn = m.doms[&domid].p2m[&gfn];
        (m.ram.try_clone().expect("ram"), mfn * 4096)
    }

    fn read(&self, domid: u16, gfn: u64, off: u64, len: usize) -> Vec<u8> {
        let (ram, base) = self.page(domid, gfn);
        let mut b = vec![0u8; len];
        ram.read_exact_at(&mut b, base + off).expect("read");
        b
    }

    fn write(&self, domid: u16, gfn: u64, off: u64, data: &[u8]) {
        let (ram, base) = self.page(domid, gfn);
        ram.write_all_at(data, base + off).expect("write");
    }

    fn param(&self, domid: u16, index: u32) -> u64 {
        self.model.lock().expect("model").doms[&domid].params[&index]
    }
}

/// The guest's end of its xenstore ring.
struct XsClient<'a> {
    sb: &'a Sandbox,
    domid: u16,
    gfn: u64,
}

impl XsClient<'_> {
    fn new(sb: &Sandbox, domid: u16) -> XsClient<'_> {
        let gfn = sb.param(domid, memres::HVM_PARAM_STORE_PFN);
        XsClient { sb, domid, gfn }
    }

    fn idx(&self, at: u64) -> u32 {
        u32::from_le_bytes(
            self.sb
                .read(self.domid, self.gfn, at, 4)
                .try_into()
                .expect("4"),
        )
    }

    fn set_idx(&self, at: u64, v: u32) {
        self.sb.write(self.domid, self.gfn, at, &v.to_le_bytes());
    }

    /// What Linux's xb_init_comms does on resume: responses nobody will read are dropped.
    fn init_comms(&self) {
        self.set_idx(2056, self.idx(2060));
    }

    fn request(&self, kind: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let mut msg = Vec::new();
        for v in [kind, 1, 0, payload.len() as u32] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.extend_from_slice(payload);
        let prod = self.idx(2052);
        for (i, b) in msg.iter().enumerate() {
            let at = prod.wrapping_add(i as u32) % 1024;
            self.sb.write(self.domid, self.gfn, u64::from(at), &[*b]);
        }
        self.set_idx(2052, prod.wrapping_add(msg.len() as u32));
        let deadline = Instant::now() + Duration::from_secs(10);
        let cons = self.idx(2056);
        let byte = |i: u32| {
            let at = 1024 + u64::from(cons.wrapping_add(i) % 1024);
            self.sb.read(self.domid, self.gfn, at, 1)[0]
        };
        loop {
            let avail = self.idx(2060).wrapping_sub(cons);
            if avail >= 16 {
                let head: Vec<u8> = (0..16).map(byte).collect();
                let len = u32::from_le_bytes(head[12..16].try_into().expect("4"));
                if avail >= 16 + len {
                    let body: Vec<u8> = (16..16 + len).map(byte).collect();
                    self.set_idx(2056, cons.wrapping_add(16 + len));
                    let k = u32::from_le_bytes(head[..4].try_into().expect("4"));
                    return (k, body);
                }
            }
            assert!(Instant::now() < deadline, "xenstored did not answer");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn write(&self, path: &str, value: &str) {
        let p = format!("{path}\0{value}");
        assert_eq!(self.request(11, p.as_bytes()), (11, b"OK\0".to_vec()));
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.request(2, format!("{path}\0").as_bytes()) {
            (2, v) => Some(v),
            _ => None,
        }
    }
}

/// The guest's PV suspend driver: acts on a `suspend` request like Linux's shutdown handler and
/// `do_suspend` (clears the request, then vCPU 0 calls `SCHEDOP_shutdown(SHUTDOWN_suspend)`, the
/// hypercall's return value starting as 0).
fn suspend_when_asked(sb: &Sandbox, domid: u16) {
    let xs = XsClient::new(sb, domid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while xs.read("control/shutdown").as_deref() != Some(b"suspend") {
        assert!(Instant::now() < deadline, "no suspend request");
        std::thread::sleep(Duration::from_millis(10));
    }
    xs.write("control/shutdown", "");
    let mut m = sb.model.lock().expect("model");
    let d = m.doms.get_mut(&domid).expect("domain");
    let mut cpu = d.hvm.as_deref().map(cpu0).unwrap_or(HvmHwCpu {
        rip: 0xffff_ffff_8100_4000,
        ..HvmHwCpu::default()
    });
    cpu.gprs[hvmsave::GPR_RAX] = 0;
    d.hvm = Some(context(&[(0, cpu)]));
    d.shutdown = Some(2);
}

/// Writes `text` into the guest's console ring, after what it wrote before.
fn console_out(sb: &Sandbox, domid: u16, text: &[u8]) {
    let gfn = sb.param(domid, memres::HVM_PARAM_CONSOLE_PFN);
    let at = memres::CONS_OUT_PROD as u64;
    let prod = u32::from_le_bytes(sb.read(domid, gfn, at, 4).try_into().expect("4"));
    for (i, b) in text.iter().enumerate() {
        let o = memres::CONS_IN_SIZE as u64 + u64::from(prod.wrapping_add(i as u32) % 2048);
        sb.write(domid, gfn, o, &[*b]);
    }
    sb.write(
        domid,
        gfn,
        at,
        &prod.wrapping_add(text.len() as u32).to_le_bytes(),
    );
}

const HEADER: &[u8] = b"daemon header\n";

#[test]
fn virsh_save_and_restore_through_the_libxl_backend() {
    let sb = Sandbox::start("roundtrip");
    let be = LibxlBackend::connect(Target::Sandbox(sb.dir.clone()), &sb.dir.join("state"))
        .expect("connect");
    be.check_save().expect("the libxl backend saves");
    let def = sb.def("saved");
    let id = be.create(&def, false).expect("create") as u16;
    // The guest boots: its PV drivers announce suspend support, it writes to its console.
    let xs = XsClient::new(&sb, id);
    xs.write("control/feature-suspend", "1");
    xs.write("data/boot-id", "42");
    console_out(&sb, id, b"before\r\n");
    sb.write(id, 0x300, 0, b"the guest's own memory");

    // virsh save: the guest suspends when asked, the image follows the daemon's header, the domain goes.
    let img = sb.dir.join("saved.img");
    let mut f = File::create(&img).expect("image");
    f.write_all(HEADER).expect("header");
    std::thread::scope(|s| {
        s.spawn(|| suspend_when_asked(&sb, id));
        be.save(u32::from(id), &mut f, AfterSave::Stop, &mut || Ok(()))
            .expect("save");
    });
    assert!(!sb.model.lock().expect("model").doms.contains_key(&id));
    assert_eq!(be.info(u32::from(id)).expect("info"), None);

    // virsh restore: a new domain, running, with its memory, xenstore and console back.
    let mut f = File::open(&img).expect("image");
    f.seek(SeekFrom::Start(HEADER.len() as u64)).expect("seek");
    let new = be.restore(&def, &mut f, false).expect("restore") as u16;
    assert_ne!(new, id);
    assert_eq!(
        be.info(u32::from(new))
            .expect("info")
            .expect("running")
            .state,
        1
    );
    assert_eq!(sb.read(new, 0x300, 0, 22), b"the guest's own memory");
    let cpu = cpu0(
        sb.model.lock().expect("model").doms[&new]
            .hvm
            .as_deref()
            .expect("ctx"),
    );
    assert_eq!(
        cpu.gprs[hvmsave::GPR_RAX],
        0,
        "the suspend hypercall returns 0"
    );
    // Its xenstore ring comes back with its old indices; the guest fixes up its response index and goes on.
    let xs = XsClient::new(&sb, new);
    assert!(xs.idx(2052) > 0, "restored indices");
    xs.init_comms();
    assert_eq!(
        xs.read("control/feature-suspend").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(xs.read("data/boot-id").as_deref(), Some(&b"42"[..]));
    assert_eq!(
        xs.read("domid").as_deref(),
        Some(new.to_string().as_bytes())
    );
    // virsh console follows the new domain; output continues from the ring's indices.
    let mut con = be.open_console(u32::from(new), None).expect("console");
    let mut out = con.reader();
    console_out(&sb, new, b"after\r\n");
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    while !got.ends_with(b"after\r\n") {
        let n = out.read(&mut b).expect("console");
        assert!(n > 0, "console ended: {got:?}");
        got.extend_from_slice(&b[..n]);
    }
    assert!(!String::from_utf8_lossy(&got).contains("before"), "{got:?}");

    // A snapshot: the guest goes on in the same domain, its suspend cancelled (rax = 1). What the caller takes
    // meanwhile (the disks) is taken while the guest is still suspended.
    let mut snap = File::create(sb.dir.join("snap.img")).expect("image");
    let mut frozen_state = None;
    std::thread::scope(|s| {
        s.spawn(|| suspend_when_asked(&sb, new));
        be.save(u32::from(new), &mut snap, AfterSave::Continue, &mut || {
            let m = sb.model.lock().expect("model");
            frozen_state = Some(m.doms[&new].shutdown);
            Ok(())
        })
        .expect("snapshot");
    });
    assert_eq!(frozen_state, Some(Some(2)), "the guest was suspended");
    {
        let m = sb.model.lock().expect("model");
        let d = &m.doms[&new];
        assert_eq!((d.shutdown, d.resumed, d.paused), (None, 1, false));
        assert_eq!(
            cpu0(d.hvm.as_deref().expect("ctx")).gprs[hvmsave::GPR_RAX],
            1
        );
    }
    assert_eq!(xs.read("data/boot-id").as_deref(), Some(&b"42"[..]));
    assert!(snap.metadata().expect("meta").len() > 4096);

    // A truncated image is refused and leaves nothing behind.
    let mut cut = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(sb.dir.join("cut.img"))
        .expect("cut");
    cut.write_all(&std::fs::read(sb.dir.join("snap.img")).expect("snap")[..5000])
        .expect("write");
    cut.seek(SeekFrom::Start(0)).expect("seek");
    let before: Vec<u16> = sb
        .model
        .lock()
        .expect("model")
        .doms
        .keys()
        .copied()
        .collect();
    let e = be
        .restore(&sb.def("other"), &mut cut, false)
        .expect_err("truncated");
    assert_eq!(e.code, code::OPERATION_FAILED);
    assert!(e.message.contains("truncated"), "{}", e.message);
    let after: Vec<u16> = sb
        .model
        .lock()
        .expect("model")
        .doms
        .keys()
        .copied()
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_guest_without_pv_suspend_is_refused_and_keeps_running() {
    let sb = Sandbox::start("nosuspend");
    let be = LibxlBackend::connect(Target::Sandbox(sb.dir.clone()), &sb.dir.join("state"))
        .expect("connect");
    let id = be.create(&sb.def("plain"), false).expect("create");
    let mut f = File::create(sb.dir.join("x.img")).expect("image");
    let e = be
        .save(id, &mut f, AfterSave::Stop, &mut || Ok(()))
        .expect_err("no suspend");
    assert_eq!(e.code, code::OPERATION_FAILED);
    assert!(
        e.message.contains("guest does not support suspend"),
        "{}",
        e.message
    );
    assert_eq!(be.info(id).expect("info").expect("still there").state, 1);
    assert_eq!(f.metadata().expect("meta").len(), 0);
}
