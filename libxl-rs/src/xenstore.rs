//! The control domain's xenstore (Xen's xenstored, the part guests need): one tree of nodes, the wire protocol
//! guests speak on their xenstore ring (`public/io/xs_wire.h`), watches, and the toolstack's writes such as
//! `control/shutdown`, which is how a Xen guest is asked to power off, reboot or suspend (to be saved)
//! cleanly, and what a save image keeps of a domain ([`Store::nodes`], [`Store::restore`]).
//!
//! [`Store`] is the pure state machine (tested on the host); [`XsRing`] moves bytes between a guest's ring page
//! and it. The console daemon ([`crate::console::service`]) serves both rings of every domain in one sweep.

use std::collections::{BTreeMap, VecDeque};

/// `XS_DIRECTORY`.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_GET_PERMS`.
pub const XS_GET_PERMS: u32 = 3;
/// `XS_WATCH`.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`.
pub const XS_UNWATCH: u32 = 5;
/// `XS_TRANSACTION_START`.
pub const XS_TRANSACTION_START: u32 = 6;
/// `XS_TRANSACTION_END`.
pub const XS_TRANSACTION_END: u32 = 7;
/// `XS_GET_DOMAIN_PATH`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM`.
pub const XS_RM: u32 = 13;
/// `XS_SET_PERMS`.
pub const XS_SET_PERMS: u32 = 14;
/// `XS_WATCH_EVENT`.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`.
pub const XS_ERROR: u32 = 16;
/// `XS_RESET_WATCHES`.
pub const XS_RESET_WATCHES: u32 = 21;
/// `XS_DIRECTORY_PART`.
pub const XS_DIRECTORY_PART: u32 = 22;

/// Size of a message header (`struct xsd_sockmsg`).
pub const HEADER: usize = 16;
/// The largest payload (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Ring sizes and the index offsets of `struct xenstore_domain_interface`.
pub const RING: usize = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;

/// One encoded message for a guest.
fn message(kind: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + payload.len());
    m.extend_from_slice(&kind.to_le_bytes());
    m.extend_from_slice(&req_id.to_le_bytes());
    m.extend_from_slice(&tx_id.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

fn error(req_id: u32, tx_id: u32, name: &str) -> Vec<u8> {
    let mut p = name.as_bytes().to_vec();
    p.push(0);
    message(XS_ERROR, req_id, tx_id, &p)
}

/// The nodes, watches and transactions of every domain.
#[derive(Debug, Default)]
pub struct Store {
    nodes: BTreeMap<String, Vec<u8>>,
    /// (domain, watched absolute path, path as the guest gave it, token).
    watches: Vec<(u16, String, String, String)>,
    next_tx: u32,
    /// Watch events waiting for each domain.
    events: BTreeMap<u16, VecDeque<Vec<u8>>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The home of `domid`.
    pub fn home(domid: u16) -> String {
        format!("/local/domain/{domid}")
    }

    /// Creates the nodes a new domain starts with (as libxl writes them): its name and ID, an empty
    /// `control/shutdown`, `device` and `memory/target`.
    pub fn introduce(&mut self, domid: u16, name: &str, memory_kib: u64) {
        let home = Self::home(domid);
        self.set(&home, b"");
        self.set(&format!("{home}/name"), name.as_bytes());
        self.set(&format!("{home}/domid"), domid.to_string().as_bytes());
        self.set(&format!("{home}/control/shutdown"), b"");
        self.set(&format!("{home}/device"), b"");
        self.set(
            &format!("{home}/memory/target"),
            memory_kib.to_string().as_bytes(),
        );
    }

    /// Forgets a domain: its nodes, its watches and its queued events.
    pub fn release(&mut self, domid: u16) {
        let home = Self::home(domid);
        self.nodes
            .retain(|p, _| p != &home && !p.starts_with(&format!("{home}/")));
        self.watches.retain(|w| w.0 != domid);
        self.events.remove(&domid);
    }

    /// Asks the guest of `domid` to `reason` ("poweroff", "reboot", "suspend") by writing it into
    /// `control/shutdown`, as Xen's toolstack does; false, with nothing written, when the guest has not
    /// announced `control/feature-<reason>` (it has no PV driver that would act on it).
    pub fn request_shutdown(&mut self, domid: u16, reason: &str) -> bool {
        let home = Self::home(domid);
        let able = self.get(&format!("{home}/control/feature-{reason}")) == Some(b"1");
        if able {
            self.set(&format!("{home}/control/shutdown"), reason.as_bytes());
        }
        able
    }

    /// Withdraws a `reason` request the guest has not taken yet (it clears `control/shutdown` when it does):
    /// a guest that comes too late finds nothing to act on.
    pub fn withdraw_shutdown(&mut self, domid: u16, reason: &str) {
        let node = format!("{}/control/shutdown", Self::home(domid));
        if self.get(&node) == Some(reason.as_bytes()) {
            self.set(&node, b"");
        }
    }

    /// Every node under the home of `domid`, as paths relative to it with their values (what a save image
    /// keeps of the domain's xenstore).
    pub fn nodes(&self, domid: u16) -> Vec<(String, Vec<u8>)> {
        let prefix = format!("{}/", Self::home(domid));
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, v)| (p[prefix.len()..].to_string(), v.clone()))
            .collect()
    }

    /// Introduces a restored domain (see [`Store::introduce`]) and writes back the nodes its guest had, as
    /// [`Store::nodes`] listed them, so its drivers find their features and settings again. The nodes the
    /// toolstack owns keep their new values (`name`, `domid`), a pending `control/shutdown` is not carried
    /// over (the guest would act on it again), and paths that do not stay inside the home are refused.
    pub fn restore(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), String> {
        let home = Self::home(domid);
        let mut paths = Vec::with_capacity(nodes.len());
        for (rel, value) in nodes {
            let ok = !rel.is_empty()
                && rel.len() <= 2048
                && value.len() <= PAYLOAD_MAX
                && rel.split('/').all(|c| {
                    !c.is_empty()
                        && c != "."
                        && c != ".."
                        && c.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
                });
            if !ok {
                return Err(format!(
                    "the xenstore node \"{}\" cannot be restored",
                    rel.escape_debug()
                ));
            }
            paths.push((format!("{home}/{rel}"), value));
        }
        self.release(domid);
        self.introduce(domid, name, memory_kib);
        for (path, value) in paths {
            let rel = &path[home.len() + 1..];
            if rel == "name" || rel == "domid" || rel == "control/shutdown" {
                continue;
            }
            self.set(&path, value);
        }
        Ok(())
    }

    fn absolute(domid: u16, path: &str) -> Option<String> {
        let p = path.trim_end_matches('\0');
        if p.is_empty() || p.len() > 3072 || p.contains("//") {
            return None;
        }
        let abs = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("{}/{p}", Self::home(domid))
        };
        let abs = abs.trim_end_matches('/').to_string();
        (!abs.is_empty()).then_some(abs)
    }

    /// A node's value.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.nodes.get(path).map(Vec::as_slice)
    }

    /// Writes a node (creating its parents) and queues the watch events it fires.
    pub fn set(&mut self, path: &str, value: &[u8]) {
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            let parent = &path[..at + 1 + i];
            self.nodes.entry(parent.to_string()).or_default();
            at += 1 + i;
        }
        self.nodes.insert(path.to_string(), value.to_vec());
        self.fire(path);
    }

    fn remove(&mut self, path: &str) -> bool {
        let before = self.nodes.len();
        self.nodes
            .retain(|p, _| p != path && !p.starts_with(&format!("{path}/")));
        let removed = self.nodes.len() != before;
        if removed {
            self.fire(path);
        }
        removed
    }

    fn children(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| {
                let rest = &p[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_string())
            })
            .collect()
    }

    fn fire(&mut self, path: &str) {
        let hits: Vec<(u16, String, String)> = self
            .watches
            .iter()
            .filter(|(_, w, _, _)| path == w || path.starts_with(&format!("{w}/")))
            .map(|(d, _, given, token)| {
                // The event names the path as the guest would: relative if it watched a relative path.
                let shown = if given.starts_with('/') {
                    path.to_string()
                } else {
                    let home = format!("{}/", Self::home(*d));
                    path.strip_prefix(&home).unwrap_or(path).to_string()
                };
                (*d, shown, token.clone())
            })
            .collect();
        for (d, shown, token) in hits {
            self.queue_event(d, &shown, &token);
        }
    }

    fn queue_event(&mut self, domid: u16, path: &str, token: &str) {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(token.as_bytes());
        p.push(0);
        self.events
            .entry(domid)
            .or_default()
            .push_back(message(XS_WATCH_EVENT, 0, 0, &p));
    }

    /// Watch events waiting for `domid`.
    pub fn take_events(&mut self, domid: u16) -> Vec<Vec<u8>> {
        self.events
            .remove(&domid)
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Answers one request of `domid`; watch events it causes are queued (see [`Store::take_events`]).
    pub fn request(
        &mut self,
        domid: u16,
        kind: u32,
        req_id: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let ok = || message(kind, req_id, tx_id, b"OK\0");
        let mut args = payload.split(|b| *b == 0);
        let first = args.next().and_then(|a| std::str::from_utf8(a).ok());
        match kind {
            XS_READ | XS_DIRECTORY | XS_DIRECTORY_PART | XS_GET_PERMS | XS_MKDIR | XS_RM
            | XS_WRITE | XS_SET_PERMS => {
                let Some(path) = first.and_then(|p| Self::absolute(domid, p)) else {
                    return error(req_id, tx_id, "EINVAL");
                };
                // A guest may touch only its own subtree (xenstored's permissions for an unprivileged domain).
                let home = Self::home(domid);
                let own = path == home || path.starts_with(&format!("{home}/"));
                match kind {
                    XS_READ => match self.get(&path) {
                        Some(v) if own => message(kind, req_id, tx_id, v),
                        Some(_) => error(req_id, tx_id, "EACCES"),
                        None => error(req_id, tx_id, "ENOENT"),
                    },
                    XS_DIRECTORY | XS_DIRECTORY_PART => {
                        if !own {
                            return error(req_id, tx_id, "EACCES");
                        }
                        if self.get(&path).is_none() {
                            return error(req_id, tx_id, "ENOENT");
                        }
                        let mut out = Vec::new();
                        if kind == XS_DIRECTORY_PART {
                            // Generation count first, then the whole list and an empty terminator.
                            out.extend_from_slice(b"0\0");
                        }
                        for c in self.children(&path) {
                            out.extend_from_slice(c.as_bytes());
                            out.push(0);
                        }
                        if kind == XS_DIRECTORY_PART {
                            out.push(0);
                        }
                        message(kind, req_id, tx_id, &out)
                    }
                    XS_GET_PERMS => match self.get(&path) {
                        Some(_) if own => {
                            message(kind, req_id, tx_id, format!("n{domid}\0").as_bytes())
                        }
                        Some(_) => error(req_id, tx_id, "EACCES"),
                        None => error(req_id, tx_id, "ENOENT"),
                    },
                    _ if !own => error(req_id, tx_id, "EACCES"),
                    XS_WRITE => {
                        let value = payload
                            .iter()
                            .position(|b| *b == 0)
                            .map_or(&[][..], |i| &payload[i + 1..]);
                        self.set(&path, value);
                        ok()
                    }
                    XS_MKDIR => {
                        if self.get(&path).is_none() {
                            self.set(&path, b"");
                        }
                        ok()
                    }
                    XS_RM => {
                        if self.remove(&path) {
                            ok()
                        } else {
                            error(req_id, tx_id, "ENOENT")
                        }
                    }
                    // Permissions are fixed: each domain owns its subtree.
                    _ => ok(),
                }
            }
            XS_WATCH => {
                let token = args.next().and_then(|t| std::str::from_utf8(t).ok());
                let (Some(given), Some(token)) = (first, token) else {
                    return error(req_id, tx_id, "EINVAL");
                };
                let Some(path) = Self::absolute(domid, given) else {
                    return error(req_id, tx_id, "EINVAL");
                };
                if self
                    .watches
                    .iter()
                    .any(|w| w.0 == domid && w.1 == path && w.3 == token)
                {
                    return error(req_id, tx_id, "EEXIST");
                }
                self.watches
                    .push((domid, path, given.to_string(), token.to_string()));
                // A new watch fires once at once, so the guest reads the current state.
                self.queue_event(domid, given, token);
                ok()
            }
            XS_UNWATCH => {
                let token = args.next().and_then(|t| std::str::from_utf8(t).ok());
                let (Some(given), Some(token)) = (first, token) else {
                    return error(req_id, tx_id, "EINVAL");
                };
                let path = Self::absolute(domid, given).unwrap_or_default();
                let before = self.watches.len();
                self.watches
                    .retain(|w| !(w.0 == domid && w.1 == path && w.3 == token));
                if self.watches.len() == before {
                    error(req_id, tx_id, "ENOENT")
                } else {
                    ok()
                }
            }
            XS_RESET_WATCHES => {
                self.watches.retain(|w| w.0 != domid);
                ok()
            }
            // Transactions are applied directly (the store has one writer per domain subtree, so nothing
            // conflicts); ending one always succeeds.
            XS_TRANSACTION_START => {
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                message(kind, req_id, 0, format!("{}\0", self.next_tx).as_bytes())
            }
            XS_TRANSACTION_END => ok(),
            XS_GET_DOMAIN_PATH => message(
                kind,
                req_id,
                tx_id,
                format!("{}\0", Self::home(domid)).as_bytes(),
            ),
            _ => error(req_id, tx_id, "ENOSYS"),
        }
    }
}

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The server side of one guest's ring page: partial requests and responses that did not fit yet.
#[derive(Debug, Default)]
pub struct XsRing {
    incoming: Vec<u8>,
    outgoing: VecDeque<u8>,
}

impl XsRing {
    /// Serves the ring page `page` of `domid`: takes the requests the guest produced, answers them, and puts
    /// answers and watch events into the response ring as far as they fit. Returns true when anything moved
    /// (the guest should be notified). A request with an impossible length poisons the connection: the ring
    /// is left alone from then on, as xenstored drops a misbehaving guest's connection.
    pub fn serve(&mut self, store: &mut Store, domid: u16, page: &mut [u8]) -> bool {
        if page.len() < RSP_PROD + 4 {
            return false;
        }
        let mut moved = false;
        let cons = rd32(page, REQ_CONS);
        let prod = rd32(page, REQ_PROD);
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > 0 && avail <= RING {
            for i in 0..avail {
                self.incoming
                    .push(page[cons.wrapping_add(i as u32) as usize % RING]);
            }
            wr32(page, REQ_CONS, prod);
            moved = true;
        }
        while self.incoming.len() >= HEADER {
            let len = rd32(&self.incoming, 12) as usize;
            if len > PAYLOAD_MAX {
                let req_id = rd32(&self.incoming, 4);
                self.incoming.clear();
                self.outgoing.extend(error(req_id, 0, "E2BIG"));
                break;
            }
            if self.incoming.len() < HEADER + len {
                break;
            }
            let kind = rd32(&self.incoming, 0);
            let req_id = rd32(&self.incoming, 4);
            let tx_id = rd32(&self.incoming, 8);
            let payload: Vec<u8> = self.incoming[HEADER..HEADER + len].to_vec();
            self.incoming.drain(..HEADER + len);
            let reply = store.request(domid, kind, req_id, tx_id, &payload);
            self.outgoing.extend(reply);
        }
        for ev in store.take_events(domid) {
            self.outgoing.extend(ev);
        }
        let rcons = rd32(page, RSP_CONS);
        let mut rprod = rd32(page, RSP_PROD);
        let used = rprod.wrapping_sub(rcons) as usize;
        if used <= RING {
            let room = RING - used;
            let n = room.min(self.outgoing.len());
            for _ in 0..n {
                let b = self.outgoing.pop_front().unwrap_or(0);
                page[RING + rprod as usize % RING] = b;
                rprod = rprod.wrapping_add(1);
            }
            if n > 0 {
                wr32(page, RSP_PROD, rprod);
                moved = true;
            }
        }
        moved
    }

    /// True while answers wait for room in the response ring.
    pub fn backlog(&self) -> bool {
        !self.outgoing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(store: &mut Store, kind: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let m = store.request(3, kind, 7, 0, payload);
        assert_eq!(rd32(&m, 4), 7, "request id echoed");
        let len = rd32(&m, 12) as usize;
        (rd32(&m, 0), m[HEADER..HEADER + len].to_vec())
    }

    #[test]
    fn reads_writes_directories_and_permissions() {
        let mut s = Store::new();
        s.introduce(3, "linux", 163_840);
        s.introduce(4, "other", 1024);
        assert_eq!(
            req(&mut s, XS_READ, b"name\0"),
            (XS_READ, b"linux".to_vec())
        );
        assert_eq!(
            req(&mut s, XS_READ, b"/local/domain/3/memory/target\0"),
            (XS_READ, b"163840".to_vec())
        );
        assert_eq!(
            req(&mut s, XS_READ, b"nothing\0"),
            (XS_ERROR, b"ENOENT\0".to_vec())
        );
        assert_eq!(
            req(&mut s, XS_READ, b"/local/domain/4/name\0"),
            (XS_ERROR, b"EACCES\0".to_vec()),
            "another domain's nodes"
        );
        assert_eq!(
            req(&mut s, XS_WRITE, b"control/feature-poweroff\x001"),
            (XS_WRITE, b"OK\0".to_vec())
        );
        assert_eq!(
            s.get("/local/domain/3/control/feature-poweroff"),
            Some(&b"1"[..])
        );
        let (k, dir) = req(&mut s, XS_DIRECTORY, b"control\0");
        assert_eq!(k, XS_DIRECTORY);
        assert_eq!(dir, b"feature-poweroff\0shutdown\0");
        assert_eq!(
            req(&mut s, XS_DIRECTORY, b"device\0"),
            (XS_DIRECTORY, vec![])
        );
        assert_eq!(
            req(&mut s, XS_DIRECTORY_PART, b"control\0\0"),
            (
                XS_DIRECTORY_PART,
                b"0\0feature-poweroff\0shutdown\0\0".to_vec()
            )
        );
        assert_eq!(req(&mut s, XS_RM, b"control/feature-poweroff\0").0, XS_RM);
        assert_eq!(
            req(&mut s, XS_RM, b"control/feature-poweroff\0").1,
            b"ENOENT\0"
        );
        assert_eq!(
            req(&mut s, XS_WRITE, b"/local/domain/4/name\0x").1,
            b"EACCES\0"
        );
        assert_eq!(req(&mut s, XS_READ, b"\0").1, b"EINVAL\0");
        assert_eq!(req(&mut s, 999, b"").1, b"ENOSYS\0");
        assert_eq!(
            req(&mut s, XS_GET_DOMAIN_PATH, b"3\0"),
            (XS_GET_DOMAIN_PATH, b"/local/domain/3\0".to_vec())
        );
        let (k, tx) = req(&mut s, XS_TRANSACTION_START, b"\0");
        assert_eq!((k, tx), (XS_TRANSACTION_START, b"1\0".to_vec()));
        assert_eq!(req(&mut s, XS_TRANSACTION_END, b"T\0").1, b"OK\0");
        s.release(3);
        assert_eq!(s.get("/local/domain/3/name"), None);
        assert_eq!(s.get("/local/domain/4/name"), Some(&b"other"[..]));
    }

    #[test]
    fn watches_fire_at_once_and_on_toolstack_writes() {
        let mut s = Store::new();
        s.introduce(3, "linux", 1024);
        assert_eq!(req(&mut s, XS_WATCH, b"control/shutdown\0tok\0").1, b"OK\0");
        assert_eq!(
            req(&mut s, XS_WATCH, b"control/shutdown\0tok\0").1,
            b"EEXIST\0"
        );
        let ev = s.take_events(3);
        assert_eq!(ev.len(), 1, "fires once when set");
        assert_eq!(rd32(&ev[0], 0), XS_WATCH_EVENT);
        assert_eq!(&ev[0][HEADER..], b"control/shutdown\0tok\0");
        // The toolstack asks for a poweroff.
        s.set("/local/domain/3/control/shutdown", b"poweroff");
        let ev = s.take_events(3);
        assert_eq!(ev.len(), 1);
        assert_eq!(&ev[0][HEADER..], b"control/shutdown\0tok\0");
        // Unrelated writes fire nothing; children of a watched node do.
        s.set("/local/domain/3/name", b"x");
        assert!(s.take_events(3).is_empty());
        assert_eq!(
            req(&mut s, XS_WATCH, b"/local/domain/3/device\0d\0").1,
            b"OK\0"
        );
        s.take_events(3);
        s.set("/local/domain/3/device/vif/0", b"");
        let ev = s.take_events(3);
        assert_eq!(&ev[0][HEADER..], b"/local/domain/3/device/vif/0\0d\0");
        assert_eq!(
            req(&mut s, XS_UNWATCH, b"control/shutdown\0tok\0").1,
            b"OK\0"
        );
        s.set("/local/domain/3/control/shutdown", b"");
        assert!(s.take_events(3).is_empty());
    }

    #[test]
    fn ring_carries_requests_and_answers_across_the_wrap() {
        let mut s = Store::new();
        s.introduce(3, "linux", 1024);
        let mut page = vec![0u8; 4096];
        let mut ring = XsRing::default();
        // Start near the end of the request ring so the message wraps.
        let start = 1020u32;
        wr32(&mut page, REQ_CONS, start);
        wr32(&mut page, RSP_CONS, start);
        wr32(&mut page, RSP_PROD, start);
        let msg = message(XS_READ, 9, 0, b"name\0");
        for (i, b) in msg.iter().enumerate() {
            page[(start as usize + i) % RING] = *b;
        }
        wr32(&mut page, REQ_PROD, start + msg.len() as u32);
        assert!(ring.serve(&mut s, 3, &mut page));
        assert_eq!(rd32(&page, REQ_CONS), start + msg.len() as u32);
        let rprod = rd32(&page, RSP_PROD);
        let got: Vec<u8> = (start..rprod)
            .map(|i| page[RING + i as usize % RING])
            .collect();
        assert_eq!(got, message(XS_READ, 9, 0, b"linux"));
        assert!(!ring.serve(&mut s, 3, &mut page), "nothing new");
        // A half-written request waits for the rest.
        let msg2 = message(XS_READ, 10, 0, b"domid\0");
        let at = rd32(&page, REQ_PROD);
        for (i, b) in msg2[..10].iter().enumerate() {
            page[(at as usize + i) % RING] = *b;
        }
        wr32(&mut page, REQ_PROD, at + 10);
        ring.serve(&mut s, 3, &mut page);
        assert_eq!(rd32(&page, RSP_PROD), rprod, "no answer yet");
        for (i, b) in msg2[10..].iter().enumerate() {
            page[(at as usize + 10 + i) % RING] = *b;
        }
        wr32(&mut page, REQ_PROD, at + msg2.len() as u32);
        assert!(ring.serve(&mut s, 3, &mut page));
        assert!(rd32(&page, RSP_PROD) > rprod);
        // An absurd length is refused without touching the store.
        let bad = message(XS_WRITE, 11, 0, &[]);
        let mut bad = bad;
        bad[12..16].copy_from_slice(&100_000u32.to_le_bytes());
        let at = rd32(&page, REQ_PROD);
        for (i, b) in bad.iter().enumerate() {
            page[(at as usize + i) % RING] = *b;
        }
        wr32(&mut page, REQ_PROD, at + bad.len() as u32);
        ring.serve(&mut s, 3, &mut page);
        assert_eq!(s.get("/local/domain/3/name"), Some(&b"linux"[..]));
    }

    #[test]
    fn a_saved_subtree_comes_back_under_the_new_domain() {
        let mut s = Store::new();
        s.introduce(3, "linux", 1024);
        // The guest's PV drivers announce themselves.
        for node in ["control/feature-suspend", "control/feature-poweroff"] {
            let mut p = node.as_bytes().to_vec();
            p.extend_from_slice(b"\x001");
            assert_eq!(req(&mut s, XS_WRITE, &p).1, b"OK\0");
        }
        assert!(s.request_shutdown(3, "suspend"));
        assert!(!s.request_shutdown(3, "reboot"), "not announced");
        let saved = s.nodes(3);
        assert!(saved.contains(&("control/feature-suspend".to_string(), b"1".to_vec())));
        assert!(saved.contains(&("control/shutdown".to_string(), b"suspend".to_vec())));
        assert!(saved.contains(&("name".to_string(), b"linux".to_vec())));
        s.release(3);
        s.restore(9, "linux", 1024, &saved).expect("restore");
        assert_eq!(
            s.get("/local/domain/9/control/feature-suspend"),
            Some(&b"1"[..])
        );
        assert_eq!(s.get("/local/domain/9/domid"), Some(&b"9"[..]), "new ID");
        assert_eq!(
            s.get("/local/domain/9/control/shutdown"),
            Some(&b""[..]),
            "no pending request"
        );
        assert_eq!(s.get("/local/domain/3/name"), None);
        // It still answers shutdown requests.
        assert!(s.request_shutdown(9, "poweroff"));
        // Paths that would leave the home are refused, and nothing is written.
        for bad in ["", "../4/name", "a//b", "/local/domain/4/x", "a/./b"] {
            let e = s
                .restore(10, "x", 1, &[(bad.to_string(), b"v".to_vec())])
                .expect_err("refused");
            assert!(e.contains("cannot be restored"), "{e}");
            assert_eq!(s.get("/local/domain/10"), None);
        }
    }

    #[test]
    fn a_request_not_taken_yet_can_be_withdrawn() {
        let mut s = Store::new();
        s.introduce(3, "linux", 1024);
        s.set("/local/domain/3/control/feature-suspend", b"1");
        assert!(s.request_shutdown(3, "suspend"));
        s.withdraw_shutdown(3, "suspend");
        assert_eq!(s.get("/local/domain/3/control/shutdown"), Some(&b""[..]));
        // One the guest replaced is left alone.
        s.set("/local/domain/3/control/shutdown", b"poweroff");
        s.withdraw_shutdown(3, "suspend");
        assert_eq!(
            s.get("/local/domain/3/control/shutdown"),
            Some(&b"poweroff"[..])
        );
    }

    #[test]
    fn a_restored_ring_is_served_from_its_current_indices() {
        // Restored memory: the indices are wherever the guest left them (here about to wrap), and the guest
        // has not consumed the last responses (Linux's xb_init_comms moves rsp_cons up itself).
        let mut s = Store::new();
        s.introduce(3, "linux", 1024);
        let mut page = vec![0u8; 4096];
        let start = u32::MAX - 5;
        wr32(&mut page, REQ_CONS, start);
        wr32(&mut page, RSP_CONS, start - 100);
        wr32(&mut page, RSP_PROD, start);
        let msg = message(XS_READ, 4, 0, b"name\0");
        for (i, b) in msg.iter().enumerate() {
            page[start.wrapping_add(i as u32) as usize % RING] = *b;
        }
        wr32(&mut page, REQ_PROD, start.wrapping_add(msg.len() as u32));
        let mut ring = XsRing::default();
        assert!(ring.serve(&mut s, 3, &mut page));
        assert_eq!(rd32(&page, REQ_CONS), start.wrapping_add(msg.len() as u32));
        assert_eq!(rd32(&page, RSP_CONS), start - 100, "the guest's index");
        let answer = message(XS_READ, 4, 0, b"linux");
        assert_eq!(
            rd32(&page, RSP_PROD),
            start.wrapping_add(answer.len() as u32)
        );
        let got: Vec<u8> = (0..answer.len() as u32)
            .map(|i| page[RING + start.wrapping_add(i) as usize % RING])
            .collect();
        assert_eq!(got, answer);
    }
}
