//! A minimal synchronous client of the REMOTE program, for tests, benchmarks and tools.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::driver::procs;
use crate::proto::{ptype, status, Header, RpcError, HEADER_LEN, MESSAGE_MAX, PROG_REMOTE};
use crate::xdr::{Dec, Enc};

/// A connection to a libvirt-protocol socket.
pub struct Client {
    /// The socket.
    pub stream: UnixStream,
    serial: u32,
}

impl Client {
    /// Connects without opening (no CONNECT_OPEN).
    pub fn connect(sock: &Path) -> io::Result<Client> {
        let stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { stream, serial: 0 })
    }

    /// Connects and opens `uri`.
    pub fn open(sock: &Path, uri: &str) -> io::Result<Client> {
        let mut c = Client::connect(sock)?;
        let mut e = Enc::new();
        e.opt_str(Some(uri)).u32(0);
        c.call(procs::CONNECT_OPEN, &e.buf)?
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(c)
    }

    /// Sends a raw packet.
    pub fn send(&mut self, h: &Header, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&h.packet(payload))
    }

    /// Sends a CALL of the REMOTE program and returns its serial.
    pub fn send_call(&mut self, proc_: i32, payload: &[u8]) -> io::Result<u32> {
        let serial = self.serial;
        self.serial = self.serial.wrapping_add(1);
        let h = Header {
            prog: PROG_REMOTE,
            vers: 1,
            proc_,
            ptype: ptype::CALL,
            serial,
            status: status::OK,
        };
        self.send(&h, payload)?;
        Ok(serial)
    }

    /// Receives the next packet; `Ok(None)` at EOF.
    pub fn recv(&mut self) -> io::Result<Option<(Header, Vec<u8>)>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(4 + HEADER_LEN..=4 + MESSAGE_MAX).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad packet length {len}"),
            ));
        }
        let mut buf = vec![0u8; len - 4];
        self.stream.read_exact(&mut buf)?;
        let h = Header::decode(&mut Dec::new(&buf[..HEADER_LEN]))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((h, buf.split_off(HEADER_LEN))))
    }

    /// Makes a call and waits for its reply, skipping asynchronous messages.
    pub fn call(&mut self, proc_: i32, payload: &[u8]) -> io::Result<Result<Vec<u8>, RpcError>> {
        let serial = self.send_call(proc_, payload)?;
        loop {
            let Some((h, p)) = self.recv()? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            };
            if h.ptype != ptype::REPLY || h.serial != serial {
                continue;
            }
            return Ok(if h.status == status::OK {
                Ok(p)
            } else {
                Err(RpcError::decode(&mut Dec::new(&p))
                    .unwrap_or_else(|e| RpcError::rpc(format!("undecodable error reply: {e}"))))
            });
        }
    }
}
