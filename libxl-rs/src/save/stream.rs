//! The save image's encoding (docs/save-format.md): an outer stream of this toolstack's records around Xen's
//! libxc migration stream v2 (`docs/specs/libxc-migration-stream.pandoc`), which carries the hypervisor part:
//! pages, HVM params and the HVM context.
//!
//! Both levels use the same record framing: a little-endian `type u32`, `body_length u32`, the body, and zero
//! padding to a multiple of 8 bytes. Everything read is checked; a malformed or truncated image is an
//! [`Error::SaveImage`], never a panic.

use std::io::{ErrorKind, Read, Write};

use xen_abi::start_info::HvmMemmapEntry;

use crate::builder::{Layout, RamRange};
use crate::transport::Error;

/// The outer header's `ident` (big-endian, like libxl's `LibxlFmt`): "XenRsImg".
pub const IDENT: u64 = u64::from_be_bytes(*b"XenRsImg");
/// The outer format's version.
pub const VERSION: u32 = 1;
/// Size of the outer header.
pub const HEADER_LEN: usize = 16;

/// Outer record types.
pub mod rec {
    /// The end of the image.
    pub const END: u32 = 0;
    /// The libxc stream follows this (empty) record, up to and including its own END record.
    pub const LIBXC_CONTEXT: u32 = 1;
    /// The domain's shape and layout ([`super::encode_layout`]); before `LIBXC_CONTEXT`.
    pub const DOMAIN_LAYOUT: u32 = 0x100;
    /// The domain's xenstore nodes, `relative-path NUL value NUL` pairs.
    pub const XENSTORE_DATA: u32 = 0x101;
    /// Types with this bit set may be skipped by a restorer that does not know them.
    pub const OPTIONAL: u32 = 0x8000_0000;
}

/// libxc stream v2 constants.
pub mod xc {
    /// Image header marker.
    pub const MARKER: u64 = u64::MAX;
    /// Image header id, "XENF".
    pub const ID: u32 = 0x5845_4e46;
    /// The libxc stream version written.
    pub const VERSION: u32 = 2;
    /// Size of the image header.
    pub const IHDR_LEN: usize = 24;
    /// Size of the domain header.
    pub const DHDR_LEN: usize = 16;
    /// Domain type x86 PVH.
    pub const DHDR_TYPE_X86_PVH: u32 = 3;
    /// log2 of the page size.
    pub const PAGE_SHIFT: u16 = 12;
    /// Record `END`.
    pub const END: u32 = 0;
    /// Record `PAGE_DATA`.
    pub const PAGE_DATA: u32 = 1;
    /// Record `HVM_CONTEXT`.
    pub const HVM_CONTEXT: u32 = 9;
    /// Record `HVM_PARAMS`.
    pub const HVM_PARAMS: u32 = 0xa;
    /// Page type `NOTAB` (a normal page) in bits 63..60 of a `PAGE_DATA` pfn.
    pub const PFINFO_NOTAB: u64 = 0;
    /// The pfn bits of a `PAGE_DATA` entry.
    pub const PFN_MASK: u64 = (1 << 52) - 1;
}

/// Bytes of a guest page.
pub const PAGE: usize = 4096;
/// The most pages one `PAGE_DATA` record names (what the saver writes; a restorer refuses more).
pub const MAX_PAGES_PER_RECORD: usize = 1024;
/// The largest record body a restorer reads: a full `PAGE_DATA` record.
pub const MAX_BODY: usize = 8 + MAX_PAGES_PER_RECORD * (8 + PAGE);

fn bad(m: impl Into<String>) -> Error {
    Error::SaveImage(m.into())
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("writing the save image", e)
}

/// Writes one record: header, body, padding.
pub fn write_record<W: Write>(w: &mut W, kind: u32, body: &[&[u8]]) -> Result<(), Error> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let len32 = u32::try_from(len).map_err(|_| bad("a record is larger than 4 GiB"))?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&kind.to_le_bytes());
    head[4..].copy_from_slice(&len32.to_le_bytes());
    w.write_all(&head).map_err(write_err)?;
    for b in body {
        w.write_all(b).map_err(write_err)?;
    }
    let pad = len.next_multiple_of(8) - len;
    w.write_all(&[0u8; 8][..pad]).map_err(write_err)
}

/// Writes the outer header.
pub fn write_header<W: Write>(w: &mut W) -> Result<(), Error> {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&IDENT.to_be_bytes());
    h[8..12].copy_from_slice(&VERSION.to_be_bytes());
    w.write_all(&h).map_err(write_err)
}

/// Writes the libxc stream's image header (big-endian) and domain header (x86 PVH, 4 KiB pages).
pub fn write_xc_headers<W: Write>(w: &mut W, xen_major: u32, xen_minor: u32) -> Result<(), Error> {
    let mut h = [0u8; xc::IHDR_LEN + xc::DHDR_LEN];
    h[..8].copy_from_slice(&xc::MARKER.to_be_bytes());
    h[8..12].copy_from_slice(&xc::ID.to_be_bytes());
    h[12..16].copy_from_slice(&xc::VERSION.to_be_bytes());
    // options (little-endian records) and reserved bytes stay 0.
    let d = &mut h[xc::IHDR_LEN..];
    d[..4].copy_from_slice(&xc::DHDR_TYPE_X86_PVH.to_le_bytes());
    d[4..6].copy_from_slice(&xc::PAGE_SHIFT.to_le_bytes());
    d[8..12].copy_from_slice(&xen_major.to_le_bytes());
    d[12..16].copy_from_slice(&xen_minor.to_le_bytes());
    w.write_all(&h).map_err(write_err)
}

/// Writes a `PAGE_DATA` record for `pfns` with their contents `data` (one page each, in the same order).
pub fn write_page_data<W: Write>(w: &mut W, pfns: &[u64], data: &[u8]) -> Result<(), Error> {
    debug_assert_eq!(pfns.len() * PAGE, data.len());
    let mut head = Vec::with_capacity(8 + pfns.len() * 8);
    head.extend_from_slice(&(pfns.len() as u32).to_le_bytes());
    head.extend_from_slice(&[0u8; 4]);
    for p in pfns {
        head.extend_from_slice(&((p & xc::PFN_MASK) | (xc::PFINFO_NOTAB << 60)).to_le_bytes());
    }
    write_record(w, xc::PAGE_DATA, &[&head, data])
}

/// Reads the record framing of a save image.
#[derive(Debug)]
pub struct Reader<R> {
    r: R,
}

impl<R: Read> Reader<R> {
    /// A reader over `r`, positioned at the outer header.
    pub fn new(r: R) -> Self {
        Self { r }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => bad("it ends too early (truncated)"),
            _ => Error::io("reading the save image", e),
        })
    }

    /// Reads and checks the outer header.
    pub fn header(&mut self) -> Result<(), Error> {
        let mut h = [0u8; HEADER_LEN];
        self.exact(&mut h)?;
        let ident = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
        if ident != IDENT {
            return Err(bad("it is not a xen-rs save image"));
        }
        let version = u32::from_be_bytes(h[8..12].try_into().unwrap_or_default());
        let options = u32::from_be_bytes(h[12..16].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(bad(format!(
                "it has version {version}; this toolstack reads version {VERSION}"
            )));
        }
        if options != 0 {
            return Err(bad(format!("it has unknown options {options:#x}")));
        }
        Ok(())
    }

    /// Reads and checks the libxc stream's image and domain headers; returns the Xen version that saved it.
    pub fn xc_headers(&mut self) -> Result<(u32, u32), Error> {
        let mut h = [0u8; xc::IHDR_LEN + xc::DHDR_LEN];
        self.exact(&mut h)?;
        let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let le32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let marker = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
        if marker != xc::MARKER || be32(8) != xc::ID {
            return Err(bad("its domain part is not a Xen migration stream"));
        }
        if be32(12) != xc::VERSION {
            return Err(bad(format!(
                "its domain part has migration stream version {}; this toolstack reads version {}",
                be32(12),
                xc::VERSION
            )));
        }
        let options = u16::from_be_bytes([h[16], h[17]]);
        if options != 0 {
            return Err(bad("its domain part is big-endian or has unknown options"));
        }
        let d = xc::IHDR_LEN;
        if le32(d) != xc::DHDR_TYPE_X86_PVH {
            return Err(bad(format!(
                "it holds a domain of type {}, not an x86 PVH domain",
                le32(d)
            )));
        }
        if u16::from_le_bytes([h[d + 4], h[d + 5]]) != xc::PAGE_SHIFT {
            return Err(bad("its pages are not 4 KiB"));
        }
        Ok((le32(d + 8), le32(d + 12)))
    }

    /// Reads one record: its type and body (padding dropped). Bodies larger than [`MAX_BODY`] are refused.
    pub fn record(&mut self) -> Result<(u32, Vec<u8>), Error> {
        let mut head = [0u8; 8];
        self.exact(&mut head)?;
        let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > MAX_BODY {
            return Err(bad(format!(
                "a record of type {kind:#x} has {len} bytes, more than any this toolstack writes"
            )));
        }
        let mut body = vec![0u8; len.next_multiple_of(8)];
        self.exact(&mut body)?;
        body.truncate(len);
        Ok((kind, body))
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

const LAYOUT_FIXED: usize = 40;
const LAYOUT_ENTRY: usize = 24;

/// The `DOMAIN_LAYOUT` body: uuid `[u8; 16]`, vcpus u32, nr_ram u32, max_memkb u64, nr_memmap u32, reserved u32,
/// then `nr_ram` × (first_gfn u64, frames u64, order u32, reserved u32) and `nr_memmap` × (addr u64,
/// size u64, type u32, reserved u32).
pub fn encode_layout(l: &Layout) -> Vec<u8> {
    let mut b = Vec::with_capacity(LAYOUT_FIXED + (l.ram.len() + l.memmap.len()) * LAYOUT_ENTRY);
    b.extend_from_slice(&l.uuid);
    b.extend_from_slice(&l.vcpus.to_le_bytes());
    b.extend_from_slice(&(l.ram.len() as u32).to_le_bytes());
    b.extend_from_slice(&l.max_memkb.to_le_bytes());
    b.extend_from_slice(&(l.memmap.len() as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    for r in &l.ram {
        b.extend_from_slice(&r.first_gfn.to_le_bytes());
        b.extend_from_slice(&r.frames.to_le_bytes());
        b.extend_from_slice(&r.order.to_le_bytes());
        b.extend_from_slice(&[0u8; 4]);
    }
    for m in &l.memmap {
        b.extend_from_slice(&m.addr.to_le_bytes());
        b.extend_from_slice(&m.size.to_le_bytes());
        b.extend_from_slice(&m.kind.to_le_bytes());
        b.extend_from_slice(&[0u8; 4]);
    }
    b
}

/// Decodes and validates ([`Layout::validate`]) a `DOMAIN_LAYOUT` body.
pub fn decode_layout(b: &[u8]) -> Result<Layout, Error> {
    if b.len() < LAYOUT_FIXED {
        return Err(bad("its domain layout record is too short"));
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[..16]);
    let vcpus = le32(b, 16);
    let nr_ram = le32(b, 20) as usize;
    let max_memkb = le64(b, 24);
    let nr_memmap = le32(b, 32) as usize;
    let want = nr_ram
        .checked_add(nr_memmap)
        .and_then(|n| n.checked_mul(LAYOUT_ENTRY))
        .and_then(|n| n.checked_add(LAYOUT_FIXED));
    if want != Some(b.len()) {
        return Err(bad("its domain layout record has the wrong length"));
    }
    let entry = |i: usize| LAYOUT_FIXED + i * LAYOUT_ENTRY;
    let ram = (0..nr_ram)
        .map(|i| RamRange {
            first_gfn: le64(b, entry(i)),
            frames: le64(b, entry(i) + 8),
            order: le32(b, entry(i) + 16),
        })
        .collect();
    let memmap = (nr_ram..nr_ram + nr_memmap)
        .map(|i| HvmMemmapEntry {
            addr: le64(b, entry(i)),
            size: le64(b, entry(i) + 8),
            kind: le32(b, entry(i) + 16),
            reserved: 0,
        })
        .collect();
    let l = Layout {
        uuid,
        vcpus,
        max_memkb,
        ram,
        memmap,
    };
    l.validate()
        .map_err(|e| bad(format!("its domain layout is unusable: {e}")))?;
    Ok(l)
}

/// The `XENSTORE_DATA` body: `path NUL value NUL` for each node (values never contain NUL in practice;
/// one that does is cut there, as xenstore's string values are).
pub fn encode_nodes(nodes: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (p, v) in nodes {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
        let end = v.iter().position(|c| *c == 0).unwrap_or(v.len());
        b.extend_from_slice(&v[..end]);
        b.push(0);
    }
    b
}

/// Decodes a `XENSTORE_DATA` body (the paths are checked where they are restored).
pub fn decode_nodes(b: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.last() != Some(&0) {
        return Err(bad("its xenstore record is not terminated"));
    }
    let parts: Vec<&[u8]> = b[..b.len() - 1].split(|c| *c == 0).collect();
    if !parts.len().is_multiple_of(2) {
        return Err(bad("its xenstore record has a path without a value"));
    }
    parts
        .chunks_exact(2)
        .map(|pv| {
            let path = std::str::from_utf8(pv[0])
                .map_err(|_| bad("its xenstore record has a path that is not UTF-8"))?;
            Ok((path.to_string(), pv[1].to_vec()))
        })
        .collect()
}

/// The `HVM_PARAMS` body: count u32, reserved u32, then (index u64, value u64) pairs.
pub fn encode_params(params: &[(u32, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + params.len() * 16);
    b.extend_from_slice(&(params.len() as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    for (i, v) in params {
        b.extend_from_slice(&u64::from(*i).to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Decodes an `HVM_PARAMS` body.
pub fn decode_params(b: &[u8]) -> Result<Vec<(u64, u64)>, Error> {
    if b.len() < 8 || b.len() - 8 != le32(b, 0) as usize * 16 {
        return Err(bad("its HVM parameter record has the wrong length"));
    }
    Ok((0..le32(b, 0) as usize)
        .map(|i| (le64(b, 8 + i * 16), le64(b, 16 + i * 16)))
        .collect())
}

/// Decodes a `PAGE_DATA` body into its pfns and their page contents (one page each, in the same order).
/// Only normal pages are accepted.
pub fn decode_page_data(b: &[u8]) -> Result<(Vec<u64>, &[u8]), Error> {
    if b.len() < 8 {
        return Err(bad("a page record is too short"));
    }
    let count = le32(b, 0) as usize;
    if count == 0 || count > MAX_PAGES_PER_RECORD {
        return Err(bad(format!("a page record names {count} pages")));
    }
    if b.len() != 8 + count * (8 + PAGE) {
        return Err(bad("a page record has the wrong length"));
    }
    let mut pfns = Vec::with_capacity(count);
    for i in 0..count {
        let e = le64(b, 8 + i * 8);
        if e >> 60 != xc::PFINFO_NOTAB || (e >> 52) & 0xff != 0 {
            return Err(bad(format!(
                "a page record has page type {:#x}, which this toolstack does not restore",
                e >> 60
            )));
        }
        pfns.push(e & xc::PFN_MASK);
    }
    Ok((pfns, &b[8 + count * 8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_to_eight_bytes_and_read_back() {
        let mut out = Vec::new();
        write_header(&mut out).expect("header");
        write_record(&mut out, 0x101, &[b"ab", b"c"]).expect("record");
        write_record(&mut out, rec::END, &[]).expect("end");
        assert_eq!(out.len(), 16 + 8 + 8 + 8);
        assert_eq!(&out[..8], b"XenRsImg");
        let mut r = Reader::new(&out[..]);
        r.header().expect("header");
        assert_eq!(r.record().expect("rec"), (0x101, b"abc".to_vec()));
        assert_eq!(r.record().expect("end"), (0, vec![]));
        // Truncated inside a body, a wrong ident, a wrong version, a huge record.
        let mut r = Reader::new(&out[..16 + 8 + 3]);
        r.header().expect("header");
        assert!(r
            .record()
            .expect_err("short")
            .to_string()
            .contains("truncated"));
        let mut other = out.clone();
        other[0] = b'Y';
        assert!(Reader::new(&other[..])
            .header()
            .expect_err("ident")
            .to_string()
            .contains("not a xen-rs save image"));
        other = out.clone();
        other[11] = 9;
        assert!(Reader::new(&other[..])
            .header()
            .expect_err("version")
            .to_string()
            .contains("version 9"));
        let mut huge = Vec::new();
        write_record(&mut huge, 1, &[]).expect("rec");
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Reader::new(&huge[..])
            .record()
            .expect_err("huge")
            .to_string()
            .contains("more than any"));
    }

    #[test]
    fn xc_headers_are_xens() {
        let mut out = Vec::new();
        write_xc_headers(&mut out, 4, 19).expect("headers");
        assert_eq!(&out[..8], &[0xff; 8]);
        assert_eq!(&out[8..12], b"XENF");
        assert_eq!(&out[12..16], &[0, 0, 0, 2]);
        assert_eq!(le32(&out, 24), 3, "x86 PVH");
        assert_eq!(Reader::new(&out[..]).xc_headers().expect("read"), (4, 19));
        let mut hvm = out.clone();
        hvm[24] = 2;
        assert!(Reader::new(&hvm[..])
            .xc_headers()
            .expect_err("hvm")
            .to_string()
            .contains("type 2"));
    }

    #[test]
    fn layouts_nodes_params_and_pages_round_trip() {
        let l = Layout::pvh([3; 16], 2, 17, 32);
        assert_eq!(decode_layout(&encode_layout(&l)).expect("layout"), l);
        let mut cut = encode_layout(&l);
        cut.pop();
        assert!(decode_layout(&cut).is_err());
        let mut zero_vcpus = encode_layout(&l);
        zero_vcpus[16] = 0;
        assert!(decode_layout(&zero_vcpus)
            .expect_err("no vcpus")
            .to_string()
            .contains("unusable"));
        let nodes = vec![
            ("control/feature-suspend".to_string(), b"1".to_vec()),
            ("device".to_string(), vec![]),
        ];
        assert_eq!(decode_nodes(&encode_nodes(&nodes)).expect("nodes"), nodes);
        assert!(decode_nodes(b"a\0b").is_err());
        assert!(decode_nodes(b"a\0").is_err());
        let params = [(17u32, 4094u64), (1, 4095)];
        assert_eq!(
            decode_params(&encode_params(&params)).expect("params"),
            vec![(17, 4094), (1, 4095)]
        );
        assert!(decode_params(&encode_params(&params)[..20]).is_err());
        let mut out = Vec::new();
        let data = vec![7u8; 2 * PAGE];
        write_page_data(&mut out, &[5, 9], &data).expect("pages");
        let (kind, body) = Reader::new(&out[..]).record().expect("record");
        assert_eq!(kind, xc::PAGE_DATA);
        let (pfns, got) = decode_page_data(&body).expect("pages");
        assert_eq!((pfns, got), (vec![5, 9], &data[..]));
        let mut typed = body.clone();
        typed[15] = 0xf0; // XTAB
        assert!(decode_page_data(&typed)
            .expect_err("type")
            .to_string()
            .contains("page type 0xf"));
        assert!(decode_page_data(&body[..body.len() - 1]).is_err());
        let mut none = body;
        none[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode_page_data(&none).is_err());
    }
}
