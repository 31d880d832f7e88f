//! `xl`: the toolstack's command line, with xl's commands and output formats, over the dom0 privcmd transport
//! or (with `--sandbox DIR` / `XEN_RS_SANDBOX=DIR`) the sandbox transport to xen-hv in QEMU, where `DIR` holds
//! `ctl.sock` (QEMU's COM2 chardev) and `ram` (QEMU's RAM file).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use libxl_rs::console::Console;
use libxl_rs::lifecycle::{DomainConfig, DomainInfo, Registry, Toolstack};
use libxl_rs::transport::any::{AnyTransport, Target};
use libxl_rs::transport::{Arg, Call, Error, Transport};
use libxl_rs::xl_cli::{Cli, Cmd};
use libxl_rs::xlcfg::{Value, XlConfig};

fn connect(cli: &Cli) -> Result<Toolstack<AnyTransport>, Error> {
    let target = match &cli.sandbox {
        Some(dir) => Target::Sandbox(dir.clone()),
        None => Target::Privcmd,
    };
    let t = target.connect()?;
    Ok(Toolstack::new(t, Registry::new(cli.state_dir.clone())))
}

/// xl's domain lookup message.
fn find(ts: &mut Toolstack<AnyTransport>, d: &str) -> Result<u16, String> {
    ts.lookup(d)
        .map_err(|_| format!("{d} is an invalid domain identifier (rc=-6)"))
}

fn print_list(ts: &mut Toolstack<AnyTransport>, doms: &[DomainInfo]) {
    println!("Name                                        ID   Mem VCPUs\tState\tTime(s)");
    for d in doms {
        let name = ts
            .registry
            .name_of(d.domid)
            // libxl has no name for a domain the toolstack did not create; xl prints glibc's "(null)".
            .unwrap_or_else(|| "(null)".to_string());
        println!(
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            name,
            d.domid,
            d.current_memkb / 1024,
            d.vcpu_online,
            d.state(),
            d.cpu_time as f64 / 1e9
        );
    }
}

fn xen_version(t: &mut AnyTransport) -> u32 {
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
    t.hypercall(&mut call)
        .ok()
        .filter(|v| *v >= 0)
        .map_or(0, |v| v as u32)
}

fn uname() -> [String; 4] {
    // SAFETY: `utsname` is plain old data; zeroed is a valid value for `uname` to fill.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    let ok = unsafe { libc::uname(&mut u) } == 0;
    let f = |s: &[libc::c_char]| -> String {
        if !ok {
            return String::new();
        }
        let b: Vec<u8> = s
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    [f(&u.nodename), f(&u.release), f(&u.version), f(&u.machine)]
}

fn info(ts: &mut Toolstack<AnyTransport>) -> Result<(), Error> {
    let p = ts.physinfo()?;
    let v = xen_version(&mut ts.transport);
    let [host, release, version, machine] = uname();
    let mib = |pages: u64| pages / 256;
    let line = |k: &str, v: String| println!("{k:<23}: {v}");
    line("host", host);
    line("release", release);
    line("version", version);
    line("machine", machine);
    line("nr_cpus", p.nr_cpus.to_string());
    line("max_cpu_id", p.max_cpu_id.to_string());
    line("nr_nodes", p.nr_nodes.to_string());
    line("cores_per_socket", p.cores_per_socket.to_string());
    line("threads_per_core", p.threads_per_core.to_string());
    line(
        "cpu_mhz",
        format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000),
    );
    line(
        "hw_caps",
        p.hw_cap
            .iter()
            .map(|w| format!("{w:08x}"))
            .collect::<Vec<_>>()
            .join(":"),
    );
    let mut caps = String::new();
    if p.capabilities & xen_abi::sysctl::physcap::HVM != 0 {
        caps.push_str(" hvm");
    }
    if p.capabilities & xen_abi::sysctl::physcap::PV != 0 {
        caps.push_str(" pv");
    }
    if p.capabilities & xen_abi::sysctl::physcap::HAP != 0 {
        caps.push_str(" hap");
    }
    println!("{:<23}:{caps}", "virt_caps");
    line("total_memory", mib(p.total_pages).to_string());
    line(
        "free_memory",
        mib(p.free_pages.saturating_sub(p.outstanding_pages)).to_string(),
    );
    line("sharing_freed_memory", "0".into());
    line("sharing_used_memory", "0".into());
    line("outstanding_claims", mib(p.outstanding_pages).to_string());
    line("xen_major", (v >> 16).to_string());
    line("xen_minor", (v & 0xffff).to_string());
    line("xen_version", format!("{}.{}", v >> 16, v & 0xffff));
    line("xen_caps", "hvm-3.0-x86_64".into());
    line("xen_pagesize", "4096".into());
    line("xend_config_format", "4".into());
    Ok(())
}

fn console(ts: &mut Toolstack<AnyTransport>, domid: u16) -> Result<(), Error> {
    let c = Console::open(&mut ts.transport, domid)?;
    let interactive = std::io::stdin().is_terminal();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    if interactive {
        std::thread::spawn(move || {
            let mut b = [0u8; 256];
            while let Ok(n) = std::io::stdin().read(&mut b) {
                if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    let mut out = std::io::stdout();
    loop {
        let bytes = match c.read(&mut ts.transport) {
            Ok(b) => b,
            // The domain is gone: the console ends, as xl's does.
            Err(_) if ts.info(domid).is_err() => return Ok(()),
            Err(e) => return Err(e),
        };
        if !bytes.is_empty() {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
        while let Ok(input) = rx.try_recv() {
            // Ctrl-] detaches.
            if let Some(i) = input.iter().position(|b| *b == 0x1d) {
                c.write(&mut ts.transport, &input[..i])?;
                return Ok(());
            }
            c.write(&mut ts.transport, &input)?;
        }
        if ts.info(domid).is_err() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn load_config(path: &Path, overrides: &[String]) -> Result<DomainConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Failed to read config file: {}: {e}", path.display()))?;
    let mut cfg = XlConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("invalid override '{o}' (expected key=value)"))?;
        let (k, v) = (k.trim(), v.trim());
        match v.parse::<i64>() {
            Ok(n) => cfg.set(k, Value::Int(n)),
            Err(_) => cfg.set_str(k, v.trim_matches('"')),
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    DomainConfig::from_xlcfg(&cfg, base).map_err(|e| e.to_string())
}

fn spawn_watcher(cli: &Cli, domid: u16, name: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut c = std::process::Command::new(exe);
    if let Some(s) = &cli.sandbox {
        c.arg("--sandbox").arg(s);
    }
    c.arg("--state-dir")
        .arg(&cli.state_dir)
        .arg("__watch")
        .arg(domid.to_string());
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: `setsid` in the child between fork and exec touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if let Ok(child) = c.spawn() {
        eprintln!(
            "xl: Waiting for domain {name} (domid {domid}) to die [pid {}]",
            child.id()
        );
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let e = |e: Error| format!("libxl: error: {e}");
    match &cli.cmd {
        Cmd::Create {
            paused,
            foreground,
            console: attach,
            config,
            overrides,
        } => {
            eprintln!("Parsing config from {}", config.display());
            let cfg = load_config(config, overrides)?;
            let mut ts = connect(cli).map_err(e)?;
            let domid = ts.create(&cfg, *paused).map_err(e)?;
            if *foreground {
                eprintln!(
                    "xl: Waiting for domain {} (domid {domid}) to die [pid {}]",
                    cfg.name,
                    std::process::id()
                );
                ts.watch(domid, None, |h| {
                    eprintln!(
                        "Domain {} has shut down, reason code {:?}, action {:?}",
                        h.domid, h.reason, h.action
                    )
                })
                .map_err(e)?;
            } else {
                drop(ts);
                spawn_watcher(cli, domid, &cfg.name);
                if *attach {
                    let mut ts = connect(cli).map_err(e)?;
                    console(&mut ts, domid).map_err(e)?;
                }
            }
            Ok(())
        }
        Cmd::List { domains } => {
            let mut ts = connect(cli).map_err(e)?;
            let all = ts.list().map_err(e)?;
            let shown = if domains.is_empty() {
                all
            } else {
                let mut v = Vec::new();
                for d in domains {
                    let id = find(&mut ts, d)?;
                    v.extend(all.iter().filter(|i| i.domid == id).cloned());
                }
                v
            };
            print_list(&mut ts, &shown);
            Ok(())
        }
        Cmd::Destroy { domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            ts.destroy(id).map_err(e)
        }
        Cmd::Shutdown { wait, domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            eprintln!("Shutting down domain {id}");
            ts.shutdown(id).map_err(e)?;
            if *wait {
                eprintln!("Waiting for 1 domains");
                while ts.info(id).is_ok_and(|i| i.shutdown.is_none()) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprintln!("Domain {id} has been shut down, reason code 0");
                eprintln!("All domains have been shut down");
            }
            Ok(())
        }
        Cmd::Reboot { domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            eprintln!("Rebooting domain {id}");
            ts.reboot(id).map_err(e)
        }
        Cmd::Pause { domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            ts.pause(id).map_err(e)
        }
        Cmd::Unpause { domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            ts.unpause(id).map_err(e)
        }
        Cmd::Console { domain } => {
            let mut ts = connect(cli).map_err(e)?;
            let id = find(&mut ts, domain)?;
            console(&mut ts, id).map_err(e)
        }
        Cmd::Info => {
            let mut ts = connect(cli).map_err(e)?;
            info(&mut ts).map_err(e)
        }
        Cmd::SandboxMux { upstream, listen } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let up = loop {
                match std::os::unix::net::UnixStream::connect(upstream) {
                    Ok(s) => break s,
                    Err(err) if std::time::Instant::now() >= deadline => {
                        return Err(format!("cannot connect to {}: {err}", upstream.display()))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            libxl_rs::transport::mux::run(up, listen).map_err(e)
        }
        Cmd::Watch { domid } => {
            let mut ts = connect(cli).map_err(e)?;
            ts.watch(*domid, None, |_| {}).map_err(e)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
