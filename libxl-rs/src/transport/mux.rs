//! A host-side multiplexer for the sandbox control channel. QEMU's COM2 chardev socket serves one client at
//! a time, but the daemon, `xl` invocations and `xl`'s exit watchers all need the hypervisor at once. The mux
//! holds the one upstream connection and serves any number of clients on its own socket with the same
//! protocol: it renumbers requests so replies find their client, answers HELLO from the hypervisor's cached
//! HELLO, broadcasts EVENT frames to every client, and answers malformed client frames with -EINVAL.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_abi::ctlframe::{self, Decoded, Header, Kind, HEADER_LEN};

use super::Error;

/// How long the mux waits for the hypervisor to answer HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    next_seq: u32,
    pending: HashMap<u32, (usize, u32)>,
    clients: HashMap<usize, UnixStream>,
}

/// Reads frames from `s` and calls `f` for each (header, payload) and for garbage (`None`, seq).
fn frames(mut s: &UnixStream, mut f: impl FnMut(Option<(Header, &[u8])>, Option<u32>) -> bool) {
    let mut rx = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rx.extend_from_slice(&buf[..n]);
        loop {
            match ctlframe::decode(&rx) {
                Decoded::Frame { header, consumed } => {
                    let keep = f(Some((header, &rx[HEADER_LEN..consumed])), None);
                    rx.drain(..consumed);
                    if !keep {
                        return;
                    }
                }
                Decoded::Garbage { skip, seq, .. } => {
                    rx.drain(..skip);
                    if !f(None, seq) {
                        return;
                    }
                }
                Decoded::NeedMore => break,
            }
        }
    }
}

fn with_seq(h: &Header, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header { seq, ..*h }.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Runs the mux until the upstream connection closes: `upstream` is the hypervisor's channel; clients
/// connect to a socket bound at `listen` once the hypervisor has answered HELLO (so the socket's existence
/// means the sandbox is ready).
pub fn run(upstream: UnixStream, listen: &Path) -> Result<(), Error> {
    // Learn the hypervisor's HELLO first. It may still be booting (a UART drops what arrives before it is
    // programmed), so the request is repeated every second until the answer comes.
    let mut up_w = upstream
        .try_clone()
        .map_err(|e| Error::io("cloning the upstream socket", e))?;
    let mut hello = [0u8; HEADER_LEN];
    ctlframe::encode(&mut hello, Kind::Hello, 0, |_| Ok(()))
        .map_err(|e| Error::Protocol(e.to_string()))?;
    upstream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| Error::io("setting a timeout", e))?;
    let mut hello_payload = None;
    let start = Instant::now();
    while hello_payload.is_none() && start.elapsed() < HELLO_TIMEOUT {
        up_w.write_all(&hello)
            .map_err(|e| Error::io("greeting the hypervisor", e))?;
        frames(&upstream, |f, _| {
            if let Some((h, p)) = f {
                if h.kind == Kind::Hello {
                    hello_payload = Some(p.to_vec());
                    return false;
                }
            }
            true
        });
    }
    let hello_payload = hello_payload
        .ok_or_else(|| Error::Timeout("the hypervisor's HELLO on the control channel".into()))?;
    upstream
        .set_read_timeout(None)
        .map_err(|e| Error::io("clearing a timeout", e))?;

    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen)
        .map_err(|e| Error::io(format!("listening on {}", listen.display()), e))?;
    let state = Arc::new(Mutex::new(State::default()));
    let up_w = Arc::new(Mutex::new(up_w));
    {
        let state = state.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let state = state.clone();
                let up_w = up_w.clone();
                let hello = hello_payload.clone();
                std::thread::spawn(move || client(c, state, up_w, hello));
            }
        });
    }
    // Upstream: route replies, broadcast events.
    frames(&upstream, |f, _| {
        let Some((h, p)) = f else { return true };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        match h.kind {
            Kind::Event => {
                let bytes = with_seq(&h, 0, p);
                st.clients.retain(|_, c| c.write_all(&bytes).is_ok());
            }
            Kind::Result => {
                if let Some((cid, orig)) = st.pending.remove(&h.seq) {
                    let bytes = with_seq(&h, orig, p);
                    if let Some(c) = st.clients.get_mut(&cid) {
                        let _ = c.write_all(&bytes);
                    }
                }
            }
            _ => {}
        }
        true
    });
    Ok(())
}

fn client(c: UnixStream, state: Arc<Mutex<State>>, up: Arc<Mutex<UnixStream>>, hello: Vec<u8>) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(w) = c.try_clone() else { return };
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clients
        .insert(id, w);
    let reply = |bytes: &[u8]| {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = st.clients.get_mut(&id) {
            let _ = c.write_all(bytes);
        }
    };
    frames(&c, |f, seq| {
        match f {
            None => {
                if let Some(seq) = seq {
                    let mut out = [0u8; 64];
                    if let Ok(n) = xen_abi::ctlserver::invalid(seq, &mut out) {
                        reply(&out[..n]);
                    }
                }
            }
            Some((h, _)) if h.kind == Kind::Hello => {
                let hh = Header {
                    len: hello.len() as u32,
                    ..h
                };
                reply(&with_seq(&hh, h.seq, &hello));
            }
            Some((h, p)) if matches!(h.kind, Kind::Hypercall | Kind::Map | Kind::MapRange) => {
                let seq = {
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    st.next_seq = st.next_seq.wrapping_add(1).max(1);
                    let s = st.next_seq;
                    st.pending.insert(s, (id, h.seq));
                    s
                };
                let bytes = with_seq(&h, seq, p);
                if up
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(&bytes)
                    .is_err()
                {
                    return false;
                }
            }
            Some(_) => {}
        }
        true
    });
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.clients.remove(&id);
    st.pending.retain(|_, (cid, _)| *cid != id);
}
