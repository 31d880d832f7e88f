//! Domain lifecycle on top of a [`Transport`]: create from a domain configuration, list, info, pause, unpause,
//! shutdown and reboot requests, destroy, and the handling of a domain's exit by its `on_poweroff` /
//! `on_reboot` / `on_crash` / `on_watchdog` actions when the hypervisor raises `VIRQ_DOM_EXC`.
//!
//! Xen keeps domain names and configurations in xenstore; this toolstack keeps them in a [`Registry`]: one JSON
//! file per domain in a state directory, so separate `xl` invocations agree on names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xen_abi::domctl::{self, dominf, GetDomainInfo, XenDomctl};
use xen_abi::hypercall::schedop;
use xen_abi::plain::Plain;
use xen_abi::sysctl::{self, GetDomainInfoList, Physinfo, XenSysctl};

use crate::builder::{self, BuildSpec};
use crate::transport::{Error, Transport};
use crate::xlcfg::XlConfig;

/// What to do when a domain stops (`xl.cfg` `on_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy it and build a new one from the same configuration.
    Restart,
    /// Leave it as it is, for inspection.
    Preserve,
    /// Keep the old domain under another name and start a new one.
    RenameRestart,
    /// Dump core, then destroy (no dump is written by this toolstack; the domain is destroyed).
    CoredumpDestroy,
    /// Dump core, then restart (no dump is written; the domain is restarted).
    CoredumpRestart,
    /// Soft reset (not supported here; the domain is preserved).
    SoftReset,
}

impl Action {
    /// Parses an `on_*` value as xl spells it.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "destroy" => Self::Destroy,
            "restart" => Self::Restart,
            "preserve" => Self::Preserve,
            "rename-restart" => Self::RenameRestart,
            "coredump-destroy" => Self::CoredumpDestroy,
            "coredump-restart" => Self::CoredumpRestart,
            "soft-reset" => Self::SoftReset,
            _ => return None,
        })
    }
}

/// What the toolstack needs to (re)build a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Domain name.
    pub name: String,
    /// UUID bytes.
    pub uuid: [u8; 16],
    /// Boot memory, MiB.
    pub memory_mib: u64,
    /// Memory limit, MiB.
    pub max_memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Kernel path.
    pub kernel: PathBuf,
    /// Initrd path.
    pub ramdisk: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// `on_poweroff` (default destroy).
    pub on_poweroff: Action,
    /// `on_reboot` (default restart).
    pub on_reboot: Action,
    /// `on_crash` (default destroy).
    pub on_crash: Action,
    /// `on_watchdog` (default destroy).
    pub on_watchdog: Action,
}

fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Config(e.to_string())
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats UUID bytes as xl prints them.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

impl DomainConfig {
    /// Reads the keys a PVH domain needs from an `xl.cfg`: `name`, `type` (must be `pvh`), `memory`, `maxmem`,
    /// `vcpus`, `kernel`, `ramdisk`, `cmdline` (or `root` + `extra`), `uuid` and the `on_*` actions. Relative
    /// kernel and ramdisk paths are taken relative to `base`.
    pub fn from_xlcfg(cfg: &XlConfig, base: &Path) -> Result<Self, Error> {
        let name = cfg
            .get_str("name")
            .map_err(cfg_err)?
            .ok_or_else(|| Error::Config("the configuration has no name".into()))?
            .to_string();
        if let Some(t) = cfg.get_str("type").map_err(cfg_err)? {
            if t != "pvh" {
                return Err(Error::Config(format!(
                    "type \"{t}\" cannot be built by this toolstack; only type=\"pvh\" is supported"
                )));
            }
        }
        let int = |k: &str| -> Result<Option<u64>, Error> {
            match cfg.get_int(k).map_err(cfg_err)? {
                Some(v) if v < 0 => Err(Error::Config(format!("{k} must not be negative"))),
                v => Ok(v.map(|v| v as u64)),
            }
        };
        let memory_mib = int("memory")?.unwrap_or(128);
        let max_memory_mib = int("maxmem")?.unwrap_or(memory_mib).max(memory_mib);
        let vcpus = int("vcpus")?.unwrap_or(1);
        let vcpus = u32::try_from(vcpus).map_err(|_| Error::Config("vcpus is too large".into()))?;
        let path = |k: &str| -> Result<Option<PathBuf>, Error> {
            Ok(cfg.get_str(k).map_err(cfg_err)?.map(|p| base.join(p)))
        };
        let kernel = path("kernel")?
            .ok_or_else(|| Error::Config("the configuration has no kernel".into()))?;
        let ramdisk = path("ramdisk")?;
        let cmdline = match cfg.get_str("cmdline").map_err(cfg_err)? {
            Some(c) => c.to_string(),
            None => {
                let root = cfg.get_str("root").map_err(cfg_err)?;
                let extra = cfg.get_str("extra").map_err(cfg_err)?;
                match (root, extra) {
                    (Some(r), Some(e)) => format!("root={r} {e}"),
                    (Some(r), None) => format!("root={r}"),
                    (None, Some(e)) => e.to_string(),
                    (None, None) => String::new(),
                }
            }
        };
        let action = |k: &str, d: Action| -> Result<Action, Error> {
            match cfg.get_str(k).map_err(cfg_err)? {
                None => Ok(d),
                Some(v) => Action::parse(v)
                    .ok_or_else(|| Error::Config(format!("{k}=\"{v}\" is not a valid action"))),
            }
        };
        let uuid = match cfg.get_str("uuid").map_err(cfg_err)? {
            Some(u) => {
                parse_uuid(u).ok_or_else(|| Error::Config(format!("uuid \"{u}\" is malformed")))?
            }
            None => *uuid::Uuid::new_v4().as_bytes(),
        };
        Ok(Self {
            name,
            uuid,
            memory_mib,
            max_memory_mib,
            vcpus,
            kernel,
            ramdisk,
            cmdline,
            on_poweroff: action("on_poweroff", Action::Destroy)?,
            on_reboot: action("on_reboot", Action::Restart)?,
            on_crash: action("on_crash", Action::Destroy)?,
            on_watchdog: action("on_watchdog", Action::Destroy)?,
        })
    }
}

/// One domain as `xl list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain ID.
    pub domid: u16,
    /// UUID.
    pub uuid: [u8; 16],
    /// Current memory, KiB.
    pub current_memkb: u64,
    /// Limit, KiB.
    pub max_memkb: u64,
    /// Online vCPUs.
    pub vcpu_online: u32,
    /// Highest vCPU ID.
    pub max_vcpu_id: u32,
    /// A vCPU is running.
    pub running: bool,
    /// Blocked.
    pub blocked: bool,
    /// Paused.
    pub paused: bool,
    /// Shut down, with the reason.
    pub shutdown: Option<u32>,
    /// Being destroyed.
    pub dying: bool,
    /// CPU time, ns.
    pub cpu_time: u64,
}

impl From<&GetDomainInfo> for DomainInfo {
    fn from(i: &GetDomainInfo) -> Self {
        Self {
            domid: i.domain,
            uuid: i.handle,
            current_memkb: i.tot_pages * 4,
            max_memkb: i.max_pages.saturating_mul(4),
            vcpu_online: i.nr_online_vcpus,
            max_vcpu_id: i.max_vcpu_id,
            running: i.flags & dominf::RUNNING != 0,
            blocked: i.flags & dominf::BLOCKED != 0,
            paused: i.flags & dominf::PAUSED != 0,
            shutdown: i.shutdown_reason(),
            dying: i.flags & dominf::DYING != 0,
            cpu_time: i.cpu_time,
        }
    }
}

impl DomainInfo {
    /// The six state letters of `xl list` (`r b p s <reason> d`).
    pub fn state(&self) -> String {
        const REASONS: &[u8] = b"-rscwS";
        let reason = match self.shutdown {
            None => '-',
            Some(r) => REASONS.get(r as usize).map_or('?', |c| *c as char),
        };
        let f = |b: bool, c: char| if b { c } else { '-' };
        [
            f(self.running, 'r'),
            f(self.blocked, 'b'),
            f(self.paused, 'p'),
            f(self.shutdown.is_some(), 's'),
            reason,
            f(self.dying, 'd'),
        ]
        .iter()
        .collect()
    }
}

/// Domain names and configurations, one `<domid>.json` per domain under a state directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// A registry in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, domid: u16) -> PathBuf {
        self.dir.join(format!("{domid}.json"))
    }

    /// Records `cfg` for `domid`.
    pub fn record(&self, domid: u16, cfg: &DomainConfig) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        let text = serde_json::to_string_pretty(cfg).map_err(|e| Error::Config(e.to_string()))?;
        let tmp = self.dir.join(format!(".{domid}.json.tmp"));
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, self.path(domid))
            .map_err(|e| Error::io("recording the domain".to_string(), e))
    }

    /// The configuration recorded for `domid`.
    pub fn get(&self, domid: u16) -> Option<DomainConfig> {
        let text = std::fs::read_to_string(self.path(domid)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Forgets `domid`.
    pub fn remove(&self, domid: u16) {
        let _ = std::fs::remove_file(self.path(domid));
    }

    /// Every recorded domain ID.
    pub fn domids(&self) -> Vec<u16> {
        let mut v: Vec<u16> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// The name of `domid` (`Domain-0` for the control domain).
    pub fn name_of(&self, domid: u16) -> Option<String> {
        if domid == 0 {
            return Some("Domain-0".into());
        }
        self.get(domid).map(|c| c.name)
    }
}

/// What happened to a domain that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitHandled {
    /// The domain.
    pub domid: u16,
    /// Its name.
    pub name: String,
    /// `SHUTDOWN_*` reason, `None` when it vanished.
    pub reason: Option<u32>,
    /// The action applied.
    pub action: Action,
    /// The replacement domain for restarts.
    pub new_domid: Option<u16>,
}

/// The toolstack: a transport and a registry.
#[derive(Debug)]
pub struct Toolstack<T: Transport> {
    /// How the hypervisor is reached.
    pub transport: T,
    /// Names and configurations.
    pub registry: Registry,
    /// A xenstored serves the domains this toolstack builds (see [`crate::builder::BuildSpec::xenstore`]).
    pub xenstore: bool,
}

fn dc<P: Plain>(cmd: u32, domid: u16, p: &P) -> XenDomctl {
    XenDomctl::new(cmd, domid, p)
}

impl<T: Transport> Toolstack<T> {
    /// A toolstack over `transport` keeping state in `registry`.
    pub fn new(transport: T, registry: Registry) -> Self {
        Self {
            transport,
            registry,
            xenstore: false,
        }
    }

    /// `XEN_SYSCTL_physinfo`.
    pub fn physinfo(&mut self) -> Result<Physinfo, Error> {
        let mut s = XenSysctl::new(sysctl::cmd::PHYSINFO, &Physinfo::default());
        self.transport.sysctl(&mut s, None)?;
        Ok(s.payload())
    }

    /// All domains, in ID order (`XEN_SYSCTL_getdomaininfolist`).
    pub fn list(&mut self) -> Result<Vec<DomainInfo>, Error> {
        const BATCH: u32 = 64;
        let mut out = Vec::new();
        let mut first = 0u16;
        loop {
            let mut buf = vec![0u8; BATCH as usize * size_of::<GetDomainInfo>()];
            let mut s = XenSysctl::new(
                sysctl::cmd::GETDOMAININFOLIST,
                &GetDomainInfoList {
                    first_domain: first,
                    max_domains: BATCH,
                    ..GetDomainInfoList::default()
                },
            );
            self.transport.sysctl(
                &mut s,
                Some((sysctl::GETDOMAININFOLIST_BUFFER_OFFSET, &mut buf)),
            )?;
            let l: GetDomainInfoList = s.payload();
            let n = (l.num_domains.min(BATCH)) as usize;
            for c in buf.chunks_exact(size_of::<GetDomainInfo>()).take(n) {
                let i = GetDomainInfo::read_from(c).unwrap_or_default();
                out.push(DomainInfo::from(&i));
            }
            match out.last() {
                Some(last) if n == BATCH as usize && last.domid < u16::MAX => {
                    first = last.domid + 1
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// One domain (`XEN_DOMCTL_getdomaininfo`).
    pub fn info(&mut self, domid: u16) -> Result<DomainInfo, Error> {
        let mut d = dc(domctl::cmd::GETDOMAININFO, domid, &GetDomainInfo::default());
        match self.transport.domctl(&mut d, None) {
            Err(e) if e.errno() == Some(xen_abi::errno::Errno::Esrch) => {
                return Err(Error::NoSuchDomain(domid.to_string()))
            }
            r => r?,
        }
        let i: GetDomainInfo = d.payload();
        // Xen reports the next domain at or above the one asked for.
        if i.domain != domid {
            return Err(Error::NoSuchDomain(domid.to_string()));
        }
        Ok(DomainInfo::from(&i))
    }

    /// Resolves a name or numeric ID to a live domain.
    pub fn lookup(&mut self, name_or_id: &str) -> Result<u16, Error> {
        if let Ok(id) = name_or_id.parse::<u16>() {
            self.info(id)?;
            return Ok(id);
        }
        if name_or_id == "Domain-0" {
            return Ok(0);
        }
        for id in self.registry.domids() {
            if self.registry.name_of(id).as_deref() == Some(name_or_id) && self.info(id).is_ok() {
                return Ok(id);
            }
        }
        Err(Error::NoSuchDomain(name_or_id.to_string()))
    }

    /// Forgets registry entries whose domains no longer exist.
    pub fn prune(&mut self) -> Result<(), Error> {
        let live: Vec<u16> = self.list()?.iter().map(|d| d.domid).collect();
        for id in self.registry.domids() {
            if !live.contains(&id) {
                self.registry.remove(id);
            }
        }
        Ok(())
    }

    /// Builds and starts (or leaves paused) a domain from `cfg`; returns its ID.
    pub fn create(&mut self, cfg: &DomainConfig, paused: bool) -> Result<u16, Error> {
        self.check_new_name(&cfg.name)?;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::Image {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        let spec = BuildSpec {
            uuid: cfg.uuid,
            memory_mib: cfg.memory_mib,
            max_memory_mib: cfg.max_memory_mib,
            vcpus: cfg.vcpus,
            kernel: read(&cfg.kernel)?,
            ramdisk: cfg.ramdisk.as_deref().map(read).transpose()?,
            cmdline: cfg.cmdline.clone(),
            paused: true,
            xenstore: self.xenstore,
        };
        let built = builder::build(&mut self.transport, &spec)?;
        if let Err(e) = self.registry.record(built.domid, cfg) {
            let _ = self.destroy(built.domid);
            return Err(e);
        }
        if !paused {
            self.unpause(built.domid)?;
        }
        Ok(built.domid)
    }

    /// Refuses a name a live domain has (forgetting domains that are gone first).
    pub(crate) fn check_new_name(&mut self, name: &str) -> Result<(), Error> {
        self.prune()?;
        if name == "Domain-0"
            || self
                .registry
                .domids()
                .iter()
                .any(|id| self.registry.name_of(*id).as_deref() == Some(name))
        {
            return Err(Error::Config(format!("domain '{name}' already exists")));
        }
        Ok(())
    }

    /// `XEN_DOMCTL_destroydomain` and forgets the domain.
    pub fn destroy(&mut self, domid: u16) -> Result<(), Error> {
        if domid == 0 {
            return Err(Error::Config(
                "the control domain cannot be destroyed".into(),
            ));
        }
        let mut d = dc(
            domctl::cmd::DESTROYDOMAIN,
            domid,
            &domctl::MaxVcpus::default(),
        );
        let r = self.transport.domctl(&mut d, None);
        self.registry.remove(domid);
        match r {
            Err(e) if e.errno() == Some(xen_abi::errno::Errno::Esrch) => {
                Err(Error::NoSuchDomain(domid.to_string()))
            }
            r => r,
        }
    }

    /// `XEN_DOMCTL_pausedomain`.
    pub fn pause(&mut self, domid: u16) -> Result<(), Error> {
        let mut d = dc(
            domctl::cmd::PAUSEDOMAIN,
            domid,
            &domctl::MaxVcpus::default(),
        );
        self.transport.domctl(&mut d, None)
    }

    /// `XEN_DOMCTL_unpausedomain`.
    pub fn unpause(&mut self, domid: u16) -> Result<(), Error> {
        let mut d = dc(
            domctl::cmd::UNPAUSEDOMAIN,
            domid,
            &domctl::MaxVcpus::default(),
        );
        self.transport.domctl(&mut d, None)
    }

    /// Asks the guest to power off.
    pub fn shutdown(&mut self, domid: u16) -> Result<(), Error> {
        self.transport
            .remote_shutdown(domid, schedop::SHUTDOWN_POWEROFF)
    }

    /// Asks the guest to reboot.
    pub fn reboot(&mut self, domid: u16) -> Result<(), Error> {
        self.transport
            .remote_shutdown(domid, schedop::SHUTDOWN_REBOOT)
    }

    /// Applies the `on_*` action of every recorded domain that has shut down (what a `VIRQ_DOM_EXC` asks
    /// for); domains that vanished are forgotten. A domain shut down to suspend is left alone and not
    /// reported: it is being saved.
    pub fn handle_exits(&mut self) -> Result<Vec<ExitHandled>, Error> {
        let mut done = Vec::new();
        // One batched list instead of a getdomaininfo per domain: with hundreds of domains the watcher would
        // otherwise keep the hypervisor's control channel busy on every wake-up.
        let live: std::collections::HashMap<u16, Option<u32>> = self
            .list()?
            .into_iter()
            .map(|i| (i.domid, i.shutdown))
            .collect();
        for id in self.registry.domids() {
            let reason = match live.get(&id) {
                Some(None) => continue,
                // A domain that suspended itself (Xen's cooperative save) is its saver's: it writes the
                // domain's state, then destroys or resumes it. It has not stopped.
                Some(Some(schedop::SHUTDOWN_SUSPEND)) => continue,
                Some(Some(reason)) => *reason,
                None => {
                    let Some(cfg) = self.registry.get(id) else {
                        continue;
                    };
                    self.registry.remove(id);
                    done.push(ExitHandled {
                        domid: id,
                        name: cfg.name,
                        reason: None,
                        action: Action::Destroy,
                        new_domid: None,
                    });
                    continue;
                }
            };
            let Some(cfg) = self.registry.get(id) else {
                continue;
            };
            let action = match reason {
                schedop::SHUTDOWN_POWEROFF => cfg.on_poweroff,
                schedop::SHUTDOWN_REBOOT => cfg.on_reboot,
                schedop::SHUTDOWN_CRASH => cfg.on_crash,
                schedop::SHUTDOWN_WATCHDOG => cfg.on_watchdog,
                _ => Action::Preserve,
            };
            let mut new_domid = None;
            match action {
                Action::Preserve | Action::SoftReset => {
                    // Leave it; handled once (a preserved domain stays shut down until destroyed).
                    continue;
                }
                Action::Destroy | Action::CoredumpDestroy => self.destroy(id)?,
                Action::Restart | Action::CoredumpRestart => {
                    self.destroy(id)?;
                    new_domid = Some(self.create(&cfg, false)?);
                }
                Action::RenameRestart => {
                    let mut old = cfg.clone();
                    old.name = format!("{}-{id}", cfg.name);
                    self.registry.record(id, &old)?;
                    new_domid = Some(self.create(&cfg, false)?);
                }
            }
            done.push(ExitHandled {
                domid: id,
                name: cfg.name,
                reason: Some(reason),
                action,
                new_domid,
            });
        }
        Ok(done)
    }

    /// Waits for `VIRQ_DOM_EXC` and handles exits until `domid` is gone for good (destroyed and not
    /// restarted) or `timeout` passes; follows restarts to the new ID and reports each exit to `on_exit`.
    pub fn watch(
        &mut self,
        mut domid: u16,
        timeout: Option<Duration>,
        mut on_exit: impl FnMut(&ExitHandled),
    ) -> Result<(), Error> {
        // Under Xen, xenstored usually owns VIRQ_DOM_EXC (a global VIRQ binds once); then this falls back to
        // re-checking every second.
        let port = self.transport.bind_virq(xen_abi::memres::VIRQ_DOM_EXC).ok();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            for h in self.handle_exits()? {
                on_exit(&h);
                if h.domid == domid {
                    match h.new_domid {
                        Some(n) => domid = n,
                        None => return Ok(()),
                    }
                }
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(format!("domain {domid} to stop")));
                    }
                    left.min(Duration::from_secs(1))
                }
                None => Duration::from_secs(1),
            };
            // Wake on the VIRQ, or re-check once a second (covers events raised before binding).
            match port {
                Some(p) => {
                    let _ = self.transport.wait_event(wait)?.filter(|e| *e == p);
                }
                None => std::thread::sleep(wait),
            }
        }
    }
}

#[cfg(test)]
mod tests;
