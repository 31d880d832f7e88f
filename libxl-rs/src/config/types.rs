//! libxl's builtin types (`libxl_types.idl` "Builtin" entries) with their JSON forms.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use super::json::{invalid, object, Json};
use super::ConfigError;

/// `libxl_defbool`: a boolean that may be left to libxl's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Defbool {
    /// Not set: libxl picks its default.
    #[default]
    Default,
    /// Set to true.
    True,
    /// Set to false.
    False,
}

impl Defbool {
    /// A set value.
    pub fn set(b: bool) -> Self {
        if b {
            Defbool::True
        } else {
            Defbool::False
        }
    }

    /// The value, or `default` when not set (`libxl_defbool_val` after `libxl_defbool_setdefault`).
    pub fn val_or(self, default: bool) -> bool {
        match self {
            Defbool::Default => default,
            Defbool::True => true,
            Defbool::False => false,
        }
    }
}

impl Json for Defbool {
    fn to_json(&self) -> Value {
        Value::String(
            match self {
                Defbool::Default => "<default>",
                Defbool::True => "True",
                Defbool::False => "False",
            }
            .to_string(),
        )
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        match v.as_str() {
            Some("<default>") => Ok(Defbool::Default),
            Some("True") => Ok(Defbool::True),
            Some("False") => Ok(Defbool::False),
            _ => Err(invalid(
                path,
                v,
                "expected \"True\", \"False\" or \"<default>\"",
            )),
        }
    }
}

/// `libxl_bitmap`: a set of bit numbers (CPUs, nodes), written as the array of set bits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitmap(pub BTreeSet<u32>);

impl Bitmap {
    /// Bits `0..n` set.
    pub fn first(n: u32) -> Self {
        Bitmap((0..n).collect())
    }
}

/// The largest bit number accepted (libxl sizes bitmaps from it; keep allocations bounded).
const BITMAP_MAX_BIT: u32 = 1 << 16;

impl Json for Bitmap {
    fn to_json(&self) -> Value {
        Value::Array(self.0.iter().map(|b| Value::from(*b)).collect())
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        let a = v
            .as_array()
            .ok_or_else(|| invalid(path, v, "expected an array of bit numbers"))?;
        let mut set = BTreeSet::new();
        for (i, e) in a.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let b = u32::from_json(e, &p)?;
            if b >= BITMAP_MAX_BIT {
                return Err(invalid(&p, e, "bit number too large"));
            }
            set.insert(b);
        }
        Ok(Bitmap(set))
    }
}

/// `libxl_uuid`; the nil UUID is the default (omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the 8-4-4-4-12 hexadecimal form.
    pub fn parse(s: &str) -> Option<Uuid> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Json for Uuid {
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        v.as_str()
            .and_then(Uuid::parse)
            .ok_or_else(|| invalid(path, v, "expected a UUID string"))
    }
}

/// `libxl_mac`; all zeros is the default (libxl generates an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `xx:xx:xx:xx:xx:xx`.
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Json for Mac {
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        v.as_str()
            .and_then(Mac::parse)
            .ok_or_else(|| invalid(path, v, "expected a MAC address xx:xx:xx:xx:xx:xx"))
    }
}

/// `libxl_key_value_list`: ordered pairs, a value may be NULL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValueList(pub Vec<(String, Option<String>)>);

impl Json for KeyValueList {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.0 {
            m.insert(
                k.clone(),
                v.as_ref().map_or(Value::Null, |s| Value::String(s.clone())),
            );
        }
        Value::Object(m)
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        let m = object(v, path)?;
        let mut out = Vec::with_capacity(m.len());
        for (k, e) in m {
            let val = match e {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => return Err(invalid(&format!("{path}.{k}"), &other, "expected a string")),
            };
            out.push((k, val));
        }
        Ok(KeyValueList(out))
    }
}

/// One CPUID leaf of a `libxl_cpuid_policy_list`: each register is a 32-character mask of `0`, `1`, `x`,
/// `k` or `s` (bit 31 first), or absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuidLeaf {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input), when the leaf has subleaves.
    pub subleaf: Option<u32>,
    /// Masks for EAX, EBX, ECX, EDX.
    pub regs: [Option<String>; 4],
}

/// One MSR entry of a `libxl_cpuid_policy_list`: a 64-character mask.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsrPolicy {
    /// The MSR index.
    pub index: u32,
    /// The 64-character mask.
    pub policy: String,
}

/// `libxl_cpuid_policy_list`: CPUID and MSR overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuidPolicyList {
    /// CPUID leaves.
    pub cpuid: Vec<CpuidLeaf>,
    /// MSRs.
    pub msr: Vec<MsrPolicy>,
}

const REG_NAMES: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

fn mask(v: &Value, path: &str, len: usize) -> Result<String, ConfigError> {
    match v.as_str() {
        Some(s)
            if s.len() == len
                && s.bytes()
                    .all(|b| matches!(b, b'0' | b'1' | b'x' | b'k' | b's')) =>
        {
            Ok(s.to_string())
        }
        _ => Err(invalid(
            path,
            v,
            "expected a mask of 0, 1, x, k or s of the register's width",
        )),
    }
}

fn cpuid_leaves(v: &Value, path: &str) -> Result<Vec<CpuidLeaf>, ConfigError> {
    let a = v
        .as_array()
        .ok_or_else(|| invalid(path, v, "expected an array of CPUID leaves"))?;
    let mut out = Vec::with_capacity(a.len());
    for (i, e) in a.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let mut m = object(e, &p)?;
        let leaf = match m.remove("leaf") {
            Some(l) => u32::from_json(&l, &format!("{p}.leaf"))?,
            None => {
                return Err(ConfigError::MissingKey {
                    path: format!("{p}.leaf"),
                })
            }
        };
        let subleaf = match m.remove("subleaf") {
            Some(l) => Some(u32::from_json(&l, &format!("{p}.subleaf"))?),
            None => None,
        };
        let mut regs: [Option<String>; 4] = Default::default();
        for (r, name) in regs.iter_mut().zip(REG_NAMES) {
            if let Some(x) = m.remove(name) {
                *r = Some(mask(&x, &format!("{p}.{name}"), 32)?);
            }
        }
        super::json::no_unknown(&m, &p)?;
        out.push(CpuidLeaf {
            leaf,
            subleaf,
            regs,
        });
    }
    Ok(out)
}

impl Json for CpuidPolicyList {
    fn to_json(&self) -> Value {
        let leaves = self
            .cpuid
            .iter()
            .map(|l| {
                let mut m = Map::new();
                m.insert("leaf".into(), Value::from(l.leaf));
                if let Some(s) = l.subleaf {
                    m.insert("subleaf".into(), Value::from(s));
                }
                for (r, name) in l.regs.iter().zip(REG_NAMES) {
                    if let Some(r) = r {
                        m.insert(name.into(), Value::String(r.clone()));
                    }
                }
                Value::Object(m)
            })
            .collect();
        let msrs = self
            .msr
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("index".into(), Value::from(e.index));
                m.insert("policy".into(), Value::String(e.policy.clone()));
                Value::Object(m)
            })
            .collect();
        if self.msr.is_empty() {
            // Xen 4.17's form (before MSR policies): the bare array of leaves.
            return Value::Array(leaves);
        }
        let mut m = Map::new();
        m.insert("cpuid".into(), Value::Array(leaves));
        m.insert("msr".into(), Value::Array(msrs));
        Value::Object(m)
    }

    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        // Before MSR support libxl wrote the bare array of leaves; it still reads that form.
        if v.is_array() {
            return Ok(CpuidPolicyList {
                cpuid: cpuid_leaves(v, path)?,
                msr: Vec::new(),
            });
        }
        let mut m = object(v, path)?;
        let cpuid = match m.remove("cpuid") {
            Some(c) => cpuid_leaves(&c, &format!("{path}.cpuid"))?,
            None => Vec::new(),
        };
        let mut msr = Vec::new();
        if let Some(a) = m.remove("msr") {
            let mp = format!("{path}.msr");
            let a = a
                .as_array()
                .ok_or_else(|| invalid(&mp, &a, "expected an array of MSR entries"))?;
            for (i, e) in a.iter().enumerate() {
                let p = format!("{mp}[{i}]");
                let mut o = object(e, &p)?;
                let index = match o.remove("index") {
                    Some(x) => u32::from_json(&x, &format!("{p}.index"))?,
                    None => {
                        return Err(ConfigError::MissingKey {
                            path: format!("{p}.index"),
                        })
                    }
                };
                let policy = match o.remove("policy") {
                    Some(x) => mask(&x, &format!("{p}.policy"), 64)?,
                    None => {
                        return Err(ConfigError::MissingKey {
                            path: format!("{p}.policy"),
                        })
                    }
                };
                super::json::no_unknown(&o, &p)?;
                msr.push(MsrPolicy { index, policy });
            }
        }
        super::json::no_unknown(&m, path)?;
        Ok(CpuidPolicyList { cpuid, msr })
    }
}
