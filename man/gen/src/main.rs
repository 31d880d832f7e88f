//! `man-gen OUTDIR`: writes the man pages generated from the commands' clap definitions (virtxend(8), ...) into
//! OUTDIR. The hand-written pages (file formats, boot options) live beside this crate in `man/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

/// Static text appended to a generated page: extra sections clap does not know about.
struct Extra {
    files: &'static [(&'static str, &'static str)],
    see_also: &'static str,
}

fn render(cmd: clap::Command, section: &str, extra: &Extra) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .date("2026-11-23")
        .manual("xen-rs");
    let mut out = Vec::new();
    man.render(&mut out)?;
    if !extra.files.is_empty() {
        out.extend_from_slice(b".SH FILES\n");
        for (path, what) in extra.files {
            out.extend_from_slice(format!(".TP\n.I {path}\n{what}\n").as_bytes());
        }
    }
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", extra.see_also).as_bytes());
    Ok(out)
}

/// Keeps a generated string for the life of the program (a handful of short strings per run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: man-gen OUTDIR");
        return ExitCode::from(2);
    };
    let pages = [
        (
            "xl.1",
            libxl_rs::xl_cli::Cli::command(),
            "1",
            Extra {
                files: &[
                    ("/etc/xen/", "The conventional location of domain configuration files (xl.cfg(5))."),
                    ("/run/xen-rs/xl/", "Names and configurations of the domains xl created."),
                    ("/dev/xen/privcmd", "The hypercall interface of the control domain on xen-hv."),
                ],
                see_also: ".BR xl.cfg (5),\n.BR virtxend (8),\n.BR xen\\-hv\\-command\\-line (7),\n.BR virsh (1)",
            },
        ),
        (
        "virtxend.8",
        libvirt_driver::cli::Cli::command(),
        "8",
        Extra {
            files: &[
                ("/run/libvirt/virtxend-sock", "The read-write socket; clients connect with the URI xen:///system."),
                ("/run/libvirt/virtxend-sock-ro", "The read-only socket (virsh \\-r)."),
                ("/etc/libvirt/libxl/", "Persistent domain definitions, one XML file per domain; autostart links in autostart/."),
                ("/run/libvirt/libxl/", "State of running domains, read again when the daemon restarts."),
            ],
            see_also: ".BR virsh (1),\n.BR xl (1),\n.BR xl.cfg (5),\n.BR xen\\-hv\\-command\\-line (7)",
        },
        ),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("man-gen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (file, cmd, section, extra) in pages {
        // One page per subcommand (`xl-create(1)`, ...), which the main page's SUBCOMMANDS section names.
        let parent = cmd.get_name().to_string();
        let mut all = vec![(PathBuf::from(file), cmd.clone(), extra)];
        for sub in cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        {
            let name = format!("{parent}-{}", sub.get_name());
            let sub_extra = Extra {
                files: &[],
                see_also: leak(format!(".BR {parent} ({section})")),
            };
            all.push((
                PathBuf::from(format!("{name}.{section}")),
                sub.clone().name(leak(name)),
                sub_extra,
            ));
        }
        for (file, cmd, extra) in all {
            let path = dir.join(file);
            if let Err(e) =
                render(cmd, section, &extra).and_then(|text| std::fs::write(&path, text))
            {
                eprintln!("man-gen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
