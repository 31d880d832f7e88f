//! libxl's JSON encoding of its IDL types (what `gentypes.py` generates and `libxl_json.c` implements).
//!
//! Rules, as libxl applies them when it writes a structure:
//! - a member whose value equals its IDL default (`init_val`, or zero, or the type's "is default" check) is
//!   left out; aggregate members (structs) are always written, possibly as `{}`;
//! - defbools are the strings `"True"` / `"False"`, plain bools JSON booleans, enums their lower-case names;
//! - bitmaps are arrays of the set bit numbers, string lists arrays, key-value lists objects;
//! - a keyed union is written under the key `"<keyvar>.<variant>"` (for example `"type.hvm"`).
//!
//! Reading is strict: a key the model does not know is an error naming its path, so that a configuration is
//! never silently truncated.

use serde_json::{Map, Value};

use super::ConfigError;

/// A value with a libxl JSON form.
pub trait Json: Sized {
    /// Whether a struct member of this type is written even when it equals its default (aggregates).
    const ALWAYS: bool = false;
    /// The JSON form.
    fn to_json(&self) -> Value;
    /// Reads the JSON form; `path` names the value in errors.
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError>;
}

/// How a struct member is written into and read from its parent object.
pub trait Field: Sized {
    /// Writes the member under `key` unless it equals `default` (and is not an aggregate).
    fn emit(&self, key: &str, default: &Self, map: &mut Map<String, Value>);
    /// Takes the member out of `map`; `default` when absent.
    fn take(
        map: &mut Map<String, Value>,
        key: &str,
        path: &str,
        default: Self,
    ) -> Result<Self, ConfigError>;
}

impl<T: Json + PartialEq> Field for T {
    fn emit(&self, key: &str, default: &Self, map: &mut Map<String, Value>) {
        if T::ALWAYS || self != default {
            map.insert(key.to_string(), self.to_json());
        }
    }

    fn take(
        map: &mut Map<String, Value>,
        key: &str,
        path: &str,
        default: Self,
    ) -> Result<Self, ConfigError> {
        match map.remove(key) {
            // libxl's parser treats an explicit null like an absent member.
            None | Some(Value::Null) => Ok(default),
            Some(v) => T::from_json(&v, &format!("{path}.{key}")),
        }
    }
}

pub(crate) fn invalid(path: &str, v: &Value, reason: &str) -> ConfigError {
    let mut shown = v.to_string();
    if shown.len() > 64 {
        let mut end = 64;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    ConfigError::InvalidValue {
        path: path.to_string(),
        value: shown,
        reason: reason.to_string(),
    }
}

/// Takes the object out of `v` or reports that `path` must be an object.
pub(crate) fn object(v: &Value, path: &str) -> Result<Map<String, Value>, ConfigError> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        _ => Err(invalid(path, v, "expected a JSON object")),
    }
}

/// Fails on the first key left in `map` after every known member was taken.
pub(crate) fn no_unknown(map: &Map<String, Value>, path: &str) -> Result<(), ConfigError> {
    match map.keys().next() {
        Some(k) => Err(ConfigError::UnknownKey {
            path: format!("{path}.{k}"),
        }),
        None => Ok(()),
    }
}

macro_rules! int_json {
    ($($t:ty),*) => {$(
        impl Json for $t {
            fn to_json(&self) -> Value {
                Value::from(*self)
            }
            fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
                let n = if let Some(n) = v.as_i64() {
                    <$t>::try_from(n).ok()
                } else if let Some(n) = v.as_u64() {
                    <$t>::try_from(n).ok()
                } else {
                    return Err(invalid(path, v, "expected an integer"));
                };
                n.ok_or_else(|| invalid(path, v, concat!("out of range for ", stringify!($t))))
            }
        }
    )*};
}
int_json!(u8, u32, u64, i32, i64);

impl Json for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        v.as_bool()
            .ok_or_else(|| invalid(path, v, "expected true or false"))
    }
}

/// A libxl string member: `None` is libxl's NULL (omitted).
impl Json for Option<String> {
    fn to_json(&self) -> Value {
        match self {
            Some(s) => Value::String(s.clone()),
            None => Value::Null,
        }
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        match v {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            _ => Err(invalid(path, v, "expected a string")),
        }
    }
}

/// libxl's string list (`libxl_string_list`).
impl Json for Vec<String> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().cloned().map(Value::String).collect())
    }
    fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
        let a = v
            .as_array()
            .ok_or_else(|| invalid(path, v, "expected an array of strings"))?;
        a.iter()
            .enumerate()
            .map(|(i, e)| {
                e.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(&format!("{path}[{i}]"), e, "expected a string"))
            })
            .collect()
    }
}

/// Arrays of structs or integers (`Array(T, "num_x")` in the IDL): omitted when empty.
macro_rules! array_json {
    ($($t:ty),*) => {$(
        impl Json for Vec<$t> {
            fn to_json(&self) -> Value {
                Value::Array(self.iter().map(Json::to_json).collect())
            }
            fn from_json(v: &Value, path: &str) -> Result<Self, ConfigError> {
                let a = v.as_array().ok_or_else(|| invalid(path, v, "expected an array"))?;
                a.iter()
                    .enumerate()
                    .map(|(i, e)| <$t>::from_json(e, &format!("{path}[{i}]")))
                    .collect()
            }
        }
    )*};
}
pub(crate) use array_json;
array_json!(u32);

/// Declares a libxl enumeration with its string forms (libxl compares them case-insensitively on input).
macro_rules! libxl_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident default $def:ident {
            $( $(#[$vm:meta])* $variant:ident = $s:literal, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vm])* $variant, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$def
            }
        }

        impl $name {
            /// libxl's string form of the value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $s, )*
                }
            }

            /// Parses libxl's string form (case-insensitive, as `libxl_*_from_string`).
            pub fn from_name(s: &str) -> Option<Self> {
                $( if s.eq_ignore_ascii_case($s) { return Some($name::$variant); } )*
                None
            }
        }

        impl $crate::config::json::Json for $name {
            fn to_json(&self) -> serde_json::Value {
                serde_json::Value::String(self.as_str().to_string())
            }
            fn from_json(
                v: &serde_json::Value,
                path: &str,
            ) -> Result<Self, $crate::config::ConfigError> {
                v.as_str()
                    .and_then($name::from_name)
                    .ok_or_else(|| $crate::config::json::invalid(
                        path,
                        v,
                        concat!("not a ", stringify!($name), " value"),
                    ))
            }
        }
    };
}
pub(crate) use libxl_enum;

/// Declares a libxl struct: each member with its JSON name and, where the IDL gives one, its `init_val`.
macro_rules! libxl_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* $json:literal $field:ident : $ty:ty $(= $def:expr)?, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: libxl_struct!(@def $ty $(, $def)?), )*
                }
            }
        }

        impl $crate::config::json::Json for $name {
            const ALWAYS: bool = true;

            fn to_json(&self) -> serde_json::Value {
                let d = $name::default();
                let mut map = serde_json::Map::new();
                $( $crate::config::json::Field::emit(&self.$field, $json, &d.$field, &mut map); )*
                serde_json::Value::Object(map)
            }

            fn from_json(
                v: &serde_json::Value,
                path: &str,
            ) -> Result<Self, $crate::config::ConfigError> {
                let mut map = $crate::config::json::object(v, path)?;
                let d = $name::default();
                let s = $name {
                    $( $field: $crate::config::json::Field::take(&mut map, $json, path, d.$field)?, )*
                };
                $crate::config::json::no_unknown(&map, path)?;
                Ok(s)
            }
        }
    };
    (@def $ty:ty) => { <$ty as Default>::default() };
    (@def $ty:ty, $def:expr) => { $def };
}
pub(crate) use libxl_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(u8::from_json(&Value::from(255), "$.x").unwrap(), 255);
        let e = u8::from_json(&Value::from(256), "$.x").unwrap_err();
        assert!(e.to_string().contains("$.x"), "{e}");
        assert!(i32::from_json(&Value::from("1"), "$.x").is_err());
        assert_eq!(
            u64::from_json(&Value::from(u64::MAX), "$.x").unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn string_lists_reject_non_strings() {
        let v: Value = serde_json::json!(["a", 1]);
        let e = Vec::<String>::from_json(&v, "$.l").unwrap_err();
        assert!(e.to_string().contains("$.l[1]"), "{e}");
    }
}
