//! The hypervisor command line, with Xen's option names (`xen-command-line(7)`): `console=`, `loglvl=`,
//! `dom0_mem=`, `dom0_max_vcpus=`, `nosmp`, `maxcpus=`, plus the project's `xenrs_selftest=trap` (raise an
//! exception in the hypervisor to exercise the fatal-exception path). Unknown options are reported, not fatal,
//! as Xen does.

/// Where console output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// The first serial port.
    Com1,
    /// Nothing.
    None,
}

/// How much the hypervisor logs (Xen's `loglvl=` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing.
    None = 0,
    /// Errors only.
    Error = 1,
    /// Errors and warnings.
    Warning = 2,
    /// Informational messages too (the default).
    Info = 3,
    /// Debugging messages.
    Debug = 4,
    /// Everything.
    All = 5,
}

/// Parsed boot options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `console=`.
    pub console: Console,
    /// `loglvl=`.
    pub loglvl: LogLevel,
    /// `dom0_mem=`: memory for the boot domain in bytes, `None` for the default.
    pub dom0_mem: Option<u64>,
    /// `dom0_max_vcpus=`: maximum vCPUs of the boot domain.
    pub dom0_max_vcpus: Option<u32>,
    /// `maxcpus=` (or 1 with `nosmp`): how many physical CPUs to use.
    pub maxcpus: Option<u32>,
    /// `xenrs_selftest=trap`: execute an invalid instruction after boot (tests the exception handlers).
    pub selftest_trap: bool,
    /// Number of options that were not recognised or had bad values.
    pub unknown: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            console: Console::Com1,
            loglvl: LogLevel::Info,
            dom0_mem: None,
            dom0_max_vcpus: None,
            maxcpus: None,
            selftest_trap: false,
            unknown: 0,
        }
    }
}

/// Parses a size with Xen's suffixes (`K`, `M`, `G`, `T`; no suffix means KiB) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        b'B' | b'b' => (&s[..s.len() - 1], 0),
        _ => (s, 10),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

impl Options {
    /// Parses a whitespace-separated command line; later options override earlier ones.
    pub fn parse(cmdline: &str) -> Self {
        let mut o = Self::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let ok = match key {
                "console" => match value {
                    "com1" | "serial" => {
                        o.console = Console::Com1;
                        true
                    }
                    "none" => {
                        o.console = Console::None;
                        true
                    }
                    _ => false,
                },
                "loglvl" => {
                    // Xen accepts "lower/upper"; the lower bound decides what is printed.
                    let level = value.split('/').next().unwrap_or("");
                    match level {
                        "none" => Some(LogLevel::None),
                        "error" => Some(LogLevel::Error),
                        "warning" => Some(LogLevel::Warning),
                        "info" => Some(LogLevel::Info),
                        "debug" => Some(LogLevel::Debug),
                        "all" => Some(LogLevel::All),
                        _ => None,
                    }
                    .map(|l| o.loglvl = l)
                    .is_some()
                }
                "dom0_mem" => {
                    // "dom0_mem=512M" or "dom0_mem=max:512M" / "min:..,max:.." forms: take the first plain size.
                    let size = value
                        .split(',')
                        .find_map(|part| parse_size(part.strip_prefix("max:").unwrap_or(part)));
                    size.map(|s| o.dom0_mem = Some(s)).is_some()
                }
                "dom0_max_vcpus" => {
                    let max = value.rsplit('-').next().unwrap_or("");
                    max.parse()
                        .ok()
                        .map(|n| o.dom0_max_vcpus = Some(n))
                        .is_some()
                }
                "nosmp" if value.is_empty() => {
                    o.maxcpus = Some(1);
                    true
                }
                "maxcpus" => value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|n| o.maxcpus = Some(n))
                    .is_some(),
                "xenrs_selftest" if value == "trap" => {
                    o.selftest_trap = true;
                    true
                }
                _ => false,
            };
            if !ok {
                o.unknown += 1;
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_xen_units() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1024"), Some(1024 << 10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn parses_options() {
        let o = Options::parse(
            "console=com1 loglvl=debug/all dom0_mem=max:1G dom0_max_vcpus=1-4 bogus",
        );
        assert_eq!(o.console, Console::Com1);
        assert_eq!(o.loglvl, LogLevel::Debug);
        assert_eq!(o.dom0_mem, Some(1 << 30));
        assert_eq!(o.dom0_max_vcpus, Some(4));
        assert_eq!(o.unknown, 1);
        assert_eq!(Options::parse(""), Options::default());
        let o = Options::parse("nosmp xenrs_selftest=trap");
        assert_eq!((o.maxcpus, o.selftest_trap, o.unknown), (Some(1), true, 0));
        let o = Options::parse("maxcpus=3 maxcpus=0 xenrs_selftest=boom");
        assert_eq!((o.maxcpus, o.selftest_trap, o.unknown), (Some(3), false, 2));
    }
}
