//! Shared XML infrastructure for every libvirt object model in this crate.
//!
//! Parsing produces a small element tree ([`Element`]); models read it through a [`Cursor`] that records which
//! attributes, children and text were consumed, so that [`Cursor::finish`] can reject anything the model does not
//! know, with an error naming the XPath-like location of the offending node (for example
//! `/domain/devices/disk[2]/target/@bus`). Formatting builds an [`Element`] tree and serialises it with
//! [`Element::to_xml`], which reproduces libvirt's own formatting: two-space indentation, attributes quoted with
//! `'`, `<foo/>` for empty elements, and libvirt's escaping of `<`, `>`, `&`, `'` and `"`.

use std::str::FromStr;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::Error;

/// The deepest element nesting accepted (libxml2's default limit is 256 as well); it bounds the recursion of
/// formatting and dropping a tree built from untrusted input.
pub const MAX_DEPTH: usize = 256;

/// A node of an element's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entity references already resolved).
    Text(String),
}

/// An XML element: its qualified name (with any namespace prefix as written), attributes in document order, and
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Qualified name, for example `disk` or `xen:commandline`.
    pub name: String,
    /// Attributes in document order, names qualified as written.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text in document order.
    pub children: Vec<Node>,
}

impl Element {
    /// A new element with no attributes or content.
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: appends an attribute.
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.attrs.push((name.into(), value.to_string()));
        self
    }

    /// Builder: appends an attribute when `value` is `Some`.
    #[must_use]
    pub fn opt_attr<V: ToString>(mut self, name: &str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.attrs.push((name.to_string(), v.to_string()));
        }
        self
    }

    /// Builder: appends a child element.
    #[must_use]
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends a child element when `child` is `Some`.
    #[must_use]
    pub fn opt_child(mut self, child: Option<Element>) -> Self {
        if let Some(c) = child {
            self.children.push(Node::Element(c));
        }
        self
    }

    /// Builder: appends text content.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Appends a child element in place.
    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends an attribute in place.
    pub fn push_attr(&mut self, name: impl Into<String>, value: impl ToString) {
        self.attrs.push((name.into(), value.to_string()));
    }

    /// The value of an attribute, if present.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Iterates over the child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated text content directly inside this element.
    pub fn text_content(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// True when the element has neither children nor text.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Parses a whole document and returns its root element.
    ///
    /// Comments, processing instructions, the XML declaration and DOCTYPE are skipped. Whitespace-only text
    /// between child elements is dropped; other text is kept verbatim.
    pub fn parse(xml: &str) -> Result<Element, Error> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().trim_text(false);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let pos = reader.buffer_position();
            let ev = reader.read_event().map_err(|e| Error::Malformed {
                position: pos,
                message: e.to_string(),
            })?;
            match ev {
                Event::Start(start) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(malformed(
                            pos,
                            &format!("elements nest deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    let el = start_element(&start, pos, stack.last())?;
                    if root.is_some() && stack.is_empty() {
                        return Err(malformed(pos, "content after the root element"));
                    }
                    stack.push(el);
                }
                Event::Empty(start) => {
                    let el = start_element(&start, pos, stack.last())?.el;
                    match stack.last_mut() {
                        Some(parent) => parent.el.children.push(Node::Element(el)),
                        None if root.is_none() => root = Some(el),
                        None => return Err(malformed(pos, "content after the root element")),
                    }
                }
                Event::End(_) => {
                    let el = stack
                        .pop()
                        .ok_or_else(|| malformed(pos, "unexpected end tag"))?;
                    let el = normalise_whitespace(el.el);
                    match stack.last_mut() {
                        Some(parent) => parent.el.children.push(Node::Element(el)),
                        None => root = Some(el),
                    }
                }
                Event::Text(t) => {
                    let text = t.unescape().map_err(|e| Error::Malformed {
                        position: pos,
                        message: e.to_string(),
                    })?;
                    check_chars(&text, pos, || text_place(stack.last()))?;
                    match stack.last_mut() {
                        Some(parent) => push_text(&mut parent.el, &text),
                        None if text.trim().is_empty() => {}
                        None => return Err(malformed(pos, "text outside the root element")),
                    }
                }
                Event::CData(t) => {
                    let text = String::from_utf8(t.into_inner().into_owned())
                        .map_err(|_| malformed(pos, "CDATA section is not UTF-8"))?;
                    check_chars(&text, pos, || text_place(stack.last()))?;
                    match stack.last_mut() {
                        Some(parent) => push_text(&mut parent.el, &text),
                        None => return Err(malformed(pos, "CDATA outside the root element")),
                    }
                }
                Event::Comment(c) => {
                    // Skipped, but a comment holding a character XML forbids still makes the document
                    // not well-formed.
                    let raw = String::from_utf8_lossy(c.as_ref());
                    check_chars(&raw, pos, || match stack.last() {
                        Some(parent) => format!("a comment in {}", parent.path),
                        None => "a comment outside the root element".to_string(),
                    })?;
                }
                Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(malformed(
                xml.len() as u64,
                "document ends inside an element",
            ));
        }
        root.ok_or_else(|| malformed(0, "document has no root element"))
    }

    /// Formats this element as a document fragment in libvirt's style, ending with a newline.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    /// Writes this element at indentation level `level` (two spaces per level), ending with a newline.
    pub fn write(&self, out: &mut String, level: usize) {
        indent(out, level);
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>\n");
            return;
        }
        let has_elements = self.children.iter().any(|n| matches!(n, Node::Element(_)));
        out.push('>');
        if !has_elements {
            for n in &self.children {
                if let Node::Text(t) = n {
                    escape_into(out, t);
                }
            }
        } else {
            out.push('\n');
            for n in &self.children {
                match n {
                    Node::Element(e) => e.write(out, level + 1),
                    Node::Text(t) => {
                        if !t.trim().is_empty() {
                            indent(out, level + 1);
                            escape_into(out, t.trim());
                            out.push('\n');
                        }
                    }
                }
            }
            indent(out, level);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push_str(">\n");
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// Escapes `s` as libvirt's `virBufferEscapeString` does: the five XML special characters become entity
/// references and control characters other than tab, newline and carriage return are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
}

fn malformed(position: u64, message: &str) -> Error {
    Error::Malformed {
        position,
        message: message.to_string(),
    }
}

/// Whether `c` is in XML 1.0's `Char` production: tab, newline, carriage return, U+0020..U+D7FF,
/// U+E000..U+FFFD and U+10000..U+10FFFF (Rust's `char` already excludes the surrogates).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Rejects text holding a character outside XML 1.0's `Char` production (libxml2 does too: such a
/// document is not well-formed, and the writer could not reproduce it). `place` names where the text is.
fn check_chars(text: &str, pos: u64, place: impl FnOnce() -> String) -> Result<(), Error> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        None => Ok(()),
        Some(c) => Err(Error::Malformed {
            position: pos,
            message: format!(
                "character U+{:04X} is not allowed in XML 1.0 (in {})",
                c as u32,
                place()
            ),
        }),
    }
}

fn text_place(parent: Option<&Open>) -> String {
    match parent {
        Some(parent) => format!("the text of {}", parent.path),
        None => "text outside the root element".to_string(),
    }
}

fn start_element(start: &BytesStart<'_>, pos: u64, parent: Option<&Open>) -> Result<Open, Error> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|_| malformed(pos, "element name is not UTF-8"))?
        .to_string();
    // The element's path as `Cursor` names it: `[n]` once an earlier sibling has the same name.
    let path = match parent {
        None => format!("/{name}"),
        Some(parent) => {
            let earlier = parent
                .el
                .children
                .iter()
                .filter(|n| matches!(n, Node::Element(e) if e.name == name))
                .count();
            if earlier == 0 {
                format!("{}/{}", parent.path, name)
            } else {
                format!("{}/{}[{}]", parent.path, name, earlier + 1)
            }
        }
    };
    check_chars(&name, pos, || format!("the element name at {path}"))?;
    let mut el = Element::new(name);
    for attr in start.attributes() {
        let attr = attr.map_err(|e| Error::Malformed {
            position: pos,
            message: e.to_string(),
        })?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| malformed(pos, "attribute name is not UTF-8"))?
            .to_string();
        check_chars(&key, pos, || format!("an attribute name of {path}"))?;
        let value = attr.unescape_value().map_err(|e| Error::Malformed {
            position: pos,
            message: e.to_string(),
        })?;
        check_chars(&value, pos, || format!("{path}/@{key}"))?;
        if el.attrs.iter().any(|(k, _)| *k == key) {
            return Err(Error::Malformed {
                position: pos,
                message: format!("duplicate attribute '{key}'"),
            });
        }
        el.attrs.push((key, value.into_owned()));
    }
    Ok(Open { el, path })
}

/// An element being parsed, with its path for error messages.
struct Open {
    el: Element,
    path: String,
}

fn push_text(parent: &mut Element, text: &str) {
    if let Some(Node::Text(prev)) = parent.children.last_mut() {
        prev.push_str(text);
    } else {
        parent.children.push(Node::Text(text.to_string()));
    }
}

/// Drops whitespace-only text nodes of an element that has child elements (indentation).
fn normalise_whitespace(mut el: Element) -> Element {
    if el.children.iter().any(|n| matches!(n, Node::Element(_))) {
        el.children
            .retain(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()));
    }
    el
}

/// A reading position in a parsed tree that tracks what the model consumed.
///
/// Every accessor marks what it reads; [`Cursor::finish`] then fails on the first attribute, child element or
/// text the model did not read, naming its path.
#[derive(Debug)]
pub struct Cursor<'a> {
    el: &'a Element,
    path: String,
    used_attrs: Vec<bool>,
    used_children: Vec<bool>,
    text_used: bool,
}

impl<'a> Cursor<'a> {
    /// A cursor on a root element; its path is `/name`.
    pub fn root(el: &'a Element) -> Self {
        Self::with_path(el, format!("/{}", el.name))
    }

    fn with_path(el: &'a Element, path: String) -> Self {
        Cursor {
            el,
            path,
            used_attrs: vec![false; el.attrs.len()],
            used_children: vec![false; el.children.len()],
            text_used: false,
        }
    }

    /// The element under the cursor.
    pub fn element(&self) -> &'a Element {
        self.el
    }

    /// The element's qualified name.
    pub fn name(&self) -> &'a str {
        &self.el.name
    }

    /// The path of the element, for example `/domain/devices/disk[2]`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of an attribute of this element.
    pub fn attr_path(&self, name: &str) -> String {
        format!("{}/@{}", self.path, name)
    }

    /// Reads an optional attribute.
    pub fn attr(&mut self, name: &str) -> Option<&'a str> {
        let el = self.el;
        for (i, (k, v)) in el.attrs.iter().enumerate() {
            if k == name {
                self.used_attrs[i] = true;
                return Some(v.as_str());
            }
        }
        None
    }

    /// Reads a required attribute.
    pub fn req_attr(&mut self, name: &str) -> Result<&'a str, Error> {
        self.attr(name).ok_or_else(|| Error::MissingAttribute {
            path: self.attr_path(name),
        })
    }

    /// Reads an optional attribute and converts it with `f`, whose error text becomes the reason.
    pub fn attr_with<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => f(v).map(Some).map_err(|reason| Error::InvalidValue {
                path: self.attr_path(name),
                value: v.to_string(),
                reason,
            }),
        }
    }

    /// Reads an optional attribute and parses it with [`FromStr`].
    pub fn attr_parse<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.attr_with(name, |v| v.parse::<T>().map_err(|e| e.to_string()))
    }

    /// Reads a required attribute and parses it with [`FromStr`].
    pub fn req_attr_parse<T: FromStr>(&mut self, name: &str) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.attr_parse(name)?
            .ok_or_else(|| Error::MissingAttribute {
                path: self.attr_path(name),
            })
    }

    /// Reads an optional `yes`/`no` attribute.
    pub fn attr_yes_no(&mut self, name: &str) -> Result<Option<bool>, Error> {
        self.attr_with(name, parse_yes_no)
    }

    /// Reads an optional `on`/`off` attribute.
    pub fn attr_on_off(&mut self, name: &str) -> Result<Option<bool>, Error> {
        self.attr_with(name, parse_on_off)
    }

    fn child_path(&self, index: usize) -> String {
        let el = self.el;
        let Node::Element(child) = &el.children[index] else {
            return self.path.clone();
        };
        let same: Vec<usize> = el
            .children
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n, Node::Element(e) if e.name == child.name))
            .map(|(i, _)| i)
            .collect();
        if same.len() > 1 {
            let pos = same.iter().position(|&i| i == index).unwrap_or(0) + 1;
            format!("{}/{}[{}]", self.path, child.name, pos)
        } else {
            format!("{}/{}", self.path, child.name)
        }
    }

    /// Reads the single optional child element `name`; a second one is an error.
    pub fn child(&mut self, name: &str) -> Result<Option<Cursor<'a>>, Error> {
        let mut found: Option<usize> = None;
        let el = self.el;
        for (i, n) in el.children.iter().enumerate() {
            if let Node::Element(e) = n {
                if e.name == name {
                    if found.is_some() {
                        return Err(Error::Duplicate {
                            path: self.child_path(i),
                        });
                    }
                    found = Some(i);
                }
            }
        }
        Ok(found.map(|i| self.take_child(i)))
    }

    /// Reads the required child element `name`.
    pub fn req_child(&mut self, name: &str) -> Result<Cursor<'a>, Error> {
        let path = format!("{}/{}", self.path, name);
        self.child(name)?.ok_or(Error::MissingElement { path })
    }

    /// Reads every child element called `name`, in document order.
    pub fn children(&mut self, name: &str) -> Vec<Cursor<'a>> {
        let el = self.el;
        let idx: Vec<usize> = el
            .children
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n, Node::Element(e) if e.name == name))
            .map(|(i, _)| i)
            .collect();
        idx.into_iter().map(|i| self.take_child(i)).collect()
    }

    /// Reads every remaining child element, in document order, whatever its name.
    pub fn all_children(&mut self) -> Vec<Cursor<'a>> {
        let el = self.el;
        let idx: Vec<usize> = el
            .children
            .iter()
            .enumerate()
            .filter(|(i, n)| matches!(n, Node::Element(_)) && !self.used_children[*i])
            .map(|(i, _)| i)
            .collect();
        idx.into_iter().map(|i| self.take_child(i)).collect()
    }

    fn take_child(&mut self, i: usize) -> Cursor<'a> {
        self.used_children[i] = true;
        let path = self.child_path(i);
        let el = self.el;
        match &el.children[i] {
            Node::Element(e) => Cursor::with_path(e, path),
            Node::Text(_) => Cursor::with_path(el, path),
        }
    }

    /// Reads the element's text content (empty string when there is none).
    pub fn text(&mut self) -> String {
        self.text_used = true;
        for (i, n) in self.el.children.iter().enumerate() {
            if matches!(n, Node::Text(_)) {
                self.used_children[i] = true;
            }
        }
        self.el.text_content()
    }

    /// Reads the text of a leaf element and checks that nothing else is in it.
    pub fn text_finish(mut self) -> Result<String, Error> {
        let t = self.text();
        self.finish()?;
        Ok(t)
    }

    /// Reads the element's text and parses it with `f`, whose error text becomes the reason.
    pub fn text_with<T>(&mut self, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, Error> {
        let t = self.text();
        f(t.trim()).map_err(|reason| Error::InvalidValue {
            path: self.path.clone(),
            value: t.clone(),
            reason,
        })
    }

    /// Reads the element's text and parses it with [`FromStr`].
    pub fn text_parse<T: FromStr>(&mut self) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.text_with(|t| t.parse::<T>().map_err(|e| e.to_string()))
    }

    /// An "invalid value" error for an attribute of this element.
    pub fn invalid_attr(&self, name: &str, value: &str, reason: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.attr_path(name),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// An "invalid value" error for this element.
    pub fn invalid(&self, value: &str, reason: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.path.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Marks the whole subtree as consumed (for opaque content such as `<metadata>`).
    pub fn consume_all(&mut self) {
        self.used_attrs.iter_mut().for_each(|u| *u = true);
        self.used_children.iter_mut().for_each(|u| *u = true);
        self.text_used = true;
    }

    /// Checks that everything under the cursor was consumed.
    pub fn finish(self) -> Result<(), Error> {
        for (i, used) in self.used_attrs.iter().enumerate() {
            if !used {
                return Err(Error::UnknownAttribute {
                    path: self.attr_path(&self.el.attrs[i].0),
                });
            }
        }
        for (i, used) in self.used_children.iter().enumerate() {
            if *used {
                continue;
            }
            match &self.el.children[i] {
                Node::Element(_) => {
                    return Err(Error::UnknownElement {
                        path: self.child_path(i),
                    })
                }
                Node::Text(t) if !t.trim().is_empty() => {
                    return Err(Error::UnexpectedText {
                        path: self.path.clone(),
                    })
                }
                Node::Text(_) => {}
            }
        }
        Ok(())
    }
}

/// Parses libvirt's `yes`/`no`.
pub fn parse_yes_no(v: &str) -> Result<bool, String> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("expected 'yes' or 'no'".to_string()),
    }
}

/// Parses libvirt's `on`/`off`.
pub fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected 'on' or 'off'".to_string()),
    }
}

/// Formats a boolean as `yes`/`no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Formats a boolean as `on`/`off`.
pub fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Parses an unsigned integer the way libvirt's `virStrToLong_ui` family does (decimal, or `0x` hexadecimal).
pub fn parse_uint(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let r = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        v.parse::<u64>()
    };
    r.map_err(|_| "expected an unsigned integer".to_string())
}

/// Scales `value` in `unit` to KiB as libvirt's `virScaleInteger` does for memory (`b`, `bytes`, `k`, `KiB`,
/// `KB`, `M`, `MiB`, `MB`, ... `E`, `EiB`, `EB`). Fractions of a KiB round up.
pub fn scale_to_kib(value: u64, unit: Option<&str>) -> Result<u64, String> {
    let unit = unit.unwrap_or("KiB");
    let bytes_per: u128 = match unit {
        "b" | "byte" | "bytes" | "B" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1024,
        "MB" => 1000u128.pow(2),
        "m" | "M" | "MiB" => 1024u128.pow(2),
        "GB" => 1000u128.pow(3),
        "g" | "G" | "GiB" => 1024u128.pow(3),
        "TB" => 1000u128.pow(4),
        "t" | "T" | "TiB" => 1024u128.pow(4),
        "PB" => 1000u128.pow(5),
        "p" | "P" | "PiB" => 1024u128.pow(5),
        "EB" => 1000u128.pow(6),
        "e" | "E" | "EiB" => 1024u128.pow(6),
        other => return Err(format!("unknown memory unit '{other}'")),
    };
    let bytes = u128::from(value) * bytes_per;
    let kib = bytes.div_ceil(1024);
    u64::try_from(kib).map_err(|_| "memory size is too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let doc = "<a x='1' y=\"&lt;&apos;\">\n  <b/>\n  <c>t&amp;x</c>\n</a>\n";
        let el = Element::parse(doc).unwrap();
        assert_eq!(el.get_attr("y"), Some("<'"));
        assert_eq!(
            el.to_xml(),
            "<a x='1' y='&lt;&apos;'>\n  <b/>\n  <c>t&amp;x</c>\n</a>\n"
        );
    }

    #[test]
    fn cursor_reports_unknown_paths() {
        let el = Element::parse("<d><x/><disk/><disk><t bus='a'/></disk></d>").unwrap();
        let mut c = Cursor::root(&el);
        let mut disks = c.children("disk");
        let mut t = disks[1].req_child("t").unwrap();
        assert_eq!(t.path(), "/d/disk[2]/t");
        let err = Cursor::root(t.element()).finish().unwrap_err();
        assert!(err.to_string().contains("/t/@bus"), "{err}");
        assert_eq!(t.attr("bus"), Some("a"));
        t.finish().unwrap();
        let err = c.finish().unwrap_err();
        assert_eq!(err.to_string(), "unknown element /d/x");
    }

    #[test]
    fn malformed_is_error() {
        assert!(matches!(
            Element::parse("<a><b></a>"),
            Err(Error::Malformed { .. })
        ));
        assert!(Element::parse("").is_err());
        assert!(Element::parse("<a/><b/>").is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        let e = Element::parse(&deep).unwrap_err();
        assert!(e.to_string().contains("nest deeper"), "{e}");
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(Element::parse(&ok).is_ok());
    }

    #[test]
    fn memory_units() {
        assert_eq!(scale_to_kib(1, Some("MiB")).unwrap(), 1024);
        assert_eq!(scale_to_kib(1, Some("GB")).unwrap(), 976563);
        assert_eq!(scale_to_kib(5, None).unwrap(), 5);
        assert!(scale_to_kib(5, Some("furlongs")).is_err());
    }
}
