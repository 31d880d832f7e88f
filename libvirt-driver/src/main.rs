//! The `virtxend` daemon binary.

use std::sync::Arc;

use clap::Parser;
use libvirt_driver::backend::NoHypervisor;
use libvirt_driver::cli::Cli;
use libvirt_driver::driver::Driver;
use libvirt_driver::server::Server;
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
    let driver = Driver::new(store, Arc::new(NoHypervisor));
    for w in &driver.load_warnings {
        eprintln!("virtxend: {w}");
    }
    let server =
        Server::bind(driver.clone(), &cli.socket, Some(&cli.ro_socket()))?.verbose(cli.verbose);
    for e in driver.autostart() {
        eprintln!("virtxend: {e}");
    }
    if cli.verbose {
        eprintln!("virtxend: listening on {}", cli.socket.display());
    }
    server.run()
}
