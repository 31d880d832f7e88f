//! The socket server: one reader thread per connection, calls dispatched to worker threads, one writer lock
//! per connection so a PONG or an event never waits behind a slow call, and streams.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::auth::Auth;
use crate::driver::{procs, ConnState, Driver, EventOut};
use crate::proto::{
    self, ptype, status, Header, RpcError, HEADER_LEN, MESSAGE_MAX, PROG_KEEPALIVE, PROG_REMOTE,
};
use crate::storage_rpc::{self, StorageStream};
use crate::stream::{Chunk, NoSink, ReadSource, StreamSink, StreamSource, WriteSink};
use crate::xdr::{Dec, Enc};
use crate::Error;

/// Most calls of one connection executing at once; the reader stops reading while at the limit.
pub const MAX_CALLS_IN_FLIGHT: usize = 16;
/// Most clients connected at once (libvirtd's `max_clients` default); further connections are closed at once.
pub const MAX_CLIENTS: usize = 5000;

/// A connection's writing half, shared by the reader, the workers, events and stream pumps.
pub struct Outbox {
    stream: Mutex<UnixStream>,
}

impl Outbox {
    /// Sends one packet; errors mean the peer has gone and are left to the reader to notice.
    pub fn send(&self, h: &Header, payload: &[u8]) {
        let pkt = h.packet(payload);
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.write_all(&pkt);
    }
}

struct InFlight {
    n: Mutex<usize>,
    cv: Condvar,
}

impl InFlight {
    fn acquire(&self) {
        let mut n = self.n.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= MAX_CALLS_IN_FLIGHT {
            n = self.cv.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
    }
    fn release(&self) {
        let mut n = self.n.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.cv.notify_one();
    }
}

type StreamTable = Arc<Mutex<HashMap<u32, Box<dyn StreamSink>>>>;

/// The daemon: listeners plus the driver.
pub struct Server {
    driver: Arc<Driver>,
    listeners: Vec<Listener>,
    next_conn: Arc<AtomicU64>,
    clients: Arc<AtomicUsize>,
    verbose: bool,
}

fn bind(path: &Path, mode: u32) -> Result<UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::SocketInUse(path.to_path_buf()));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::Io(path.to_path_buf(), e))?;
    Ok(l)
}

/// A listening socket and how its clients are treated.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub listener: UnixListener,
    /// Clients of this socket are read-only (`virtxend-sock-ro`).
    pub read_only: bool,
    /// How clients of this socket authenticate.
    pub auth: Auth,
}

impl Server {
    /// Serves sockets that are already listening (for example passed by systemd socket activation).
    pub fn from_listeners(driver: Arc<Driver>, listeners: Vec<Listener>) -> Server {
        Server {
            driver,
            listeners,
            next_conn: Arc::new(AtomicU64::new(1)),
            clients: Arc::new(AtomicUsize::new(0)),
            verbose: false,
        }
    }

    /// Binds the read-write socket at `rw` and the read-only one at `ro`, each with its own authentication
    /// (socket modes as [`Server::bind`] chooses them).
    pub fn bind_each(
        driver: Arc<Driver>,
        rw: (&Path, Auth),
        ro: Option<(&Path, Auth)>,
    ) -> Result<Server, Error> {
        let rw_mode = if rw.1 == Auth::Polkit { 0o777 } else { 0o700 };
        let mut listeners = vec![Listener {
            listener: bind(rw.0, rw_mode)?,
            read_only: false,
            auth: rw.1,
        }];
        if let Some((path, auth)) = ro {
            listeners.push(Listener {
                listener: bind(path, 0o777)?,
                read_only: true,
                auth,
            });
        }
        Ok(Self::from_listeners(driver, listeners))
    }

    /// Binds the read-write socket and optionally the read-only one (mode 0777). Without authentication the
    /// read-write socket is mode 0700 (its owner only); with polkit it is 0777 and non-root peers must pass
    /// polkit's `org.libvirt.unix.manage` check, as with libvirt.
    pub fn bind(
        driver: Arc<Driver>,
        rw: &Path,
        ro: Option<&Path>,
        auth: Auth,
    ) -> Result<Server, Error> {
        Self::bind_each(driver, (rw, auth), ro.map(|p| (p, auth)))
    }

    /// Logs connections and failed calls to stderr.
    pub fn verbose(mut self, v: bool) -> Self {
        self.verbose = v;
        self
    }

    /// Serves forever (until the process ends).
    pub fn run(self) -> Result<(), Error> {
        let mut handles = Vec::new();
        for Listener {
            listener: l,
            read_only: ro,
            auth,
        } in self.listeners
        {
            let driver = self.driver.clone();
            let next = self.next_conn.clone();
            let clients = self.clients.clone();
            let verbose = self.verbose;
            handles.push(std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(s) = s else { continue };
                    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        if verbose {
                            eprintln!(
                                "virtxend: too many clients ({MAX_CLIENTS}), connection refused"
                            );
                        }
                        continue;
                    }
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let driver = driver.clone();
                    let clients = clients.clone();
                    std::thread::spawn(move || {
                        if verbose {
                            eprintln!(
                                "virtxend: client {id} connected{}",
                                if ro { " (read-only)" } else { "" }
                            );
                        }
                        let r = serve_connection(&driver, s, id, ro, auth, verbose);
                        driver.drop_connection(id);
                        clients.fetch_sub(1, Ordering::AcqRel);
                        if verbose {
                            eprintln!(
                                "virtxend: client {id} disconnected: {}",
                                r.err().map_or("EOF".to_string(), |e| e.to_string())
                            );
                        }
                    });
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    }
}

fn read_packet(s: &mut UnixStream, out: &Outbox) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut lenb = [0u8; 4];
    match s.read_exact(&mut lenb) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(lenb) as usize;
    if len < 4 + HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("packet length {len} is too small"),
        ));
    }
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb)?;
    let h = Header::decode(&mut Dec::new(&hb))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if len - 4 > MESSAGE_MAX {
        // The payload cannot be buffered: tell the caller why, then drop the connection (the stream cannot be
        // resynchronised without reading the oversized payload).
        if h.ptype == ptype::CALL {
            let err = RpcError::rpc(format!(
                "packet {} bytes received from server too large, want {MESSAGE_MAX}",
                len - 4
            ));
            out.send(&h.reply(status::ERROR), &err.encode());
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("packet length {len} exceeds the limit"),
        ));
    }
    let mut payload = vec![0u8; len - 4 - HEADER_LEN];
    s.read_exact(&mut payload)?;
    Ok(Some((h, payload)))
}

/// Procedures executed on the reader thread, in order: connection state changes and cheap in-memory queries
/// that never wait for the backend or the disk. Everything else runs on a worker thread, so a slow call never
/// delays keepalive, events or other calls of the connection.
fn inline_proc(p: i32) -> bool {
    use procs::*;
    matches!(
        p,
        AUTH_LIST
            | SUPPORTS_FEATURE
            | AUTH_POLKIT
            | CONNECT_OPEN
            | CONNECT_CLOSE
            | REGISTER_CLOSE_CALLBACK
            | UNREGISTER_CLOSE_CALLBACK
            | GET_TYPE
            | GET_VERSION
            | GET_LIB_VERSION
            | GET_URI
            | IS_SECURE
            | GET_MAX_VCPUS
            | DOMAIN_LOOKUP_BY_NAME
            | DOMAIN_LOOKUP_BY_UUID
            | DOMAIN_LOOKUP_BY_ID
            | DOMAIN_GET_XML_DESC
            | DOMAIN_GET_STATE
            | DOMAIN_IS_ACTIVE
            | DOMAIN_IS_PERSISTENT
            | DOMAIN_HAS_MANAGED_SAVE_IMAGE
            | DOMAIN_GET_OS_TYPE
            | DOMAIN_GET_MAX_MEMORY
            | DOMAIN_GET_MAX_VCPUS
            | DOMAIN_GET_VCPUS_FLAGS
            | DOMAIN_GET_METADATA
            | CONNECT_LIST_ALL_DOMAINS
            | NUM_OF_DOMAINS
            | NUM_OF_DEFINED_DOMAINS
            | LIST_DOMAINS
            | LIST_DEFINED_DOMAINS
            | DOMAIN_EVENT_CALLBACK_REGISTER_ANY
            | DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY
    )
}

fn serve_connection(
    driver: &Arc<Driver>,
    mut s: UnixStream,
    id: u64,
    ro: bool,
    auth: Auth,
    verbose: bool,
) -> io::Result<()> {
    let out = Arc::new(Outbox {
        stream: Mutex::new(s.try_clone()?),
    });
    let peer = crate::auth::peer_cred(&s);
    let state = Arc::new(Mutex::new(ConnState {
        readonly: ro,
        // Root peers are trusted without asking, as libvirt does.
        needs_polkit: auth == Auth::Polkit && peer.is_none_or(|(_, uid)| uid != 0),
        peer,
        ..ConnState::default()
    }));
    let inflight = Arc::new(InFlight {
        n: Mutex::new(0),
        cv: Condvar::new(),
    });
    let streams: StreamTable = Arc::new(Mutex::new(HashMap::new()));
    let ev_out: EventOut = {
        let out = out.clone();
        Arc::new(move |proc_, payload| {
            let h = Header {
                prog: PROG_REMOTE,
                vers: 1,
                proc_,
                ptype: ptype::MESSAGE,
                serial: 0,
                status: status::OK,
            };
            out.send(&h, &payload);
        })
    };
    loop {
        let Some((h, payload)) = read_packet(&mut s, &out)? else {
            return Ok(());
        };
        if h.prog == PROG_KEEPALIVE {
            if h.ptype == ptype::MESSAGE && h.proc_ == proto::KEEPALIVE_PING {
                out.send(
                    &Header {
                        proc_: proto::KEEPALIVE_PONG,
                        ..h
                    },
                    &[],
                );
            }
            continue;
        }
        if h.prog != PROG_REMOTE || h.vers != 1 {
            if h.ptype == ptype::CALL {
                let err =
                    RpcError::rpc(format!("Cannot find program {} version {}", h.prog, h.vers));
                out.send(&h.reply(status::ERROR), &err.encode());
            }
            continue;
        }
        match h.ptype {
            ptype::CALL => {}
            ptype::STREAM | ptype::STREAM_HOLE => {
                handle_stream_packet(&streams, &out, &h, &payload);
                continue;
            }
            ptype::CALL_WITH_FDS => {
                let err = RpcError::rpc("file descriptor passing is not supported by this daemon");
                out.send(&h.reply(status::ERROR), &err.encode());
                continue;
            }
            _ => continue,
        }
        if h.status != status::OK {
            let err = RpcError::rpc(format!("Unexpected message status {}", h.status));
            out.send(&h.reply(status::ERROR), &err.encode());
            continue;
        }
        if inline_proc(h.proc_) {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let r = driver.call(id, &mut st, h.proc_, &payload, &ev_out);
            drop(st);
            reply(&out, &h, r, verbose);
            continue;
        }
        inflight.acquire();
        let (driver, out, state, inflight, ev_out, streams) = (
            driver.clone(),
            out.clone(),
            state.clone(),
            inflight.clone(),
            ev_out.clone(),
            streams.clone(),
        );
        std::thread::spawn(move || {
            let mut snapshot = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if h.proc_ == procs::DOMAIN_OPEN_CONSOLE {
                open_console(&driver, &snapshot, &out, &h, &payload, &streams, verbose);
            } else if matches!(
                h.proc_,
                storage_rpc::procs::VOL_UPLOAD | storage_rpc::procs::VOL_DOWNLOAD
            ) {
                open_volume_stream(&driver, &snapshot, &out, &h, &payload, &streams, verbose);
            } else {
                let r = driver.call(id, &mut snapshot, h.proc_, &payload, &ev_out);
                reply(&out, &h, r, verbose);
            }
            inflight.release();
        });
    }
}

fn reply(out: &Outbox, h: &Header, r: Result<Vec<u8>, RpcError>, verbose: bool) {
    match r {
        Ok(b) => out.send(&h.reply(status::OK), &b),
        Err(e) => {
            if verbose {
                eprintln!("virtxend: call {} failed: {e}", h.proc_);
            }
            out.send(&h.reply(status::ERROR), &e.encode());
        }
    }
}

fn open_console(
    driver: &Driver,
    st: &ConnState,
    out: &Arc<Outbox>,
    h: &Header,
    payload: &[u8],
    streams: &StreamTable,
    verbose: bool,
) {
    if !st.opened {
        reply(
            out,
            h,
            Err(RpcError::rpc("internal error: connection not open")),
            verbose,
        );
        return;
    }
    if st.readonly {
        let e = RpcError::new(
            6,
            crate::proto::edomain::LIBXL,
            "operation forbidden: read only access prevents virDomainOpenConsole",
        );
        reply(out, h, Err(e), verbose);
        return;
    }
    match driver.open_console(payload) {
        Err(e) => reply(out, h, Err(e), verbose),
        Ok(mut io) => {
            let reader = io.reader();
            let writer = io.writer();
            streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h.serial, Box::new(WriteSink(writer)));
            out.send(&h.reply(status::OK), &[]);
            spawn_stream_source(
                out.clone(),
                streams.clone(),
                *h,
                Box::new(ReadSource(reader)),
            );
        }
    }
}

fn open_volume_stream(
    driver: &Driver,
    st: &ConnState,
    out: &Arc<Outbox>,
    h: &Header,
    payload: &[u8],
    streams: &StreamTable,
    verbose: bool,
) {
    if !st.opened {
        reply(
            out,
            h,
            Err(RpcError::rpc("internal error: connection not open")),
            verbose,
        );
        return;
    }
    let Some(storage) = driver.storage() else {
        reply(out, h, Err(RpcError::unknown_procedure(h.proc_)), verbose);
        return;
    };
    match storage.open_stream(h.proc_, payload, st.readonly) {
        Err(e) => reply(out, h, Err(e), verbose),
        Ok(StorageStream::Upload(sink)) => {
            streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h.serial, sink);
            out.send(&h.reply(status::OK), &[]);
        }
        Ok(StorageStream::Download(src)) => {
            streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h.serial, Box::new(NoSink));
            out.send(&h.reply(status::OK), &[]);
            spawn_stream_source(out.clone(), streams.clone(), *h, src);
        }
    }
}

/// Pumps a source to the client as STREAM CONTINUE (data) and STREAM_HOLE packets, then an empty CONTINUE
/// at EOF; a source error ends the stream with a STREAM ERROR.
pub fn spawn_stream_source(
    out: Arc<Outbox>,
    streams: StreamTable,
    call: Header,
    mut src: Box<dyn StreamSource>,
) {
    std::thread::spawn(move || {
        let sh = Header {
            ptype: ptype::STREAM,
            status: status::CONTINUE,
            ..call
        };
        loop {
            if !streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&call.serial)
            {
                return; // finished or aborted by the client
            }
            match src.next(proto::STREAM_CHUNK_MAX) {
                Ok(None) => {
                    out.send(&sh, &[]);
                    return;
                }
                Ok(Some(Chunk::Data(b))) => {
                    for chunk in b.chunks(proto::STREAM_CHUNK_MAX) {
                        out.send(&sh, chunk);
                    }
                }
                Ok(Some(Chunk::Hole(n))) => {
                    let mut e = Enc::new();
                    e.u64(n).u32(0);
                    out.send(
                        &Header {
                            ptype: ptype::STREAM_HOLE,
                            ..sh
                        },
                        &e.buf,
                    );
                }
                Err(err) => {
                    streams
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&call.serial);
                    out.send(
                        &Header {
                            status: status::ERROR,
                            ..sh
                        },
                        &err.encode(),
                    );
                    return;
                }
            }
        }
    });
}

fn handle_stream_packet(streams: &StreamTable, out: &Outbox, h: &Header, payload: &[u8]) {
    let mut table = streams.lock().unwrap_or_else(|p| p.into_inner());
    let confirm = Header {
        ptype: ptype::STREAM,
        status: status::OK,
        ..*h
    };
    let fail = |table: &mut HashMap<u32, Box<dyn StreamSink>>, e: RpcError| {
        if let Some(mut s) = table.remove(&h.serial) {
            s.abort();
        }
        out.send(
            &Header {
                status: status::ERROR,
                ..confirm
            },
            &e.encode(),
        );
    };
    let Some(sink) = table.get_mut(&h.serial) else {
        return; // a packet for a stream already closed: dropped, as libvirt does
    };
    if h.ptype == ptype::STREAM_HOLE {
        let mut d = Dec::new(payload);
        let r = d
            .i64()
            .and_then(|len| d.u32().map(|_| len))
            .map_err(RpcError::from);
        let r = r.and_then(|len| {
            let len = u64::try_from(len).map_err(|_| RpcError::rpc("negative hole length"))?;
            sink.hole(len)
        });
        if let Err(e) = r {
            fail(&mut table, e);
        }
        return;
    }
    match h.status {
        status::CONTINUE => {
            if let Err(e) = sink.write(payload) {
                fail(&mut table, e);
            }
        }
        status::OK => {
            let r = sink.finish();
            table.remove(&h.serial);
            match r {
                Ok(()) => out.send(&confirm, &[]),
                Err(e) => out.send(
                    &Header {
                        status: status::ERROR,
                        ..confirm
                    },
                    &e.encode(),
                ),
            }
        }
        status::ERROR => {
            sink.abort();
            table.remove(&h.serial);
            out.send(&confirm, &[]);
        }
        _ => {}
    }
}

/// Default socket paths.
pub fn default_paths() -> (PathBuf, PathBuf) {
    (
        PathBuf::from("/run/libvirt/virtxend-sock"),
        PathBuf::from("/run/libvirt/virtxend-sock-ro"),
    )
}
