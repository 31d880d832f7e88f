//! libvirt's RPC packet framing, header, programs and error structure (`virnetprotocol.x`).

use crate::xdr::{Dec, Enc, XdrError};

/// Largest packet, excluding the length word (`VIR_NET_MESSAGE_MAX`).
pub const MESSAGE_MAX: usize = 33_554_432;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Most stream bytes per packet (`VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX`).
pub const STREAM_CHUNK_MAX: usize = 262_120;

/// The REMOTE program.
pub const PROG_REMOTE: u32 = 0x2000_8086;
/// The KEEPALIVE program.
pub const PROG_KEEPALIVE: u32 = 0x6b65_6570;
/// Keepalive PING.
pub const KEEPALIVE_PING: i32 = 1;
/// Keepalive PONG.
pub const KEEPALIVE_PONG: i32 = 2;

/// Packet types.
pub mod ptype {
    /// A call.
    pub const CALL: u32 = 0;
    /// A reply.
    pub const REPLY: u32 = 1;
    /// An asynchronous message (event, keepalive).
    pub const MESSAGE: u32 = 2;
    /// Stream data or control.
    pub const STREAM: u32 = 3;
    /// A call carrying file descriptors.
    pub const CALL_WITH_FDS: u32 = 4;
    /// A stream hole.
    pub const STREAM_HOLE: u32 = 6;
}

/// Packet statuses.
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// Failure; the payload is a `remote_error`.
    pub const ERROR: u32 = 1;
    /// More stream data follows.
    pub const CONTINUE: u32 = 2;
}

/// The packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: i32,
    /// Packet type ([`ptype`]).
    pub ptype: u32,
    /// Serial number.
    pub serial: u32,
    /// Status ([`status`]).
    pub status: u32,
}

impl Header {
    /// Decodes a header from the first 24 bytes.
    pub fn decode(d: &mut Dec<'_>) -> Result<Header, XdrError> {
        Ok(Header {
            prog: d.u32()?,
            vers: d.u32()?,
            proc_: d.i32()?,
            ptype: d.u32()?,
            serial: d.u32()?,
            status: d.u32()?,
        })
    }

    /// Builds a complete packet (length word, header, payload).
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut e = Enc::new();
        e.buf.reserve(4 + HEADER_LEN + payload.len());
        e.u32((4 + HEADER_LEN + payload.len()) as u32)
            .u32(self.prog)
            .u32(self.vers)
            .i32(self.proc_)
            .u32(self.ptype)
            .u32(self.serial)
            .u32(self.status);
        e.buf.extend_from_slice(payload);
        e.buf
    }

    /// The reply header for this call.
    pub fn reply(&self, status: u32) -> Header {
        Header {
            ptype: ptype::REPLY,
            status,
            ..*self
        }
    }
}

/// libvirt error codes (`virErrorNumber`) used by the daemon.
pub mod code {
    /// Internal error.
    pub const INTERNAL_ERROR: i32 = 1;
    /// Not supported.
    pub const NO_SUPPORT: i32 = 3;
    /// Invalid argument.
    pub const INVALID_ARG: i32 = 8;
    /// Operation failed.
    pub const OPERATION_FAILED: i32 = 9;
    /// XML error.
    pub const XML_ERROR: i32 = 27;
    /// Domain exists.
    pub const DOM_EXIST: i32 = 28;
    /// A system call failed (`virReportSystemError`).
    pub const SYSTEM_ERROR: i32 = 38;
    /// RPC error.
    pub const RPC: i32 = 39;
    /// No such domain.
    pub const NO_DOMAIN: i32 = 42;
    /// Operation invalid in this state.
    pub const OPERATION_INVALID: i32 = 55;
    /// No such domain snapshot.
    pub const NO_DOMAIN_SNAPSHOT: i32 = 72;
    /// Reverting to the snapshot needs the FORCE flag.
    pub const SNAPSHOT_REVERT_RISKY: i32 = 77;
    /// Configuration not supported.
    pub const CONFIG_UNSUPPORTED: i32 = 67;
    /// Invalid domain metadata.
    pub const NO_DOMAIN_METADATA: i32 = 80;
    /// Operation unsupported.
    pub const OPERATION_UNSUPPORTED: i32 = 84;
    /// XML invalid against the schema.
    pub const XML_INVALID_SCHEMA: i32 = 92;
}

/// libvirt error domains (`virErrorDomain`).
pub mod edomain {
    /// RPC.
    pub const RPC: i32 = 7;
    /// Remote driver.
    pub const REMOTE: i32 = 13;
    /// Domain configuration.
    pub const DOMAIN: i32 = 20;
    /// Domain snapshot XML.
    pub const DOMAIN_SNAPSHOT: i32 = 35;
    /// Streams.
    pub const STREAMS: i32 = 38;
    /// The libxl driver.
    pub const LIBXL: i32 = 41;
}

/// A libvirt error as sent in `remote_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// `virErrorNumber`.
    pub code: i32,
    /// `virErrorDomain`.
    pub domain: i32,
    /// The message.
    pub message: String,
}

impl RpcError {
    /// An error with the given code, domain and message.
    pub fn new(code: i32, domain: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            domain,
            message: message.into(),
        }
    }
    /// An RPC-domain error (malformed packets).
    pub fn rpc(message: impl Into<String>) -> Self {
        Self::new(code::RPC, edomain::RPC, message)
    }
    /// A libxl-driver error.
    pub fn libxl(code: i32, message: impl Into<String>) -> Self {
        Self::new(code, edomain::LIBXL, message)
    }
    /// The error for a procedure the daemon does not implement; clients map it to NO_SUPPORT and fall back.
    pub fn unknown_procedure(proc_: i32) -> Self {
        Self::new(
            code::RPC,
            edomain::REMOTE,
            format!("unknown procedure: {proc_}"),
        )
    }

    /// Encodes it as a `remote_error`.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.i32(self.code)
            .i32(self.domain)
            .opt_str(Some(&self.message))
            .i32(2) // VIR_ERR_ERROR
            .u32(0) // dom
            .opt_str(Some(&self.message))
            .opt_str(None)
            .opt_str(None)
            .i32(0)
            .i32(0)
            .u32(0); // net
        e.buf
    }

    /// Decodes a `remote_error` (used by tests and clients).
    pub fn decode(d: &mut Dec<'_>) -> Result<RpcError, XdrError> {
        let code = d.i32()?;
        let domain = d.i32()?;
        let message = d.opt_str()?.unwrap_or_default();
        Ok(RpcError {
            code,
            domain,
            message,
        })
    }
}

impl From<XdrError> for RpcError {
    fn from(e: XdrError) -> Self {
        RpcError::rpc(format!("Unable to decode message payload: {e}"))
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {}, domain {})",
            self.message, self.code, self.domain
        )
    }
}

/// A reference to a domain as sent on the wire (`remote_nonnull_domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomRef {
    /// Name.
    pub name: String,
    /// Raw UUID.
    pub uuid: [u8; 16],
    /// Runtime id, -1 when inactive.
    pub id: i32,
}

impl DomRef {
    /// Encodes it.
    pub fn encode(&self, e: &mut Enc) {
        e.str(&self.name);
        e.buf.extend_from_slice(&self.uuid);
        e.i32(self.id);
    }
    /// Decodes it.
    pub fn decode(d: &mut Dec<'_>) -> Result<DomRef, XdrError> {
        let name = d.str()?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(d.fixed(16)?);
        let id = d.i32()?;
        Ok(DomRef { name, uuid, id })
    }
}

/// Parses a canonical UUID string into raw bytes.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let h = std::str::from_utf8(&hex[i * 2..i * 2 + 2]).ok()?;
        *o = u8::from_str_radix(h, 16).ok()?;
    }
    Some(out)
}

/// Formats raw UUID bytes canonically.
pub fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
