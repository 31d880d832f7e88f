//! The control domain's console daemon, Xen's xenconsoled: one thread with its own hypervisor connection
//! serves the console rings of every domain it was told about.
//!
//! Each sweep drains every ring (advancing `out_cons`, which a Linux guest waits on when its ring is full),
//! hands the bytes to the attached client or keeps the last [`HISTORY`] bytes while nobody is attached (the
//! next client gets them first, as xenconsoled's buffer does), and moves client input into the `in` ring,
//! signalling the guest on its console channel. A domain whose ring can no longer be read is gone: its client
//! sees end of file and the domain is forgotten.
//!
//! The rings are polled: every few milliseconds while output flows, backing off to [`IDLE`] when quiet. In a
//! real dom0 the guest's notifications could wake the sweep instead; in the sandbox no interrupt reaches a
//! host process.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use super::Console;
use crate::transport::{Error, Transport};
use crate::xenstore::{Store, XsRing};
use xen_abi::memres::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};

/// Output kept per domain while no client is attached.
pub const HISTORY: usize = 64 * 1024;
/// The sweep interval while output or input flows. Each sweep is a control-channel request; with the
/// hypervisor answering at once (its COM2 interrupt), 5 ms made the daemon take host CPU time from the guests
/// it serves (a Linux boot to its prompt took 9.3 s instead of 7.6 s with 10 ms, median of 5).
pub const BUSY: Duration = Duration::from_millis(10);
/// The longest sweep interval when every console is quiet.
pub const IDLE: Duration = Duration::from_millis(20);
/// Domains served per sweep in turn even without a notification (a guest that writes its ring without
/// notifying still gets served, every `domains / ROUND_ROBIN` sweeps).
pub const ROUND_ROBIN: usize = 4;
/// How long a console waits for its domain to come back (a restart builds it again under the same ID) before
/// it counts as gone.
pub const GRACE: Duration = Duration::from_secs(15);

enum Cmd {
    Add(u16),
    Introduce(u16, String, u64),
    Remove(u16),
    Attach(u16, UnixStream, UnixStream),
    Shutdown(u16, &'static str, Sender<bool>),
    Withdraw(u16, &'static str),
    Nodes(u16, Sender<Vec<(String, Vec<u8>)>>),
    Restore(u16, Restored, Sender<Result<(), String>>),
    Stop,
}

/// A restored domain's xenstore: its name, memory and the nodes its guest had.
struct Restored {
    name: String,
    memory_kib: u64,
    nodes: Vec<(String, Vec<u8>)>,
}

/// A handle on the daemon thread; dropping it stops the thread.
#[derive(Debug)]
pub struct ConsoleService {
    tx: Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Add(d) => write!(f, "Add({d})"),
            Self::Introduce(d, ..) => write!(f, "Introduce({d})"),
            Self::Shutdown(d, r, _) => write!(f, "Shutdown({d}, {r})"),
            Self::Withdraw(d, r) => write!(f, "Withdraw({d}, {r})"),
            Self::Nodes(d, _) => write!(f, "Nodes({d})"),
            Self::Restore(d, ..) => write!(f, "Restore({d})"),
            Self::Remove(d) => write!(f, "Remove({d})"),
            Self::Attach(d, ..) => write!(f, "Attach({d})"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

/// The client side of an attached console: read the guest's output from `output`, write keystrokes to `input`.
#[derive(Debug)]
pub struct Attached {
    /// The guest's output; end of file when the domain is gone or another client took the console.
    pub output: UnixStream,
    /// Keystrokes for the guest.
    pub input: UnixStream,
}

impl ConsoleService {
    /// Starts the daemon on its own connection `t`.
    pub fn start<T: Transport + Send + 'static>(t: T) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("console-daemon".into())
            .spawn(move || run(t, &rx))
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("console daemon: cannot start its thread: {e}"));
        Self { tx }
    }

    /// Starts serving the console of `domid` (a domain just created).
    pub fn add(&self, domid: u16) {
        let _ = self.tx.send(Cmd::Add(domid));
    }

    /// Creates the xenstore nodes of a new domain (its name, `control/shutdown`, `memory/target`) and serves
    /// its xenstore ring (`HVM_PARAM_STORE_PFN`) from now on.
    pub fn introduce(&self, domid: u16, name: &str, memory_kib: u64) {
        let _ = self
            .tx
            .send(Cmd::Introduce(domid, name.to_string(), memory_kib));
    }

    /// Asks the guest to `reason` ("poweroff" or "reboot") through xenstore's `control/shutdown`, as Xen's
    /// toolstack does; false when the guest has not announced `control/feature-<reason>` (no PV control
    /// driver), in which case nothing was written.
    pub fn request_shutdown(&self, domid: u16, reason: &'static str) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Cmd::Shutdown(domid, reason, tx)).is_err() {
            return false;
        }
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }

    /// Withdraws a `reason` request the guest has not taken yet (see [`Store::withdraw_shutdown`]).
    pub fn withdraw_shutdown(&self, domid: u16, reason: &'static str) {
        let _ = self.tx.send(Cmd::Withdraw(domid, reason));
    }

    /// The xenstore nodes of `domid`, relative to its home (see [`Store::nodes`]).
    pub fn nodes(&self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::Nodes(domid, tx)).map_err(|_| stopped())?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| stopped())
    }

    /// Introduces a restored domain with the xenstore nodes its guest had (see [`Store::restore`]) and serves
    /// its console and xenstore rings from now on, from wherever their indices stand.
    pub fn restore(
        &self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        let r = Restored {
            name: name.to_string(),
            memory_kib,
            nodes,
        };
        self.tx
            .send(Cmd::Restore(domid, r, tx))
            .map_err(|_| stopped())?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| stopped())?
            .map_err(Error::Config)
    }

    /// Stops serving `domid`, before it is destroyed (its memory may be reused).
    pub fn remove(&self, domid: u16) {
        let _ = self.tx.send(Cmd::Remove(domid));
    }

    /// Connects a client to the console of `domid`, replacing any client attached before.
    pub fn attach(&self, domid: u16) -> std::io::Result<Attached> {
        let (output, daemon_out) = UnixStream::pair()?;
        let (input, daemon_in) = UnixStream::pair()?;
        daemon_in.set_nonblocking(true)?;
        self.tx
            .send(Cmd::Attach(domid, daemon_out, daemon_in))
            .map_err(|_| {
                std::io::Error::new(ErrorKind::BrokenPipe, "the console daemon stopped")
            })?;
        Ok(Attached { output, input })
    }
}

fn stopped() -> Error {
    Error::io(
        "asking the console daemon",
        std::io::Error::new(ErrorKind::BrokenPipe, "the console daemon stopped"),
    )
}

impl Drop for ConsoleService {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

fn run<T: Transport>(mut t: T, rx: &Receiver<Cmd>) {
    let mut core = Core::default();
    let mut wait = IDLE;
    loop {
        match rx.recv_timeout(wait) {
            Ok(cmd) => {
                if !core.command(cmd) {
                    break;
                }
                // Take every queued command before sweeping.
                while let Ok(cmd) = rx.try_recv() {
                    if !core.command(cmd) {
                        core.close_all(&mut t);
                        return;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        wait = if core.sweep(&mut t) {
            BUSY
        } else {
            (wait * 2).clamp(BUSY, IDLE)
        };
    }
    core.close_all(&mut t);
}

/// One domain's console.
#[derive(Debug, Default)]
struct Dom {
    ring: Option<Console>,
    history: VecDeque<u8>,
    client: Option<(UnixStream, UnixStream)>,
    input: Vec<u8>,
    /// Since when the ring cannot be reached (the domain is being rebuilt or is gone).
    lost: Option<Instant>,
    /// The xenstore ring: its frame, the control domain's end of its channel, and the connection state.
    xs: Option<(u64, Option<u32>, XsRing)>,
}

impl Dom {
    /// Forgets the console ring and the xenstore ring, returning the control domain's ends of their channels
    /// (to close: the rings belong to a domain that is gone or replaced).
    fn take_ports(&mut self) -> impl Iterator<Item = u32> {
        let console = self.ring.take().and_then(|r| r.port);
        let xenstore = self.xs.take().and_then(|x| x.1);
        console.into_iter().chain(xenstore)
    }
}

/// The daemon's state and one sweep, independent of the thread so tests drive it directly.
#[derive(Debug)]
pub(crate) struct Core {
    doms: BTreeMap<u16, Dom>,
    /// Channels to close on the next sweep (domains removed after their channel was bound).
    closing: Vec<u32>,
    /// [`GRACE`], shorter in tests.
    grace: Duration,
    /// The xenstore of every domain served.
    store: Store,
    /// The last domain served in turn without a notification.
    cursor: u16,
    /// Serve every domain on every sweep (tests), not only the notified ones and those in turn.
    serve_all: bool,
}

impl Default for Core {
    fn default() -> Self {
        Self {
            doms: BTreeMap::new(),
            closing: Vec::new(),
            grace: GRACE,
            store: Store::new(),
            cursor: 0,
            serve_all: false,
        }
    }
}

impl Core {
    /// Applies a command; false for `Stop`.
    fn command(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Add(d) => {
                // A new domain under this ID (a restart may reuse it): the client and what is buffered stay,
                // the ring and its channel are those of the new domain.
                let dom = self.doms.entry(d).or_default();
                self.closing.extend(dom.take_ports());
                dom.lost = None;
            }
            Cmd::Introduce(d, name, kib) => {
                self.store.release(d);
                self.store.introduce(d, &name, kib);
                self.doms.entry(d).or_default();
            }
            Cmd::Shutdown(d, reason, reply) => {
                let _ = reply.send(self.store.request_shutdown(d, reason));
            }
            Cmd::Withdraw(d, reason) => self.store.withdraw_shutdown(d, reason),
            Cmd::Nodes(d, reply) => {
                let _ = reply.send(self.store.nodes(d));
            }
            Cmd::Restore(d, r, reply) => {
                let done = self.store.restore(d, &r.name, r.memory_kib, &r.nodes);
                if done.is_ok() {
                    self.command(Cmd::Add(d));
                }
                let _ = reply.send(done);
            }
            Cmd::Remove(d) => {
                if let Some(mut x) = self.doms.remove(&d) {
                    self.closing.extend(x.take_ports());
                }
                self.store.release(d);
            }
            Cmd::Attach(d, out, input) => {
                let dom = self.doms.entry(d).or_default();
                // The newest client wins; the old one sees end of file.
                dom.client = Some((out, input));
            }
            Cmd::Stop => return false,
        }
        true
    }

    fn close_all<T: Transport>(&mut self, t: &mut T) {
        for port in self.closing.drain(..) {
            let _ = t.unbind(port);
        }
        for (_, mut d) in std::mem::take(&mut self.doms) {
            for port in d.take_ports() {
                let _ = t.unbind(port);
            }
        }
    }

    /// Serves every console once; true when any bytes moved.
    pub(crate) fn sweep<T: Transport>(&mut self, t: &mut T) -> bool {
        for port in self.closing.drain(..) {
            let _ = t.unbind(port);
        }
        // Only the domains that notified (or have something for their guest) are served, plus a few others in
        // turn, so every ring is looked at now and then without one sweep having to visit hundreds of domains.
        // When the transport cannot tell which channels fired, every domain is served.
        let fired: Option<Vec<u32>> = t.poll_notified().ok();
        let all = fired.is_none() || self.serve_all;
        let fired = fired.unwrap_or_default();
        let mut extra: Vec<u16> = self
            .doms
            .range(self.cursor.saturating_add(1)..)
            .map(|(id, _)| *id)
            .take(ROUND_ROBIN)
            .collect();
        if extra.len() < ROUND_ROBIN {
            let more = ROUND_ROBIN - extra.len();
            extra.extend(self.doms.keys().copied().take(more));
        }
        if let Some(last) = extra.last() {
            self.cursor = *last;
        }
        let mut moved = false;
        let mut gone = Vec::new();
        for (&domid, d) in &mut self.doms {
            pump_client(d);
            let rang = |p: Option<u32>| p.is_some_and(|p| fired.contains(&p));
            let due = all
                || extra.contains(&domid)
                || d.ring.is_none()
                || d.lost.is_some()
                || !d.input.is_empty()
                || rang(d.ring.as_ref().and_then(|r| r.port))
                || d.xs.as_ref().is_some_and(|x| rang(x.1) || x.2.backlog());
            if !due {
                continue;
            }
            match serve(t, domid, d, self.grace) {
                Ok(m) => moved |= m,
                Err(_) => gone.push(domid),
            }
            if d.lost.is_none() {
                moved |= serve_xenstore(t, domid, d, &mut self.store);
            }
        }
        for domid in gone {
            // The client (if any) sees end of file when its streams drop.
            if let Some(mut x) = self.doms.remove(&domid) {
                for port in x.take_ports() {
                    let _ = t.unbind(port);
                }
            }
            self.store.release(domid);
        }
        moved
    }

    #[cfg(test)]
    fn attach_for_test(&mut self, domid: u16) -> Attached {
        let (output, daemon_out) = UnixStream::pair().expect("pair");
        let (input, daemon_in) = UnixStream::pair().expect("pair");
        daemon_in.set_nonblocking(true).expect("nonblocking");
        self.command(Cmd::Attach(domid, daemon_out, daemon_in));
        Attached { output, input }
    }
}

/// Moves buffered output to the attached client and its keystrokes into `d.input`; drops a client that went
/// away.
fn pump_client(d: &mut Dom) {
    pump(&mut d.client, &mut d.history, &mut d.input);
}

fn pump(
    client: &mut Option<(UnixStream, UnixStream)>,
    history: &mut VecDeque<u8>,
    keys: &mut Vec<u8>,
) {
    if let Some((out, input)) = client.as_mut() {
        let mut drop_client = false;
        if !history.is_empty() {
            let (a, b) = history.as_slices();
            if out.write_all(a).and_then(|()| out.write_all(b)).is_ok() {
                history.clear();
            } else {
                drop_client = true;
            }
        }
        let mut buf = [0u8; 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) => {
                    drop_client = true;
                    break;
                }
                Ok(n) => keys.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    drop_client = true;
                    break;
                }
            }
        }
        if drop_client {
            *client = None;
        }
    }
}

/// The xenstore share of a sweep: answers what the guest asked on its xenstore ring. Domains without one
/// (`HVM_PARAM_STORE_PFN` 0) are skipped; errors leave it for the next sweep (the console side decides when a
/// domain is gone). True when bytes moved.
fn serve_xenstore<T: Transport>(t: &mut T, domid: u16, d: &mut Dom, store: &mut Store) -> bool {
    if d.xs.is_none() {
        let Ok(gfn) = t.hvm_get_param(domid, HVM_PARAM_STORE_PFN) else {
            return false;
        };
        if gfn == 0 {
            return false;
        }
        let port = t
            .hvm_get_param(domid, HVM_PARAM_STORE_EVTCHN)
            .ok()
            .filter(|p| *p != 0)
            .and_then(|p| t.bind_interdomain(domid, p as u32).ok());
        d.xs = Some((gfn, port, XsRing::default()));
    }
    let Some((gfn, port, ring)) = d.xs.as_mut() else {
        return false;
    };
    let moved = match t.map_foreign(domid, &[*gfn]) {
        Ok(mut page) => ring.serve(store, domid, &mut page),
        Err(_) => false,
    };
    if moved {
        if let Some(p) = port {
            let _ = t.notify(*p);
        }
    }
    moved
}

/// One domain's share of a sweep. An error means the domain is gone.
fn serve<T: Transport>(t: &mut T, domid: u16, d: &mut Dom, grace: Duration) -> Result<bool, Error> {
    match serve_ring(t, domid, d) {
        Ok(moved) => {
            d.lost = None;
            Ok(moved)
        }
        Err(e) => {
            // Unreachable: the domain is being rebuilt (on_reboot=restart) or gone. Keep the client for a
            // while in case the same ID comes back.
            if let Some(port) = d.ring.take().and_then(|r| r.port) {
                let _ = t.unbind(port);
            }
            let since = *d.lost.get_or_insert_with(Instant::now);
            if since.elapsed() >= grace || d.client.is_none() {
                Err(e)
            } else {
                Ok(false)
            }
        }
    }
}

fn serve_ring<T: Transport>(t: &mut T, domid: u16, d: &mut Dom) -> Result<bool, Error> {
    let ring = match d.ring.as_mut() {
        Some(r) => r,
        None => {
            let mut r = match Console::open(t, domid) {
                Ok(r) => r,
                // Still being built (the ring is not set up yet): try again next sweep.
                Err(Error::Config(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            // A guest without a console channel still gets its ring served.
            let _ = r.bind(t);
            d.ring.insert(r)
        }
    };
    let mut moved = false;
    let bytes = ring.read(t)?;
    if !bytes.is_empty() {
        moved = true;
        d.history.extend(bytes);
        let excess = d.history.len().saturating_sub(HISTORY);
        d.history.drain(..excess);
    }
    pump(&mut d.client, &mut d.history, &mut d.input);
    if !d.input.is_empty() {
        let n = ring.write(t, &d.input)?;
        d.input.drain(..n);
        moved |= n > 0;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{
        build,
        tests::{kernel, spec},
        BuildSpec,
    };
    use crate::transport::fake::FakeXen;
    use xen_abi::memres::{CONS_IN_PROD, CONS_IN_SIZE, CONS_OUT_PROD};

    fn guest_writes(x: &mut FakeXen, domid: u16, gfn: u64, text: &[u8]) {
        let page = gfn * 4096;
        let prod = u32::from_le_bytes(
            x.read_guest(domid, page + CONS_OUT_PROD as u64, 4)
                .expect("prod")
                .try_into()
                .expect("4 bytes"),
        );
        for (i, ch) in text.iter().enumerate() {
            let at = page + (CONS_IN_SIZE + (prod as usize + i) % 2048) as u64;
            assert!(x.write_guest(domid, at, &[*ch]));
        }
        x.write_guest(
            domid,
            page + CONS_OUT_PROD as u64,
            &(prod + text.len() as u32).to_le_bytes(),
        );
    }

    #[test]
    fn drains_while_detached_then_replays_and_forwards_input() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let mut core = Core {
            serve_all: true,
            ..Core::default()
        };
        core.command(Cmd::Add(b.domid));
        // Output with nobody attached is drained (the guest's ring empties) and kept.
        guest_writes(&mut x, b.domid, b.console_gfn, b"boot log\n");
        assert!(core.sweep(&mut x));
        assert!(!core.sweep(&mut x), "nothing new");
        // The bound channel is the guest's console port.
        assert_eq!(
            x.state.borrow().bound.values().next(),
            Some(&(b.domid, b.console_port))
        );
        let mut c = core.attach_for_test(b.domid);
        guest_writes(&mut x, b.domid, b.console_gfn, b"# ");
        core.sweep(&mut x);
        let mut got = [0u8; 11];
        c.output.read_exact(&mut got).expect("replayed output");
        assert_eq!(&got, b"boot log\n# ");
        // Keystrokes go into the in ring and signal the guest.
        c.input.write_all(b"uname\r").expect("typing");
        assert!(core.sweep(&mut x));
        let page = b.console_gfn * 4096;
        assert_eq!(x.read_guest(b.domid, page, 6).expect("in ring"), b"uname\r");
        assert_eq!(
            x.read_guest(b.domid, page + CONS_IN_PROD as u64, 4)
                .expect("prod"),
            6u32.to_le_bytes()
        );
        assert_eq!(x.state.borrow().sent, vec![(b.domid, b.console_port)]);
        // A second client replaces the first, whose output ends.
        let mut c2 = core.attach_for_test(b.domid);
        core.sweep(&mut x);
        let mut rest = Vec::new();
        c.output
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(c.output.read_to_end(&mut rest).expect("eof"), 0);
        // The domain goes away: once the grace period for a restart is over, the client sees end of file and
        // the channel is closed.
        core.grace = Duration::from_millis(200);
        x.state.borrow_mut().domains.remove(&b.domid);
        core.sweep(&mut x);
        assert!(
            core.doms.contains_key(&b.domid),
            "kept while it may come back"
        );
        std::thread::sleep(Duration::from_millis(250));
        core.sweep(&mut x);
        c2.output
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(c2.output.read_to_end(&mut rest).expect("eof"), 0);
        assert!(x.state.borrow().bound.is_empty());
        assert!(core.doms.is_empty());
    }

    #[test]
    fn history_keeps_only_the_newest_bytes() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let mut core = Core {
            serve_all: true,
            ..Core::default()
        };
        core.command(Cmd::Add(b.domid));
        let mut last = String::new();
        for i in 0..(HISTORY / 1000 + 10) {
            last = format!("{i:0999}\n");
            guest_writes(&mut x, b.domid, b.console_gfn, last.as_bytes());
            core.sweep(&mut x);
        }
        let d = &core.doms[&b.domid];
        assert_eq!(d.history.len(), HISTORY);
        let tail: Vec<u8> = d.history.iter().skip(HISTORY - 1000).copied().collect();
        assert_eq!(tail, last.as_bytes());
    }

    #[test]
    fn removed_domains_are_no_longer_read_and_their_channel_closes() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let mut core = Core {
            serve_all: true,
            ..Core::default()
        };
        core.command(Cmd::Add(b.domid));
        core.sweep(&mut x);
        assert_eq!(x.state.borrow().bound.len(), 1);
        core.command(Cmd::Remove(b.domid));
        guest_writes(&mut x, b.domid, b.console_gfn, b"late\n");
        assert!(!core.sweep(&mut x));
        assert!(x.state.borrow().bound.is_empty());
    }

    #[test]
    fn only_notified_domains_and_a_few_in_turn_are_served() {
        let mut x = FakeXen::default();
        let a = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("a");
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("b");
        let mut core = Core::default();
        core.command(Cmd::Add(a.domid));
        core.command(Cmd::Add(b.domid));
        // Enough quiet domains that b's turn does not come in the next sweep.
        for _ in 0..2 * ROUND_ROBIN {
            let q = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("quiet");
            core.command(Cmd::Add(q.domid));
        }
        // The first sweep opens every ring (and binds the channels).
        core.sweep(&mut x);
        guest_writes(&mut x, a.domid, a.console_gfn, b"from a\n");
        guest_writes(&mut x, b.domid, b.console_gfn, b"from b\n");
        let local_a = x
            .state
            .borrow()
            .bound
            .iter()
            .find(|(_, t)| **t == (a.domid, a.console_port))
            .map(|(l, _)| *l)
            .expect("a bound");
        x.state.borrow_mut().notified.push(local_a);
        core.cursor = b.domid;
        assert!(core.sweep(&mut x));
        assert_eq!(core.doms[&a.domid].history.len(), 7, "a notified: served");
        assert!(
            core.doms[&b.domid].history.is_empty(),
            "b waits for its turn"
        );
        // Its turn comes within a few sweeps.
        for _ in 0..4 {
            core.sweep(&mut x);
        }
        assert_eq!(core.doms[&b.domid].history.len(), 7);
    }

    #[test]
    fn restored_domains_get_their_nodes_back_and_are_served_where_their_rings_stand() {
        let mut x = FakeXen::default();
        let with_store = || BuildSpec {
            xenstore: true,
            ..spec(kernel(true, 0x10_0000, &[0; 8]))
        };
        let a = build(&mut x, &with_store()).expect("a");
        let mut core = Core {
            serve_all: true,
            ..Core::default()
        };
        core.command(Cmd::Introduce(a.domid, "g".into(), 16384));
        core.command(Cmd::Add(a.domid));
        core.store.set(
            &format!("{}/control/feature-suspend", Store::home(a.domid)),
            b"1",
        );
        let (tx, rx) = mpsc::channel();
        core.command(Cmd::Shutdown(a.domid, "suspend", tx));
        assert!(rx.recv().expect("answer"));
        let (tx, rx) = mpsc::channel();
        core.command(Cmd::Nodes(a.domid, tx));
        let nodes = rx.recv().expect("nodes");
        assert!(nodes.contains(&("control/feature-suspend".into(), b"1".to_vec())));
        // The restored domain: its xenstore ring's indices are not zero.
        let b = build(&mut x, &with_store()).expect("b");
        let page = b.xenstore_gfn * 4096;
        let at = 700u32;
        for off in [2048u64, 2052, 2056, 2060] {
            x.write_guest(b.domid, page + off, &at.to_le_bytes());
        }
        let (tx, rx) = mpsc::channel();
        let r = Restored {
            name: "g".into(),
            memory_kib: 16384,
            nodes,
        };
        core.command(Cmd::Restore(b.domid, r, tx));
        rx.recv().expect("answer").expect("restored");
        assert!(core.doms.contains_key(&b.domid), "served");
        let home = Store::home(b.domid);
        assert_eq!(
            core.store.get(&format!("{home}/control/feature-suspend")),
            Some(&b"1"[..])
        );
        let mut msg = Vec::new();
        for v in [crate::xenstore::XS_READ, 1, 0, 24] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.extend_from_slice(b"control/feature-suspend\0");
        assert!(x.write_guest(b.domid, page + u64::from(at), &msg));
        x.write_guest(b.domid, page + 2052, &(at + msg.len() as u32).to_le_bytes());
        core.sweep(&mut x);
        let rd = |o: u64| {
            u32::from_le_bytes(
                x.read_guest(b.domid, page + o, 4)
                    .expect("index")
                    .try_into()
                    .expect("4 bytes"),
            )
        };
        assert_eq!(rd(2048), at + msg.len() as u32, "request taken");
        assert_eq!(rd(2056), at, "the guest's own index");
        assert_eq!(rd(2060), at + 17, "answer after the old responses");
        assert_eq!(
            x.read_guest(b.domid, page + 1024 + u64::from(at) + 16, 1)
                .expect("answer"),
            b"1"
        );
        // A node that would leave the home is refused.
        let (tx, rx) = mpsc::channel();
        let r = Restored {
            name: "h".into(),
            memory_kib: 1,
            nodes: vec![("../0/x".into(), vec![])],
        };
        core.command(Cmd::Restore(99, r, tx));
        assert!(rx.recv().expect("answer").is_err());
    }
}
