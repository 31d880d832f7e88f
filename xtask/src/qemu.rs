//! The project's QEMU command lines, in one place, and a runner that streams the serial console.
//!
//! The hypervisor reports a test result by writing to QEMU's `isa-debug-exit` device (x86) or by semihosting /
//! PSCI (aarch64): a write of `v` ends QEMU with status `(v << 1) | 1`, so xen-hv's success value 0x10 becomes
//! [`EXIT_SUCCESS`].

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Arch, Error};

/// QEMU's exit status when xen-hv reports success (0x10 through isa-debug-exit).
pub const EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
/// QEMU's exit status when xen-hv reports failure (0x11).
pub const EXIT_FAILURE: i32 = (0x11 << 1) | 1;

/// A QEMU machine to start.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Architecture.
    pub arch: Arch,
    /// Physical CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub mem_mib: u32,
    /// The image QEMU loads with `-kernel`.
    pub kernel: PathBuf,
    /// The boot module QEMU passes with `-initrd` (module 0).
    pub initrd: Option<PathBuf>,
    /// The hypervisor command line.
    pub append: String,
    /// Back RAM with this shared file (the sandbox transport maps it from the host).
    pub shared_ram: Option<PathBuf>,
    /// The sandbox control channel: COM2 as a Unix-socket chardev server at this path
    /// (docs/sandbox-transport.md).
    pub control_socket: Option<PathBuf>,
    /// Write the serial console (COM1) to this file instead of stdio.
    pub console_log: Option<PathBuf>,
    /// Further arguments.
    pub extra: Vec<String>,
}

impl Machine {
    /// A machine with the project's defaults for `arch`: 2 CPUs, 512 MiB, serial console on stdio.
    pub fn new(arch: Arch, kernel: PathBuf) -> Self {
        Self {
            arch,
            smp: 2,
            mem_mib: 512,
            kernel,
            initrd: None,
            append: "console=com1 loglvl=info".to_string(),
            shared_ram: None,
            control_socket: None,
            console_log: None,
            extra: Vec::new(),
        }
    }

    /// The full command line.
    pub fn command(&self) -> Command {
        let mut c;
        match self.arch {
            Arch::X86_64 => {
                c = Command::new("qemu-system-x86_64");
                c.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"]);
                c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
            }
            Arch::Aarch64 => {
                c = Command::new("qemu-system-aarch64");
                c.args([
                    "-machine",
                    "virt,virtualization=on,gic-version=3",
                    "-accel",
                    "tcg",
                    "-cpu",
                    "max",
                ]);
                c.args(["-semihosting-config", "enable=on,target=native"]);
            }
        }
        c.args(["-smp", &self.smp.to_string()]);
        match &self.shared_ram {
            Some(path) => {
                c.arg("-object").arg(format!(
                    "memory-backend-file,id=mem,size={}M,mem-path={},share=on",
                    self.mem_mib,
                    path.display()
                ));
                c.args(["-m", &format!("{}M", self.mem_mib)]);
                let machine_mem = match self.arch {
                    Arch::X86_64 => "q35,memory-backend=mem",
                    Arch::Aarch64 => "virt,virtualization=on,gic-version=3,memory-backend=mem",
                };
                c.args(["-machine", machine_mem]);
            }
            None => {
                c.args(["-m", &format!("{}M", self.mem_mib)]);
            }
        }
        c.args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ]);
        let con0 = match &self.console_log {
            Some(p) => format!("file,id=con0,path={}", p.display()),
            None => "stdio,id=con0,signal=off".to_string(),
        };
        c.args(["-chardev", &con0, "-serial", "chardev:con0"]);
        if let Some(sock) = &self.control_socket {
            c.arg("-chardev").arg(format!(
                "socket,id=ctl,path={},server=on,wait=off",
                sock.display()
            ));
            c.args(["-serial", "chardev:ctl"]);
        }
        c.arg("-kernel").arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            c.arg("-initrd").arg(initrd);
        }
        c.args(["-append", &self.append]);
        c.args(&self.extra);
        c.stdin(Stdio::null());
        c
    }
}

/// What a finished boot produced.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// QEMU's exit status, `None` when it was killed at the timeout.
    pub status: Option<i32>,
    /// The serial log.
    pub log: String,
    /// Wall time from start to exit.
    pub elapsed: Duration,
}

impl BootOutcome {
    /// True when the hypervisor reported success through the debug-exit device.
    pub fn passed(&self) -> bool {
        self.status == Some(EXIT_SUCCESS)
    }
}

/// Starts `machine`, streams its console (to stdout when `echo`), and waits for it to exit or for `timeout`.
pub fn run(machine: &Machine, timeout: Duration, echo: bool) -> Result<BootOutcome, Error> {
    let start = Instant::now();
    let mut cmd = machine.command();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child: Child = cmd
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Failed("capturing QEMU's console".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::Failed("capturing QEMU's errors".into()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut log = String::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            if echo {
                println!("{line}");
            }
            log.push_str(&line);
            log.push('\n');
        }
        if let Some(status) = child.try_wait().map_err(|e| Error::Io("QEMU".into(), e))? {
            break status.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    for line in rx.try_iter() {
        if echo {
            println!("{line}");
        }
        log.push_str(&line);
        log.push('\n');
    }
    let errors = err_reader.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        if echo {
            eprintln!("{}", errors.trim_end());
        }
        log.push_str(&errors);
    }
    Ok(BootOutcome {
        status,
        log,
        elapsed: start.elapsed(),
    })
}
