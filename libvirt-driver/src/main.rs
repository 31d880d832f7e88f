//! The `virtxend` daemon binary.

use std::sync::Arc;

use clap::Parser;
use libvirt_driver::backend::NoHypervisor;
use libvirt_driver::cli::Cli;
use libvirt_driver::driver::Driver;
use libvirt_driver::server::Server;
use libvirt_driver::storage_rpc::StorageRpc;
use libvirt_driver::store::Store;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("virtxend: {e}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<(), libvirt_driver::Error> {
    let store = Store::open(&cli.config_dir, &cli.state_dir)?;
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
    let driver = Driver::with_storage(store, Arc::new(NoHypervisor), Some(storage));
    for w in &driver.load_warnings {
        eprintln!("virtxend: {w}");
    }
    let server = Server::bind(
        driver.clone(),
        &cli.socket,
        Some(&cli.ro_socket()),
        cli.auth_mode(),
    )?
    .verbose(cli.verbose);
    for e in driver.autostart() {
        eprintln!("virtxend: {e}");
    }
    if cli.verbose {
        eprintln!("virtxend: listening on {}", cli.socket.display());
    }
    server.run()
}
