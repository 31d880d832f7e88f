//! `/etc/libvirt/virtxend.conf`: the daemon's configuration file, in libvirt's `key = value` syntax (the same
//! virConf syntax as xl.cfg, read with `libxl_rs::xlcfg`). Command-line options override it.
//!
//! Keys: `unix_sock_dir` (directory of `virtxend-sock` and `virtxend-sock-ro`), `auth_unix_rw` and
//! `auth_unix_ro` (`"none"` or `"polkit"`). Unknown keys are reported and ignored, as libvirt ignores keys of
//! other daemons; a malformed file or a bad value is an error naming the line and the key.

use std::path::{Path, PathBuf};

use libxl_rs::xlcfg::XlConfig;

use crate::auth::Auth;

/// The default configuration file of the privileged daemon.
pub const DEFAULT_PATH: &str = "/etc/libvirt/virtxend.conf";
/// The default socket directory.
pub const DEFAULT_SOCK_DIR: &str = "/run/libvirt";

/// Settings read from the file (absent keys are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `unix_sock_dir`.
    pub unix_sock_dir: Option<PathBuf>,
    /// `auth_unix_rw`.
    pub auth_unix_rw: Option<Auth>,
    /// `auth_unix_ro`.
    pub auth_unix_ro: Option<Auth>,
    /// Keys the daemon does not use.
    pub ignored: Vec<String>,
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The file is not valid virConf syntax, or a value has the wrong type.
    #[error("{0}")]
    Syntax(PathBuf, #[source] libxl_rs::xlcfg::XlCfgError),
    /// A value is not one the key accepts.
    #[error("{path}: key '{key}': {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn parse_auth(path: &Path, key: &str, v: Option<&str>) -> Result<Option<Auth>, ConfigError> {
    match v {
        None => Ok(None),
        Some("none") => Ok(Some(Auth::None)),
        Some("polkit") => Ok(Some(Auth::Polkit)),
        Some(other) => Err(ConfigError::Value {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: format!(
                "unsupported authentication '{other}' (expected \"none\" or \"polkit\")"
            ),
        }),
    }
}

impl FileConfig {
    /// Parses the text of a configuration file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let syntax = |e| ConfigError::Syntax(path.to_path_buf(), e);
        let conf = XlConfig::parse(text).map_err(syntax)?;
        let mut out = FileConfig {
            unix_sock_dir: conf
                .get_str("unix_sock_dir")
                .map_err(syntax)?
                .map(PathBuf::from),
            auth_unix_rw: parse_auth(
                path,
                "auth_unix_rw",
                conf.get_str("auth_unix_rw").map_err(syntax)?,
            )?,
            auth_unix_ro: parse_auth(
                path,
                "auth_unix_ro",
                conf.get_str("auth_unix_ro").map_err(syntax)?,
            )?,
            ignored: Vec::new(),
        };
        for s in &conf.settings {
            if !matches!(
                s.key.as_str(),
                "unix_sock_dir" | "auth_unix_rw" | "auth_unix_ro"
            ) {
                out.ignored.push(s.key.clone());
            }
        }
        Ok(out)
    }

    /// Reads `path`; a missing file gives the defaults only when `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(ConfigError::Read(path.to_path_buf(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libvirt_style_keys() {
        let text = "# comment\nunix_sock_dir = \"/run/x\"\nauth_unix_rw = \"polkit\"\nauth_unix_ro = \"none\"\nmax_clients = 10\n";
        let c = FileConfig::parse(Path::new("t.conf"), text).unwrap();
        assert_eq!(c.unix_sock_dir.as_deref(), Some(Path::new("/run/x")));
        assert_eq!(c.auth_unix_rw, Some(Auth::Polkit));
        assert_eq!(c.auth_unix_ro, Some(Auth::None));
        assert_eq!(c.ignored, ["max_clients"]);
    }

    #[test]
    fn bad_values_name_the_key_and_bad_syntax_the_line() {
        let e = FileConfig::parse(Path::new("t.conf"), "auth_unix_rw = \"sasl\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth_unix_rw") && e.contains("sasl"), "{e}");
        let e = FileConfig::parse(Path::new("t.conf"), "a = 1\nunix_sock_dir = \"x\n").unwrap_err();
        let chain = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(
            chain.contains("line 2") || chain.contains("unix_sock_dir"),
            "{chain}"
        );
        assert!(
            FileConfig::load(Path::new("/nonexistent/virtxend.conf"), false).unwrap()
                == FileConfig::default()
        );
        assert!(FileConfig::load(Path::new("/nonexistent/virtxend.conf"), true).is_err());
    }
}
