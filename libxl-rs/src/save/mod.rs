//! Saving a running domain to a file and restoring it, by Xen's cooperative suspend (what libxl does for
//! guests with PV drivers). The image format is in docs/save-format.md; [`stream`] encodes it.
//!
//! Saving: the toolstack writes `suspend` into the guest's `control/shutdown` (only when the guest announced
//! `control/feature-suspend`), the guest freezes and its vCPU 0 calls `SCHEDOP_shutdown(SHUTDOWN_suspend)`,
//! and the hypervisor reports the domain shut down with reason suspend, its vCPUs stopped and its memory and
//! vCPU state kept. The toolstack then writes the domain's layout, every page that is not all zeroes, the HVM
//! params it set (ring frames), the HVM context (Xen's `hvm_save` records) and the domain's xenstore nodes.
//! Afterwards the domain is destroyed ([`AfterSave::Stop`]) or resumed ([`AfterSave::Continue`]): Xen's
//! cancelled suspend, where vCPU 0's `rax` (the suspend hypercall's return value) becomes 1 and
//! `XEN_DOMCTL_resumedomain` lets the guest carry on in the same domain with its channels and rings intact.
//!
//! Restoring builds a domain of the same shape ([`crate::builder::Layout`]: vCPUs, UUID, RAM extents, memory
//! map), copies the pages back (the rest of RAM is zeroed), gives the console and xenstore rings fresh event
//! channels at the same frames, and loads the HVM context instead of a boot entry state. The guest returns
//! from its suspend hypercall with 0 in a new domain, so it re-reads its channels from the HVM params,
//! re-registers shared_info and vcpu_info, rebinds its VIRQs and re-arms its xenstore watches. A restore that
//! fails destroys the domain it started.

pub mod stream;

use std::collections::HashSet;
use std::io::{BufWriter, Read, Write};
use std::time::{Duration, Instant};

use xen_abi::hvmsave::{self, HvmHwCpu};
use xen_abi::hypercall::schedop;
use xen_abi::memres;
use xen_abi::plain::Plain;

use crate::builder::{self, Layout};
use crate::console::service::ConsoleService;
use crate::lifecycle::{DomainConfig, Toolstack};
use crate::transport::{Arg, Call, Error, Transport};
use crate::xenstore::Store;
use stream::{rec, xc, Reader, MAX_PAGES_PER_RECORD, PAGE};

/// What becomes of a domain once its state is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSave {
    /// It is destroyed.
    Stop,
    /// It goes on, running or paused as before (a snapshot).
    Continue,
}

/// How a save goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Destroy or resume the domain afterwards.
    pub after: AfterSave,
    /// How long the guest has to act on the suspend request; after that the request is withdrawn and the
    /// domain keeps running.
    pub suspend_timeout: Duration,
}

/// The suspend timeout libxl uses by default.
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            after: AfterSave::Stop,
            suspend_timeout: SUSPEND_TIMEOUT,
        }
    }
}

/// The xenstore of the domains a save or restore works on (the xenstored: an in-process [`Store`], or the
/// console daemon that serves it).
pub trait GuestStore {
    /// Asks the guest of `domid` to suspend (`control/shutdown` = `suspend`); false, with nothing written,
    /// when the guest has not announced `control/feature-suspend`.
    fn request_suspend(&mut self, domid: u16) -> Result<bool, Error>;
    /// Withdraws a suspend request the guest has not taken.
    fn cancel_suspend(&mut self, domid: u16);
    /// The domain's nodes, relative to its home.
    fn nodes(&mut self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Introduces a restored domain with the nodes its guest had, and serves its rings from now on.
    fn restore_domain(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), Error>;
    /// Forgets a domain (its restore failed).
    fn release(&mut self, domid: u16);
}

impl GuestStore for Store {
    fn request_suspend(&mut self, domid: u16) -> Result<bool, Error> {
        Ok(self.request_shutdown(domid, "suspend"))
    }
    fn cancel_suspend(&mut self, domid: u16) {
        self.withdraw_shutdown(domid, "suspend");
    }
    fn nodes(&mut self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(Store::nodes(self, domid))
    }
    fn restore_domain(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        self.restore(domid, name, memory_kib, nodes)
            .map_err(Error::Config)
    }
    fn release(&mut self, domid: u16) {
        Store::release(self, domid);
    }
}

impl GuestStore for &ConsoleService {
    fn request_suspend(&mut self, domid: u16) -> Result<bool, Error> {
        Ok(self.request_shutdown(domid, "suspend"))
    }
    fn cancel_suspend(&mut self, domid: u16) {
        self.withdraw_shutdown(domid, "suspend");
    }
    fn nodes(&mut self, domid: u16) -> Result<Vec<(String, Vec<u8>)>, Error> {
        ConsoleService::nodes(self, domid)
    }
    fn restore_domain(
        &mut self,
        domid: u16,
        name: &str,
        memory_kib: u64,
        nodes: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        self.restore(domid, name, memory_kib, nodes.to_vec())
    }
    fn release(&mut self, domid: u16) {
        self.remove(domid);
    }
}

/// Where a save image goes: written, then made durable before the domain it describes may be destroyed.
pub trait SaveTarget: Write {
    /// Makes what was written durable (`fsync` for a file).
    fn commit(&mut self) -> std::io::Result<()>;
}

impl SaveTarget for std::fs::File {
    fn commit(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

impl SaveTarget for Vec<u8> {
    fn commit(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The HVM params a save keeps and a restore sets: the rings' frames. Their event channels are recorded too,
/// but a restored domain gets fresh ones.
const SAVED_PARAMS: [u32; 4] = [
    memres::HVM_PARAM_CONSOLE_PFN,
    memres::HVM_PARAM_CONSOLE_EVTCHN,
    memres::HVM_PARAM_STORE_PFN,
    memres::HVM_PARAM_STORE_EVTCHN,
];

fn bad(m: impl Into<String>) -> Error {
    Error::SaveImage(m.into())
}

fn xen_version<T: Transport>(t: &mut T) -> (u32, u32) {
    let mut call = Call::new(
        xen_abi::hypercall::XEN_VERSION,
        [
            Arg::Value(xen_abi::hypercall::xenver::VERSION),
            Arg::Value(0),
            Arg::Value(0),
            Arg::Value(0),
            Arg::Value(0),
        ],
    );
    match t.hypercall(&mut call) {
        Ok(v) if v > 0 => ((v as u64 >> 16) as u32, (v as u64 & 0xffff) as u32),
        _ => (0, 0),
    }
}

fn zero_page(p: &[u8]) -> bool {
    // A slice comparison is a memcmp, fast even in a debug build (a byte loop over 160 MiB took most of a second
    // of `virsh save`).
    static ZERO: [u8; PAGE] = [0; PAGE];
    if p.len() == PAGE {
        p == ZERO.as_slice()
    } else {
        p.iter().all(|b| *b == 0)
    }
}

/// Writes the image of `domid`, which has suspended, to `w`: its `layout`, its pages, HVM params and context,
/// and its xenstore `nodes`.
pub fn write_image<T: Transport, W: Write>(
    t: &mut T,
    domid: u16,
    layout: &Layout,
    nodes: &[(String, Vec<u8>)],
    w: &mut W,
) -> Result<(), Error> {
    let context = t.get_hvm_context(domid, layout.vcpus)?;
    check_context(&context, layout.vcpus)?;
    let mut params = Vec::new();
    for p in SAVED_PARAMS {
        params.push((p, t.hvm_get_param(domid, p)?));
    }
    let (major, minor) = xen_version(t);
    stream::write_header(w)?;
    stream::write_record(w, rec::DOMAIN_LAYOUT, &[&stream::encode_layout(layout)])?;
    stream::write_record(w, rec::LIBXC_CONTEXT, &[])?;
    stream::write_xc_headers(w, major, minor)?;
    for r in &layout.ram {
        // Mapped in large windows (one control-channel request each on the sandbox), written in record-sized
        // pieces.
        let gfns: Vec<u64> = (r.first_gfn..r.first_gfn + r.frames).collect();
        for map_gfns in gfns.chunks(MAP_WINDOW) {
            let m = t.map_foreign(domid, map_gfns)?;
            for (w_gfns, window) in map_gfns
                .chunks(MAX_PAGES_PER_RECORD)
                .zip(m.chunks(MAX_PAGES_PER_RECORD * PAGE))
            {
                let mut pfns = Vec::new();
                let mut data = Vec::new();
                for (g, page) in w_gfns.iter().zip(window.chunks_exact(PAGE)) {
                    if !zero_page(page) {
                        pfns.push(*g);
                        data.extend_from_slice(page);
                    }
                }
                if !pfns.is_empty() {
                    stream::write_page_data(w, &pfns, &data)?;
                }
            }
        }
    }
    stream::write_record(w, xc::HVM_PARAMS, &[&stream::encode_params(&params)])?;
    stream::write_record(w, xc::HVM_CONTEXT, &[&context])?;
    stream::write_record(w, xc::END, &[])?;
    stream::write_record(w, rec::XENSTORE_DATA, &[&stream::encode_nodes(nodes)])?;
    stream::write_record(w, rec::END, &[])
}

/// Checks an HVM context: Xen's records, a CPU record for vCPU 0, none for a vCPU the domain does not have.
fn check_context(ctx: &[u8], vcpus: u32) -> Result<(), Error> {
    let records = hvmsave::parse(ctx).map_err(|e| bad(e.to_string()))?;
    let mut boot_cpu = false;
    for r in records {
        if u32::from(r.instance) >= vcpus && r.typecode != hvmsave::HEADER {
            return Err(bad(format!(
                "the HVM context has a record for vCPU {}, and the domain has {vcpus}",
                r.instance
            )));
        }
        boot_cpu |= r.typecode == hvmsave::CPU && r.instance == 0;
    }
    if !boot_cpu {
        return Err(bad("the HVM context has no state for vCPU 0"));
    }
    Ok(())
}

/// Xen's cancelled suspend: a domain that suspended runs on in place, its suspend hypercall returning 1
/// (vCPU 0's `rax` in its HVM context), so the guest keeps its event channels and rings.
pub fn resume_cancelled<T: Transport>(t: &mut T, domid: u16, vcpus: u32) -> Result<(), Error> {
    let mut ctx = t.get_hvm_context(domid, vcpus)?;
    let mut off = 0;
    let mut found = false;
    while let Some(d) = ctx.get(off..).and_then(hvmsave::Descriptor::read_from) {
        let start = off + hvmsave::DESC_LEN;
        let end = start + d.length as usize;
        if d.typecode == hvmsave::END || end > ctx.len() {
            break;
        }
        if d.typecode == hvmsave::CPU && d.instance == 0 {
            let mut cpu = HvmHwCpu::read_from(&ctx[start..end])
                .ok_or_else(|| bad("the CPU record of vCPU 0 is too short"))?;
            cpu.gprs[hvmsave::GPR_RAX] = 1;
            ctx[start..end].copy_from_slice(cpu.as_bytes());
            found = true;
        }
        off = end;
    }
    if !found {
        return Err(bad("the HVM context has no state for vCPU 0"));
    }
    t.set_hvm_context(domid, &ctx)?;
    t.resume_domain(domid)
}

/// A domain restored from an image, still paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The new domain.
    pub domid: u16,
    /// Its shape, as saved.
    pub layout: Layout,
    /// The xenstore nodes its guest had.
    pub nodes: Vec<(String, Vec<u8>)>,
    /// The console ring's frame and its fresh event channel.
    pub console: (u64, u32),
    /// The xenstore ring's frame and its fresh event channel, when the guest has one.
    pub xenstore: Option<(u64, u32)>,
}

/// Builds a domain from the image `input` and leaves it paused; `xenstore` says whether a xenstored serves
/// the toolstack's domains (an image whose guest uses xenstore is refused without one). On failure nothing is
/// left behind.
pub fn restore_domain<T: Transport, R: Read>(
    t: &mut T,
    input: R,
    xenstore: bool,
) -> Result<Restored, Error> {
    let mut r = Reader::new(input);
    r.header()?;
    let mut layout = None;
    let mut nodes = None;
    loop {
        let (kind, body) = r.record()?;
        match kind {
            rec::DOMAIN_LAYOUT => layout = Some(stream::decode_layout(&body)?),
            rec::XENSTORE_DATA => nodes = Some(stream::decode_nodes(&body)?),
            rec::LIBXC_CONTEXT if body.is_empty() => break,
            rec::END => return Err(bad("it holds no domain")),
            k if k & rec::OPTIONAL != 0 => {}
            k => return Err(bad(format!("it has a record of unknown type {k:#x}"))),
        }
    }
    let layout = layout.ok_or_else(|| bad("it has no domain layout before the domain's state"))?;
    let domid = builder::create_domain(t, &layout)?;
    match fill(t, domid, &layout, &mut r, xenstore, nodes) {
        Ok((console, store, nodes)) => Ok(Restored {
            domid,
            layout,
            nodes,
            console,
            xenstore: store,
        }),
        Err(e) => {
            builder::destroy_quietly(t, domid);
            Err(e)
        }
    }
}

type Rings = ((u64, u32), Option<(u64, u32)>, Vec<(String, Vec<u8>)>);

fn fill<T: Transport, R: Read>(
    t: &mut T,
    domid: u16,
    layout: &Layout,
    r: &mut Reader<R>,
    xenstore: bool,
    mut nodes: Option<Vec<(String, Vec<u8>)>>,
) -> Result<Rings, Error> {
    builder::setup_memory(t, domid, layout)?;
    r.xc_headers()?;
    // All of RAM mapped once, a mapping per range: pages land by frame number, and whatever no record wrote is
    // zeroed at the end (fresh frames are not necessarily zero).
    let mut ram = Vec::new();
    for range in &layout.ram {
        let gfns: Vec<u64> = (range.first_gfn..range.first_gfn + range.frames).collect();
        for w in gfns.chunks(MAP_WINDOW) {
            ram.push((w[0], w.len() as u64, t.map_foreign(domid, w)?));
        }
    }
    let mut written: HashSet<u64> = HashSet::new();
    let mut params = None;
    let mut context = None;
    loop {
        let (kind, body) = r.record()?;
        match kind {
            xc::PAGE_DATA => {
                let (pfns, data) = stream::decode_page_data(&body)?;
                if let Some(p) = pfns.iter().find(|p| !layout.is_ram(**p)) {
                    return Err(bad(format!(
                        "it has a page at frame {p:#x}, outside the domain's memory"
                    )));
                }
                for (pfn, page) in pfns.iter().zip(data.chunks_exact(PAGE)) {
                    if let Some((first, _, m)) = ram
                        .iter_mut()
                        .find(|(first, frames, _)| *pfn >= *first && pfn - first < *frames)
                    {
                        let at = ((pfn - *first) as usize) * PAGE;
                        m[at..at + PAGE].copy_from_slice(page);
                    }
                }
                written.extend(pfns);
            }
            xc::HVM_PARAMS => params = Some(stream::decode_params(&body)?),
            xc::HVM_CONTEXT => {
                check_context(&body, layout.vcpus)?;
                context = Some(body);
            }
            xc::END => break,
            k if k & rec::OPTIONAL != 0 => {}
            k => {
                return Err(bad(format!(
                    "its domain part has a record of unknown type {k:#x}"
                )))
            }
        }
    }
    let context = context.ok_or_else(|| bad("it has no vCPU state (HVM context)"))?;
    let params = params.ok_or_else(|| bad("it has no HVM parameters"))?;
    // The rest of RAM was all zeroes; fresh frames are not necessarily.
    for (first, frames, m) in &mut ram {
        for (i, page) in m.chunks_exact_mut(PAGE).enumerate().take(*frames as usize) {
            if !written.contains(&(*first + i as u64)) {
                page.fill(0);
            }
        }
    }
    drop(ram);
    let mut console_gfn = None;
    let mut store_gfn = None;
    for (index, value) in params {
        let ram = |v: u64| {
            if layout.is_ram(v) {
                Ok(v)
            } else {
                Err(bad(format!(
                    "its HVM parameter {index} names frame {v:#x}, outside the domain's memory"
                )))
            }
        };
        match u32::try_from(index) {
            Ok(memres::HVM_PARAM_CONSOLE_PFN) => console_gfn = Some(ram(value)?),
            Ok(memres::HVM_PARAM_STORE_PFN) if value != 0 => store_gfn = Some(ram(value)?),
            Ok(
                memres::HVM_PARAM_STORE_PFN
                | memres::HVM_PARAM_CONSOLE_EVTCHN
                | memres::HVM_PARAM_STORE_EVTCHN,
            ) => {}
            _ => {
                return Err(bad(format!(
                    "it has HVM parameter {index}, which this toolstack does not restore"
                )))
            }
        }
    }
    let console_gfn = console_gfn.ok_or_else(|| bad("it has no console ring"))?;
    if store_gfn.is_some() && !xenstore {
        return Err(Error::Config(
            "the saved guest uses xenstore, and no xenstored serves this toolstack's domains"
                .into(),
        ));
    }
    let (console_port, store_port) = builder::connect_rings(t, domid, console_gfn, store_gfn)?;
    t.set_hvm_context(domid, &context)?;
    loop {
        let (kind, body) = r.record()?;
        match kind {
            rec::XENSTORE_DATA => nodes = Some(stream::decode_nodes(&body)?),
            rec::END => break,
            k if k & rec::OPTIONAL != 0 => {}
            k => return Err(bad(format!("it has a record of unknown type {k:#x}"))),
        }
    }
    Ok((
        (console_gfn, console_port),
        store_gfn.map(|g| (g, store_port)),
        nodes.unwrap_or_default(),
    ))
}

/// Frames mapped at once while saving or restoring (8 MiB: one request on the sandbox's control channel, whose
/// replies hold a few thousand runs).
const MAP_WINDOW: usize = 2048;

/// How often a save looks whether the guest has suspended, at most.
const POLL_MAX: Duration = Duration::from_millis(100);

impl<T: Transport> Toolstack<T> {
    /// Saves domain `domid` to `out` by Xen's cooperative suspend (see the module documentation), then
    /// destroys it or lets it go on as `opts.after` says; a domain that was paused is paused again. The guest
    /// must support suspend ([`Error::NoSuspend`] otherwise) and act within `opts.suspend_timeout`
    /// ([`Error::Timeout`]); in both cases, and when the image cannot be written, the domain keeps running.
    pub fn save<W: SaveTarget, S: GuestStore>(
        &mut self,
        domid: u16,
        out: &mut W,
        store: &mut S,
        opts: &SaveOptions,
    ) -> Result<(), Error> {
        self.save_frozen(domid, out, store, opts, &mut || Ok(()))
    }

    /// [`Toolstack::save`] that runs `frozen` once the image is written, while the guest is still suspended
    /// (a snapshot takes the domain's disks there). When `frozen` fails the domain goes on as if nothing
    /// happened and its error is returned.
    pub fn save_frozen<W: SaveTarget, S: GuestStore>(
        &mut self,
        domid: u16,
        out: &mut W,
        store: &mut S,
        opts: &SaveOptions,
        frozen: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let cfg = self.registry.get(domid).ok_or_else(|| {
            Error::Config(format!(
                "domain {domid} was not built by this toolstack, so its layout is unknown"
            ))
        })?;
        let info = self.info(domid)?;
        if let Some(r) = info.shutdown {
            return Err(Error::Config(format!(
                "domain {domid} cannot be saved: it has shut down (reason {r})"
            )));
        }
        if info.dying {
            return Err(Error::NoSuchDomain(domid.to_string()));
        }
        // The layout the builder gave it (a restored domain was given the same one).
        let layout = Layout::pvh(cfg.uuid, cfg.vcpus, cfg.memory_mib, cfg.max_memory_mib);
        let was_paused = info.paused;
        if was_paused {
            // Suspending takes the guest's cooperation.
            self.unpause(domid)?;
        }
        if let Err(e) = self.suspend(domid, store, opts.suspend_timeout) {
            if was_paused {
                let _ = self.pause(domid);
            }
            return Err(e);
        }
        let written = store
            .nodes(domid)
            .and_then(|nodes| {
                let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
                write_image(&mut self.transport, domid, &layout, &nodes, &mut w)?;
                w.flush()
                    .map_err(|e| Error::io("writing the save image", e))?;
                drop(w);
                out.commit()
                    .map_err(|e| Error::io("writing the save image", e))
            })
            .and_then(|()| frozen());
        if let Err(e) = written {
            // No image (or the caller's part failed): the domain goes on as if nothing happened.
            let _ = resume_cancelled(&mut self.transport, domid, layout.vcpus);
            if was_paused {
                let _ = self.pause(domid);
            }
            return Err(e);
        }
        match opts.after {
            AfterSave::Stop => {
                // Forgotten first, so an exit watcher does not report it as destroyed by someone else.
                self.registry.remove(domid);
                self.destroy(domid)
            }
            AfterSave::Continue => {
                resume_cancelled(&mut self.transport, domid, layout.vcpus)?;
                if was_paused {
                    self.pause(domid)?;
                }
                Ok(())
            }
        }
    }

    /// Asks the guest to suspend and waits until it has.
    fn suspend<S: GuestStore>(
        &mut self,
        domid: u16,
        store: &mut S,
        timeout: Duration,
    ) -> Result<(), Error> {
        if !store.request_suspend(domid)? {
            return Err(Error::NoSuspend(domid));
        }
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(5);
        loop {
            match self.info(domid)?.shutdown {
                Some(schedop::SHUTDOWN_SUSPEND) => return Ok(()),
                Some(r) => {
                    return Err(Error::Config(format!(
                        "domain {domid} shut down (reason {r}) instead of suspending"
                    )))
                }
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                store.cancel_suspend(domid);
                // A guest that suspended at the last moment is resumed, not left stopped.
                if self.info(domid)?.shutdown == Some(schedop::SHUTDOWN_SUSPEND) {
                    let vcpus = self.info(domid)?.max_vcpu_id + 1;
                    resume_cancelled(&mut self.transport, domid, vcpus)?;
                }
                return Err(Error::Timeout(format!(
                    "domain {domid} to suspend (its guest did not act on the request within {} s)",
                    timeout.as_secs_f32()
                )));
            }
            std::thread::sleep(wait.min(deadline - now));
            wait = (wait * 2).min(POLL_MAX);
        }
    }

    /// Builds a domain named after `cfg` from the save image `input` (its shape comes from the image), records
    /// it, introduces it to `store` with its saved xenstore nodes and starts it unless `paused`. On failure
    /// nothing is left behind.
    pub fn restore<R: Read, S: GuestStore>(
        &mut self,
        cfg: &DomainConfig,
        input: R,
        store: &mut S,
        paused: bool,
    ) -> Result<u16, Error> {
        self.check_new_name(&cfg.name)?;
        let r = restore_domain(&mut self.transport, input, self.xenstore)?;
        let domid = r.domid;
        let mut cfg = cfg.clone();
        cfg.uuid = r.layout.uuid;
        cfg.vcpus = r.layout.vcpus;
        cfg.memory_mib = (r.layout.ram_frames() * PAGE as u64) >> 20;
        cfg.max_memory_mib = r.layout.max_memkb / 1024;
        let finished = self
            .registry
            .record(domid, &cfg)
            .and_then(|()| store.restore_domain(domid, &cfg.name, cfg.memory_mib * 1024, &r.nodes))
            .and_then(|()| if paused { Ok(()) } else { self.unpause(domid) });
        if let Err(e) = finished {
            store.release(domid);
            let _ = self.destroy(domid);
            return Err(e);
        }
        Ok(domid)
    }
}

#[cfg(test)]
mod tests;
