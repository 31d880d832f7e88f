//! `cargo xtask`: the developer entry point that mirrors CI.
//!
//! - `build-hv`: build the hypervisor image;
//! - `hv-boot [GUEST...]`: build and boot it in QEMU with the named guests, print the serial log, exit 0 only when
//!   every guest passed;
//! - `ci`: run every test layer in CI's order (fmt, clippy for host and bare-metal targets, unit, QEMU boot and
//!   end-to-end tests) and finish with a summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtask::{build, qemu, workspace_root, Arch, Error};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test xen-rs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor image and print its path.
    BuildHv {
        /// Target architecture.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
    },
    /// Build xen-hv and boot it in QEMU TCG; exit 0 only when the hypervisor reports success.
    HvBoot {
        /// Target architecture.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// Physical CPUs of the machine.
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Seconds before the machine is killed.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Hypervisor command line.
        #[arg(long, default_value = "console=com1 loglvl=info")]
        append: String,
        /// In-tree guests to run (all test guests when none is named).
        guests: Vec<String>,
    },
    /// Run every CI layer and print a summary.
    Ci,
    /// Build xen-hv and print, one argument per line, the QEMU command of the sandbox machine in `dir`: RAM
    /// backed by `dir/ram`, COM2 on `dir/qemu-ctl.sock`, the console in `dir/console.log` (scripts/sandbox).
    #[command(name = "sandbox-qemu-cmd")]
    SandboxQemu {
        /// The sandbox directory.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// RAM in MiB.
        #[arg(long, default_value_t = 512)]
        mem_mib: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::BuildHv { arch } => build::build_hv(arch).map(|p| {
            println!("{}", p.display());
            true
        }),
        Cmd::HvBoot {
            arch,
            smp,
            timeout,
            append,
            guests,
        } => hv_boot(arch, smp, timeout, append, &guests),
        Cmd::Ci => ci(),
        Cmd::SandboxQemu { dir, mem_mib } => build::build_hv(Arch::X86_64).map(|image| {
            let mut m = qemu::Machine::new(Arch::X86_64, image);
            m.mem_mib = mem_mib;
            m.shared_ram = Some(dir.join("ram"));
            m.control_socket = Some(dir.join("qemu-ctl.sock"));
            m.console_log = Some(dir.join("console.log"));
            let c = m.command();
            println!("{}", c.get_program().to_string_lossy());
            for a in c.get_args() {
                println!("{}", a.to_string_lossy());
            }
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprint!("xtask: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprint!(": {s}");
                source = s.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

fn hv_boot(
    arch: Arch,
    smp: u32,
    timeout: u64,
    append: String,
    guests: &[String],
) -> Result<bool, Error> {
    let (pack, names) = build::build_guest_pack_for(arch, guests)?;
    eprintln!("hv-boot: guests: {}", names.join(" "));
    let pack = Some(pack);
    let image = build::build_hv(arch)?;
    let mut m = qemu::Machine::new(arch, image);
    m.smp = smp;
    m.append = append;
    m.initrd = pack;
    let out = qemu::run(&m, Duration::from_secs(timeout), true)?;
    let passed = out.passed();
    match out.status {
        Some(code) => eprintln!(
            "hv-boot: QEMU exited with status {code} after {:.1}s: {}",
            out.elapsed.as_secs_f64(),
            if passed { "PASS" } else { "FAIL" }
        ),
        None => eprintln!("hv-boot: timed out after {timeout}s: FAIL"),
    }
    Ok(passed)
}

/// Test counts parsed from cargo's `test result:` lines.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

fn count_after(line: &str, word: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("test result: ok.")
                .trim_start_matches("test result: FAILED.");
            part.trim()
                .strip_suffix(word)
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn step(name: &str, program: &str, args: &[&str]) -> Result<bool, Error> {
    println!("==> {name}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .current_dir(workspace_root())
        .args(args)
        .status()
        .map_err(|source| Error::Spawn {
            program: program.to_string(),
            source,
        })?;
    Ok(status.success())
}

fn ci() -> Result<bool, Error> {
    let cargo = build::cargo();
    let mut failed_steps = Vec::new();
    let steps: &[(&str, &[&str])] = &[
        ("format", &["fmt", "--all", "--check"]),
        (
            "clippy (host)",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (x86_64 bare metal)",
            &[
                "clippy",
                "--package",
                "xen-hv",
                "--package",
                "xen-test-guests",
                "--target",
                "x86_64-unknown-none",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (aarch64 bare metal)",
            &[
                "clippy",
                "--package",
                "xen-hv",
                "--package",
                "xen-test-guests",
                "--target",
                "aarch64-unknown-none",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    for (name, args) in steps {
        if !step(name, &cargo, args)? {
            failed_steps.push(*name);
        }
    }
    println!("==> tests: cargo test --workspace");
    let mut child = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--locked", "--", "--color", "never"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: cargo.clone(),
            source,
        })?;
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| Error::Io("cargo test output".into(), e))?;
            println!("{line}");
            if line.starts_with("test result:") {
                counts.passed += count_after(&line, "passed");
                counts.failed += count_after(&line, "failed");
                counts.ignored += count_after(&line, "ignored");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Io("cargo test".into(), e))?;
    if !status.success() {
        failed_steps.push("tests");
    }
    if !failed_steps.is_empty() {
        println!("failed steps: {}", failed_steps.join(", "));
    }
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(failed_steps.is_empty() && counts.failed == 0)
}
