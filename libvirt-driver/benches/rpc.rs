//! Calls per second over the socket: `virDomainLookupByName` + `virDomainGetXMLDesc` pairs against virtxend
//! (in-process server, NoHypervisor backend), on one connection and on four concurrent connections.
//!
//! If `VIRTXEND_BENCH_PEER_SOCKET` names the socket of another libvirt daemon (for example Debian's libvirtd
//! serving `test:///default`), and `VIRTXEND_BENCH_PEER_URI` its URI, the same workload runs against it too.
//!
//! Run: `cargo bench -p libvirt-driver --bench rpc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libvirt_driver::backend::NoHypervisor;
use libvirt_driver::client::Client;
use libvirt_driver::driver::{procs, Driver};
use libvirt_driver::proto::DomRef;
use libvirt_driver::server::Server;
use libvirt_driver::store::Store;
use libvirt_driver::xdr::{Dec, Enc};

fn lookup_getxml(c: &mut Client, name: &str) {
    let mut e = Enc::new();
    e.str(name);
    let r = c
        .call(procs::DOMAIN_LOOKUP_BY_NAME, &e.buf)
        .expect("io")
        .expect("lookup");
    let dom = DomRef::decode(&mut Dec::new(&r)).expect("domain");
    let mut e = Enc::new();
    dom.encode(&mut e);
    e.u32(0);
    let x = c
        .call(procs::DOMAIN_GET_XML_DESC, &e.buf)
        .expect("io")
        .expect("xml");
    assert!(x.len() > 100);
}

fn run(sock: &Path, uri: &str, name: &str, conns: usize, dur: Duration) -> f64 {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let sock = sock.to_path_buf();
            let (uri, name) = (uri.to_string(), name.to_string());
            std::thread::spawn(move || {
                let mut c = Client::open(&sock, &uri).expect("open");
                let mut n = 0u64;
                while t0.elapsed() < dur {
                    lookup_getxml(&mut c, &name);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("bench thread"))
        .sum();
    // Two calls per iteration.
    (total * 2) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let dir: PathBuf = std::env::temp_dir().join(format!("virtxend-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir.join("config"), &dir.join("state")).expect("store");
    let driver = Driver::new(store, Arc::new(NoHypervisor));
    let sock = dir.join("sock");
    let server = Server::bind(driver, &sock, None, libvirt_driver::auth::Auth::None).expect("bind");
    std::thread::spawn(move || server.run());
    let mut c = Client::open(&sock, "xen:///system").expect("open");
    let xml = "<domain type='xen'><name>bench</name><memory>262144</memory><vcpu>2</vcpu>\
               <os><type arch='x86_64' machine='xenpv'>xen</type><kernel>/boot/vmlinuz</kernel></os>\
               <devices><console type='pty'/></devices></domain>";
    let mut e = Enc::new();
    e.str(xml);
    c.call(procs::DOMAIN_DEFINE_XML, &e.buf)
        .expect("io")
        .expect("define");
    let dur = Duration::from_secs(2);
    for conns in [1, 4] {
        let r = run(&sock, "xen:///system", "bench", conns, dur);
        println!("virtxend: lookup+getxml, {conns} connection(s): {r:.0} calls/s");
    }
    if let (Ok(peer), Ok(uri)) = (
        std::env::var("VIRTXEND_BENCH_PEER_SOCKET"),
        std::env::var("VIRTXEND_BENCH_PEER_URI"),
    ) {
        let name = std::env::var("VIRTXEND_BENCH_PEER_DOMAIN").unwrap_or_else(|_| "test".into());
        for conns in [1, 4] {
            let r = run(Path::new(&peer), &uri, &name, conns, dur);
            println!("peer {uri}: lookup+getxml, {conns} connection(s): {r:.0} calls/s");
        }
    } else {
        println!("peer: set VIRTXEND_BENCH_PEER_SOCKET and VIRTXEND_BENCH_PEER_URI to compare with another daemon");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
