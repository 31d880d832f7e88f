//! Regression tests for xl.cfg quoting (fuzzer finding `xl_cfg/crash-1b5f7476`): parse -> write -> parse is a
//! fixed point for every accepted input, and what virConf cannot represent is refused.

use libxl_rs::xlcfg::{Value, XlConfig};

/// The fuzzer's reproducer: a triple-quoted value holding `"`, `'` and NULs, which the writer used to put
/// in single quotes.
const REPRODUCER: &[u8] = b"l-=\"\"\"~\"emxcam\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00 \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00/=\"\"\"";

fn round_trips(text: &str) -> XlConfig {
    let cfg = XlConfig::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    cfg.check_writable().unwrap();
    let written = cfg.to_text();
    let again = XlConfig::parse(&written).unwrap_or_else(|e| panic!("{written:?}: {e}"));
    let strip = |c: &XlConfig| {
        c.settings
            .iter()
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&again), strip(&cfg), "{written:?}");
    assert_eq!(again.to_text(), written);
    cfg
}

#[test]
fn reproducer_nul_is_refused() {
    let text = std::str::from_utf8(REPRODUCER).unwrap();
    let e = XlConfig::parse(text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1, key 'l-': a string cannot hold a NUL character"
    );
    // Without the NULs it holds both quote characters on one line: written in triple quotes.
    let cfg = round_trips(&text.replace('\0', ""));
    assert_eq!(cfg.to_text(), "l- = \"\"\"~\"emxcam '/=\"\"\"\n");
}

#[test]
fn quoting_choices_read_back() {
    let cases = [
        ("a = \"x'y\"\n", "a = \"x'y\"\n"),
        ("a = 'x\"y'\n", "a = 'x\"y'\n"),
        ("a = \"\"\"x'\"y\"\"\"\n", "a = \"\"\"x'\"y\"\"\"\n"),
        ("a = \"\"\"\"x'\"\"\"\n", "a = \"\"\"\"x'\"\"\"\n"),
        ("a = \"\"\"x\ny\"\"\"\n", "a = \"\"\"x\ny\"\"\"\n"),
        ("a = \"\"\"x\ry\"\"\"\n", "a = \"\"\"x\ry\"\"\"\n"),
        ("a = \"\"\"plain\"\"\"\n", "a = \"plain\"\n"),
        (
            "a = [ '\"', \"'\", \"\"\"'\"x\"\"\" ]\n",
            "a = [ '\"', \"'\", \"\"\"'\"x\"\"\" ]\n",
        ),
        ("a = '''x'''\n", "a = \"x\"\n"),
        ("a = '''x\"'y'''\n", "a = \"\"\"x\"'y\"\"\"\n"),
    ];
    for (text, written) in cases {
        assert_eq!(round_trips(text).to_text(), written, "{text:?}");
    }
}

#[test]
fn what_virconf_cannot_hold_is_refused() {
    // virConf ends a one-line string at a carriage return as at a newline.
    let e = XlConfig::parse("a = \"x\ry\"\n").unwrap_err();
    assert_eq!(e.to_string(), "line 1, key 'a': unterminated string");
    // `'''` strings are read, but not ones no virConf quoting can write back.
    let e = XlConfig::parse("a = '''x\"' \"\"\" '''\n").unwrap_err();
    assert!(e.to_string().contains("cannot also hold"), "{e}");
    let e = XlConfig::parse("a = '''x'\"'''\n").unwrap_err();
    assert!(e.to_string().contains("end with"), "{e}");
    let e = XlConfig::parse("a = '''x\n\"\"\"'''\n").unwrap_err();
    assert!(e.to_string().contains("line break"), "{e}");
    // Values set in memory are checked on request.
    let mut c = XlConfig::new();
    c.set_str("ok", "a'b\"c");
    c.check_writable().unwrap();
    c.set("bad", Value::List(vec![Value::Str("a'b\"".into())]));
    let e = c.check_writable().unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 0, key 'bad': a string holding both quote characters cannot also hold '\"\"\"' or end with '\"'"
    );
    c.set_str("bad", "nul\0");
    assert!(c.check_writable().is_err());
}
