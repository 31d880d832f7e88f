//! The `xl` command line definition (exported from the library so man pages are generated from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `xl`: Xen management tool, based on the xen-rs toolstack.
#[derive(Parser, Debug)]
#[command(
    name = "xl",
    about = "Xen management tool, based on the xen-rs toolstack"
)]
pub struct Cli {
    /// Drive xen-hv in QEMU through the sandbox directory (ctl.sock + ram) instead of /dev/xen.
    #[arg(long, global = true, env = "XEN_RS_SANDBOX")]
    pub sandbox: Option<PathBuf>,
    /// Where domain names and configurations are kept.
    #[arg(
        long,
        global = true,
        env = "XEN_RS_STATE_DIR",
        default_value = "/run/xen-rs/xl"
    )]
    pub state_dir: PathBuf,
    /// The command to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a domain from a config file.
    Create {
        /// Leave the domain paused after it is created.
        #[arg(short = 'p')]
        paused: bool,
        /// Run in the foreground until the domain dies.
        #[arg(short = 'F')]
        foreground: bool,
        /// Connect to the console after creation.
        #[arg(short = 'c')]
        console: bool,
        /// The xl.cfg file.
        config: PathBuf,
        /// Extra `key=value` settings overriding the file.
        overrides: Vec<String>,
    },
    /// List information about all or some domains.
    List {
        /// Domains to list.
        domains: Vec<String>,
    },
    /// Terminate a domain immediately.
    Destroy {
        /// Domain name or ID.
        domain: String,
    },
    /// Issue a shutdown signal to a domain.
    Shutdown {
        /// Wait for the domain to complete shutdown.
        #[arg(short = 'w')]
        wait: bool,
        /// Domain name or ID.
        domain: String,
    },
    /// Issue a reboot signal to a domain.
    Reboot {
        /// Domain name or ID.
        domain: String,
    },
    /// Pause execution of a domain.
    Pause {
        /// Domain name or ID.
        domain: String,
    },
    /// Unpause a paused domain.
    Unpause {
        /// Domain name or ID.
        domain: String,
    },
    /// Attach to a domain's console (Ctrl-] detaches).
    Console {
        /// Domain name or ID.
        domain: String,
    },
    /// Get information about the Xen host.
    Info,
    /// Serve the sandbox control channel to many clients over one upstream connection.
    #[command(name = "sandbox-mux")]
    SandboxMux {
        /// QEMU's COM2 chardev socket.
        #[arg(long)]
        upstream: PathBuf,
        /// The socket clients connect to (what `--sandbox DIR` expects at DIR/ctl.sock).
        #[arg(long)]
        listen: PathBuf,
    },
    /// Internal: handle a domain's exits (on_poweroff/on_reboot/on_crash) until it is gone.
    #[command(name = "__watch", hide = true)]
    Watch {
        /// Domain ID.
        domid: u16,
    },
}
