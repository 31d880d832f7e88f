//! The `virtxend` daemon binary.

use std::sync::Arc;

use clap::Parser;
use libvirt_driver::backend::NoHypervisor;
use libvirt_driver::cli::Cli;
use libvirt_driver::driver::Driver;
use libvirt_driver::libxl_backend::LibxlBackend;
use libvirt_driver::server::{Listener, Server};
use libvirt_driver::storage_rpc::StorageRpc;
use libvirt_driver::store::Store;
use libvirt_driver::systemd;
use libxl_rs::transport::any::Target;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        let mut msg = format!("virtxend: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in every thread and handles them on one thread: the sockets are removed
/// and the process exits, so a restarted daemon binds cleanly (definitions and status files are always on disk).
fn handle_signals(sockets: Vec<std::path::PathBuf>) {
    // SAFETY: an all-zero sigset_t is a valid value to pass to sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid; blocking them in the
    // calling thread (before any other thread exists) makes every later thread inherit the mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` was initialised above and `sig` is a valid place for the result.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        if r == 0 {
            for s in &sockets {
                let _ = std::fs::remove_file(s);
            }
            eprintln!("virtxend: shutting down on signal {sig}");
            std::process::exit(0);
        }
    });
}

/// The `--hypervisor` choice.
fn hypervisor_target(spec: &str) -> Result<Option<Target>, libvirt_driver::Error> {
    Ok(match spec {
        "none" => None,
        "privcmd" => Some(Target::Privcmd),
        "auto" if std::path::Path::new("/dev/xen/privcmd").exists() => Some(Target::Privcmd),
        "auto" => None,
        s => match s.strip_prefix("sandbox:") {
            Some(dir) if !dir.is_empty() => Some(Target::Sandbox(dir.into())),
            _ => {
                return Err(libvirt_driver::Error::Hypervisor(format!(
                    "unknown --hypervisor '{s}' (expected auto, none, privcmd or sandbox:DIR)"
                )))
            }
        },
    })
}

fn run(cli: &Cli) -> Result<(), libvirt_driver::Error> {
    let settings = cli.settings()?;
    for key in &settings.ignored_keys {
        eprintln!("virtxend: configuration key '{key}' is not used by virtxend; ignored");
    }
    // Sockets passed by systemd (virtxend.socket, virtxend-ro.socket) take the place of binding our own.
    let activated = systemd::listen_fds();
    handle_signals(if activated.is_empty() {
        vec![settings.socket.clone(), settings.socket_ro.clone()]
    } else {
        Vec::new()
    });
    let store = Store::open(&cli.config_dir, &cli.state_dir)?
        .with_snapshot_dir(&cli.snapshot_dir)
        .with_save_dir(&cli.save_dir());
    // Storage pools live beside the driver's directories, as libvirt's (/etc/libvirt/storage, /run/libvirt/storage).
    let parent = |p: &std::path::Path| {
        p.parent()
            .map_or_else(|| p.to_path_buf(), |d| d.to_path_buf())
    };
    let storage =
        xen_storage::StorageDriver::open(&parent(&cli.config_dir), &parent(&cli.state_dir))
            .map_err(|e| libvirt_driver::Error::Storage(e.libvirt_message()))?;
    let storage = StorageRpc::new(storage);
    for w in storage.startup_errors() {
        eprintln!("virtxend: storage: {w}");
    }
    let backend: Arc<dyn libvirt_driver::backend::Backend> =
        match hypervisor_target(&cli.hypervisor)? {
            None => Arc::new(NoHypervisor),
            Some(target) => match LibxlBackend::connect(target, &cli.xl_state_dir) {
                Ok(b) => b,
                Err(e) => return Err(libvirt_driver::Error::Hypervisor(e.to_string())),
            },
        };
    let driver = Driver::with_storage(store, backend, Some(storage));
    for w in &driver.load_warnings {
        eprintln!("virtxend: {w}");
    }
    let server = if activated.is_empty() {
        Server::bind_each(
            driver.clone(),
            (&settings.socket, settings.auth_rw),
            Some((&settings.socket_ro, settings.auth_ro)),
        )?
    } else {
        let listeners = activated
            .into_iter()
            .map(|a| {
                let read_only = a.is_read_only();
                let auth = if read_only {
                    settings.auth_ro
                } else {
                    settings.auth_rw
                };
                Listener {
                    listener: a.listener,
                    read_only,
                    auth,
                }
            })
            .collect();
        Server::from_listeners(driver.clone(), listeners)
    }
    .verbose(cli.verbose);
    for e in driver.autostart() {
        eprintln!("virtxend: {e}");
    }
    if cli.verbose {
        eprintln!("virtxend: listening on {}", settings.socket.display());
    }
    if let Err(e) = systemd::notify("READY=1") {
        eprintln!("virtxend: cannot notify the service manager: {e}");
    }
    server.run()
}
