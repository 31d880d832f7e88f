//! Flattened device trees (the devicetree specification's `.dtb` format, version 17): a reader for the tree a
//! boot loader hands the hypervisor on aarch64, and a small writer for the tree the domain builder gives a guest.
//!
//! Written here rather than taken from a crate: the reader needs only path and `compatible` look-ups over a
//! borrowed byte slice, the writer must run without an allocator, and both sides (hypervisor and toolstack)
//! share this crate already. All multi-byte values in a tree are big-endian.

/// The header magic.
pub const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Header size (version 17).
pub const HEADER: usize = 40;
/// Deepest node nesting the reader follows.
pub const MAX_DEPTH: usize = 16;

/// Why a tree cannot be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// The header's magic is not [`MAGIC`].
    BadMagic(u32),
    /// The header or a block points outside the tree.
    Truncated,
    /// An unknown token, or nodes nested deeper than [`MAX_DEPTH`].
    BadStructure(u32),
    /// The writer's buffer is too small.
    NoSpace,
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "device tree has bad magic {m:#x}"),
            Self::Truncated => f.write_str("device tree is truncated"),
            Self::BadStructure(at) => {
                write!(f, "device tree structure is malformed at offset {at:#x}")
            }
            Self::NoSpace => f.write_str("device tree does not fit its buffer"),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads `cells` 32-bit cells at the start of `b` as one number.
pub fn read_cells(b: &[u8], cells: u32) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..cells as usize {
        v = (v << 32) | u64::from(be32(b, 4 * i)?);
    }
    Some(v)
}

/// A device tree borrowed from memory.
#[derive(Debug, Clone, Copy)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    total: usize,
}

/// One property as the visitor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Prop<'p, 'a> {
    /// The node's index in tree order (the root is 0), to tell nodes with equal names apart.
    pub node: usize,
    /// The node path's names from the root's children down (`["cpus", "cpu@0"]`).
    pub path: &'p [&'a str],
    /// The property name.
    pub name: &'a str,
    /// The raw value.
    pub value: &'a [u8],
}

/// True when node name `have` (possibly with a unit address) matches `want` (a unit address is compared only
/// when `want` has one).
fn name_matches(have: &str, want: &str) -> bool {
    if want.contains('@') {
        have == want
    } else {
        have.split('@').next() == Some(want)
    }
}

fn cstr(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&b[..end]).ok()
}

impl<'a> Fdt<'a> {
    /// The size the header at the start of `b` claims, to learn how much to map before calling [`Fdt::new`].
    pub fn total_size(b: &[u8]) -> Result<usize, FdtError> {
        let magic = be32(b, 0).ok_or(FdtError::Truncated)?;
        if magic != MAGIC {
            return Err(FdtError::BadMagic(magic));
        }
        Ok(be32(b, 4).ok_or(FdtError::Truncated)? as usize)
    }

    /// Checks the header of the tree at the start of `b`.
    pub fn new(b: &'a [u8]) -> Result<Self, FdtError> {
        let total = Self::total_size(b)?;
        let b = b.get(..total).ok_or(FdtError::Truncated)?;
        let field = |i: usize| {
            be32(b, 4 * i)
                .map(|v| v as usize)
                .ok_or(FdtError::Truncated)
        };
        let (off_struct, off_strings) = (field(2)?, field(3)?);
        let (size_strings, size_struct) = (field(8)?, field(9)?);
        let structs = b
            .get(
                off_struct
                    ..off_struct
                        .checked_add(size_struct)
                        .ok_or(FdtError::Truncated)?,
            )
            .ok_or(FdtError::Truncated)?;
        let strings = b
            .get(
                off_strings
                    ..off_strings
                        .checked_add(size_strings)
                        .ok_or(FdtError::Truncated)?,
            )
            .ok_or(FdtError::Truncated)?;
        Ok(Self {
            structs,
            strings,
            total,
        })
    }

    /// The tree's size in bytes.
    pub fn size(&self) -> usize {
        self.total
    }

    /// Calls `f` for every property of every node, in tree order.
    pub fn for_each_prop(&self, mut f: impl FnMut(&Prop<'_, 'a>)) -> Result<(), FdtError> {
        let s: &'a [u8] = self.structs;
        let mut names: [&'a str; MAX_DEPTH] = [""; MAX_DEPTH];
        let mut depth = 0usize;
        let mut at = 0usize;
        let mut node = 0usize;
        let mut nodes = 0usize;
        loop {
            let bad = FdtError::BadStructure(at as u32);
            let token = be32(s, at).ok_or(FdtError::Truncated)?;
            at += 4;
            match token {
                BEGIN_NODE => {
                    let name = s.get(at..).and_then(cstr).ok_or(bad)?;
                    at = (at + name.len() + 1 + 3) & !3;
                    if depth >= MAX_DEPTH {
                        return Err(bad);
                    }
                    names[depth] = name;
                    depth += 1;
                    node = nodes;
                    nodes += 1;
                }
                END_NODE => depth = depth.checked_sub(1).ok_or(bad)?,
                PROP => {
                    let len = be32(s, at).ok_or(FdtError::Truncated)? as usize;
                    let nameoff = be32(s, at + 4).ok_or(FdtError::Truncated)? as usize;
                    at += 8;
                    let value = s.get(at..at.checked_add(len).ok_or(bad)?).ok_or(bad)?;
                    at = (at + len + 3) & !3;
                    let strings: &'a [u8] = self.strings;
                    let name = strings.get(nameoff..).and_then(cstr).ok_or(bad)?;
                    // names[0] is the root node's empty name.
                    let path = names.get(1..depth).unwrap_or(&[]);
                    f(&Prop {
                        node,
                        path,
                        name,
                        value,
                    });
                }
                NOP => {}
                END => return Ok(()),
                _ => return Err(bad),
            }
        }
    }

    /// The value of property `name` of the node at `path` (`"/chosen"`, `"/"`, `"/cpus/cpu@0"`; a component
    /// without a unit address matches any).
    pub fn property(&self, path: &str, name: &str) -> Option<&'a [u8]> {
        let want: &str = path.trim_matches('/');
        let mut found: Option<&'a [u8]> = None;
        let _ = self.for_each_prop(|p| {
            if found.is_some() || p.name != name {
                return;
            }
            let mut parts = want.split('/').filter(|c| !c.is_empty());
            let same = p
                .path
                .iter()
                .all(|have| parts.next().is_some_and(|w| name_matches(have, w)))
                && parts.next().is_none();
            if same {
                found = Some(p.value);
            }
        });
        found
    }

    /// The root's `#address-cells` and `#size-cells` (2 and 1 when absent, as the specification says).
    pub fn root_cells(&self) -> (u32, u32) {
        let cells = |n| {
            self.property("/", n)
                .and_then(|v| read_cells(v, 1))
                .map(|v| v as u32)
        };
        (
            cells("#address-cells").unwrap_or(2),
            cells("#size-cells").unwrap_or(1),
        )
    }

    /// Calls `f` with the `reg` value of every node (a child of the root) whose `compatible` list holds
    /// `compat`, or whose `device_type` is `compat` when `by_type`.
    fn regs_where(&self, compat: &str, by_type: bool, mut f: impl FnMut(&'a [u8])) {
        // Properties come in node order, but `reg` may precede `compatible`: remember both per node.
        let mut cur = usize::MAX;
        let mut matched = false;
        let mut reg: Option<&'a [u8]> = None;
        let mut hits: [&'a [u8]; 16] = [&[]; 16];
        let mut n = 0;
        let _ = self.for_each_prop(|p| {
            if p.node != cur {
                cur = p.node;
                matched = false;
                reg = None;
            }
            let want = if by_type { "device_type" } else { "compatible" };
            if p.name == want && p.value.split(|&c| c == 0).any(|s| s == compat.as_bytes()) {
                matched = true;
            }
            if p.name == "reg" {
                reg = Some(p.value);
            }
            if matched {
                if let Some(r) = reg.take() {
                    if n < hits.len() {
                        hits[n] = r;
                        n += 1;
                    }
                }
            }
        });
        for v in &hits[..n] {
            f(v);
        }
    }

    /// The (address, size) pairs of the `reg` of every node whose `compatible` holds `compat`, in order, with
    /// the root's cell sizes.
    pub fn regs_compatible(&self, compat: &str, mut f: impl FnMut(u64, u64)) {
        let (ac, sc) = self.root_cells();
        self.regs_where(compat, false, |v| each_reg(v, ac, sc, &mut f));
    }

    /// The memory ranges of the `device_type = "memory"` nodes.
    pub fn memory(&self, mut f: impl FnMut(u64, u64)) {
        let (ac, sc) = self.root_cells();
        self.regs_where("memory", true, |v| each_reg(v, ac, sc, &mut f));
    }
}

fn each_reg(v: &[u8], ac: u32, sc: u32, f: &mut impl FnMut(u64, u64)) {
    let step = 4 * (ac + sc) as usize;
    if step == 0 {
        return;
    }
    for chunk in v.chunks_exact(step) {
        if let (Some(a), Some(s)) = (
            read_cells(chunk, ac),
            read_cells(&chunk[4 * ac as usize..], sc),
        ) {
            f(a, s);
        }
    }
}

/// Builds a device tree without an allocator: nodes and properties go into fixed buffers, [`Writer::finish`]
/// lays out header, empty reservation map, structure and strings.
#[derive(Debug)]
pub struct Writer {
    structs: [u8; 4096],
    slen: usize,
    strings: [u8; 1024],
    tlen: usize,
    depth: usize,
    failed: bool,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// An empty tree; call [`Writer::begin_node`] with `""` for the root first.
    pub const fn new() -> Self {
        Self {
            structs: [0; 4096],
            slen: 0,
            strings: [0; 1024],
            tlen: 0,
            depth: 0,
            failed: false,
        }
    }

    fn put(&mut self, b: &[u8]) {
        match self.structs.get_mut(self.slen..self.slen + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.slen += b.len();
            }
            None => self.failed = true,
        }
    }

    fn pad(&mut self) {
        while !self.slen.is_multiple_of(4) && !self.failed {
            self.put(&[0]);
        }
    }

    fn string_off(&mut self, name: &str) -> u32 {
        let mut at = 0;
        while at < self.tlen {
            let end = at
                + self.strings[at..self.tlen]
                    .iter()
                    .position(|&c| c == 0)
                    .unwrap_or(0);
            if &self.strings[at..end] == name.as_bytes() {
                return at as u32;
            }
            at = end + 1;
        }
        let off = self.tlen;
        match self.strings.get_mut(off..off + name.len() + 1) {
            Some(dst) => {
                dst[..name.len()].copy_from_slice(name.as_bytes());
                dst[name.len()] = 0;
                self.tlen += name.len() + 1;
            }
            None => self.failed = true,
        }
        off as u32
    }

    /// Opens a node.
    pub fn begin_node(&mut self, name: &str) {
        self.put(&BEGIN_NODE.to_be_bytes());
        self.put(name.as_bytes());
        self.put(&[0]);
        self.pad();
        self.depth += 1;
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) {
        self.put(&END_NODE.to_be_bytes());
        self.depth = self.depth.saturating_sub(1);
    }

    /// Adds a property with a raw value.
    pub fn prop(&mut self, name: &str, value: &[u8]) {
        let off = self.string_off(name);
        self.put(&PROP.to_be_bytes());
        self.put(&(value.len() as u32).to_be_bytes());
        self.put(&off.to_be_bytes());
        self.put(value);
        self.pad();
    }

    /// Adds a property of 32-bit cells.
    pub fn prop_cells(&mut self, name: &str, cells: &[u32]) {
        let mut buf = [0u8; 64];
        let n = cells.len().min(16);
        for (i, c) in cells[..n].iter().enumerate() {
            buf[4 * i..4 * i + 4].copy_from_slice(&c.to_be_bytes());
        }
        if n < cells.len() {
            self.failed = true;
        }
        self.prop(name, &buf[..4 * n]);
    }

    /// Adds a string property (NUL-terminated).
    pub fn prop_str(&mut self, name: &str, s: &str) {
        let mut buf = [0u8; 256];
        match buf.get_mut(..s.len() + 1) {
            Some(dst) => {
                dst[..s.len()].copy_from_slice(s.as_bytes());
                self.prop(name, &buf[..s.len() + 1]);
            }
            None => self.failed = true,
        }
    }

    /// Writes the finished tree into `out` and returns its size; every node must have been closed.
    pub fn finish(&mut self, out: &mut [u8]) -> Result<usize, FdtError> {
        if self.depth != 0 {
            return Err(FdtError::BadStructure(self.slen as u32));
        }
        self.put(&END.to_be_bytes());
        if self.failed {
            return Err(FdtError::NoSpace);
        }
        let rsv = HEADER;
        let off_struct = rsv + 16;
        let off_strings = off_struct + self.slen;
        let total = (off_strings + self.tlen + 7) & !7;
        let out = out.get_mut(..total).ok_or(FdtError::NoSpace)?;
        out.fill(0);
        let header = [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            rsv as u32,
            17,
            16,
            0,
            self.tlen as u32,
            self.slen as u32,
        ];
        for (i, v) in header.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
        out[off_struct..off_strings].copy_from_slice(&self.structs[..self.slen]);
        out[off_strings..off_strings + self.tlen].copy_from_slice(&self.strings[..self.tlen]);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ([u8; 2048], usize) {
        let mut w = Writer::new();
        w.begin_node("");
        w.prop_cells("#address-cells", &[2]);
        w.prop_cells("#size-cells", &[2]);
        w.begin_node("chosen");
        w.prop_str("bootargs", "console=ttyAMA0 loglvl=info");
        w.prop_cells("linux,initrd-start", &[0, 0x4800_0000]);
        w.prop_cells("linux,initrd-end", &[0x4801_0000]);
        w.end_node();
        w.begin_node("memory@40000000");
        w.prop_cells("reg", &[0, 0x4000_0000, 0, 0x2000_0000]);
        w.prop_str("device_type", "memory");
        w.end_node();
        w.begin_node("pl011@9000000");
        w.prop("compatible", b"arm,pl011\0arm,primecell\0");
        w.prop_cells("reg", &[0, 0x0900_0000, 0, 0x1000]);
        w.end_node();
        w.end_node();
        let mut out = [0u8; 2048];
        let n = w.finish(&mut out).expect("fits");
        (out, n)
    }

    #[test]
    fn round_trip() {
        let (out, n) = sample();
        assert_eq!(Fdt::total_size(&out).unwrap(), n);
        let t = Fdt::new(&out[..n]).expect("parses");
        assert_eq!(t.root_cells(), (2, 2));
        assert_eq!(
            t.property("/chosen", "bootargs"),
            Some(&b"console=ttyAMA0 loglvl=info\0"[..])
        );
        let start = t.property("/chosen", "linux,initrd-start").unwrap();
        assert_eq!(read_cells(start, 2), Some(0x4800_0000));
        let end = t.property("/chosen", "linux,initrd-end").unwrap();
        assert_eq!(read_cells(end, 1), Some(0x4801_0000));
        assert!(t.property("/chosen", "nothing").is_none());
        assert!(t.property("/memory", "reg").is_some());
        assert!(t.property("/memory@0", "reg").is_none());
        let mut mem = Vec::new();
        t.memory(|a, s| mem.push((a, s)));
        assert_eq!(mem, [(0x4000_0000, 0x2000_0000)]);
        let mut uart = Vec::new();
        t.regs_compatible("arm,pl011", |a, s| uart.push((a, s)));
        assert_eq!(uart, [(0x0900_0000, 0x1000)]);
        let mut none = Vec::new();
        t.regs_compatible("arm,pl01", |a, s| none.push((a, s)));
        assert!(none.is_empty());
    }

    #[test]
    fn rejects_bad_trees() {
        let (mut out, n) = sample();
        assert!(matches!(Fdt::new(&out[..n - 8]), Err(FdtError::Truncated)));
        out[0] = 0;
        assert!(matches!(Fdt::new(&out[..n]), Err(FdtError::BadMagic(_))));
        let (mut out, n) = sample();
        // Corrupt the first token after the root's BEGIN_NODE.
        out[HEADER + 16 + 8 + 3] = 0x7f;
        let t = Fdt::new(&out[..n]).unwrap();
        assert!(matches!(
            t.for_each_prop(|_| {}),
            Err(FdtError::BadStructure(_))
        ));
        let mut w = Writer::new();
        w.begin_node("");
        let mut small = [0u8; 8];
        assert!(w.finish(&mut small).is_err());
        w.end_node();
        assert_eq!(w.finish(&mut small), Err(FdtError::NoSpace));
    }
}
