//! The hypervisor backend over libxl-rs: domains are built, run and stopped by [`libxl_rs::lifecycle::Toolstack`]
//! through the privcmd transport (a real control domain) or the sandbox transport (xen-hv in QEMU).
//!
//! A watcher thread with its own connection waits for `VIRQ_DOM_EXC`, applies the `on_*` actions and reports
//! lifecycle events. When an `on_reboot=restart` gives a domain a new ID, the daemon keeps addressing it by the ID
//! it started with; the backend maps that ID to the current one.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use domain_xml::domain::{Domain, LifecycleAction, OsType};
use libxl_rs::console::service::ConsoleService;
use libxl_rs::console::Console;
use libxl_rs::lifecycle::{Action, DomainConfig, Registry, Toolstack};
use libxl_rs::save::{SaveOptions, SUSPEND_TIMEOUT};
use libxl_rs::transport::any::{AnyTransport, Target};
use libxl_rs::transport::{Arg, Call, Error as XlError, Transport};
use xen_abi::hypercall::schedop;

use crate::backend::{AfterSave, Backend, BackendEvent, ConsoleIo, EventSink, RunInfo};
use crate::proto::{code, RpcError};

/// libvirt lifecycle event numbers used here.
mod ev {
    pub const STOPPED: i32 = 5;
    pub const SHUTDOWN: i32 = 6;
    pub const CRASHED: i32 = 8;
    pub const STOPPED_SHUTDOWN: i32 = 0;
    pub const STOPPED_DESTROYED: i32 = 1;
    pub const STOPPED_CRASHED: i32 = 2;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn xl_err(e: XlError) -> RpcError {
    let msg = format!("internal error: libxenlight failed: {e}");
    match e {
        XlError::NoSuchDomain(_) => RpcError::libxl(
            code::OPERATION_INVALID,
            format!("domain is not running: {msg}"),
        ),
        XlError::Config(_) | XlError::Image { .. } => {
            RpcError::libxl(code::CONFIG_UNSUPPORTED, &msg)
        }
        _ => RpcError::libxl(code::INTERNAL_ERROR, &msg),
    }
}

/// The libvirt error of a failed save or restore: what the guest or the image did is an operation that
/// failed, with the toolstack's reason; anything else is mapped like any toolstack error.
fn save_err(e: XlError) -> RpcError {
    match e {
        XlError::NoSuspend(domid) => RpcError::libxl(
            code::OPERATION_FAILED,
            format!(
                "operation failed: guest does not support suspend: domain {domid} has no PV suspend driver \
                 (it has not announced control/feature-suspend), so its memory cannot be saved"
            ),
        ),
        XlError::Timeout(_) | XlError::SaveImage(_) | XlError::Io { .. } => {
            RpcError::libxl(code::OPERATION_FAILED, format!("operation failed: {e}"))
        }
        e => xl_err(e),
    }
}

fn action(a: LifecycleAction) -> Action {
    match a {
        LifecycleAction::Destroy => Action::Destroy,
        LifecycleAction::Restart => Action::Restart,
        LifecycleAction::RenameRestart => Action::RenameRestart,
        LifecycleAction::Preserve => Action::Preserve,
        LifecycleAction::CoredumpDestroy => Action::CoredumpDestroy,
        LifecycleAction::CoredumpRestart => Action::CoredumpRestart,
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What the toolstack builds for a definition: PVH guests with a direct kernel boot.
pub fn domain_config(def: &Domain) -> Result<DomainConfig, RpcError> {
    let unsupported = |m: String| {
        RpcError::libxl(
            code::CONFIG_UNSUPPORTED,
            format!("unsupported configuration: {m}"),
        )
    };
    if def.os.os_type != OsType::Xenpvh {
        return Err(unsupported(format!(
            "os type '{}' cannot be started on xen-hv yet; only PVH guests (<type>xenpvh</type>) are built",
            def.os.os_type.as_str()
        )));
    }
    let kernel =
        def.os.kernel.as_ref().ok_or_else(|| {
            unsupported("a PVH guest needs <os><kernel> (direct kernel boot)".into())
        })?;
    let uuid = def.uuid.as_deref().and_then(parse_uuid).ok_or_else(|| {
        RpcError::libxl(
            code::INTERNAL_ERROR,
            "internal error: the definition has no valid UUID",
        )
    })?;
    let mut cmdline = def.os.cmdline.clone().unwrap_or_default();
    for extra in &def.xen_commandline {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(extra);
    }
    let max_kib = def
        .max_memory
        .as_ref()
        .map_or(def.memory_kib, |_| def.memory_kib)
        .max(def.current_memory_kib);
    Ok(DomainConfig {
        name: def.name.clone(),
        uuid,
        memory_mib: def.current_memory_kib.max(1024).div_ceil(1024),
        max_memory_mib: max_kib.div_ceil(1024),
        vcpus: def.vcpu.current.unwrap_or(def.vcpu.count).max(1),
        kernel: PathBuf::from(kernel),
        ramdisk: def.os.initrd.as_ref().map(PathBuf::from),
        cmdline,
        on_poweroff: action(def.on_poweroff),
        on_reboot: action(def.on_reboot),
        on_crash: action(def.on_crash),
        on_watchdog: Action::Destroy,
    })
}

/// Domain IDs the daemon knows, mapped to the hypervisor's current ID (they differ after a restart).
type Aliases = Arc<Mutex<HashMap<u32, u16>>>;

/// The backend.
pub struct LibxlBackend {
    target: Target,
    /// The toolstack's domain registry (saves run on their own connection with their own view of it).
    registry: PathBuf,
    ts: Mutex<Toolstack<AnyTransport>>,
    aliases: Aliases,
    sink: Arc<Mutex<Option<EventSink>>>,
    version: Option<u64>,
    /// The console daemon (xenconsoled's job): drains every domain's ring and serves `virsh console`.
    consoles: Arc<ConsoleService>,
}

impl std::fmt::Debug for LibxlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibxlBackend")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn xen_version(t: &mut AnyTransport) -> Option<u64> {
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
    let v = t.hypercall(&mut call).ok().filter(|v| *v >= 0)? as u64;
    Some((v >> 16) * 1_000_000 + (v & 0xffff) * 1_000)
}

impl LibxlBackend {
    /// Connects to the hypervisor at `target`, keeping the toolstack's domain registry in `registry`, and starts
    /// the exit watcher.
    pub fn connect(target: Target, registry: &Path) -> Result<Arc<Self>, XlError> {
        let mut t = target.connect()?;
        let version = xen_version(&mut t);
        let consoles = Arc::new(ConsoleService::start(target.connect()?));
        let mut ts = Toolstack::new(t, Registry::new(registry));
        // The console daemon is also the domains' xenstored.
        ts.xenstore = true;
        // Domains started before this daemon keep being served.
        for id in ts.registry.domids() {
            consoles.add(id);
        }
        let b = Arc::new(Self {
            target: target.clone(),
            registry: registry.to_path_buf(),
            ts: Mutex::new(ts),
            aliases: Arc::new(Mutex::new(HashMap::new())),
            sink: Arc::new(Mutex::new(None)),
            version,
            consoles,
        });
        let mut watcher = Toolstack::new(target.connect()?, Registry::new(registry));
        watcher.xenstore = true;
        let (aliases, sink, consoles) = (b.aliases.clone(), b.sink.clone(), b.consoles.clone());
        std::thread::spawn(move || watch(watcher, aliases, sink, &consoles));
        Ok(b)
    }

    fn current(&self, domid: u32) -> u16 {
        lock(&self.aliases)
            .get(&domid)
            .copied()
            .unwrap_or(domid as u16)
    }
}

fn watch(
    mut ts: Toolstack<AnyTransport>,
    aliases: Aliases,
    sink: Arc<Mutex<Option<EventSink>>>,
    consoles: &ConsoleService,
) {
    let port = ts.transport.bind_virq(xen_abi::memres::VIRQ_DOM_EXC).ok();
    // Exits are looked for when VIRQ_DOM_EXC fires, and every few seconds in case an event was missed (every
    // second when no event channel could be bound): a scan asks about every domain, which with hundreds of
    // domains is not free.
    let safety = if port.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let mut scan = true;
    let mut last_scan = std::time::Instant::now();
    loop {
        if !scan && last_scan.elapsed() < safety {
            scan = match port {
                Some(_) => matches!(ts.transport.wait_event(Duration::from_secs(1)), Ok(Some(_))),
                None => {
                    std::thread::sleep(Duration::from_secs(1));
                    false
                }
            };
            continue;
        }
        scan = false;
        last_scan = std::time::Instant::now();
        match ts.handle_exits() {
            Ok(exits) => {
                for h in exits {
                    // The ID the daemon knows this domain by.
                    let known = {
                        let a = lock(&aliases);
                        a.iter()
                            .find(|(_, cur)| **cur == h.domid)
                            .map_or(u32::from(h.domid), |(k, _)| *k)
                    };
                    let events = exit_events(h.reason, h.new_domid);
                    // A restart under the same ID keeps an attached console (the new domain's ring replaces
                    // the old one); otherwise the old domain's console ends.
                    if h.new_domid != Some(h.domid) {
                        consoles.remove(h.domid);
                    }
                    if let Some(new) = h.new_domid {
                        lock(&aliases).insert(known, new);
                        let kib = ts.registry.get(new).map_or(0, |c| c.memory_mib * 1024);
                        consoles.introduce(new, &h.name, kib);
                        consoles.add(new);
                    }
                    if h.new_domid.is_none() {
                        lock(&aliases).remove(&known);
                    }
                    if let Some(s) = lock(&sink).as_ref() {
                        for (event, detail) in events {
                            s(BackendEvent {
                                domid: known,
                                event,
                                detail,
                            });
                        }
                    }
                }
            }
            Err(e) => eprintln!("virtxend: handling domain exits: {e}"),
        }
    }
}

/// The lifecycle events of a domain that stopped with `reason` (`None`: it vanished) and was or was not
/// restarted as `new_domid`. A domain that suspended (Xen's save) has not stopped: it is its saver's, and
/// nothing is reported (the exit handler does not report it either).
fn exit_events(reason: Option<u32>, new_domid: Option<u16>) -> Vec<(i32, i32)> {
    match (reason, new_domid) {
        (_, Some(_)) | (Some(schedop::SHUTDOWN_SUSPEND), _) => vec![],
        (Some(schedop::SHUTDOWN_CRASH), None) => {
            vec![(ev::CRASHED, 0), (ev::STOPPED, ev::STOPPED_CRASHED)]
        }
        (Some(_), None) => vec![(ev::SHUTDOWN, 0), (ev::STOPPED, ev::STOPPED_SHUTDOWN)],
        (None, None) => vec![(ev::STOPPED, ev::STOPPED_DESTROYED)],
    }
}

/// A console stream: a thread copies the ring to a pipe; keystrokes are written to the ring.
struct RingConsole {
    out: Option<std::os::unix::net::UnixStream>,
    input: Option<std::os::unix::net::UnixStream>,
}

impl ConsoleIo for RingConsole {
    fn reader(&mut self) -> Box<dyn Read + Send> {
        match self.out.take() {
            Some(s) => Box::new(s),
            None => Box::new(std::io::empty()),
        }
    }
    fn writer(&mut self) -> Box<dyn Write + Send> {
        match self.input.take() {
            Some(s) => Box::new(s),
            None => Box::new(std::io::sink()),
        }
    }
}

impl Backend for LibxlBackend {
    fn hypervisor_version(&self) -> Option<u64> {
        self.version
    }

    fn create(&self, def: &Domain, paused: bool) -> Result<u32, RpcError> {
        let cfg = domain_config(def)?;
        // The store's nodes exist before the guest runs (it reads them while booting); the ID is known only
        // once the domain exists, so the domain starts paused and is unpaused after.
        let domid = {
            let mut ts = lock(&self.ts);
            let domid = ts.create(&cfg, true).map_err(xl_err)?;
            self.consoles
                .introduce(domid, &cfg.name, cfg.memory_mib * 1024);
            self.consoles.add(domid);
            if !paused {
                if let Err(e) = ts.unpause(domid) {
                    let _ = ts.destroy(domid);
                    return Err(xl_err(e));
                }
            }
            domid
        };
        lock(&self.aliases).remove(&u32::from(domid));
        Ok(u32::from(domid))
    }

    fn destroy(&self, domid: u32) -> Result<(), RpcError> {
        let cur = self.current(domid);
        let mut ts = lock(&self.ts);
        self.consoles.remove(cur);
        ts.destroy(cur).map_err(xl_err)?;
        ts.registry.remove(cur);
        lock(&self.aliases).remove(&domid);
        Ok(())
    }

    fn shutdown(&self, domid: u32) -> Result<(), RpcError> {
        // A guest with a PV control driver gets the request in xenstore's control/shutdown and shuts down
        // cleanly (as Xen's toolstack asks); others are shut down by the hypervisor (SCHEDOP_remote_shutdown).
        let cur = self.current(domid);
        if self.consoles.request_shutdown(cur, "poweroff") {
            return Ok(());
        }
        lock(&self.ts).shutdown(cur).map_err(xl_err)
    }

    fn reboot(&self, domid: u32) -> Result<(), RpcError> {
        let cur = self.current(domid);
        if self.consoles.request_shutdown(cur, "reboot") {
            return Ok(());
        }
        lock(&self.ts).reboot(cur).map_err(xl_err)
    }

    fn pause(&self, domid: u32) -> Result<(), RpcError> {
        lock(&self.ts).pause(self.current(domid)).map_err(xl_err)
    }

    fn unpause(&self, domid: u32) -> Result<(), RpcError> {
        lock(&self.ts).unpause(self.current(domid)).map_err(xl_err)
    }

    fn info(&self, domid: u32) -> Result<Option<RunInfo>, RpcError> {
        match lock(&self.ts).info(self.current(domid)) {
            Ok(i) => Ok(Some(RunInfo {
                // A domain that suspended to be saved is stopped but not shut down: paused, for libvirt.
                state: if i.paused || i.shutdown == Some(schedop::SHUTDOWN_SUSPEND) {
                    3
                } else if i.shutdown.is_some() {
                    4
                } else if i.blocked && !i.running {
                    2
                } else {
                    1
                },
                reason: 0,
                memory_kib: i.current_memkb,
                vcpus: i.vcpu_online,
                cpu_time_ns: i.cpu_time,
            })),
            Err(XlError::NoSuchDomain(_)) => Ok(None),
            Err(e) => Err(xl_err(e)),
        }
    }

    fn open_console(&self, domid: u32, dev: Option<&str>) -> Result<Box<dyn ConsoleIo>, RpcError> {
        if dev.is_some_and(|d| d != "console0" && d != "serial0") {
            return Err(RpcError::libxl(
                code::INVALID_ARG,
                "invalid argument: cannot find character device",
            ));
        }
        let domid = self.current(domid);
        // A domain that does not exist is refused here, with the toolstack's reason; one still being built
        // (restarting after a reboot) has no ring yet, and the console daemon connects once it has.
        match Console::open(&mut lock(&self.ts).transport, domid) {
            Ok(_) | Err(XlError::Config(_)) => {}
            Err(e) => return Err(xl_err(e)),
        }
        self.consoles.add(domid);
        let a = self.consoles.attach(domid).map_err(|e| {
            RpcError::libxl(
                code::INTERNAL_ERROR,
                format!("internal error: console pipe: {e}"),
            )
        })?;
        Ok(Box::new(RingConsole {
            out: Some(a.output),
            input: Some(a.input),
        }))
    }

    fn set_event_sink(&self, sink: EventSink) {
        *lock(&self.sink) = Some(sink);
    }

    fn check_save(&self) -> Result<(), RpcError> {
        // The console daemon is the domains' xenstored, through which guests are asked to suspend.
        Ok(())
    }

    fn save(
        &self,
        domid: u32,
        out: &mut std::fs::File,
        after: AfterSave,
        frozen: &mut dyn FnMut() -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        let cur = self.current(domid);
        // On its own connection: the guest may take its time to suspend, and the daemon's other calls (and
        // the toolstack's lock) go on meanwhile.
        let t = self.target.connect().map_err(xl_err)?;
        let mut ts = Toolstack::new(t, Registry::new(&self.registry));
        ts.xenstore = true;
        let opts = SaveOptions {
            after: match after {
                AfterSave::Stop => libxl_rs::save::AfterSave::Stop,
                AfterSave::Continue => libxl_rs::save::AfterSave::Continue,
            },
            suspend_timeout: SUSPEND_TIMEOUT,
        };
        let mut store = &*self.consoles;
        // The caller's error is kept as it is; the toolstack only needs to know that it failed.
        let mut caller_error = None;
        let mut hook = || {
            frozen().map_err(|e| {
                let msg = e.message.clone();
                caller_error = Some(e);
                XlError::Config(msg)
            })
        };
        let saved = ts.save_frozen(cur, out, &mut store, &opts, &mut hook);
        if let Some(e) = caller_error {
            return Err(e);
        }
        saved.map_err(save_err)?;
        if after == AfterSave::Stop {
            self.consoles.remove(cur);
            lock(&self.aliases).remove(&domid);
        }
        Ok(())
    }

    fn restore(
        &self,
        def: &Domain,
        input: &mut std::fs::File,
        paused: bool,
    ) -> Result<u32, RpcError> {
        let cfg = domain_config(def)?;
        let mut store = &*self.consoles;
        // The console daemon introduces the domain to its xenstore with the saved nodes and serves its
        // console and xenstore rings from where their indices stand, as for a created domain.
        let domid = lock(&self.ts)
            .restore(&cfg, std::io::BufReader::new(input), &mut store, paused)
            .map_err(save_err)?;
        lock(&self.aliases).remove(&u32::from(domid));
        Ok(u32::from(domid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvh(extra: &str) -> Domain {
        let xml = format!(
            "<domain type='xen'><name>g</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>\
             <memory unit='KiB'>65536</memory><currentMemory unit='KiB'>65536</currentMemory><vcpu>2</vcpu>\
             <os><type arch='x86_64' machine='xenpvh'>xenpvh</type>{extra}</os>\
             <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>preserve</on_crash>\
             </domain>"
        );
        Domain::parse(&xml).unwrap()
    }

    #[test]
    fn pvh_definitions_become_toolstack_configurations() {
        let cfg = domain_config(&pvh(
            "<kernel>/k</kernel><initrd>/i</initrd><cmdline>console=hvc0</cmdline>",
        ))
        .unwrap();
        assert_eq!(cfg.name, "g");
        assert_eq!(cfg.memory_mib, 64);
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.kernel, PathBuf::from("/k"));
        assert_eq!(cfg.ramdisk, Some(PathBuf::from("/i")));
        assert_eq!(cfg.cmdline, "console=hvc0");
        assert_eq!(
            (cfg.on_poweroff, cfg.on_reboot, cfg.on_crash),
            (Action::Destroy, Action::Restart, Action::Preserve)
        );
        assert_eq!(cfg.uuid[0], 0x4d);
    }

    #[test]
    fn a_suspended_domain_is_no_exit_and_gets_no_events() {
        assert!(exit_events(Some(schedop::SHUTDOWN_SUSPEND), None).is_empty());
        assert_eq!(
            exit_events(Some(schedop::SHUTDOWN_POWEROFF), None),
            vec![(ev::SHUTDOWN, 0), (ev::STOPPED, ev::STOPPED_SHUTDOWN)]
        );
        assert_eq!(
            exit_events(Some(schedop::SHUTDOWN_CRASH), None),
            vec![(ev::CRASHED, 0), (ev::STOPPED, ev::STOPPED_CRASHED)]
        );
        assert_eq!(
            exit_events(None, None),
            vec![(ev::STOPPED, ev::STOPPED_DESTROYED)]
        );
        assert!(exit_events(Some(schedop::SHUTDOWN_REBOOT), Some(4)).is_empty());
    }

    #[test]
    fn save_failures_are_libvirt_operation_failures_with_the_reason() {
        let e = save_err(XlError::NoSuspend(3));
        assert_eq!(e.code, code::OPERATION_FAILED);
        assert!(
            e.message
                .starts_with("operation failed: guest does not support suspend"),
            "{}",
            e.message
        );
        let e = save_err(XlError::Timeout("domain 3 to suspend".into()));
        assert_eq!(e.code, code::OPERATION_FAILED);
        assert!(
            e.message
                .contains("timed out waiting for domain 3 to suspend"),
            "{}",
            e.message
        );
        let e = save_err(XlError::SaveImage("it ends too early (truncated)".into()));
        assert_eq!(e.code, code::OPERATION_FAILED);
        assert!(e.message.contains("truncated"), "{}", e.message);
        assert_eq!(
            save_err(XlError::NoSuchDomain("3".into())).code,
            code::OPERATION_INVALID
        );
    }

    #[test]
    fn what_cannot_be_built_is_refused_clearly() {
        let e = domain_config(&pvh("")).unwrap_err();
        assert!(e.message.contains("<os><kernel>"), "{}", e.message);
        let mut d = pvh("<kernel>/k</kernel>");
        d.os.os_type = OsType::Hvm;
        let e = domain_config(&d).unwrap_err();
        assert!(e.message.contains("only PVH"), "{}", e.message);
    }
}
