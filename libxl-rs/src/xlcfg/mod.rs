//! xl.cfg(5) domain configuration files: a parser and a writer.
//!
//! The syntax is the one xl and libvirt's `virConf` share: `KEY = VALUE` settings, one per line (a list may
//! span lines), `#` comments, values that are integers, strings in `"` or `'`, or lists `[ v, v ]` of values
//! (lists may nest, as `vnuma` does). Key order is kept, and [`XlConfig::to_text`] writes libvirt's layout:
//! `key = value`, strings in double quotes, lists as `[ "a", "b" ]`.
//!
//! [`DiskSpec`] parses and formats xl-disk-configuration(5) strings and [`VifSpec`] xl-network-configuration(5)
//! strings.

mod disk;
mod vif;

pub use disk::DiskSpec;
pub use vif::VifSpec;

/// Errors from reading an xl.cfg file or one of its device specifications.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XlCfgError {
    /// The file does not follow the xl.cfg syntax.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A setting's value is malformed.
    #[error("line {line}, key '{key}': {message}")]
    Value {
        /// 1-based line number of the setting (0 when unknown).
        line: usize,
        /// The setting's key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string (quotes removed, no escape processing, as xl and libvirt read it).
    Str(String),
    /// A list of values.
    List(Vec<Value>),
}

impl Value {
    fn write(&self, out: &mut String) {
        match self {
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Str(s) => {
                // A string that has no quoting (see `XlConfig::check_writable`) goes out in triple quotes,
                // the form that holds the most.
                let q = quoting(s).unwrap_or(TRIPLE);
                out.push_str(q);
                out.push_str(s);
                out.push_str(q);
            }
            Value::List(items) => {
                out.push_str("[ ");
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push_str(" ]");
            }
        }
    }
}

const TRIPLE: &str = "\"\"\"";

/// How virConf can quote `s`, or why it cannot.
///
/// virConf (libvirt's `virconf.c`, which xl's syntax matches) reads `'...'` and `"..."` up to the closing quote
/// or the end of the line (`\n` or `\r`), and `\"\"\"...\"\"\"` up to the first `\"\"\"`, with no escapes in any
/// form; it copies the text as a C string, so a NUL would cut it short. Like libvirt's writer this prefers
/// double quotes, then single quotes, and uses triple quotes for line breaks and for text holding both kinds
/// of quote.
fn quoting(s: &str) -> Result<&'static str, &'static str> {
    if s.contains('\0') {
        return Err("a string cannot hold a NUL character");
    }
    let one_line = !s.contains(['\n', '\r']);
    if one_line && !s.contains('"') {
        Ok("\"")
    } else if one_line && !s.contains('\'') {
        Ok("'")
    } else if !s.contains(TRIPLE) && !s.ends_with('"') {
        Ok(TRIPLE)
    } else if one_line {
        Err("a string holding both quote characters cannot also hold '\"\"\"' or end with '\"'")
    } else {
        Err("a string with a line break cannot hold '\"\"\"' or end with '\"'")
    }
}

fn check_value(v: &Value) -> Result<(), &'static str> {
    match v {
        Value::Int(_) => Ok(()),
        Value::Str(s) => quoting(s).map(|_| ()),
        Value::List(items) => items.iter().try_for_each(check_value),
    }
}

/// One `key = value` setting with the line it started on (0 for settings created in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// 1-based line number in the parsed text.
    pub line: usize,
}

/// A parsed xl.cfg file: its settings in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XlConfig {
    /// Settings in order; a key set twice keeps its last value in place of the first.
    pub settings: Vec<Setting>,
}

impl XlConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses xl.cfg text.
    pub fn parse(text: &str) -> Result<XlConfig, XlCfgError> {
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
            line: 1,
            depth: 0,
        };
        let mut cfg = XlConfig::new();
        loop {
            p.skip_blank_and_comments();
            if p.pos >= p.s.len() {
                break;
            }
            let line = p.line;
            let key = p.key()?;
            p.skip_inline_ws();
            if p.peek() != Some(b'=') {
                return Err(XlCfgError::Value {
                    line,
                    key,
                    message: "expected '=' after the key".into(),
                });
            }
            p.pos += 1;
            p.skip_inline_ws();
            let value = p.value().map_err(|message| XlCfgError::Value {
                // An unterminated value is reported where it starts.
                line: if message.starts_with("unterminated") {
                    line
                } else {
                    p.line
                },
                key: key.clone(),
                message,
            })?;
            p.skip_inline_ws();
            if p.peek() == Some(b';') {
                p.pos += 1;
                p.skip_inline_ws();
            }
            match p.peek() {
                None | Some(b'\n') | Some(b'#') | Some(b'\r') => {}
                Some(c) => {
                    return Err(XlCfgError::Value {
                        line: p.line,
                        key,
                        message: format!("unexpected '{}' after the value", c as char),
                    })
                }
            }
            cfg.set_at(&key, value, line);
        }
        Ok(cfg)
    }

    fn set_at(&mut self, key: &str, value: Value, line: usize) {
        if let Some(s) = self.settings.iter_mut().find(|s| s.key == key) {
            s.value = value;
            s.line = line;
        } else {
            self.settings.push(Setting {
                key: key.to_string(),
                value,
                line,
            });
        }
    }

    /// Sets a key (replacing an existing value in place, or appending).
    pub fn set(&mut self, key: &str, value: Value) {
        self.set_at(key, value, 0);
    }

    /// Sets a string key.
    pub fn set_str(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, Value::Str(value.into()));
    }

    /// Sets an integer key.
    pub fn set_int(&mut self, key: &str, value: i64) {
        self.set(key, Value::Int(value));
    }

    /// Sets a list of strings.
    pub fn set_str_list(&mut self, key: &str, values: impl IntoIterator<Item = String>) {
        self.set(
            key,
            Value::List(values.into_iter().map(Value::Str).collect()),
        );
    }

    /// The setting for `key`.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// True when `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn err(s: &Setting, message: impl Into<String>) -> XlCfgError {
        XlCfgError::Value {
            line: s.line,
            key: s.key.clone(),
            message: message.into(),
        }
    }

    /// A string value; an integer or list is an error.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, XlCfgError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => match &s.value {
                Value::Str(v) => Ok(Some(v)),
                _ => Err(Self::err(s, "expected a string")),
            },
        }
    }

    /// An integer value; a string holding a decimal integer is accepted as xl does.
    pub fn get_int(&self, key: &str) -> Result<Option<i64>, XlCfgError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => match &s.value {
                Value::Int(v) => Ok(Some(*v)),
                Value::Str(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Self::err(s, "expected an integer")),
                Value::List(_) => Err(Self::err(s, "expected an integer")),
            },
        }
    }

    /// A boolean: an integer (non-zero is true) or the strings accepted by xl (`1`, `0`, `true`, `false`).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, XlCfgError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => match &s.value {
                Value::Int(v) => Ok(Some(*v != 0)),
                Value::Str(v) => match v.as_str() {
                    "1" | "true" | "yes" | "on" => Ok(Some(true)),
                    "0" | "false" | "no" | "off" => Ok(Some(false)),
                    _ => Err(Self::err(s, "expected a boolean")),
                },
                Value::List(_) => Err(Self::err(s, "expected a boolean")),
            },
        }
    }

    /// A list of strings; a single string is accepted as a one-element list.
    pub fn get_str_list(&self, key: &str) -> Result<Option<Vec<&str>>, XlCfgError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => match &s.value {
                Value::Str(v) => Ok(Some(vec![v.as_str()])),
                Value::List(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::Str(v) => Ok(v.as_str()),
                        _ => Err(Self::err(s, "expected a list of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Value::Int(_) => Err(Self::err(s, "expected a list of strings")),
            },
        }
    }

    /// A value error for `key`, for callers validating a setting's content.
    pub fn value_error(&self, key: &str, message: impl Into<String>) -> XlCfgError {
        XlCfgError::Value {
            line: self.get(key).map_or(0, |s| s.line),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks that every string value can be written in virConf syntax, so that [`XlConfig::to_text`] reads
    /// back as the same configuration. Everything [`XlConfig::parse`] accepts passes; values set in memory
    /// may not (a NUL, or text holding both quote characters that also ends with `"` or holds `\"\"\"`).
    pub fn check_writable(&self) -> Result<(), XlCfgError> {
        for s in &self.settings {
            check_value(&s.value).map_err(|message| XlCfgError::Value {
                line: s.line,
                key: s.key.clone(),
                message: message.to_string(),
            })?;
        }
        Ok(())
    }

    /// Formats the configuration in libvirt's layout. A string that [`XlConfig::check_writable`] rejects is
    /// written in triple quotes and will not read back unchanged; call that first for values not parsed.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.settings {
            out.push_str(&s.key);
            out.push_str(" = ");
            s.value.write(&mut out);
            out.push('\n');
        }
        out
    }
}

/// The deepest value nesting accepted (`vnuma`, a list of lists of strings, needs three).
const MAX_VALUE_DEPTH: usize = 8;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_inline_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_comment(&mut self) {
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.pos += 1;
            }
        }
    }

    fn skip_blank_and_comments(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                Some(b'#') => self.skip_comment(),
                _ => return,
            }
        }
    }

    fn key(&mut self) -> Result<String, XlCfgError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = if self.pos == start {
                c.is_ascii_alphabetic() || c == b'_'
            } else {
                c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'
            };
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            let c = self.peek().map_or('?', |c| c as char);
            return Err(XlCfgError::Syntax {
                line: self.line,
                message: format!("expected a key, found '{c}'"),
            });
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<Value, String> {
        if self.depth >= MAX_VALUE_DEPTH {
            return Err(format!("lists nest deeper than {MAX_VALUE_DEPTH} levels"));
        }
        self.depth += 1;
        let r = self.value_at_depth();
        self.depth -= 1;
        r
    }

    fn value_at_depth(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                let triple = self.s[self.pos..].starts_with(&[q, q, q]);
                let delim: Vec<u8> = if triple { vec![q, q, q] } else { vec![q] };
                self.pos += delim.len();
                let start = self.pos;
                loop {
                    if self.pos >= self.s.len() {
                        return Err("unterminated string".into());
                    }
                    if self.s[self.pos..].starts_with(&delim) {
                        break;
                    }
                    match self.s[self.pos] {
                        // virConf ends a one-line string at the end of the line, `\r` included.
                        b'\n' | b'\r' if !triple => return Err("unterminated string".into()),
                        b'\n' => self.line += 1,
                        0 => return Err("a string cannot hold a NUL character".into()),
                        _ => {}
                    }
                    self.pos += 1;
                }
                let v = std::str::from_utf8(&self.s[start..self.pos])
                    .map_err(|_| "string is not valid UTF-8".to_string())?
                    .to_string();
                // `'''...'''` (accepted beyond virConf) can hold text no virConf quoting can; refuse
                // what could not be written back.
                quoting(&v)?;
                self.pos += delim.len();
                Ok(Value::Str(v))
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank_and_comments();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        None => return Err("unterminated list".into()),
                        _ => {}
                    }
                    items.push(self.value()?);
                    self.skip_blank_and_comments();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        None => return Err("unterminated list".into()),
                        Some(c) => {
                            return Err(format!(
                                "expected ',' or ']' in list, found '{}'",
                                c as char
                            ))
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                let start = self.pos;
                self.pos += 1;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let v = if let Some(h) = t.strip_prefix("0x") {
                    i64::from_str_radix(h, 16)
                } else {
                    t.parse::<i64>()
                };
                v.map(Value::Int)
                    .map_err(|_| format!("'{t}' is not a valid integer"))
            }
            Some(c) => Err(format!("expected a value, found '{}'", c as char)),
            None => Err("expected a value, found end of file".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_write() {
        let text = "# c\nname = \"g\" # x\nmemory=512\nvif = [ 'mac=1',\n  \"b\", ]\nvnuma = [ [ \"a\", \"b\" ], [ \"c\" ] ]\n";
        let c = XlConfig::parse(text).unwrap();
        assert_eq!(c.get_str("name").unwrap(), Some("g"));
        assert_eq!(c.get_int("memory").unwrap(), Some(512));
        assert_eq!(c.get_str_list("vif").unwrap().unwrap(), vec!["mac=1", "b"]);
        assert_eq!(c.get("vif").unwrap().line, 4);
        assert_eq!(
            c.to_text(),
            "name = \"g\"\nmemory = 512\nvif = [ \"mac=1\", \"b\" ]\nvnuma = [ [ \"a\", \"b\" ], [ \"c\" ] ]\n"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("x = {}1{}\n", "[".repeat(100), "]".repeat(100));
        let e = XlConfig::parse(&deep).unwrap_err();
        assert!(e.to_string().contains("nest deeper"), "{e}");
        assert!(XlConfig::parse("x = [ [ [ \"a\" ] ] ]\n").is_ok());
    }

    #[test]
    fn quoting_follows_virconf() {
        let mut c = XlConfig::new();
        c.set_str("a", "say \"hi\"");
        c.set_str("b", "two\nlines");
        c.set_int("c", -3);
        c.set("d", Value::List(Vec::new()));
        let text = c.to_text();
        assert_eq!(
            text,
            "a = 'say \"hi\"'\nb = \"\"\"two\nlines\"\"\"\nc = -3\nd = [  ]\n"
        );
        assert_eq!(XlConfig::parse(&text).unwrap(), {
            let mut p = c.clone();
            for (i, s) in p.settings.iter_mut().enumerate() {
                s.line = [1, 2, 4, 5][i];
            }
            p
        });
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = XlConfig::parse("name = \"g\"\nmemory = 5x12\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, key 'memory': '5x12' is not a valid integer"
        );
        let e = XlConfig::parse("a = 1\n\nvif = [ \"x\" \"y\" ]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, key 'vif': expected ',' or ']' in list, found '\"'"
        );
        let e = XlConfig::parse("name = \"unterminated\n").unwrap_err();
        assert!(e.to_string().contains("key 'name'"), "{e}");
        let e = XlConfig::parse("= 3\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: expected a key, found '='");
        let e = XlConfig::parse("memory 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, key 'memory': expected '=' after the key"
        );
        let c = XlConfig::parse("x = \"abc\"\n").unwrap();
        assert_eq!(
            c.get_int("x").unwrap_err().to_string(),
            "line 1, key 'x': expected an integer"
        );
    }
}
