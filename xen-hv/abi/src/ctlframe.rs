//! The sandbox control channel's frame codec (docs/sandbox-transport.md), shared by xen-hv (inside QEMU, on
//! COM2) and libxl-rs's `SandboxTransport` (on the host, on the chardev's Unix socket).
//!
//! A frame is a 12-byte little-endian header — `magic u16 = 0x5843`, `kind u8`, `flags u8`, `seq u32`,
//! `len u32` — and `len` payload bytes, at most [`MAX_PAYLOAD`]. Everything here is bounds-checked and
//! allocation-free: decoding hostile bytes yields an error or a resynchronisation step, never a panic.

/// `"XC"` little-endian.
pub const MAGIC: u16 = 0x5843;
/// Header size in bytes.
pub const HEADER_LEN: usize = 12;
/// The largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Protocol version carried by HELLO.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most buffers one HYPERCALL frame may carry.
pub const MAX_BUFS: u32 = 8;
/// Number of argument registers in a HYPERCALL frame.
pub const NR_ARGS: usize = 5;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// hv -> host: the hypervisor is up.
    Hello = 1,
    /// host -> hv: run a hypercall as the control domain.
    Hypercall = 2,
    /// hv -> host: a request's result.
    Result = 3,
    /// hv -> host: a control-domain event channel became pending.
    Event = 4,
    /// host -> hv: translate guest frames of a domain to machine frames.
    Map = 5,
    /// host -> hv: translate a contiguous range of guest frames; the reply is run-length encoded, so large
    /// images cost a few bytes on the channel instead of 16 per frame.
    MapRange = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::Hypercall,
            3 => Self::Result,
            4 => Self::Event,
            5 => Self::Map,
            6 => Self::MapRange,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid frame or payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header's magic is wrong.
    BadMagic,
    /// Unknown frame kind.
    BadKind(u8),
    /// The declared payload length exceeds [`MAX_PAYLOAD`].
    TooLong(u32),
    /// A payload ends before a field it declares.
    Truncated,
    /// An output buffer is too small for the frame.
    NoRoom,
    /// A HYPERCALL declares more than [`MAX_BUFS`] buffers.
    TooManyBuffers(u32),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => write!(f, "the control frame does not start with the magic 0x5843"),
            Self::BadKind(k) => write!(f, "the control frame kind {k} is unknown"),
            Self::TooLong(n) => write!(f, "the control frame payload of {n} bytes exceeds 65536"),
            Self::Truncated => write!(f, "the control frame payload ends before a declared field"),
            Self::NoRoom => write!(f, "the control frame does not fit the output buffer"),
            Self::TooManyBuffers(n) => {
                write!(f, "the hypercall frame declares {n} buffers, more than 8")
            }
        }
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The kind.
    pub kind: Kind,
    /// Flags (none defined; sent as 0, ignored on receipt).
    pub flags: u8,
    /// Request sequence number; replies echo it.
    pub seq: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, FrameError> {
        let h = b.get(..HEADER_LEN).ok_or(FrameError::Truncated)?;
        if u16::from_le_bytes([h[0], h[1]]) != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let kind = Kind::from_u8(h[2]).ok_or(FrameError::BadKind(h[2]))?;
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if len as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        Ok(Self {
            kind,
            flags: h[3],
            seq: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            len,
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = self.kind as u8;
        b[3] = self.flags;
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// What the front of a receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame: its header, and the payload at `buf[HEADER_LEN..consumed]`.
    Frame {
        /// The header.
        header: Header,
        /// Bytes the frame occupies (header + payload).
        consumed: usize,
    },
    /// More bytes are needed.
    NeedMore,
    /// The first `skip` bytes are not a frame (bad magic, kind or length): drop them and look again. `error`
    /// says why, so a receiver can answer a malformed request with -EINVAL.
    Garbage {
        /// Bytes to drop (up to the next possible magic).
        skip: usize,
        /// What was wrong.
        error: FrameError,
        /// The sequence number, when the header was otherwise readable.
        seq: Option<u32>,
    },
}

/// Looks at the front of `buf` for a frame.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_LEN {
        // A partial header is fine only if what is there can still become the magic.
        let ok = match buf {
            [] => true,
            [a] => *a == MAGIC.to_le_bytes()[0],
            [a, b, ..] => u16::from_le_bytes([*a, *b]) == MAGIC,
        };
        return if ok {
            Decoded::NeedMore
        } else {
            Decoded::Garbage {
                skip: resync(buf),
                error: FrameError::BadMagic,
                seq: None,
            }
        };
    }
    match Header::parse(buf) {
        Ok(header) => {
            let consumed = HEADER_LEN + header.len as usize;
            if buf.len() < consumed {
                Decoded::NeedMore
            } else {
                Decoded::Frame { header, consumed }
            }
        }
        Err(error) => {
            let seq = match error {
                FrameError::BadMagic => None,
                _ => Some(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]])),
            };
            Decoded::Garbage {
                skip: resync(buf),
                error,
                seq,
            }
        }
    }
}

/// Bytes to drop so the buffer starts at the next possible magic (at least 1).
fn resync(buf: &[u8]) -> usize {
    let m = MAGIC.to_le_bytes();
    (1..buf.len())
        .find(|&i| buf[i] == m[0] && buf.get(i + 1).is_none_or(|b| *b == m[1]))
        .unwrap_or(buf.len().max(1))
}

/// A bounds-checked little-endian writer into a caller's buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    /// Writes into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.at
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.at == 0
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), FrameError> {
        let end = self.at.checked_add(b.len()).ok_or(FrameError::NoRoom)?;
        self.buf
            .get_mut(self.at..end)
            .ok_or(FrameError::NoRoom)?
            .copy_from_slice(b);
        self.at = end;
        Ok(())
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> Result<(), FrameError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> Result<(), FrameError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> Result<(), FrameError> {
        self.bytes(&v.to_le_bytes())
    }
}

/// A bounds-checked little-endian reader over a payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.at.checked_add(n).ok_or(FrameError::Truncated)?;
        let b = self.buf.get(self.at..end).ok_or(FrameError::Truncated)?;
        self.at = end;
        Ok(b)
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Writes a whole frame (header + payload produced by `body`) into `out`; returns its length.
pub fn encode(
    out: &mut [u8],
    kind: Kind,
    seq: u32,
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), FrameError>,
) -> Result<usize, FrameError> {
    let (head, rest) = out
        .split_at_mut_checked(HEADER_LEN)
        .ok_or(FrameError::NoRoom)?;
    let limit = rest.len().min(MAX_PAYLOAD);
    let mut w = Writer::new(&mut rest[..limit]);
    body(&mut w)?;
    let len = w.len();
    head.copy_from_slice(
        &Header {
            kind,
            flags: 0,
            seq,
            len: len as u32,
        }
        .to_bytes(),
    );
    Ok(HEADER_LEN + len)
}

/// The HELLO payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Machine RAM in bytes.
    pub ram_bytes: u64,
    /// Physical CPUs.
    pub nr_cpus: u32,
    /// `major << 16 | minor` as `XENVER_version` reports it.
    pub xen_version: u32,
}

impl Hello {
    /// Writes the payload.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.version)?;
        w.u64(self.ram_bytes)?;
        w.u32(self.nr_cpus)?;
        w.u32(self.xen_version)
    }

    /// Reads the payload.
    pub fn read(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        Ok(Self {
            version: r.u32()?,
            ram_bytes: r.u64()?,
            nr_cpus: r.u32()?,
            xen_version: r.u32()?,
        })
    }
}

/// The fixed part of a HYPERCALL payload; the buffers follow, each as `len u32` + bytes. Pointer arguments
/// (and guest handles inside buffers) carry buffer indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypercallHead {
    /// Hypercall number.
    pub op: u32,
    /// Number of buffers that follow.
    pub nr_bufs: u32,
    /// Arguments.
    pub args: [u64; NR_ARGS],
}

/// Writes a HYPERCALL payload.
pub fn write_hypercall(
    w: &mut Writer<'_>,
    op: u32,
    args: &[u64; NR_ARGS],
    bufs: &[&[u8]],
) -> Result<(), FrameError> {
    if bufs.len() > MAX_BUFS as usize {
        return Err(FrameError::TooManyBuffers(bufs.len() as u32));
    }
    w.u32(op)?;
    w.u32(bufs.len() as u32)?;
    for a in args {
        w.u64(*a)?;
    }
    write_bufs(w, bufs)
}

/// Writes length-prefixed buffers.
pub fn write_bufs(w: &mut Writer<'_>, bufs: &[&[u8]]) -> Result<(), FrameError> {
    for b in bufs {
        w.u32(u32::try_from(b.len()).map_err(|_| FrameError::NoRoom)?)?;
        w.bytes(b)?;
    }
    Ok(())
}

/// Reads a HYPERCALL payload's fixed part; the returned reader is positioned at the first buffer (read them
/// with [`read_buf`]).
pub fn read_hypercall(payload: &[u8]) -> Result<(HypercallHead, Reader<'_>), FrameError> {
    let mut r = Reader::new(payload);
    let op = r.u32()?;
    let nr_bufs = r.u32()?;
    if nr_bufs > MAX_BUFS {
        return Err(FrameError::TooManyBuffers(nr_bufs));
    }
    let mut args = [0u64; NR_ARGS];
    for a in &mut args {
        *a = r.u64()?;
    }
    Ok((HypercallHead { op, nr_bufs, args }, r))
}

/// Reads one length-prefixed buffer.
pub fn read_buf<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], FrameError> {
    let n = r.u32()? as usize;
    r.bytes(n)
}

/// Writes a RESULT payload: `ret` then the buffers as written back.
pub fn write_result(w: &mut Writer<'_>, ret: i64, bufs: &[&[u8]]) -> Result<(), FrameError> {
    w.u64(ret as u64)?;
    write_bufs(w, bufs)
}

/// Reads a RESULT payload's `ret`; the reader is positioned at the first buffer.
pub fn read_result(payload: &[u8]) -> Result<(i64, Reader<'_>), FrameError> {
    let mut r = Reader::new(payload);
    let ret = r.u64()? as i64;
    Ok((ret, r))
}

/// Writes a MAP payload.
pub fn write_map(w: &mut Writer<'_>, domid: u16, gfns: &[u64]) -> Result<(), FrameError> {
    w.u16(domid)?;
    w.u32(u32::try_from(gfns.len()).map_err(|_| FrameError::NoRoom)?)?;
    for g in gfns {
        w.u64(*g)?;
    }
    Ok(())
}

/// Writes a MAP_RANGE payload: domid u16, first gfn u64, count u32.
pub fn write_map_range(
    w: &mut Writer<'_>,
    domid: u16,
    first: u64,
    count: u32,
) -> Result<(), FrameError> {
    w.u16(domid)?;
    w.u64(first)?;
    w.u32(count)
}

/// Reads a MAP_RANGE payload: (domid, first gfn, count).
pub fn read_map_range(payload: &[u8]) -> Result<(u16, u64, u32), FrameError> {
    let mut r = Reader::new(payload);
    Ok((r.u16()?, r.u64()?, r.u32()?))
}

/// Reads a MAP payload: the domain and a reader over `count` frames (read them with [`Reader::u64`]).
pub fn read_map(payload: &[u8]) -> Result<(u16, u32, Reader<'_>), FrameError> {
    let mut r = Reader::new(payload);
    let domid = r.u16()?;
    let count = r.u32()?;
    if (count as usize).saturating_mul(8) > r.remaining() {
        return Err(FrameError::Truncated);
    }
    Ok((domid, count, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_frame_round_trips() {
        let mut out = [0u8; 256];
        let args = [0, 1, 0, 0, 0];
        let n = encode(&mut out, Kind::Hypercall, 42, |w| {
            write_hypercall(w, 36, &args, &[b"abc", b""])
        })
        .expect("fits");
        let Decoded::Frame { header, consumed } = decode(&out[..n]) else {
            panic!("not a frame");
        };
        assert_eq!(
            (header.kind, header.seq, consumed),
            (Kind::Hypercall, 42, n)
        );
        let (h, mut r) = read_hypercall(&out[HEADER_LEN..n]).expect("payload");
        assert_eq!((h.op, h.nr_bufs, h.args), (36, 2, args));
        assert_eq!(read_buf(&mut r), Ok(&b"abc"[..]));
        assert_eq!(read_buf(&mut r), Ok(&b""[..]));
        assert_eq!(read_buf(&mut r), Err(FrameError::Truncated));
        // Every strict prefix needs more bytes, never a frame or a panic.
        for i in 0..n {
            assert_eq!(decode(&out[..i]), Decoded::NeedMore, "prefix {i}");
        }
    }

    #[test]
    fn malformed_frames_resynchronise_on_the_next_magic() {
        let mut good = [0u8; 64];
        let n = encode(&mut good, Kind::Event, 7, |w| w.u32(5)).expect("fits");
        let mut buf = [0u8; 128];
        buf[..3].copy_from_slice(b"zzC");
        buf[3..3 + n].copy_from_slice(&good[..n]);
        let mut at = 0;
        let mut skipped = 0;
        loop {
            match decode(&buf[at..3 + n]) {
                Decoded::Garbage { skip, .. } => {
                    at += skip;
                    skipped += 1;
                }
                Decoded::Frame { header, .. } => {
                    assert_eq!((header.kind, header.seq), (Kind::Event, 7));
                    break;
                }
                Decoded::NeedMore => panic!("stalled at {at}"),
            }
        }
        assert_eq!(at, 3);
        assert!(skipped >= 1);
        // Unknown kind and oversized length are reported with the request's sequence number.
        let mut bad = good;
        bad[2] = 99;
        assert_eq!(
            decode(&bad[..n]),
            Decoded::Garbage {
                skip: n,
                error: FrameError::BadKind(99),
                seq: Some(7)
            }
        );
        let mut big = good;
        big[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&big[..n]),
            Decoded::Garbage {
                error: FrameError::TooLong(65537),
                seq: Some(7),
                ..
            }
        ));
    }

    #[test]
    fn hostile_payloads_are_errors() {
        // A buffer length beyond the payload.
        let mut p = [0u8; 8 + 40 + 4];
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        p[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_, mut r) = read_hypercall(&p).expect("head");
        assert_eq!(read_buf(&mut r), Err(FrameError::Truncated));
        p[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            read_hypercall(&p).err(),
            Some(FrameError::TooManyBuffers(9))
        );
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(read_hypercall(&p[..20]).err(), Some(FrameError::Truncated));
        // A MAP count larger than its frames.
        let mut m = [0u8; 6 + 8];
        m[2..6].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(read_map(&m).err(), Some(FrameError::Truncated));
        // Output too small.
        let mut tiny = [0u8; 14];
        assert_eq!(
            encode(&mut tiny, Kind::Event, 1, |w| w.u32(1)),
            Err(FrameError::NoRoom)
        );
        assert_eq!(Hello::read(&[1, 0, 0]), Err(FrameError::Truncated));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        // A small deterministic generator walks many byte patterns through the decoder and payload readers.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..20_000 {
            let mut b = [0u8; 40];
            for v in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            if x & 1 == 0 {
                b[0] = 0x43;
                b[1] = 0x58;
                b[2] = (x >> 8) as u8 % 6;
            }
            let n = (x >> 16) as usize % 41;
            let _ = decode(&b[..n]);
            let _ = read_hypercall(&b[..n]).map(|(_, mut r)| read_buf(&mut r));
            let _ = read_map(&b[..n]);
            let _ = read_result(&b[..n]);
            let _ = Hello::read(&b[..n]);
        }
    }
}
