//! The two ends of a libvirt stream as the server sees them: a sink for data the client sends, a source for
//! data the daemon sends.

use std::io::{Read, Write};

use crate::proto::{code, edomain, RpcError};

/// One piece of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes (a STREAM CONTINUE packet).
    Data(Vec<u8>),
    /// A run of zeros (a STREAM_HOLE packet).
    Hole(u64),
}

/// Receives what the client sends on a stream.
pub trait StreamSink: Send {
    /// Data.
    fn write(&mut self, data: &[u8]) -> Result<(), RpcError>;
    /// A hole (sparse streams).
    fn hole(&mut self, len: u64) -> Result<(), RpcError>;
    /// The client finished the stream.
    fn finish(&mut self) -> Result<(), RpcError>;
    /// The client aborted the stream.
    fn abort(&mut self);
}

/// Produces what the daemon sends on a stream; `Ok(None)` is EOF.
pub trait StreamSource: Send {
    /// The next chunk of at most `max` bytes.
    fn next(&mut self, max: usize) -> Result<Option<Chunk>, RpcError>;
}

/// A sink over a writer (console keystrokes).
pub struct WriteSink(pub Box<dyn Write + Send>);

impl StreamSink for WriteSink {
    fn write(&mut self, data: &[u8]) -> Result<(), RpcError> {
        self.0
            .write_all(data)
            .and_then(|_| self.0.flush())
            .map_err(|e| {
                RpcError::new(
                    code::RPC,
                    edomain::STREAMS,
                    format!("stream write failed: {e}"),
                )
            })
    }
    fn hole(&mut self, _len: u64) -> Result<(), RpcError> {
        Err(RpcError::new(
            code::RPC,
            edomain::STREAMS,
            "this stream does not accept holes",
        ))
    }
    fn finish(&mut self) -> Result<(), RpcError> {
        Ok(())
    }
    fn abort(&mut self) {}
}

/// A sink for a stream the client only reads: data from the client is an error.
pub struct NoSink;

impl StreamSink for NoSink {
    fn write(&mut self, _data: &[u8]) -> Result<(), RpcError> {
        Err(RpcError::new(
            code::RPC,
            edomain::STREAMS,
            "this stream is read-only",
        ))
    }
    fn hole(&mut self, _len: u64) -> Result<(), RpcError> {
        Err(RpcError::new(
            code::RPC,
            edomain::STREAMS,
            "this stream is read-only",
        ))
    }
    fn finish(&mut self) -> Result<(), RpcError> {
        Ok(())
    }
    fn abort(&mut self) {}
}

/// A source over a reader (console output).
pub struct ReadSource(pub Box<dyn Read + Send>);

impl StreamSource for ReadSource {
    fn next(&mut self, max: usize) -> Result<Option<Chunk>, RpcError> {
        let mut buf = vec![0u8; max.min(64 * 1024)];
        match self.0.read(&mut buf) {
            Ok(0) | Err(_) => Ok(None),
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(Chunk::Data(buf)))
            }
        }
    }
}
