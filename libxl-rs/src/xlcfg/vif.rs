//! xl-network-configuration(5): `vif` specification strings.

use super::XlCfgError;

/// The keys xl-network-configuration(5) defines.
const KNOWN_KEYS: &[&str] = &[
    "mac",
    "bridge",
    "type",
    "model",
    "vifname",
    "script",
    "ip",
    "backend",
    "rate",
    "devid",
    "mtu",
    "gatewaydev",
    "accel",
    "trusted",
    "untrusted",
    "forwarddev",
    "colo_forward_dev",
];

/// A parsed `vif` entry: its `key=value` parameters in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VifSpec {
    /// Parameters in order; keys are from xl-network-configuration(5).
    pub params: Vec<(String, String)>,
}

impl VifSpec {
    /// Parses a vif specification such as `mac=00:16:3e:00:00:01,bridge=xenbr0,model=e1000`.
    ///
    /// `key` and `line` name the setting in errors.
    pub fn parse(spec: &str, key: &str, line: usize) -> Result<VifSpec, XlCfgError> {
        let err = |message: String| XlCfgError::Value {
            line,
            key: key.to_string(),
            message,
        };
        let mut v = VifSpec::default();
        for tok in spec.split(',') {
            let tok = tok.trim();
            if tok.is_empty() {
                continue;
            }
            let (k, val) = tok.split_once('=').ok_or_else(|| {
                err(format!(
                    "vif parameter '{tok}' is not of the form key=value"
                ))
            })?;
            if !KNOWN_KEYS.contains(&k) && !k.starts_with("colo_") {
                return Err(err(format!("unknown vif parameter '{k}'")));
            }
            if k == "mac" && !valid_mac(val) {
                return Err(err(format!("'{val}' is not a MAC address")));
            }
            v.params.push((k.to_string(), val.to_string()));
        }
        Ok(v)
    }

    /// The value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a parameter.
    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.params.push((key.to_string(), value.into()));
    }

    /// Formats as `key=value,...`.
    pub fn to_spec(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn valid_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 2 && u8::from_str_radix(p, 16).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vif_parse_and_format() {
        let s =
            "mac=00:16:3e:66:92:9c,bridge=xenbr1,ip=10.0.0.1 10.1.1.1,script=vif-bridge,type=vif";
        let v = VifSpec::parse(s, "vif", 3).unwrap();
        assert_eq!(v.get("bridge"), Some("xenbr1"));
        assert_eq!(v.get("ip"), Some("10.0.0.1 10.1.1.1"));
        assert_eq!(v.to_spec(), s);
        let e = VifSpec::parse("mac=zz,bridge=x", "vif", 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, key 'vif': 'zz' is not a MAC address"
        );
        let e = VifSpec::parse("colour=blue", "vif", 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, key 'vif': unknown vif parameter 'colour'"
        );
    }
}
