//! Protocol-level tests over a real socket: malformed packets, limits, keepalive during a slow call,
//! overlapping calls, many connections, console streams, running-domain state across restarts and snapshots of
//! running domains through a backend that can (or cannot) save memory.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{start, TempDir, TestBackend};
use libvirt_driver::backend::NoHypervisor;
use libvirt_driver::driver::{procs, Driver};
use libvirt_driver::proto::{
    self, ptype, status, DomRef, Header, RpcError, PROG_KEEPALIVE, PROG_REMOTE,
};
use libvirt_driver::store::Store;
use libvirt_driver::xdr::{Dec, Enc};

struct Client {
    s: UnixStream,
    serial: u32,
}

impl Client {
    fn connect(sock: &Path) -> Client {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, serial: 0 }
    }
    fn open(sock: &Path) -> Client {
        let mut c = Client::connect(sock);
        let mut e = Enc::new();
        e.opt_str(Some("xen:///system")).u32(0);
        c.call_ok(procs::CONNECT_OPEN, &e.buf);
        c
    }
    fn send(&mut self, h: &Header, payload: &[u8]) {
        self.s.write_all(&h.packet(payload)).unwrap();
    }
    fn send_call(&mut self, proc_: i32, payload: &[u8]) -> u32 {
        let serial = self.serial;
        self.serial += 1;
        let h = Header {
            prog: PROG_REMOTE,
            vers: 1,
            proc_,
            ptype: ptype::CALL,
            serial,
            status: status::OK,
        };
        self.send(&h, payload);
        serial
    }
    fn recv(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let len = u32::from_be_bytes(len) as usize;
        let mut buf = vec![0u8; len - 4];
        self.s.read_exact(&mut buf).ok()?;
        let h = Header::decode(&mut Dec::new(&buf[..24])).unwrap();
        Some((h, buf[24..].to_vec()))
    }
    fn call(&mut self, proc_: i32, payload: &[u8]) -> Result<Vec<u8>, RpcError> {
        let serial = self.send_call(proc_, payload);
        loop {
            let (h, p) = self.recv().expect("connection closed");
            if h.ptype != ptype::REPLY {
                continue;
            }
            assert_eq!((h.serial, h.proc_, h.prog), (serial, proc_, PROG_REMOTE));
            return if h.status == status::OK {
                Ok(p)
            } else {
                Err(RpcError::decode(&mut Dec::new(&p)).unwrap())
            };
        }
    }
    fn call_ok(&mut self, proc_: i32, payload: &[u8]) -> Vec<u8> {
        self.call(proc_, payload)
            .unwrap_or_else(|e| panic!("call {proc_} failed: {e}"))
    }
    fn define(&mut self, name: &str) -> DomRef {
        let xml = format!("<domain type='xen'><name>{name}</name><memory>262144</memory><os><type>xen</type></os></domain>");
        let mut e = Enc::new();
        e.str(&xml);
        let r = self.call_ok(procs::DOMAIN_DEFINE_XML, &e.buf);
        DomRef::decode(&mut Dec::new(&r)).unwrap()
    }
    fn hostname_works(&mut self) {
        let r = self.call_ok(procs::GET_HOSTNAME, &[]);
        assert!(!Dec::new(&r).str().unwrap().is_empty());
    }
}

fn dom_args(d: &DomRef) -> Vec<u8> {
    let mut e = Enc::new();
    d.encode(&mut e);
    e.buf
}

#[test]
fn malformed_packets_get_errors_and_the_daemon_keeps_serving() {
    let t = TempDir::new("malformed");
    let (_d, sock) = start(&t.0, Arc::new(NoHypervisor));

    // A length below the header size: the connection is dropped.
    let mut c = Client::connect(&sock);
    c.s.write_all(&[0, 0, 0, 8, 0, 0, 0, 0]).unwrap();
    assert!(c.recv().is_none());

    // A huge length: the caller gets an RPC error naming the limit, then the connection is closed.
    let mut c = Client::connect(&sock);
    let h = Header {
        prog: PROG_REMOTE,
        vers: 1,
        proc_: 3,
        ptype: ptype::CALL,
        serial: 7,
        status: status::OK,
    };
    let mut pkt = h.packet(&[]);
    pkt[..4].copy_from_slice(&(40u32 << 20).to_be_bytes());
    c.s.write_all(&pkt).unwrap();
    let (rh, p) = c.recv().expect("an error reply");
    assert_eq!(
        (rh.ptype, rh.status, rh.serial),
        (ptype::REPLY, status::ERROR, 7)
    );
    let e = RpcError::decode(&mut Dec::new(&p)).unwrap();
    assert_eq!((e.code, e.domain), (39, 7));
    assert!(e.message.contains("too large"), "{}", e.message);
    assert!(c.recv().is_none());

    let mut c = Client::open(&sock);
    // Truncated XDR: a string announcing more bytes than present.
    let e = c
        .call(
            procs::DOMAIN_LOOKUP_BY_NAME,
            &[0, 0, 0, 100, b'a', b'b', 0, 0],
        )
        .unwrap_err();
    assert_eq!((e.code, e.domain), (39, 7), "{e}");
    // Trailing garbage after a valid payload.
    let e = c.call(procs::GET_HOSTNAME, &[1, 2, 3, 4]).unwrap_err();
    assert_eq!(e.code, 39, "{e}");
    // A string over REMOTE_STRING_MAX.
    let mut big = Enc::new();
    big.u32(5 << 20);
    big.buf.resize(4 + (5 << 20), b'x');
    let e = c.call(procs::DOMAIN_DEFINE_XML, &big.buf).unwrap_err();
    assert!(e.message.contains("exceeds the limit"), "{e}");
    // An array over its .x limit.
    let mut arr = Enc::new();
    arr.u32(20000).u32(0).u32(0);
    let e = c.call(procs::GET_ALL_DOMAIN_STATS, &arr.buf).unwrap_err();
    assert!(e.message.contains("domains length 20000"), "{e}");
    // An unknown procedure: the message clients turn into VIR_ERR_NO_SUPPORT.
    let e = c.call(9999, &[]).unwrap_err();
    assert_eq!(
        (e.code, e.domain, e.message.as_str()),
        (39, 13, "unknown procedure: 9999")
    );
    // An unknown program.
    let h = Header {
        prog: 0x1234,
        vers: 1,
        proc_: 1,
        ptype: ptype::CALL,
        serial: 99,
        status: status::OK,
    };
    c.send(&h, &[]);
    let (rh, p) = c.recv().unwrap();
    assert_eq!((rh.prog, rh.serial, rh.status), (0x1234, 99, status::ERROR));
    let e = RpcError::decode(&mut Dec::new(&p)).unwrap();
    assert_eq!(
        e.message,
        format!("Cannot find program {} version 1", 0x1234)
    );
    // Unknown lookups: NO_DOMAIN 42.
    let mut e2 = Enc::new();
    e2.str("nosuch");
    let e = c.call(procs::DOMAIN_LOOKUP_BY_NAME, &e2.buf).unwrap_err();
    assert_eq!(e.code, 42);
    assert_eq!(
        e.message,
        "Domain not found: no domain with matching name 'nosuch'"
    );
    // Still serving on the same connection and on new ones.
    c.hostname_works();
    Client::open(&sock).hostname_works();
}

#[test]
fn calls_before_open_are_refused() {
    let t = TempDir::new("preopen");
    let (_d, sock) = start(&t.0, Arc::new(NoHypervisor));
    let mut c = Client::connect(&sock);
    let r = c.call_ok(procs::AUTH_LIST, &[]);
    assert_eq!(r, [0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(
        c.call_ok(procs::SUPPORTS_FEATURE, &[0, 0, 0, 10]),
        [0, 0, 0, 1]
    );
    let e = c.call(procs::GET_HOSTNAME, &[]).unwrap_err();
    assert!(e.message.contains("not open"), "{e}");
    let mut e = Enc::new();
    e.opt_str(Some("xen:///session")).u32(0);
    assert!(c.call(procs::CONNECT_OPEN, &e.buf).is_err());
}

#[test]
fn keepalive_and_other_calls_are_answered_while_a_slow_call_runs() {
    let t = TempDir::new("slow");
    let be = Arc::new(TestBackend {
        delay: Duration::from_millis(1500),
        ..TestBackend::default()
    });
    let (_d, sock) = start(&t.0, be);
    let mut c = Client::open(&sock);
    let dom = c.define("slow1");
    let slow = c.send_call(procs::DOMAIN_CREATE, &dom_args(&dom));
    let ping = Header {
        prog: PROG_KEEPALIVE,
        vers: 1,
        proc_: proto::KEEPALIVE_PING,
        ptype: ptype::MESSAGE,
        serial: 0,
        status: status::OK,
    };
    c.send(&ping, &[]);
    let quick = c.send_call(procs::GET_HOSTNAME, &[]);
    let t0 = std::time::Instant::now();
    let (h1, _) = c.recv().unwrap();
    assert_eq!(
        (h1.prog, h1.proc_),
        (PROG_KEEPALIVE, proto::KEEPALIVE_PONG),
        "PONG first"
    );
    let (h2, _) = c.recv().unwrap();
    assert_eq!(
        (h2.serial, h2.ptype),
        (quick, ptype::REPLY),
        "the quick call overtakes the slow one"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "answered while the slow call runs"
    );
    let (h3, _) = c.recv().unwrap();
    assert_eq!((h3.serial, h3.status), (slow, status::OK));
}

#[test]
fn many_concurrent_connections() {
    let t = TempDir::new("many");
    let (_d, sock) = start(&t.0, Arc::new(NoHypervisor));
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::open(&sock);
                let d = c.define(&format!("many{i}"));
                for _ in 0..20 {
                    let x = c.call_ok(procs::DOMAIN_GET_XML_DESC, &{
                        let mut e = Enc::new();
                        d.encode(&mut e);
                        e.u32(0);
                        e.buf
                    });
                    assert!(Dec::new(&x)
                        .str()
                        .unwrap()
                        .contains(&format!("<name>many{i}</name>")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = Client::open(&sock);
    let r = c.call_ok(procs::CONNECT_LIST_ALL_DOMAINS, &[0, 0, 0, 1, 0, 0, 0, 0]);
    let mut d = Dec::new(&r);
    let n = d.u32().unwrap();
    assert_eq!(n, 40);
}

#[test]
fn console_stream_data_finish_and_abort() {
    let t = TempDir::new("console");
    let be = Arc::new(TestBackend::default());
    let (_d, sock) = start(&t.0, be);
    let mut c = Client::open(&sock);
    let dom = c.define("con1");
    // Inactive: refused as libvirt does.
    let open_args = {
        let mut e = Enc::new();
        dom.encode(&mut e);
        e.opt_str(None).u32(0);
        e.buf
    };
    let e = c.call(procs::DOMAIN_OPEN_CONSOLE, &open_args).unwrap_err();
    assert_eq!(e.code, 55, "{e}");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    for abort in [false, true] {
        let serial = c.call_serial_ok(procs::DOMAIN_OPEN_CONSOLE, &open_args);
        let data = Header {
            prog: PROG_REMOTE,
            vers: 1,
            proc_: procs::DOMAIN_OPEN_CONSOLE,
            ptype: ptype::STREAM,
            serial,
            status: status::CONTINUE,
        };
        c.send(&data, b"hello");
        let (h, p) = c.recv().unwrap();
        assert_eq!(
            (h.ptype, h.status, h.serial, p.as_slice()),
            (ptype::STREAM, status::CONTINUE, serial, &b"hello"[..])
        );
        let end = Header {
            status: if abort { status::ERROR } else { status::OK },
            ..data
        };
        c.send(&end, &[]);
        let (h, p) = c.recv().unwrap();
        assert_eq!(
            (h.ptype, h.status, h.serial, p.len()),
            (ptype::STREAM, status::OK, serial, 0)
        );
    }
    c.hostname_works();
}

impl Client {
    fn call_serial_ok(&mut self, proc_: i32, payload: &[u8]) -> u32 {
        let serial = self.send_call(proc_, payload);
        let (h, p) = self.recv().unwrap();
        assert_eq!(
            (h.serial, h.status),
            (serial, status::OK),
            "{:?}",
            RpcError::decode(&mut Dec::new(&p))
        );
        serial
    }
}

#[test]
fn running_domains_are_found_again_after_a_restart() {
    let t = TempDir::new("restart");
    let be = Arc::new(TestBackend::default());
    {
        let (_d, sock) = start(&t.0, be.clone());
        let mut c = Client::open(&sock);
        let dom = c.define("run1");
        c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    }
    assert!(t.0.join("state/run1.xml").exists());
    // A new driver on the same directories with the same hypervisor finds the guest running.
    let store = Store::open(&t.0.join("config"), &t.0.join("state")).unwrap();
    let d2 = Driver::new(store, be);
    let r = d2.lookup_name("run1").unwrap();
    assert_eq!(r.id, 1);
    // Without the hypervisor the status file is stale and removed.
    let store = Store::open(&t.0.join("config"), &t.0.join("state")).unwrap();
    let d3 = Driver::new(store, Arc::new(NoHypervisor));
    assert_eq!(d3.lookup_name("run1").unwrap().id, -1);
    assert!(!t.0.join("state/run1.xml").exists());
}

fn next_message(c: &mut Client) -> (Header, Vec<u8>) {
    loop {
        let (h, p) = c.recv().expect("a packet");
        if h.ptype == ptype::MESSAGE {
            return (h, p);
        }
    }
}

#[test]
fn lifecycle_events_and_transient_domains_through_a_backend() {
    let t = TempDir::new("lifecycle");
    let be = Arc::new(TestBackend::default());
    let (_d, sock) = start(&t.0, be);
    let mut c = Client::open(&sock);
    let mut ev = Client::open(&sock);
    let r = ev.call_ok(
        procs::DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
        &[0, 0, 0, 0, 0, 0, 0, 0],
    );
    let cb = Dec::new(&r).i32().unwrap();
    let lifecycle = |p: &[u8]| {
        let mut d = Dec::new(p);
        let id = d.i32().unwrap();
        let dom = DomRef::decode(&mut d).unwrap();
        (id, dom.name, dom.id, d.i32().unwrap(), d.i32().unwrap())
    };

    // Persistent domain: defined, started (gets an id and a status file), destroyed (back to shut off).
    let dom = c.define("life1");
    assert_eq!(
        lifecycle(&next_message(&mut ev).1),
        (cb, "life1".into(), -1, 0, 0)
    );
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let (h, p) = next_message(&mut ev);
    assert_eq!(h.proc_, procs::DOMAIN_EVENT_CALLBACK_LIFECYCLE);
    assert_eq!(lifecycle(&p), (cb, "life1".into(), 1, 2, 0));
    assert!(t.0.join("state/life1.xml").exists());
    let mut e = Enc::new();
    e.str("life1");
    let r = c.call_ok(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf);
    let running = DomRef::decode(&mut Dec::new(&r)).unwrap();
    assert_eq!(running.id, 1);
    let live = c.call_ok(procs::DOMAIN_GET_XML_DESC, &{
        let mut e = Enc::new();
        running.encode(&mut e);
        e.u32(0);
        e.buf
    });
    assert!(Dec::new(&live)
        .str()
        .unwrap()
        .contains("<domain type='xen' id='1'>"));
    c.call_ok(procs::DOMAIN_DESTROY, &dom_args(&running));
    // STOPPED (5) with detail DESTROYED (1).
    assert_eq!(
        lifecycle(&next_message(&mut ev).1),
        (cb, "life1".into(), -1, 5, 1)
    );
    assert!(!t.0.join("state/life1.xml").exists());
    let st = c.call_ok(procs::DOMAIN_GET_STATE, &{
        let mut e = Enc::new();
        dom.encode(&mut e);
        e.u32(0);
        e.buf
    });
    let mut st = Dec::new(&st);
    assert_eq!(st.i32().unwrap(), 5);
    // Reason VIR_DOMAIN_SHUTOFF_DESTROYED (2).
    assert_eq!(st.i32().unwrap(), 2);

    // Transient domain (create-xml): exists while running, disappears when destroyed.
    let mut e = Enc::new();
    e.str("<domain type='xen'><name>tr1</name><memory>262144</memory><os><type>xen</type></os></domain>")
        .u32(0);
    let r = c.call_ok(procs::DOMAIN_CREATE_XML, &e.buf);
    let tr = DomRef::decode(&mut Dec::new(&r)).unwrap();
    assert!(tr.id > 0);
    let pers = c.call_ok(procs::DOMAIN_IS_PERSISTENT, &dom_args(&tr));
    assert_eq!(pers, [0, 0, 0, 0]);
    assert_eq!(lifecycle(&next_message(&mut ev).1).3, 2);
    c.call_ok(procs::DOMAIN_DESTROY, &dom_args(&tr));
    assert_eq!(lifecycle(&next_message(&mut ev).1).3, 5);
    let mut e = Enc::new();
    e.str("tr1");
    assert_eq!(
        c.call(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf)
            .unwrap_err()
            .code,
        42
    );
    ev.call_ok(
        procs::DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
        &cb.to_be_bytes(),
    );
}

#[test]
fn redefining_a_running_domain_applies_at_the_next_boot() {
    let t = TempDir::new("nextdef");
    let be = Arc::new(TestBackend::default());
    let (_d, sock) = start(&t.0, be);
    let mut c = Client::open(&sock);
    let dom = c.define("nd1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let uuid = libvirt_driver::proto::uuid_string(&dom.uuid);
    let mut e = Enc::new();
    e.str(&format!(
        "<domain type='xen'><name>nd1</name><uuid>{uuid}</uuid><memory>524288</memory><os><type>xen</type></os></domain>"
    ));
    c.call_ok(procs::DOMAIN_DEFINE_XML, &e.buf);
    let xml = |c: &mut Client, flags: u32| {
        let mut e = Enc::new();
        dom.encode(&mut e);
        e.u32(flags);
        Dec::new(&c.call_ok(procs::DOMAIN_GET_XML_DESC, &e.buf))
            .str()
            .unwrap()
    };
    assert!(
        xml(&mut c, 0).contains("<memory unit='KiB'>262144</memory>"),
        "live keeps the running config"
    );
    assert!(
        xml(&mut c, 2).contains("<memory unit='KiB'>524288</memory>"),
        "inactive shows the new config"
    );
    c.call_ok(procs::DOMAIN_DESTROY, &dom_args(&dom));
    assert!(
        xml(&mut c, 0).contains("<memory unit='KiB'>524288</memory>"),
        "the new config applies after stop"
    );
}

/// A connection registered for lifecycle events of every domain.
struct Events(Client);

impl Events {
    fn open(sock: &Path) -> Events {
        let mut c = Client::open(sock);
        c.call_ok(
            procs::DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
            &[0, 0, 0, 0, 0, 0, 0, 0],
        );
        Events(c)
    }
    /// The next lifecycle event: (domain name, event, detail).
    fn next(&mut self) -> (String, i32, i32) {
        let (_, p) = next_message(&mut self.0);
        let mut d = Dec::new(&p);
        d.i32().unwrap();
        let dom = DomRef::decode(&mut d).unwrap();
        (dom.name, d.i32().unwrap(), d.i32().unwrap())
    }
}

fn snap_args(name: &str, dom: &DomRef, flags: u32) -> Vec<u8> {
    let mut e = Enc::new();
    e.str(name);
    dom.encode(&mut e);
    e.u32(flags);
    e.buf
}

fn create_snapshot(c: &mut Client, dom: &DomRef, name: &str) -> Result<Vec<u8>, RpcError> {
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.str(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .u32(0);
    c.call(185, &e.buf)
}

fn lookup(c: &mut Client, name: &str) -> DomRef {
    let mut e = Enc::new();
    e.str(name);
    DomRef::decode(&mut Dec::new(
        &c.call_ok(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf),
    ))
    .unwrap()
}

fn state_of(c: &mut Client, dom: &DomRef) -> (i32, i32) {
    let st = c.call_ok(procs::DOMAIN_GET_STATE, &{
        let mut e = Enc::new();
        dom.encode(&mut e);
        e.u32(0);
        e.buf
    });
    let mut d = Dec::new(&st);
    (d.i32().unwrap(), d.i32().unwrap())
}

#[test]
fn running_domain_snapshot_is_refused_while_the_backend_cannot_save() {
    let t = TempDir::new("snap-nosave");
    let (_d, sock) = start(&t.0, Arc::new(TestBackend::default()));
    let mut c = Client::open(&sock);
    let dom = c.define("ns1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let err = create_snapshot(&mut c, &dom, "m1").unwrap_err();
    // VIR_ERR_OPERATION_UNSUPPORTED, and nothing changed: still running, no snapshot, no file.
    assert_eq!(err.code, 84, "{err}");
    assert!(err.message.contains("saving and restoring"), "{err}");
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert_eq!(
        c.call_ok(187, &[dom_args(&dom), vec![0; 4]].concat()),
        [0; 4]
    );
    assert!(!t.0.join("config/snapshot/ns1").exists());
}

#[test]
fn running_domain_snapshot_saves_memory_and_revert_restores_it() {
    let t = TempDir::new("snap-save");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let mut ev = Client::open(&sock);
    ev.call_ok(
        procs::DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
        &[0, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut event = || {
        let (_, p) = next_message(&mut ev);
        let mut d = Dec::new(&p);
        d.i32().unwrap();
        DomRef::decode(&mut d).unwrap();
        (d.i32().unwrap(), d.i32().unwrap())
    };
    let dom = c.define("rs1");
    assert_eq!(event(), (0, 0));
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(event(), (2, 0));

    create_snapshot(&mut c, &dom, "m1").unwrap();
    // Suspended for the save and going on: SUSPENDED and RESUMED with detail FROM_SNAPSHOT, the same domain
    // still running (the backend was told to let it go on).
    assert_eq!(event(), (3, 5));
    assert_eq!(event(), (4, 2));
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert_eq!(
        *be.saved.lock().unwrap(),
        [(1, libvirt_driver::backend::AfterSave::Continue)]
    );
    assert_eq!(lookup(&mut c, "rs1").id, 1);
    // The memory is a save image: the daemon's header and the domain XML, then the backend's state.
    let mem = t.0.join("config/snapshot/rs1/m1.save");
    let image = std::fs::read(&mem).unwrap();
    assert_eq!(&image[..16], b"libvirt-xml\n \0 \r");
    let xml_len = u32::from_le_bytes(image[20..24].try_into().unwrap()) as usize;
    let image_xml = std::str::from_utf8(&image[64..64 + xml_len - 1]).unwrap();
    assert!(image_xml.contains("<name>rs1</name>"), "{image_xml}");
    assert!(image[64 + xml_len..].starts_with(b"TESTSTATE of domain 1\n"));
    let xml = c.call_ok(186, &snap_args("m1", &dom, 0));
    let xml = Dec::new(&xml).str().unwrap();
    assert!(
        xml.contains("<state>running</state>") && xml.contains("<memory snapshot='internal'/>"),
        "{xml}"
    );

    // Revert while running: the domain is stopped, redefined and restored from the saved memory.
    c.call_ok(192, &snap_args("m1", &dom, 0));
    assert_eq!(event(), (5, 6));
    assert_eq!(event(), (0, 3));
    assert_eq!(event(), (2, 3));
    // Running, reason VIR_DOMAIN_RUNNING_FROM_SNAPSHOT.
    assert_eq!(state_of(&mut c, &dom), (1, 4));
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    // With PAUSED it comes back paused.
    c.call_ok(192, &snap_args("m1", &dom, 2));
    assert_eq!(event(), (5, 6));
    assert_eq!(event(), (0, 3));
    assert_eq!(event(), (2, 3));
    assert_eq!(event(), (3, 5));
    assert_eq!(state_of(&mut c, &dom), (3, 7));

    // Deleting the snapshot removes its memory image too.
    c.call_ok(193, &snap_args("m1", &dom, 0));
    assert!(!mem.exists());
    let err = c.call(192, &snap_args("m1", &dom, 0)).unwrap_err();
    assert_eq!(err.code, 72, "{err}");
}

#[test]
fn a_running_domains_snapshot_whose_disks_fail_leaves_it_running_and_keeps_nothing() {
    let t = TempDir::new("snap-disk-fail");
    let disk = t.0.join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output()
        .expect("running qemu-img");
    assert!(out.status.success(), "{out:?}");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let xml = format!(
        "<domain type='xen'><name>sf1</name><memory>262144</memory><os><type>xen</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='xvda' bus='xen'/></disk></devices></domain>",
        disk.display()
    );
    let mut e = Enc::new();
    e.str(&xml);
    let dom = DomRef::decode(&mut Dec::new(&c.call_ok(procs::DOMAIN_DEFINE_XML, &e.buf))).unwrap();
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    // The disk's snapshot fails (the image is no qcow2 any more): the guest goes on, nothing is recorded.
    std::fs::write(&disk, b"not a qcow2 image").unwrap();
    let err = create_snapshot(&mut c, &dom, "f1").unwrap_err();
    assert!(err.message.contains("qemu-img"), "{err}");
    assert_eq!(state_of(&mut c, &dom).0, 1);
    assert_eq!(lookup(&mut c, "sf1").id, 1);
    assert_eq!(*be.running.lock().unwrap(), [1]);
    assert!(be.saved.lock().unwrap().is_empty());
    assert!(!t.0.join("config/snapshot/sf1/f1.save").exists());
    assert!(!t.0.join("config/snapshot/sf1/f1.xml").exists());
}

#[test]
fn a_running_domains_snapshot_takes_its_disks_while_the_guest_is_suspended() {
    let t = TempDir::new("snap-disks");
    let disk = t.0.join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output()
        .expect("running qemu-img");
    assert!(out.status.success(), "{out:?}");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let mut ev = Events::open(&sock);
    let xml = format!(
        "<domain type='xen'><name>sd1</name><memory>262144</memory><os><type>xen</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='xvda' bus='xen'/></disk></devices></domain>",
        disk.display()
    );
    let mut e = Enc::new();
    e.str(&xml);
    let dom = DomRef::decode(&mut Dec::new(&c.call_ok(procs::DOMAIN_DEFINE_XML, &e.buf))).unwrap();
    assert_eq!(ev.next().1, 0);
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next().1, 2);
    let tags = || {
        let o = std::process::Command::new("qemu-img")
            .args(["snapshot", "-l"])
            .arg(&disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    // The memory is written and the disk snapshot taken while the guest is suspended (the test backend runs
    // the caller's part there), then it goes on in the same domain: to the client it was suspended and resumed.
    create_snapshot(&mut c, &dom, "d1").unwrap();
    assert_eq!(ev.next(), ("sd1".into(), 3, 5));
    assert_eq!(ev.next(), ("sd1".into(), 4, 2));
    assert_eq!(
        *be.saved.lock().unwrap(),
        [(1, libvirt_driver::backend::AfterSave::Continue)]
    );
    assert!(be.restored.lock().unwrap().is_empty());
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert_eq!(lookup(&mut c, "sd1").id, 1);
    assert_eq!(*be.running.lock().unwrap(), [1]);
    assert!(t.0.join("state/sd1.xml").exists());
    assert!(tags().contains(" d1 "), "{}", tags());
    assert!(t.0.join("config/snapshot/sd1/d1.save").exists());

    // HALT: stopped for the save and left shut off.
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.str("<domainsnapshot><name>d2</name></domainsnapshot>")
        .u32(8);
    c.call_ok(185, &e.buf);
    assert_eq!(ev.next(), ("sd1".into(), 3, 5));
    assert_eq!(ev.next(), ("sd1".into(), 5, 6));
    assert_eq!(state_of(&mut c, &dom), (5, 7));
    assert!(be.running.lock().unwrap().is_empty());
    assert!(tags().contains(" d2 "), "{}", tags());

    // Reverting to d1 restores its memory.
    c.call_ok(192, &snap_args("d1", &dom, 0));
    assert_eq!(ev.next(), ("sd1".into(), 0, 3));
    assert_eq!(ev.next(), ("sd1".into(), 2, 3));
    assert_eq!(state_of(&mut c, &dom), (1, 4));
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    // A snapshot whose memory file is damaged is refused before the running domain is touched.
    std::fs::write(t.0.join("config/snapshot/sd1/d1.save"), vec![0u8; 100]).unwrap();
    let id = lookup(&mut c, "sd1").id;
    let err = c.call(192, &snap_args("d1", &dom, 0)).unwrap_err();
    assert!(err.message.contains("image magic is incorrect"), "{err}");
    assert_eq!(
        (lookup(&mut c, "sd1").id, state_of(&mut c, &dom)),
        (id, (1, 4))
    );
}

// Save, restore and managed save.

fn dom_flags(d: &DomRef, flags: u32) -> Vec<u8> {
    let mut e = Enc::new();
    d.encode(&mut e);
    e.u32(flags);
    e.buf
}

fn save_args(d: &DomRef, to: &Path, dxml: Option<&str>, flags: u32) -> Vec<u8> {
    let mut e = Enc::new();
    d.encode(&mut e);
    e.str(to.to_str().unwrap()).opt_str(dxml).u32(flags);
    e.buf
}

fn restore_args(from: &Path, dxml: Option<&str>, flags: u32) -> Vec<u8> {
    let mut e = Enc::new();
    e.str(from.to_str().unwrap()).opt_str(dxml).u32(flags);
    e.buf
}

fn path_flags(p: &Path, flags: u32) -> Vec<u8> {
    let mut e = Enc::new();
    e.str(p.to_str().unwrap()).u32(flags);
    e.buf
}

fn image_xml(c: &mut Client, p: &Path, flags: u32) -> Result<String, RpcError> {
    c.call(procs::DOMAIN_SAVE_IMAGE_GET_XML_DESC, &path_flags(p, flags))
        .map(|r| Dec::new(&r).str().unwrap())
}

fn live_xml(c: &mut Client, d: &DomRef) -> String {
    Dec::new(&c.call_ok(procs::DOMAIN_GET_XML_DESC, &dom_flags(d, 0)))
        .str()
        .unwrap()
}

fn has_managed_save(c: &mut Client, d: &DomRef) -> bool {
    c.call_ok(procs::DOMAIN_HAS_MANAGED_SAVE_IMAGE, &dom_flags(d, 0)) == [0, 0, 0, 1]
}

/// The names `virConnectListAllDomains` returns for `flags`.
fn list_names(c: &mut Client, flags: u32) -> Vec<String> {
    let mut e = Enc::new();
    e.i32(1).u32(flags);
    let r = c.call_ok(procs::CONNECT_LIST_ALL_DOMAINS, &e.buf);
    let mut d = Dec::new(&r);
    (0..d.u32().unwrap())
        .map(|_| DomRef::decode(&mut d).unwrap().name)
        .collect()
}

/// The header flags word and the XML of an image file, and what follows.
fn image_parts(p: &Path) -> (u32, String, Vec<u8>) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..16], b"libvirt-xml\n \0 \r", "{}", p.display());
    assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 2);
    let len = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
    assert!(b[28..64].iter().all(|x| *x == 0));
    assert_eq!(b[64 + len - 1], 0, "the XML is NUL-terminated");
    (
        u32::from_le_bytes(b[24..28].try_into().unwrap()),
        String::from_utf8(b[64..64 + len - 1].to_vec()).unwrap(),
        b[64 + len..].to_vec(),
    )
}

/// The files of a directory, hidden ones included (temporary files must not stay behind).
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn save_and_restore_stop_and_start_the_domain_with_libvirts_events_and_states() {
    let t = TempDir::new("save");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let mut ev = Events::open(&sock);
    let dom = c.define("sv1");
    assert_eq!(ev.next(), ("sv1".into(), 0, 0));
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next(), ("sv1".into(), 2, 0));
    let img_dir = t.0.join("images");
    std::fs::create_dir(&img_dir).unwrap();
    let img = img_dir.join("sv1.save");

    // virDomainSave: the domain is written out and stops, reason SAVED, event STOPPED/SAVED.
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.str(img.to_str().unwrap());
    c.call_ok(procs::DOMAIN_SAVE, &e.buf);
    assert_eq!(ev.next(), ("sv1".into(), 5, 4));
    assert_eq!(state_of(&mut c, &dom), (5, 5));
    assert_eq!(lookup(&mut c, "sv1").id, -1);
    assert!(!t.0.join("state/sv1.xml").exists());
    assert_eq!(
        *be.saved.lock().unwrap(),
        [(1, libvirt_driver::backend::AfterSave::Stop)]
    );
    assert!(be.running.lock().unwrap().is_empty());
    assert_eq!(files(&img_dir), ["sv1.save"]);
    let (flags, xml, state) = image_parts(&img);
    assert_eq!(flags, 0, "a running domain restores running");
    assert!(
        xml.contains("<name>sv1</name>") && !xml.contains(" id="),
        "{xml}"
    );
    assert!(state.starts_with(b"TESTSTATE of domain 1\n"));
    assert_eq!(
        std::fs::metadata(&img).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // virDomainRestore: STARTED/RESTORED, running with reason RESTORED; the image stays.
    let mut e = Enc::new();
    e.str(img.to_str().unwrap());
    c.call_ok(procs::DOMAIN_RESTORE, &e.buf);
    assert_eq!(ev.next(), ("sv1".into(), 2, 2));
    assert_eq!(state_of(&mut c, &dom), (1, 3));
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    let id = lookup(&mut c, "sv1").id;
    assert_eq!(id, 2);
    assert!(live_xml(&mut c, &dom).contains("<domain type='xen' id='2'>"));
    assert!(t.0.join("state/sv1.xml").exists());
    assert!(img.exists());
    // A domain that runs cannot be restored again: libvirt's error, nothing changes.
    let err = c
        .call(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&img, None, 0))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            55,
            "Requested operation is not valid: domain 'sv1' is already active"
        )
    );
    assert_eq!(lookup(&mut c, "sv1").id, 2);

    // SAVE_PAUSED records that the domain restores paused: SUSPENDED/RESTORED after STARTED/RESTORED.
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 4));
    assert_eq!(ev.next(), ("sv1".into(), 5, 4));
    assert_eq!(image_parts(&img).0, 1);
    c.call_ok(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&img, None, 0));
    assert_eq!(ev.next(), ("sv1".into(), 2, 2));
    assert_eq!(ev.next(), ("sv1".into(), 3, 4));
    assert_eq!(state_of(&mut c, &dom), (3, 1));
    assert_eq!(be.restored_paused.lock().unwrap().last(), Some(&true));
    // A paused domain saved as it is restores paused; RESTORE_RUNNING overrides that.
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 0));
    assert_eq!(ev.next(), ("sv1".into(), 5, 4));
    assert_eq!(image_parts(&img).0, 1);
    c.call_ok(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&img, None, 2));
    assert_eq!(ev.next(), ("sv1".into(), 2, 2));
    assert_eq!(state_of(&mut c, &dom), (1, 3));
    // RESTORE_PAUSED on an image that restores running: SUSPENDED/PAUSED.
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 2));
    assert_eq!(ev.next(), ("sv1".into(), 5, 4));
    assert_eq!(image_parts(&img).0, 0);
    c.call_ok(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&img, None, 4));
    assert_eq!(ev.next(), ("sv1".into(), 2, 2));
    assert_eq!(ev.next(), ("sv1".into(), 3, 0));
    assert_eq!(state_of(&mut c, &dom), (3, 1));

    // Bad flags and paths are refused before anything happens.
    for (flags, want) in [(6, "mutually exclusive"), (8, "unsupported flags")] {
        let err = c
            .call(
                procs::DOMAIN_SAVE_FLAGS,
                &save_args(&dom, &img, None, flags),
            )
            .unwrap_err();
        assert_eq!(err.code, 8, "{err}");
        assert!(err.message.contains(want), "{err}");
    }
    let err = c
        .call(
            procs::DOMAIN_SAVE_FLAGS,
            &save_args(&dom, Path::new("relative.save"), None, 0),
        )
        .unwrap_err();
    assert_eq!(err.code, 8, "{err}");
    let err = c
        .call(
            procs::DOMAIN_SAVE_FLAGS,
            &save_args(&dom, &t.0.join("no/such/dir/x.save"), None, 0),
        )
        .unwrap_err();
    assert_eq!(err.code, 38, "{err}");
    assert!(
        err.message
            .starts_with("Failed to create domain save file '")
            && err.message.ends_with("x.save': No such file or directory"),
        "{err}"
    );
    assert_eq!(state_of(&mut c, &dom), (3, 1));

    // A shut-off domain cannot be saved.
    c.call_ok(procs::DOMAIN_DESTROY, &dom_args(&dom));
    assert_eq!(ev.next(), ("sv1".into(), 5, 1));
    let err = c
        .call(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 0))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            55,
            "Requested operation is not valid: domain is not running"
        )
    );

    // A transient domain saved goes away, and restoring it brings it back transient.
    let mut e = Enc::new();
    e.str("<domain type='xen'><name>tr2</name><memory>262144</memory><os><type>xen</type></os></domain>")
        .u32(0);
    let tr = DomRef::decode(&mut Dec::new(&c.call_ok(procs::DOMAIN_CREATE_XML, &e.buf))).unwrap();
    assert_eq!(ev.next().1, 2);
    let tr_img = img_dir.join("tr2.save");
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&tr, &tr_img, None, 0));
    assert_eq!(ev.next(), ("tr2".into(), 5, 4));
    let mut e = Enc::new();
    e.str("tr2");
    assert_eq!(
        c.call(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf)
            .unwrap_err()
            .code,
        42
    );
    c.call_ok(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&tr_img, None, 0));
    assert_eq!(ev.next(), ("tr2".into(), 2, 2));
    let tr = lookup(&mut c, "tr2");
    assert_eq!(
        c.call_ok(procs::DOMAIN_IS_PERSISTENT, &dom_args(&tr)),
        [0, 0, 0, 0]
    );
    assert_eq!(state_of(&mut c, &tr), (1, 3));
    assert_eq!(files(&img_dir), ["sv1.save", "tr2.save"]);
}

#[test]
fn a_failed_save_leaves_no_file_and_the_old_image_intact() {
    let t = TempDir::new("save-fail");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let mut ev = Events::open(&sock);
    let dom = c.define("sf1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next().1, 0);
    assert_eq!(ev.next().1, 2);
    let img = t.0.join("sf1.save");
    std::fs::write(&img, b"an older image").unwrap();
    let before = files(&t.0);

    // The backend fails half-way: the error is the backend's, the domain still runs, nothing is written.
    be.fail_save
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let err = c
        .call(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 0))
        .unwrap_err();
    assert_eq!(err.code, 1, "{err}");
    assert!(err.message.contains("Failed to save domain"), "{err}");
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert_eq!(std::fs::read(&img).unwrap(), b"an older image");
    assert_eq!(files(&t.0), before);
    // The domain is not left busy.
    c.call_ok(procs::DOMAIN_SUSPEND, &dom_args(&dom));
    assert_eq!(ev.next().1, 3);
    c.call_ok(procs::DOMAIN_RESUME, &dom_args(&dom));
    assert_eq!(ev.next().1, 4);

    // The guest dies during the save: shut off with reason FAILED, event STOPPED/FAILED, no image.
    be.die_in_save
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let err = c
        .call(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0))
        .unwrap_err();
    assert_eq!(err.code, 1, "{err}");
    assert_eq!(ev.next(), ("sf1".into(), 5, 5));
    assert_eq!(state_of(&mut c, &dom), (5, 6));
    assert!(!has_managed_save(&mut c, &dom));
    assert!(files(&t.0.join("save")).is_empty());
    assert!(!t.0.join("state/sf1.xml").exists());
    c.hostname_works();
}

#[test]
fn bad_images_get_libvirt_errors_and_create_nothing() {
    let t = TempDir::new("save-bad");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let garbage = t.0.join("garbage");
    std::fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let empty = t.0.join("empty");
    std::fs::write(&empty, b"").unwrap();

    let dom = c.define("bi1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let good = t.0.join("good.save");
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &good, None, 0));
    c.call_ok(procs::DOMAIN_UNDEFINE, &dom_args(&dom));
    let bytes = std::fs::read(&good).unwrap();
    let xml_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
    let cut_xml = t.0.join("cut-xml.save");
    std::fs::write(&cut_xml, &bytes[..64 + xml_len / 2]).unwrap();
    let cut_state = t.0.join("cut-state.save");
    std::fs::write(&cut_state, &bytes[..bytes.len() - 100]).unwrap();
    let mut newer = bytes.clone();
    newer[16] = 9;
    let newer_path = t.0.join("newer.save");
    std::fs::write(&newer_path, &newer).unwrap();

    for (file, code, want) in [
        (&garbage, 9, "image magic is incorrect"),
        (&empty, 9, "shorter than 64 bytes"),
        (&cut_xml, 9, "the file is truncated"),
        (&newer_path, 9, "image version is not supported"),
        (&t.0, 9, "not a regular file"),
        (
            &t.0.join("missing.save"),
            38,
            "Failed to open domain image file",
        ),
    ] {
        for proc_ in [
            procs::DOMAIN_RESTORE_FLAGS,
            procs::DOMAIN_SAVE_IMAGE_GET_XML_DESC,
        ] {
            let args = if proc_ == procs::DOMAIN_RESTORE_FLAGS {
                restore_args(file, None, 0)
            } else {
                path_flags(file, 0)
            };
            let err = c.call(proc_, &args).unwrap_err();
            assert_eq!(err.code, code, "{}: {err}", file.display());
            assert!(err.message.contains(want), "{}: {err}", file.display());
        }
    }
    // The header is fine but the backend's state is cut short: the backend says so.
    let err = c
        .call(
            procs::DOMAIN_RESTORE_FLAGS,
            &restore_args(&cut_state, None, 0),
        )
        .unwrap_err();
    assert!(err.message.contains("not one this backend wrote"), "{err}");
    // Nothing was created, no file was changed, and the daemon goes on.
    let mut e = Enc::new();
    e.str("bi1");
    assert_eq!(
        c.call(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf)
            .unwrap_err()
            .code,
        42
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5a; 4096]);
    assert!(be.restored.lock().unwrap().is_empty());
    c.hostname_works();
    // A good image still restores.
    c.call_ok(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&good, None, 0));
    assert_eq!(lookup(&mut c, "bi1").id, 2);
}

#[test]
fn a_backend_that_cannot_save_fails_cleanly_and_loses_nothing() {
    let t = TempDir::new("save-unsupported");
    let (_d, sock) = start(&t.0, Arc::new(TestBackend::default()));
    let mut c = Client::open(&sock);
    let dom = c.define("ns2");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let img = t.0.join("ns2.save");
    for (proc_, args) in [
        (procs::DOMAIN_SAVE_FLAGS, save_args(&dom, &img, None, 0)),
        (procs::DOMAIN_MANAGED_SAVE, dom_flags(&dom, 0)),
    ] {
        let err = c.call(proc_, &args).unwrap_err();
        assert_eq!(err.code, 84, "{err}");
        assert!(err.message.contains("saving and restoring"), "{err}");
    }
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert!(!img.exists());
    assert!(!has_managed_save(&mut c, &dom));
    // An image (here one a saving daemon wrote) is not restored either, and nothing is created.
    let t2 = TempDir::new("save-unsupported2");
    let (_d2, sock2) = start(&t2.0, Arc::new(TestBackend::saving()));
    let mut c2 = Client::open(&sock2);
    let d2 = c2.define("other");
    c2.call_ok(procs::DOMAIN_CREATE, &dom_args(&d2));
    c2.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&d2, &img, None, 0));
    let err = c
        .call(procs::DOMAIN_RESTORE_FLAGS, &restore_args(&img, None, 0))
        .unwrap_err();
    assert_eq!(err.code, 84, "{err}");
    let mut e = Enc::new();
    e.str("other");
    assert_eq!(
        c.call(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf)
            .unwrap_err()
            .code,
        42
    );
}

#[test]
fn save_image_xml_is_read_and_replaced_with_the_saved_state_kept() {
    let t = TempDir::new("save-xml");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let dom = c.define("sx1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let img = t.0.join("sx1.save");
    // SAVE_FLAGS with an XML: the image restores with it.
    let uuid = libvirt_driver::proto::uuid_string(&dom.uuid);
    let with_title = format!(
        "<domain type='xen'><name>sx1</name><uuid>{uuid}</uuid><title>saved</title><memory>262144</memory><os><type>xen</type></os></domain>"
    );
    c.call_ok(
        procs::DOMAIN_SAVE_FLAGS,
        &save_args(&dom, &img, Some(&with_title), 0),
    );
    let xml = image_xml(&mut c, &img, 0).unwrap();
    assert!(
        xml.contains("<title>saved</title>") && xml.contains("<name>sx1</name>"),
        "{xml}"
    );
    assert!(!xml.contains(" id="), "{xml}");
    let state = image_parts(&img).2;

    // SAVE_IMAGE_DEFINE_XML replaces the XML; the state that follows is unchanged.
    let edited = with_title.replace("saved", "edited");
    let mut e = Enc::new();
    e.str(img.to_str().unwrap()).str(&edited).u32(4);
    c.call_ok(procs::DOMAIN_SAVE_IMAGE_DEFINE_XML, &e.buf);
    assert!(image_xml(&mut c, &img, 0)
        .unwrap()
        .contains("<title>edited</title>"));
    let (flags, _, state2) = image_parts(&img);
    assert_eq!((flags, state2 == state), (1, true));
    assert_eq!(files(&t.0).iter().filter(|f| f.starts_with('.')).count(), 0);
    // What does not describe the same guest is refused, and the image stays as it was.
    let bytes = std::fs::read(&img).unwrap();
    for (xml, code, want) in [
        (
            edited.replace("262144", "524288"),
            67,
            "Target domain max memory 524288 does not match source 262144",
        ),
        (
            edited.replace("<name>sx1</name>", "<name>other</name>"),
            67,
            "Target domain name 'other' does not match source 'sx1'",
        ),
        (
            edited.replace(&uuid, "00000000-0000-0000-0000-000000000001"),
            67,
            "Target domain uuid",
        ),
        (
            "<domain type='xen'><name>sx1</nam></domain>".to_string(),
            27,
            "XML error",
        ),
    ] {
        let mut e = Enc::new();
        e.str(img.to_str().unwrap()).str(&xml).u32(0);
        let err = c
            .call(procs::DOMAIN_SAVE_IMAGE_DEFINE_XML, &e.buf)
            .unwrap_err();
        assert_eq!(err.code, code, "{err}");
        assert!(err.message.contains(want), "{err}");
    }
    let mut e = Enc::new();
    e.str(img.to_str().unwrap()).str(&edited).u32(6);
    assert_eq!(
        c.call(procs::DOMAIN_SAVE_IMAGE_DEFINE_XML, &e.buf)
            .unwrap_err()
            .code,
        8
    );
    assert_eq!(std::fs::read(&img).unwrap(), bytes);

    // The secure XML needs a read-write connection; the plain one does not.
    let mut ro = Client::open(&t.0.join("sock-ro"));
    assert!(image_xml(&mut ro, &img, 0).is_ok());
    let err = image_xml(&mut ro, &img, 1).unwrap_err();
    assert_eq!(err.code, 6, "{err}");
    assert!(image_xml(&mut c, &img, 1).is_ok());

    // RESTORE_FLAGS with an XML restores with that one (an XML without a UUID takes the image's).
    let restored = edited
        .replace("edited", "restored")
        .replace(&format!("<uuid>{uuid}</uuid>"), "");
    c.call_ok(
        procs::DOMAIN_RESTORE_FLAGS,
        &restore_args(&img, Some(&restored), 2),
    );
    assert!(live_xml(&mut c, &dom).contains("<title>restored</title>"));
    assert_eq!(state_of(&mut c, &dom), (1, 3));
    // The persistent definition is unchanged and applies from the next boot.
    let inactive = Dec::new(&c.call_ok(procs::DOMAIN_GET_XML_DESC, &dom_flags(&dom, 2)))
        .str()
        .unwrap();
    assert!(!inactive.contains("<title>"), "{inactive}");
    assert_eq!(
        c.call_ok(procs::DOMAIN_IS_UPDATED, &dom_args(&dom)),
        [0, 0, 0, 1]
    );
    c.call_ok(procs::DOMAIN_DESTROY, &dom_args(&dom));
    assert!(!live_xml(&mut c, &dom).contains("<title>"));
}

#[test]
fn managed_save_is_restored_by_start_and_guards_undefine() {
    let t = TempDir::new("managed");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let mut ev = Events::open(&sock);
    let dom = c.define("ms1");
    assert_eq!(ev.next().1, 0);
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next(), ("ms1".into(), 2, 0));
    let image = t.0.join("save/ms1.save");

    c.call_ok(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0));
    assert_eq!(ev.next(), ("ms1".into(), 5, 4));
    assert_eq!(state_of(&mut c, &dom), (5, 5));
    assert!(has_managed_save(&mut c, &dom));
    assert_eq!(files(&t.0.join("save")), ["ms1.save"]);
    assert_eq!(
        std::fs::metadata(t.0.join("save"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(list_names(&mut c, 0x100), ["ms1"]);
    assert!(list_names(&mut c, 0x200).is_empty());
    let xml = Dec::new(&c.call_ok(procs::DOMAIN_MANAGED_SAVE_GET_XML_DESC, &dom_flags(&dom, 0)))
        .str()
        .unwrap();
    assert!(xml.contains("<name>ms1</name>"), "{xml}");

    // While the image exists: undefine and rename are refused, nothing is removed.
    let err = c
        .call(procs::DOMAIN_UNDEFINE_FLAGS, &dom_flags(&dom, 0))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            55,
            "Requested operation is not valid: Refusing to undefine while domain managed save image exists"
        )
    );
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.opt_str(Some("ms1-renamed")).u32(0);
    let err = c.call(procs::DOMAIN_RENAME, &e.buf).unwrap_err();
    assert!(err.message.contains("managed saved state"), "{err}");
    assert!(image.exists() && t.0.join("config/ms1.xml").exists());

    // MANAGED_SAVE_DEFINE_XML with PAUSED (no XML): the next start restores it paused.
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.opt_str(None).u32(4);
    c.call_ok(procs::DOMAIN_MANAGED_SAVE_DEFINE_XML, &e.buf);
    assert_eq!(image_parts(&image).0, 1);

    // Start restores the image, then removes it.
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next(), ("ms1".into(), 2, 2));
    assert_eq!(ev.next(), ("ms1".into(), 3, 4));
    assert_eq!(state_of(&mut c, &dom), (3, 1));
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    assert!(!has_managed_save(&mut c, &dom));
    assert!(files(&t.0.join("save")).is_empty());

    // --force-boot discards the image and boots.
    c.call_ok(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0));
    assert_eq!(ev.next(), ("ms1".into(), 5, 4));
    let r = c.call_ok(procs::DOMAIN_CREATE_WITH_FLAGS, &dom_flags(&dom, 8));
    assert!(DomRef::decode(&mut Dec::new(&r)).unwrap().id > 0);
    assert_eq!(ev.next(), ("ms1".into(), 2, 0));
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert!(!has_managed_save(&mut c, &dom));
    assert_eq!(be.restored.lock().unwrap().len(), 1);

    // managedsave-remove, then the XML calls say there is no image.
    c.call_ok(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0));
    assert_eq!(ev.next().1, 5);
    c.call_ok(procs::DOMAIN_MANAGED_SAVE_REMOVE, &dom_flags(&dom, 0));
    assert!(!has_managed_save(&mut c, &dom));
    c.call_ok(procs::DOMAIN_MANAGED_SAVE_REMOVE, &dom_flags(&dom, 0));
    let err = c
        .call(procs::DOMAIN_MANAGED_SAVE_GET_XML_DESC, &dom_flags(&dom, 0))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            55,
            "Requested operation is not valid: domain does not have managed save image"
        )
    );

    // A shut-off domain has nothing to save.
    let err = c
        .call(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0))
        .unwrap_err();
    assert_eq!(err.code, 55, "{err}");

    // UNDEFINE_MANAGED_SAVE removes the image with the definition.
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    assert_eq!(ev.next().1, 2);
    c.call_ok(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&dom, 0));
    assert_eq!(ev.next().1, 5);
    c.call_ok(procs::DOMAIN_UNDEFINE_FLAGS, &dom_flags(&dom, 1));
    assert_eq!(ev.next(), ("ms1".into(), 1, 0));
    assert!(!image.exists());
    assert!(list_names(&mut c, 0).is_empty());

    // A transient domain cannot be managed-saved: libvirt's error, it goes on running.
    let mut e = Enc::new();
    e.str("<domain type='xen'><name>tr3</name><memory>262144</memory><os><type>xen</type></os></domain>")
        .u32(0);
    let tr = DomRef::decode(&mut Dec::new(&c.call_ok(procs::DOMAIN_CREATE_XML, &e.buf))).unwrap();
    let err = c
        .call(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&tr, 0))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            55,
            "Requested operation is not valid: cannot do managed save for transient domain"
        )
    );
    assert_eq!(state_of(&mut c, &tr), (1, 1));
}

#[test]
fn a_corrupt_managed_save_image_is_kept_until_force_boot() {
    let t = TempDir::new("managed-bad");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let dom = c.define("mb1");
    std::fs::create_dir_all(t.0.join("save")).unwrap();
    let image = t.0.join("save/mb1.save");
    let junk = b"not an image, ".repeat(10);
    std::fs::write(&image, &junk).unwrap();
    assert!(has_managed_save(&mut c, &dom));
    let err = c.call(procs::DOMAIN_CREATE, &dom_args(&dom)).unwrap_err();
    assert_eq!(err.code, 9, "{err}");
    assert!(
        err.message.contains("image magic is incorrect") && err.message.contains("--force-boot"),
        "{err}"
    );
    assert_eq!(state_of(&mut c, &dom), (5, 0));
    assert_eq!(std::fs::read(&image).unwrap(), junk);
    // Another domain's image is refused too.
    let other = c.define("mb2");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&other));
    c.call_ok(procs::DOMAIN_MANAGED_SAVE, &dom_flags(&other, 0));
    std::fs::copy(t.0.join("save/mb2.save"), &image).unwrap();
    let err = c.call(procs::DOMAIN_CREATE, &dom_args(&dom)).unwrap_err();
    assert!(
        err.message.contains("cannot restore domain 'mb1'")
            && err.message.contains("belongs to domain 'mb2'"),
        "{err}"
    );
    assert!(be.restored.lock().unwrap().is_empty());
    c.call_ok(procs::DOMAIN_CREATE_WITH_FLAGS, &dom_flags(&dom, 8));
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert!(!image.exists());
}

#[test]
fn the_read_only_socket_refuses_every_save_change() {
    let t = TempDir::new("save-ro");
    let be = Arc::new(TestBackend::saving());
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let dom = c.define("ro1");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&dom));
    let img = t.0.join("ro1.save");
    c.call_ok(procs::DOMAIN_SAVE_FLAGS, &save_args(&dom, &img, None, 0));
    let mut ro = Client::open(&t.0.join("sock-ro"));
    let mut save = Enc::new();
    dom.encode(&mut save);
    save.str(img.to_str().unwrap());
    let mut restore = Enc::new();
    restore.str(img.to_str().unwrap());
    let mut define = Enc::new();
    define.str(img.to_str().unwrap()).str("<domain/>").u32(0);
    let mut ms_define = Enc::new();
    dom.encode(&mut ms_define);
    ms_define.opt_str(None).u32(0);
    for (proc_, args) in [
        (procs::DOMAIN_SAVE, save.buf),
        (procs::DOMAIN_SAVE_FLAGS, save_args(&dom, &img, None, 0)),
        (procs::DOMAIN_RESTORE, restore.buf),
        (procs::DOMAIN_RESTORE_FLAGS, restore_args(&img, None, 0)),
        (procs::DOMAIN_SAVE_IMAGE_DEFINE_XML, define.buf),
        (procs::DOMAIN_MANAGED_SAVE, dom_flags(&dom, 0)),
        (procs::DOMAIN_MANAGED_SAVE_REMOVE, dom_flags(&dom, 0)),
        (procs::DOMAIN_MANAGED_SAVE_DEFINE_XML, ms_define.buf),
        (procs::DOMAIN_MANAGED_SAVE_GET_XML_DESC, dom_flags(&dom, 1)),
    ] {
        let err = ro.call(proc_, &args).unwrap_err();
        assert_eq!(err.code, 6, "{proc_}: {err}");
        assert!(err.message.contains("read only access prevents"), "{err}");
    }
    assert!(!has_managed_save(&mut ro, &dom));
    assert!(image_xml(&mut ro, &img, 0).is_ok());
    assert_eq!(state_of(&mut c, &dom), (5, 5));
    assert!(be.restored.lock().unwrap().is_empty());
}

#[test]
fn a_long_save_holds_up_neither_other_calls_nor_other_domains() {
    let t = TempDir::new("save-long");
    let be = Arc::new(TestBackend::saving());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    *be.save_gate.lock().unwrap() = Some((started_tx, go_rx));
    let (_d, sock) = start(&t.0, be.clone());
    let mut c = Client::open(&sock);
    let slow = c.define("slow");
    let other = c.define("other");
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&slow));
    c.call_ok(procs::DOMAIN_CREATE, &dom_args(&other));
    let img = t.0.join("slow.save");
    let saver = {
        let (sock, slow, img) = (sock.clone(), slow.clone(), img.clone());
        std::thread::spawn(move || {
            Client::open(&sock).call(procs::DOMAIN_SAVE_FLAGS, &save_args(&slow, &img, None, 0))
        })
    };
    started_rx.recv().unwrap();
    // The save is under way: lookups, lists and other domains are served...
    assert_eq!(list_names(&mut c, 0).len(), 2);
    assert_eq!(state_of(&mut c, &slow), (1, 1));
    c.call_ok(procs::DOMAIN_SUSPEND, &dom_args(&other));
    assert_eq!(state_of(&mut c, &other), (3, 1));
    // ...and state changes of the domain being saved are refused.
    for (proc_, args) in [
        (procs::DOMAIN_DESTROY, dom_args(&slow)),
        (procs::DOMAIN_SUSPEND, dom_args(&slow)),
        (procs::DOMAIN_MANAGED_SAVE, dom_flags(&slow, 0)),
        (procs::DOMAIN_UNDEFINE_FLAGS, dom_flags(&slow, 0)),
    ] {
        let err = c.call(proc_, &args).unwrap_err();
        assert_eq!(err.code, 55, "{proc_}: {err}");
        assert!(err.message.contains("busy: save in progress"), "{err}");
    }
    let err = create_snapshot(&mut c, &slow, "s").unwrap_err();
    assert!(err.message.contains("busy"), "{err}");
    go_tx.send(()).unwrap();
    saver.join().unwrap().unwrap();
    assert_eq!(state_of(&mut c, &slow), (5, 5));
    c.call_ok(procs::DOMAIN_UNDEFINE_FLAGS, &dom_flags(&slow, 0));
}
