//! `xl` end to end over the sandbox transport: the real binary talks control frames on a Unix socket and
//! maps guest memory from a RAM file, exactly as it would with xen-hv in QEMU. The hypervisor end is
//! `xen_abi::ctlserver` (the dispatcher xen-hv uses) over a model domain table whose guest memory lives in
//! that RAM file; the test plays the guest (console output, shutdown).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_abi::ctlframe::{self, Decoded, Hello};
use xen_abi::ctlserver::{self, Backend};
use xen_abi::domctl::{self, dominf, GetDomainInfo};
use xen_abi::errno::Errno;
use xen_abi::hvmsave::{self, HvmHwCpu};
use xen_abi::plain::Plain;
use xen_abi::sysctl::Physinfo;
use xen_abi::xen::VcpuHvmContext;

const RAM_PAGES: u64 = 16384; // 64 MiB

#[derive(Default)]
struct Dom {
    create: domctl::CreateDomain,
    max_kb: u64,
    p2m: BTreeMap<u64, u64>,
    vcpu0: Option<VcpuHvmContext>,
    paused: bool,
    shutdown: Option<u32>,
    params: BTreeMap<u32, u64>,
    requests: Vec<u32>,
    e820: usize,
    /// HVM context records loaded by the toolstack or given by a test as the guest's state.
    hvm: Option<Vec<u8>>,
    /// `XEN_DOMCTL_resumedomain` calls.
    resumed: u32,
}

struct Model {
    ram: File,
    next_mfn: u64,
    free: Vec<u64>,
    doms: BTreeMap<u16, Dom>,
    port: Option<u32>,
    clients: Vec<UnixStream>,
    next_domid: u16,
}

impl Model {
    fn raise(&mut self, port: u32) {
        let mut out = [0u8; 32];
        let n = ctlserver::event(port, &mut out).expect("event");
        self.clients.retain_mut(|c| c.write_all(&out[..n]).is_ok());
    }
}

impl Backend for Model {
    fn hello(&self) -> Hello {
        Hello {
            version: ctlframe::PROTOCOL_VERSION,
            ram_bytes: RAM_PAGES * 4096,
            nr_cpus: 2,
            xen_version: (4 << 16) | 19,
        }
    }
    fn create_domain(&mut self, domid: u16, req: &domctl::CreateDomain) -> Result<u16, Errno> {
        // Like Xen, IDs are not reused right away.
        let id = if domid == 0 {
            self.next_domid += 1;
            self.next_domid
        } else {
            domid
        };
        self.doms.insert(
            id,
            Dom {
                create: *req,
                paused: true,
                ..Dom::default()
            },
        );
        Ok(id)
    }
    fn destroy_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let d = self.doms.remove(&domid).ok_or(Errno::Esrch)?;
        self.free.extend(d.p2m.values());
        if let Some(p) = self.port {
            self.raise(p);
        }
        Ok(())
    }
    fn set_paused(&mut self, domid: u16, paused: bool) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if !paused && domid != 0 && d.vcpu0.is_none() && d.hvm.is_none() {
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
            tot_pages: if *id == 0 { 65536 } else { d.p2m.len() as u64 },
            max_pages: d.max_kb / 4,
            nr_online_vcpus: if *id == 0 {
                2
            } else {
                u32::from(d.vcpu0.is_some() || d.hvm.is_some())
            },
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
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if (d.p2m.len() as u64 + 1) * 4 > d.max_kb {
            self.free.push(mfn);
            return Err(Errno::Enomem);
        }
        self.ram
            .write_at(&[0xdd; 4096], mfn * 4096)
            .map_err(|_| Errno::Eio)?;
        d.p2m.insert(gfn, mfn);
        Ok(())
    }
    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuHvmContext,
    ) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if vcpu != 0 {
            return Err(Errno::Einval);
        }
        d.vcpu0 = Some(*ctx);
        Ok(())
    }
    fn set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Errno> {
        self.doms
            .get_mut(&domid)
            .ok_or(Errno::Esrch)?
            .params
            .insert(index, value);
        Ok(())
    }
    fn get_param(&mut self, domid: u16, index: u32) -> Result<u64, Errno> {
        let d = self.doms.get(&domid).ok_or(Errno::Esrch)?;
        Ok(d.params.get(&index).copied().unwrap_or(0))
    }
    fn remote_shutdown(&mut self, domid: u16, reason: u32) -> Result<(), Errno> {
        // As Xen (and xen-hv): the domain is shut down at once with the reason, and VIRQ_DOM_EXC fires.
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        d.requests.push(reason);
        if d.shutdown.is_none() {
            d.shutdown = Some(reason);
            if let Some(p) = self.port {
                self.raise(p);
            }
        }
        Ok(())
    }
    fn physinfo(&mut self) -> Physinfo {
        let used: u64 = self.doms.values().map(|d| d.p2m.len() as u64).sum();
        Physinfo {
            threads_per_core: 1,
            cores_per_socket: 2,
            nr_cpus: 2,
            max_cpu_id: 1,
            nr_nodes: 1,
            cpu_khz: 2_400_000,
            capabilities: xen_abi::sysctl::physcap::HVM | xen_abi::sysctl::physcap::HAP,
            total_pages: RAM_PAGES,
            free_pages: RAM_PAGES - used,
            ..Physinfo::default()
        }
    }
    fn translate(&mut self, domid: u16, gfn: u64) -> Result<u64, Errno> {
        let d = self.doms.get(&domid).ok_or(Errno::Esrch)?;
        d.p2m.get(&gfn).copied().ok_or(Errno::Einval)
    }
    fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, Errno> {
        if !self.doms.contains_key(&remote) {
            return Err(Errno::Esrch);
        }
        let d = self.doms.get_mut(&dom).ok_or(Errno::Esrch)?;
        let port = 1 + d.params.len() as u32;
        Ok(port)
    }
    fn set_memory_map(&mut self, domid: u16, map: &[xen_abi::xen::E820Entry]) -> Result<(), Errno> {
        self.doms.get_mut(&domid).ok_or(Errno::Esrch)?.e820 = map.len();
        Ok(())
    }
    fn bind_virq(&mut self, virq: u32) -> Result<u32, Errno> {
        if virq != xen_abi::memres::VIRQ_DOM_EXC {
            return Err(Errno::Einval);
        }
        self.port = Some(3);
        Ok(3)
    }
    fn bind_interdomain(&mut self, dom: u16, port: u32) -> Result<u32, Errno> {
        // The model hands out ports 1.. per domain for the console and xenstore channels.
        let d = self.doms.get(&dom).ok_or(Errno::Esrch)?;
        if port == 0 || port > 2 + d.params.len() as u32 {
            return Err(Errno::Einval);
        }
        Ok(100 + port)
    }
    fn send(&mut self, local: u32) -> Result<(), Errno> {
        if local > 100 {
            Ok(())
        } else {
            Err(Errno::Einval)
        }
    }
    fn close(&mut self, local: u32) -> Result<(), Errno> {
        self.send(local)
    }
    fn poll_notified(&mut self, _out: &mut [u32]) -> usize {
        // The model's guests never write their rings.
        0
    }
    fn get_hvm_context(&mut self, domid: u16, out: &mut [u8]) -> Result<usize, (Errno, usize)> {
        let d = self.doms.get(&domid).ok_or((Errno::Esrch, 0))?;
        if !d.paused && d.shutdown.is_none() {
            return Err((Errno::Ebusy, 0));
        }
        let ctx = match &d.hvm {
            Some(c) => c.clone(),
            None => {
                let cpu = HvmHwCpu {
                    rip: d.vcpu0.map_or(0, |c| u64::from(c.x86_32.eip)),
                    ..HvmHwCpu::default()
                };
                context(&[(0, cpu)])
            }
        };
        match out.get_mut(..ctx.len()) {
            Some(o) => {
                o.copy_from_slice(&ctx);
                Ok(ctx.len())
            }
            None => Err((Errno::Enobufs, ctx.len())),
        }
    }
    fn set_hvm_context(&mut self, domid: u16, records: &[u8]) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        let cpus: Vec<u16> = hvmsave::parse(records)
            .map_err(|_| Errno::Einval)?
            .filter(|r| r.typecode == hvmsave::CPU)
            .map(|r| r.instance)
            .collect();
        if cpus.iter().any(|i| u32::from(*i) >= d.create.max_vcpus) {
            return Err(Errno::Einval);
        }
        d.hvm = Some(records.to_vec());
        Ok(())
    }
    fn resume_domain(&mut self, domid: u16) -> Result<(), Errno> {
        let d = self.doms.get_mut(&domid).ok_or(Errno::Esrch)?;
        if d.shutdown != Some(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND) {
            return Err(Errno::Einval);
        }
        d.shutdown = None;
        d.resumed += 1;
        Ok(())
    }
}

/// An HVM context with a CPU record for each of `cpus`.
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
                Decoded::Garbage { skip, seq, .. } => {
                    rx.drain(..skip);
                    if let Some(seq) = seq {
                        let len = ctlserver::invalid(seq, &mut out).expect("einval");
                        let _ = s.write_all(&out[..len]);
                    }
                }
                Decoded::NeedMore => break,
            }
        }
    }
}

struct Sandbox {
    dir: PathBuf,
    model: Arc<Mutex<Model>>,
}

impl Sandbox {
    fn start(tag: &str) -> Self {
        Self::start_with(tag, false)
    }

    /// With `through_mux`, the model accepts exactly one connection (like QEMU's chardev) and that connection
    /// is `xl`'s sandbox mux, which serves every client at `ctl.sock`.
    fn start_with(tag: &str, through_mux: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("xl-sbx-{tag}-{}", std::process::id()));
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
        doms.insert(
            0,
            Dom {
                max_kb: 256 << 10,
                ..Dom::default()
            },
        );
        let model = Arc::new(Mutex::new(Model {
            ram,
            next_mfn: 256,
            free: Vec::new(),
            doms,
            port: None,
            clients: Vec::new(),
            next_domid: 0,
        }));
        let hv_sock = dir.join(if through_mux { "hv.sock" } else { "ctl.sock" });
        let listener = UnixListener::bind(&hv_sock).expect("listen");
        let m = model.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                if let Ok(c) = s.try_clone() {
                    m.lock().expect("model").clients.push(c);
                }
                let m = m.clone();
                if through_mux {
                    serve(m, s);
                    return;
                }
                std::thread::spawn(move || serve(m, s));
            }
        });
        if through_mux {
            let up = UnixStream::connect(&hv_sock).expect("upstream");
            let listen = dir.join("ctl.sock");
            std::thread::spawn(move || libxl_rs::transport::mux::run(up, &listen));
            let t = Instant::now();
            while !dir.join("ctl.sock").exists() {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the mux did not come up"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::fs::write(dir.join("vmlinuz"), kernel(0x10_0000, &[0xf4; 512])).expect("kernel");
        Self { dir, model }
    }

    fn xl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_xl"))
            .arg("--sandbox")
            .arg(&self.dir)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(args)
            .output()
            .expect("run xl")
    }

    fn guest_write(&self, domid: u16, gpa: u64, data: &[u8]) {
        let m = self.model.lock().expect("model");
        let mfn = m.doms[&domid].p2m[&(gpa / 4096)];
        m.ram
            .write_at(data, mfn * 4096 + gpa % 4096)
            .expect("write");
    }

    fn guest_read(&self, domid: u16, gpa: u64, len: usize) -> Vec<u8> {
        let m = self.model.lock().expect("model");
        let mfn = m.doms[&domid].p2m[&(gpa / 4096)];
        let mut b = vec![0u8; len];
        m.ram
            .read_exact_at(&mut b, mfn * 4096 + gpa % 4096)
            .expect("read");
        b
    }

    fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let o = self.xl(&["list"]);
            if !String::from_utf8_lossy(&o.stdout).contains(name) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{name} still listed");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write_cfg(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\ntype = \"pvh\"\nmemory = 16\nvcpus = 1\nkernel = \"vmlinuz\"\n\
             cmdline = \"console=hvc0\"\n{extra}"
        ),
    )
    .expect("cfg");
    p
}

#[test]
fn xl_create_list_console_shutdown_destroy_over_the_sandbox_transport() {
    let sb = Sandbox::start("e2e");
    let cfg = write_cfg(&sb.dir, "guest1", "on_poweroff = \"destroy\"\n");
    let o = sb.xl(&["create", cfg.to_str().expect("utf8")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "create failed: {out}{err}");
    assert!(
        err.starts_with(&format!("Parsing config from {}", cfg.display())),
        "{err}"
    );
    assert!(
        err.contains("Waiting for domain guest1 (domid 1) to die"),
        "{err}"
    );

    // The build landed in guest memory: kernel at 1 MiB, start info with the command line, entry state.
    assert_eq!(sb.guest_read(1, 0x10_0000, 4), vec![0xf4; 4]);
    let si = sb.guest_read(1, 0x1000, 4096);
    assert_eq!(&si[..4], &0x336e_c578u32.to_le_bytes());
    let text_si = String::from_utf8_lossy(&si);
    assert!(
        text_si.contains("console=hvc0"),
        "command line in start info page"
    );
    {
        let m = sb.model.lock().expect("model");
        let d = &m.doms[&1];
        let ctx = d.vcpu0.expect("vcpu context");
        assert_eq!((ctx.x86_32.eip, ctx.x86_32.ebx), (0x10_0000, 0x1000));
        assert!(!d.paused);
        assert_eq!(d.p2m.len(), 4096);
        assert_eq!(
            d.e820, 3,
            "RAM, the ACPI tables and the reserved ring pages"
        );
    }

    let o = sb.xl(&["list"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    );
    assert_eq!(
        lines[1],
        "Domain-0                                     0   256     2     r-----       0.0"
    );
    assert_eq!(
        lines[2],
        "guest1                                       1    16     1     r-----       0.0"
    );
    assert_eq!(lines.len(), 3);

    // Console: the guest writes into its ring; `xl console` prints it and ends when the domain goes away.
    let gfn =
        sb.model.lock().expect("model").doms[&1].params[&xen_abi::memres::HVM_PARAM_CONSOLE_PFN];
    let msg = b"hello from guest1\r\n";
    sb.guest_write(1, gfn * 4096 + 1024, msg);
    sb.guest_write(
        1,
        gfn * 4096 + xen_abi::memres::CONS_OUT_PROD as u64,
        &(msg.len() as u32).to_le_bytes(),
    );
    let mut con = Command::new(env!("CARGO_BIN_EXE_xl"))
        .arg("--sandbox")
        .arg(&sb.dir)
        .arg("--state-dir")
        .arg(sb.dir.join("state"))
        .args(["console", "guest1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("console");
    let mut stdout = con.stdout.take().expect("stdout");
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    while !got.ends_with(msg) {
        let n = stdout.read(&mut b).expect("read console");
        assert!(n > 0, "console ended early: {got:?}");
        got.extend_from_slice(&b[..n]);
    }

    // Pause / unpause show in the state column.
    assert!(sb.xl(&["pause", "guest1"]).status.success());
    assert!(text(&sb.xl(&["list", "guest1"])).0.contains("--p---"));
    assert!(sb.xl(&["unpause", "1"]).status.success());

    let o = sb.xl(&["destroy", "guest1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let status = con.wait().expect("console exits");
    assert!(status.success());
    sb.wait_gone("guest1");

    // Shutdown: the hypervisor shuts the domain down and raises VIRQ_DOM_EXC; the exit watcher started by
    // `xl create` applies on_poweroff = "destroy".
    let o = sb.xl(&["create", cfg.to_str().expect("utf8")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = sb.xl(&["shutdown", "guest1"]);
    assert!(
        text(&o).1.contains("Shutting down domain 2"),
        "{:?}",
        text(&o)
    );
    assert_eq!(
        sb.model
            .lock()
            .expect("model")
            .doms
            .get(&2)
            .map_or(vec![0], |d| d.requests.clone()),
        vec![0]
    );
    sb.wait_gone("guest1");

    // Errors are xl's.
    let o = sb.xl(&["destroy", "nosuch"]);
    assert!(!o.status.success());
    assert_eq!(
        text(&o).1,
        "nosuch is an invalid domain identifier (rc=-6)\n"
    );

    let o = sb.xl(&["info"]);
    let (out, _) = text(&o);
    assert!(out.contains("nr_cpus                : 2\n"), "{out}");
    assert!(out.contains("total_memory           : 64\n"), "{out}");
    assert!(out.contains("xen_version            : 4.19\n"), "{out}");
}

#[test]
fn many_clients_share_one_upstream_connection_through_the_mux() {
    let sb = Sandbox::start_with("mux", true);
    let cfg = write_cfg(&sb.dir, "muxed", "on_reboot = \"restart\"\n");
    let o = sb.xl(&["create", cfg.to_str().expect("utf8")]);
    assert!(o.status.success(), "{:?}", text(&o));
    // The exit watcher holds a connection; other invocations still get through.
    for _ in 0..3 {
        let o = sb.xl(&["list", "muxed"]);
        assert!(
            text(&o)
                .0
                .contains("muxed                                        1    16     1     r-----"),
            "{:?}",
            text(&o)
        );
    }
    assert_eq!(
        sb.model.lock().expect("model").clients.len(),
        1,
        "one upstream connection"
    );
    // The guest reboots: the event reaches the watcher through the mux and on_reboot=restart builds domain 2.
    let o = sb.xl(&["reboot", "muxed"]);
    assert!(text(&o).1.contains("Rebooting domain 1"), "{:?}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = text(&sb.xl(&["list"])).0;
        if out.contains("muxed                                        2 ") {
            assert!(
                !out.contains("muxed                                        1 "),
                "{out}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no restart: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sb.xl(&["destroy", "muxed"]).status.success());
    sb.wait_gone("muxed");
}

#[test]
fn domains_the_toolstack_did_not_create_are_listed_without_a_name() {
    let sb = Sandbox::start("boot");
    sb.model.lock().expect("model").doms.insert(
        4,
        Dom {
            max_kb: 8192,
            ..Dom::default()
        },
    );
    let o = sb.xl(&["list"]);
    let out = text(&o).0;
    assert!(
        out.lines().any(|l| l
            .starts_with("(null)                                       4     0     0     r-----")),
        "{out}"
    );
    // It is not found by name, but by ID.
    assert!(!sb.xl(&["pause", "(null)"]).status.success());
    assert!(sb.xl(&["list", "4"]).status.success());
}

/// The xenstored plus the guest's PV drivers: asked to suspend, the guest clears the request and its vCPU 0
/// calls `SCHEDOP_shutdown(SHUTDOWN_suspend)`, which the model records as Xen does.
struct SuspendingGuest {
    store: libxl_rs::xenstore::Store,
    model: Arc<Mutex<Model>>,
}

impl libxl_rs::save::GuestStore for SuspendingGuest {
    fn request_suspend(&mut self, domid: u16) -> Result<bool, libxl_rs::transport::Error> {
        let asked = self.store.request_shutdown(domid, "suspend");
        if asked {
            self.store.withdraw_shutdown(domid, "suspend");
            let mut m = self.model.lock().expect("model");
            let d = m.doms.get_mut(&domid).expect("domain");
            d.shutdown = Some(xen_abi::hypercall::schedop::SHUTDOWN_SUSPEND);
            // The hypercall's return value in vCPU 0's rax starts as 0 (the suspend went through).
            if let Some(ctx) = d.hvm.as_deref() {
                let cpus: Vec<(u16, HvmHwCpu)> = hvmsave::parse(ctx)
                    .expect("records")
                    .filter(|r| r.typecode == hvmsave::CPU)
                    .filter_map(|r| Some((r.instance, HvmHwCpu::read_from(r.data)?)))
                    .map(|(i, mut c)| {
                        if i == 0 {
                            c.gprs[hvmsave::GPR_RAX] = 0;
                        }
                        (i, c)
                    })
                    .collect();
                d.hvm = Some(context(&cpus));
            }
            if let Some(p) = m.port {
                m.raise(p);
            }
        }
        Ok(asked)
    }
    fn cancel_suspend(&mut self, domid: u16) {
        self.store.withdraw_shutdown(domid, "suspend");
    }
    fn nodes(&mut self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, libxl_rs::transport::Error> {
        Ok(self.store.nodes(domid))
    }
    fn restore_domain(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), libxl_rs::transport::Error> {
        self.store
            .restore(domid, name, memory_kib, nodes)
            .map_err(libxl_rs::transport::Error::Config)
    }
    fn release(&mut self, domid: u16) {
        self.store.release(domid);
    }
}

#[test]
fn save_and_restore_over_the_sandbox_transport() {
    use libxl_rs::lifecycle::{DomainConfig, Registry, Toolstack};
    use libxl_rs::save::{AfterSave, SaveOptions};
    use libxl_rs::transport::any::Target;

    let sb = Sandbox::start("save");
    let cfg_path = write_cfg(&sb.dir, "saved", "");
    let xl_cfg =
        libxl_rs::xlcfg::XlConfig::parse(&std::fs::read_to_string(&cfg_path).expect("cfg"))
            .expect("parse");
    let cfg = DomainConfig::from_xlcfg(&xl_cfg, &sb.dir).expect("config");
    let t = Target::Sandbox(sb.dir.clone()).connect().expect("connect");
    let mut ts = Toolstack::new(t, Registry::new(sb.dir.join("state")));
    ts.xenstore = true;
    let mut guest = SuspendingGuest {
        store: libxl_rs::xenstore::Store::new(),
        model: sb.model.clone(),
    };
    let id = ts.create(&cfg, false).expect("create");
    guest.store.introduce(id, "saved", 16384);
    guest
        .store
        .set(&format!("/local/domain/{id}/control/feature-suspend"), b"1");
    // The guest's state: memory, and its vCPU somewhere in its kernel.
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 241) as u8 + 1).collect();
    sb.guest_write(id, 0x40_0000, &data);
    sb.guest_write(id, 0x50_0000, &[0u8; 4096]);
    let running = HvmHwCpu {
        rip: 0xffff_ffff_8100_2000,
        ..HvmHwCpu::default()
    };
    sb.model
        .lock()
        .expect("model")
        .doms
        .get_mut(&id)
        .expect("dom")
        .hvm = Some(context(&[(0, running)]));

    // A snapshot: the image is written and the guest goes on with rax = 1 (a cancelled suspend).
    let snap = sb.dir.join("snap.img");
    let mut f = File::create(&snap).expect("create image");
    let cont = SaveOptions {
        after: AfterSave::Continue,
        ..SaveOptions::default()
    };
    ts.save(id, &mut f, &mut guest, &cont).expect("snapshot");
    {
        let m = sb.model.lock().expect("model");
        let d = &m.doms[&id];
        assert_eq!((d.shutdown, d.resumed, d.paused), (None, 1, false));
        let cpu = hvmsave::parse(d.hvm.as_deref().expect("ctx"))
            .expect("records")
            .find(|r| r.typecode == hvmsave::CPU)
            .and_then(|r| HvmHwCpu::read_from(r.data))
            .expect("cpu");
        assert_eq!((cpu.rip, cpu.gprs[hvmsave::GPR_RAX]), (running.rip, 1));
    }

    // Save and stop: the domain is gone, its frames free.
    let img = sb.dir.join("saved.img");
    let mut f = File::create(&img).expect("create image");
    ts.save(id, &mut f, &mut guest, &SaveOptions::default())
        .expect("save");
    assert!(!sb.model.lock().expect("model").doms.contains_key(&id));

    // Restore: a new domain with the same memory, rings and vCPU state, running.
    let new = ts
        .restore(&cfg, File::open(&img).expect("open"), &mut guest, false)
        .expect("restore");
    assert_ne!(new, id);
    // Page by page: the new domain's frames are not contiguous in the RAM file.
    let back = [
        sb.guest_read(new, 0x40_0000, 4096),
        sb.guest_read(new, 0x40_1000, 4096),
    ]
    .concat();
    let diff = back.iter().zip(&data).position(|(a, b)| a != b);
    assert!(
        diff.is_none(),
        "restored memory differs at {diff:?}: {:?}",
        &back[diff.unwrap_or(0)..][..16]
    );
    assert!(
        sb.guest_read(new, 0x50_0000, 4096).iter().all(|b| *b == 0),
        "zeroed"
    );
    let m = sb.model.lock().expect("model");
    let d = &m.doms[&new];
    assert!(!d.paused);
    assert_eq!(d.create.handle, cfg.uuid);
    assert_eq!(d.e820, 3);
    assert_eq!(
        d.params[&xen_abi::memres::HVM_PARAM_CONSOLE_PFN],
        4094,
        "the same ring frame"
    );
    let cpu = hvmsave::parse(d.hvm.as_deref().expect("ctx"))
        .expect("records")
        .find(|r| r.typecode == hvmsave::CPU)
        .and_then(|r| HvmHwCpu::read_from(r.data))
        .expect("cpu");
    assert_eq!((cpu.rip, cpu.gprs[hvmsave::GPR_RAX]), (running.rip, 0));
    drop(m);
    assert_eq!(
        guest
            .store
            .get(&format!("/local/domain/{new}/control/feature-suspend")),
        Some(&b"1"[..])
    );
    // `xl list` shows it under its name.
    let out = text(&sb.xl(&["list", "saved"])).0;
    let id_text = new.to_string();
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["saved", id_text.as_str()])),
        "{out}"
    );
}
