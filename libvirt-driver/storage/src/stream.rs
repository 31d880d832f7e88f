//! Upload and download of volume contents: the primitives the RPC layer drives for `virStorageVolUpload` and
//! `virStorageVolDownload` streams, including sparse streams (`STREAM_HOLE` packets).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::driver::Inner;
use crate::error::{Error, Result};
use crate::events::PoolEventKind;
use crate::model::PoolRef;
use crate::sys;

fn no_space() -> Error {
    Error::system(
        "cannot write to stream",
        io::Error::from_raw_os_error(libc::ENOSPC),
    )
}

/// Writes an upload into a volume. Each [`UploadSink::write`] or [`UploadSink::hole`] either fits below the
/// limit (offset + length, never past the capacity) and is applied whole, or is refused with libvirt's
/// "cannot write to stream: No space left on device" and nothing of it is written.
pub struct UploadSink {
    inner: Arc<Inner>,
    pool: PoolRef,
    volume: String,
    file: File,
    position: u64,
    limit: u64,
    sparse: bool,
}

impl UploadSink {
    pub(crate) fn new(
        inner: Arc<Inner>,
        pool: PoolRef,
        volume: String,
        file: File,
        offset: u64,
        limit: u64,
        sparse: bool,
    ) -> Self {
        UploadSink {
            inner,
            pool,
            volume,
            file,
            position: offset,
            limit,
            sparse,
        }
    }

    /// The volume offset the next write lands at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes that may still be written.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.position)
    }

    /// Whether the stream was opened sparse (holes allowed).
    pub fn is_sparse(&self) -> bool {
        self.sparse
    }

    /// Writes the bytes of one `STREAM` data packet at the current position.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.remaining() {
            return Err(no_space());
        }
        self.file
            .write_all_at(data, self.position)
            .map_err(|e| Error::system(format!("cannot write to volume '{}'", self.volume), e))?;
        self.position += data.len() as u64;
        Ok(())
    }

    /// Applies one `STREAM_HOLE` packet: `len` bytes that read as zeros, deallocated in the file.
    pub fn hole(&mut self, len: u64) -> Result<()> {
        if !self.sparse {
            return Err(Error::OperationInvalid(
                "the stream was not opened as a sparse stream".into(),
            ));
        }
        if len > self.remaining() {
            return Err(no_space());
        }
        let err = |e| {
            Error::system(
                format!("unable to create a hole in volume '{}'", self.volume),
                e,
            )
        };
        let size = self.file.metadata().map_err(err)?.len();
        let end = self.position + len;
        if self.position < size {
            sys::punch_hole(&self.file, self.position, end.min(size) - self.position)
                .map_err(err)?;
        }
        if end > size {
            self.file.set_len(end).map_err(err)?;
        }
        self.position = end;
        Ok(())
    }

    /// Completes the upload: flushes the file; dropping the sink then refreshes the pool and emits its refresh
    /// event.
    pub fn finish(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::system(format!("cannot sync volume '{}'", self.volume), e))
    }

    /// Abandons the upload (client abort). Bytes already written stay, as with libvirt; the pool is refreshed
    /// on drop all the same.
    pub fn abort(self) {}
}

impl Drop for UploadSink {
    /// Whether finished, aborted or dropped with its connection, a closed upload refreshes its pool and emits the
    /// refresh event, as libvirt's stream close callback does.
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some(pool) = state.pool_mut(&self.pool.name) {
            if self.inner.refresh_pool_obj(pool, &self.volume).is_ok() {
                self.inner.events.emit(&self.pool, PoolEventKind::Refresh);
            }
        }
    }
}

/// For stream plumbing built on `std::io` (the daemon's stream table holds `Box<dyn Write + Send>`): each
/// `write` is a whole [`UploadSink::write`]; a refusal is an `io::Error` wrapping the crate [`Error`], recoverable
/// with `err.get_ref().and_then(|e| e.downcast_ref::<xen_storage::Error>())` for its libvirt code and message.
impl io::Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        UploadSink::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One piece of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes to send in a `STREAM` data packet.
    Data(Vec<u8>),
    /// A run of zeros to send as a `STREAM_HOLE` packet (sparse streams only).
    Hole(u64),
}

/// For stream plumbing built on `std::io` (`Box<dyn Read + Send>` sources): the volume's bytes in order, holes
/// of a sparse source read as zeros. Use [`DownloadSource::next_chunk`] to send `STREAM_HOLE` packets instead.
impl io::Read for DownloadSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(hole) = self.pending_zeros.take() {
            return Ok(self.fill_zeros(buf, hole));
        }
        match self.next_chunk(buf.len()).map_err(io::Error::other)? {
            None => Ok(0),
            Some(Chunk::Data(data)) => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Some(Chunk::Hole(len)) => Ok(self.fill_zeros(buf, len)),
        }
    }
}

/// Reads a volume for a download. In sparse mode, data and holes are found with `SEEK_DATA`/`SEEK_HOLE`.
pub struct DownloadSource {
    file: File,
    position: u64,
    end: u64,
    sparse: bool,
    /// Zeros of a hole not yet handed out by the `Read` implementation.
    pending_zeros: Option<u64>,
}

impl DownloadSource {
    pub(crate) fn new(file: File, offset: u64, end: u64, sparse: bool) -> Self {
        DownloadSource {
            file,
            position: offset,
            end,
            sparse,
            pending_zeros: None,
        }
    }

    /// Hands out up to `buf.len()` zeros of a `len`-byte hole, keeping the rest for the next read.
    fn fill_zeros(&mut self, buf: &mut [u8], len: u64) -> usize {
        let n = usize::try_from(len).map_or(buf.len(), |len| len.min(buf.len()));
        buf[..n].fill(0);
        let left = len - n as u64;
        if left > 0 {
            self.pending_zeros = Some(left);
        }
        n
    }

    /// The volume offset of the next chunk.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes left to send (data and holes).
    pub fn remaining(&self) -> u64 {
        self.end - self.position
    }

    /// Whether holes are reported.
    pub fn is_sparse(&self) -> bool {
        self.sparse
    }

    /// The next chunk, at most `max` bytes of data (holes are reported whole); `None` at the end, when the RPC
    /// layer sends the empty `STREAM` packet that marks EOF.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>> {
        if self.position >= self.end {
            return Ok(None);
        }
        let err = |e| Error::system("unable to read from volume", e);
        let mut data_end = self.end;
        if self.sparse {
            match sys::next_data(&self.file, self.position).map_err(err)? {
                None => {
                    let len = self.end - self.position;
                    self.position = self.end;
                    return Ok(Some(Chunk::Hole(len)));
                }
                Some(data) if data > self.position => {
                    let hole_end = data.min(self.end);
                    let len = hole_end - self.position;
                    self.position = hole_end;
                    return Ok(Some(Chunk::Hole(len)));
                }
                Some(_) => {
                    if let Some(hole) = sys::next_hole(&self.file, self.position).map_err(err)? {
                        data_end = hole.min(self.end);
                    }
                }
            }
        }
        let want = (data_end - self.position).min(max.max(1) as u64);
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(max.max(1))];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[filled..], self.position + filled as u64)
                .map_err(err)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            // The file shrank under us: end the stream where the data ends.
            self.end = self.position;
            return Ok(None);
        }
        buf.truncate(filled);
        self.position += filled as u64;
        Ok(Some(Chunk::Data(buf)))
    }
}
