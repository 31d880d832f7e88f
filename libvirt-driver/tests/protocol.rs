//! Protocol-level tests over a real socket: malformed packets, limits, keepalive during a slow call,
//! overlapping calls, many connections, console streams, running-domain state across restarts and snapshots of
//! running domains through a backend that can (or cannot) save memory.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
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
fn a_running_domains_snapshot_with_disks_stops_it_for_the_disks_and_restores_it() {
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

    // The memory is written with the domain stopped, the disk snapshot taken, and the domain restored from
    // that memory: to the client it was suspended and resumed.
    create_snapshot(&mut c, &dom, "d1").unwrap();
    assert_eq!(ev.next(), ("sd1".into(), 3, 5));
    assert_eq!(ev.next(), ("sd1".into(), 4, 2));
    assert_eq!(
        *be.saved.lock().unwrap(),
        [(1, libvirt_driver::backend::AfterSave::Stop)]
    );
    assert_eq!(*be.restored.lock().unwrap(), ["TESTSTATE of domain 1"]);
    assert_eq!(state_of(&mut c, &dom), (1, 1));
    assert_eq!(lookup(&mut c, "sd1").id, 2);
    assert_eq!(*be.running.lock().unwrap(), [2]);
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
    assert_eq!(
        *be.restored.lock().unwrap(),
        ["TESTSTATE of domain 1", "TESTSTATE of domain 1"]
    );
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
