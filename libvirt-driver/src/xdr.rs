//! A small XDR codec with libvirt's conventions: 4-byte `char`, optional values as a u32 flag then the
//! value, raw 16-byte UUIDs. The decoder never panics: every read is bounds-checked and returns
//! [`XdrError`] on truncated or malformed input.

/// The longest string libvirt accepts (`REMOTE_STRING_MAX`).
pub const STRING_MAX: usize = 4_194_304;

/// Why decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The input ended before the value did.
    #[error("truncated XDR data: needed {needed} bytes at offset {offset}")]
    Truncated {
        /// Offset of the read.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
    },
    /// A string or array is longer than its protocol limit.
    #[error("{what} length {len} exceeds the limit of {max}")]
    TooLong {
        /// What was being decoded.
        what: &'static str,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// An optional flag or boolean that is neither 0 nor 1, or a bad union discriminant.
    #[error("invalid {what} value {value}")]
    BadValue {
        /// What was being decoded.
        what: &'static str,
        /// The value found.
        value: i64,
    },
    /// Bytes left over after the payload was decoded.
    #[error("{0} unexpected trailing bytes after the payload")]
    Trailing(usize),
}

/// An XDR encoder appending to a byte vector.
#[derive(Debug, Default)]
pub struct Enc {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

impl Enc {
    /// A new, empty encoder.
    pub fn new() -> Self {
        Enc::default()
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends an i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a u64 (`unsigned hyper`).
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends an i64 (`hyper`).
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a double.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
        self
    }
    /// Appends opaque bytes with a length prefix and padding.
    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.fixed(b)
    }
    /// Appends fixed-length opaque bytes with padding.
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        let pad = (4 - b.len() % 4) % 4;
        self.buf.extend_from_slice(&[0; 3][..pad]);
        self
    }
    /// Appends a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.opaque(s.as_bytes())
    }
    /// Appends an optional string (`remote_string`).
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.u32(1).str(s),
            None => self.u32(0),
        }
    }
}

/// A bounds-checked XDR decoder over a byte slice.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    /// Decodes from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(XdrError::Truncated {
                offset: self.pos,
                needed: n,
            }),
        }
    }
    fn word(&mut self) -> Result<[u8; 4], XdrError> {
        let s = self.take(4)?;
        Ok([s[0], s[1], s[2], s[3]])
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.word()?))
    }
    /// Reads an i32.
    pub fn i32(&mut self) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.word()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64, XdrError> {
        Ok(self.u64()? as i64)
    }
    /// Reads fixed-length opaque data (with padding).
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let s = self.take(n)?;
        self.take((4 - n % 4) % 4)?;
        Ok(s)
    }
    /// Reads variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(XdrError::TooLong {
                what: "opaque data",
                len: n,
                max,
            });
        }
        self.fixed(n)
    }
    /// Reads a string of at most [`STRING_MAX`] bytes.
    pub fn str(&mut self) -> Result<String, XdrError> {
        let n = self.u32()? as usize;
        if n > STRING_MAX {
            return Err(XdrError::TooLong {
                what: "string",
                len: n,
                max: STRING_MAX,
            });
        }
        let b = self.fixed(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| XdrError::BadUtf8)
    }
    /// Reads an optional-presence flag.
    pub fn flag(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadValue {
                what: "optional flag",
                value: i64::from(v),
            }),
        }
    }
    /// Reads an optional string.
    pub fn opt_str(&mut self) -> Result<Option<String>, XdrError> {
        if self.flag()? {
            Ok(Some(self.str()?))
        } else {
            Ok(None)
        }
    }
    /// Reads an array count and checks it against `max`.
    pub fn count(&mut self, what: &'static str, max: usize) -> Result<usize, XdrError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(XdrError::TooLong { what, len: n, max });
        }
        Ok(n)
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Fails unless the whole input was read.
    pub fn finish(&self) -> Result<(), XdrError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(XdrError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_roundtrip_with_padding() {
        let mut e = Enc::new();
        e.str("abcde").opt_str(None).opt_str(Some("x")).u64(1 << 40);
        assert_eq!(e.buf.len(), 4 + 8 + 4 + 4 + 4 + 4 + 8);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.str().unwrap(), "abcde");
        assert_eq!(d.opt_str().unwrap(), None);
        assert_eq!(d.opt_str().unwrap().as_deref(), Some("x"));
        assert_eq!(d.u64().unwrap(), 1 << 40);
        d.finish().unwrap();
    }

    #[test]
    fn truncated_and_oversized_inputs_are_errors() {
        let mut d = Dec::new(&[0, 0, 0, 9, b'a']);
        assert!(matches!(d.str(), Err(XdrError::Truncated { .. })));
        let mut d = Dec::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.str(), Err(XdrError::TooLong { .. })));
        let mut d = Dec::new(&[0, 0, 0, 2]);
        assert!(matches!(d.flag(), Err(XdrError::BadValue { .. })));
        // Every prefix of a valid encoding decodes to an error, never a panic.
        let mut e = Enc::new();
        e.opt_str(Some("hello")).u32(7).str("world");
        for n in 0..e.buf.len() {
            let mut d = Dec::new(&e.buf[..n]);
            let r = d.opt_str().and_then(|_| d.u32()).and_then(|_| d.str());
            assert!(r.is_err(), "prefix {n} decoded");
        }
    }
}
