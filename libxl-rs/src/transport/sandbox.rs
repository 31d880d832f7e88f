//! The sandbox transport: xen-hv runs inside QEMU and the control domain is a host process
//! (docs/sandbox-transport.md). Hypercalls and frame translations travel as control frames
//! (`xen_abi::ctlframe`) over QEMU's COM2 chardev socket; guest memory is read and written through the
//! file that backs QEMU's RAM, mapped at `mfn << 12`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use xen_abi::ctlframe::{self, Decoded, Hello, Kind};

use super::sys::{self, Mapping, PAGE};
use super::{Arg, Call, Error, ForeignMapping, Transport};

/// `EVTCHNOP_bind_virq` (`public/event_channel.h`).
const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `EVTCHNOP_send`.
const EVTCHNOP_SEND: u64 = 4;

/// How long one request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The control channel to a sandboxed xen-hv and its RAM file.
#[derive(Debug)]
pub struct SandboxTransport {
    sock: UnixStream,
    ram: File,
    rx: Vec<u8>,
    seq: u32,
    events: VecDeque<u32>,
    hello: Hello,
}

impl SandboxTransport {
    /// Connects to the control socket `sock` (retrying until `timeout`), opens the RAM file `ram` and
    /// exchanges HELLO with the hypervisor.
    pub fn connect(sock: &Path, ram: &Path, timeout: Duration) -> Result<Self, Error> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::io(format!("connecting to {}", sock.display()), e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let ram = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ram)
            .map_err(|e| {
                Error::io(
                    format!("opening the machine's RAM file {}", ram.display()),
                    e,
                )
            })?;
        Self::over(
            stream,
            ram,
            deadline.saturating_duration_since(Instant::now()),
        )
    }

    /// Uses an already connected stream (for tests with a scripted peer).
    pub fn over(sock: UnixStream, ram: File, timeout: Duration) -> Result<Self, Error> {
        let mut t = Self {
            sock,
            ram,
            rx: Vec::new(),
            seq: 0,
            events: VecDeque::new(),
            hello: Hello {
                version: 0,
                ram_bytes: 0,
                nr_cpus: 0,
                xen_version: 0,
            },
        };
        let seq = t.send(Kind::Hello, |_| Ok(()))?;
        let deadline = Instant::now() + timeout.max(Duration::from_millis(100));
        let payload = t.reply(seq, Kind::Hello, deadline)?;
        t.hello = Hello::read(&payload).map_err(|e| Error::Protocol(e.to_string()))?;
        if t.hello.version != ctlframe::PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "the hypervisor speaks control protocol {}, this toolstack {}",
                t.hello.version,
                ctlframe::PROTOCOL_VERSION
            )));
        }
        Ok(t)
    }

    /// What the hypervisor said about itself.
    pub fn hello(&self) -> Hello {
        self.hello
    }

    fn send(
        &mut self,
        kind: Kind,
        body: impl FnOnce(&mut ctlframe::Writer<'_>) -> Result<(), ctlframe::FrameError>,
    ) -> Result<u32, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = vec![0u8; ctlframe::HEADER_LEN + ctlframe::MAX_PAYLOAD];
        let n = ctlframe::encode(&mut out, kind, self.seq, body)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.sock
            .write_all(&out[..n])
            .map_err(|e| Error::io("writing to the control channel", e))?;
        Ok(self.seq)
    }

    /// Reads one frame; `None` on timeout.
    fn next_frame(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(ctlframe::Header, Vec<u8>)>, Error> {
        loop {
            match ctlframe::decode(&self.rx) {
                Decoded::Frame { header, consumed } => {
                    let payload = self.rx[ctlframe::HEADER_LEN..consumed].to_vec();
                    self.rx.drain(..consumed);
                    return Ok(Some((header, payload)));
                }
                Decoded::Garbage { skip, .. } => {
                    self.rx.drain(..skip);
                    continue;
                }
                Decoded::NeedMore => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || !sys::wait_readable(self.sock.as_raw_fd(), left)
                    .map_err(|e| Error::io("polling the control channel", e))?
            {
                return Ok(None);
            }
            let mut buf = [0u8; 8192];
            let n = self
                .sock
                .read(&mut buf)
                .map_err(|e| Error::io("reading the control channel", e))?;
            if n == 0 {
                return Err(Error::Protocol(
                    "the hypervisor closed the control channel".into(),
                ));
            }
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    /// `EVENT_CHANNEL_OP` sub-op `op` on the argument struct `buf` (written back in place); `what` names the
    /// operation in the error.
    fn evtchn_op(
        &mut self,
        op: u64,
        buf: &mut [u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        let mut call = Call::new(
            xen_abi::hypercall::EVENT_CHANNEL_OP,
            [
                Arg::Value(op),
                Arg::Buf(0),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(buf);
        let ret = self.hypercall(&mut call)?;
        if ret < 0 {
            return Err(Error::Hypercall { op: what(), ret });
        }
        Ok(())
    }

    /// MAP_RANGE of `count` frames from `first`: appends their RAM-file offsets to `offsets`.
    fn map_range(
        &mut self,
        domid: u16,
        first: u64,
        count: u32,
        offsets: &mut Vec<u64>,
    ) -> Result<(), Error> {
        let seq = self.send(Kind::MapRange, |w| {
            ctlframe::write_map_range(w, domid, first, count)
        })?;
        let payload = self.reply(seq, Kind::Result, Instant::now() + REPLY_TIMEOUT)?;
        let (ret, mut r) =
            ctlframe::read_result(&payload).map_err(|e| Error::Protocol(e.to_string()))?;
        if ret < 0 {
            return Err(Error::Hypercall {
                op: format!("mapping frames of domain {domid}"),
                ret,
            });
        }
        let runs = ctlframe::read_buf(&mut r).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut total = 0u64;
        for c in runs.chunks_exact(16) {
            let v = i64::from_le_bytes(c[..8].try_into().unwrap_or_default());
            let n = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
            if v < 0 {
                return Err(Error::Hypercall {
                    op: format!("mapping frame {:#x} of domain {domid}", first + total),
                    ret: v,
                });
            }
            total += n;
            if total > u64::from(count) {
                break;
            }
            offsets.extend((0..n).map(|i| (v as u64 + i) * PAGE as u64));
        }
        if total != u64::from(count) || runs.len() % 16 != 0 {
            return Err(Error::Protocol(
                "the MAP_RANGE reply does not cover the range".into(),
            ));
        }
        Ok(())
    }

    /// Waits for the reply to `seq`, queueing events that arrive meanwhile.
    fn reply(&mut self, seq: u32, kind: Kind, deadline: Instant) -> Result<Vec<u8>, Error> {
        loop {
            let Some((h, payload)) = self.next_frame(deadline)? else {
                return Err(Error::Timeout(format!(
                    "the hypervisor's reply to request {seq}"
                )));
            };
            match h.kind {
                Kind::Event => {
                    if let Ok(p) = ctlframe::Reader::new(&payload).u32() {
                        self.events.push_back(p);
                    }
                }
                k if k == kind && h.seq == seq => return Ok(payload),
                // A reply to an abandoned (timed-out) request or a repeated HELLO: not ours.
                _ => {}
            }
        }
    }
}

impl Transport for SandboxTransport {
    fn hypercall(&mut self, call: &mut Call<'_>) -> Result<i64, Error> {
        call.validate()?;
        call.patch_handles(|t| t as u64);
        let args = call.args.map(|a| match a {
            Arg::Value(v) => v,
            Arg::Buf(i) => i as u64,
        });
        let op = u32::try_from(call.op)
            .map_err(|_| Error::Config("hypercall number too large".into()))?;
        let bufs: Vec<&[u8]> = call.bufs.iter().map(|b| &**b).collect();
        let seq = self.send(Kind::Hypercall, |w| {
            ctlframe::write_hypercall(w, op, &args, &bufs)
        })?;
        let payload = self.reply(seq, Kind::Result, Instant::now() + REPLY_TIMEOUT)?;
        let (ret, mut r) =
            ctlframe::read_result(&payload).map_err(|e| Error::Protocol(e.to_string()))?;
        for b in call.bufs.iter_mut() {
            let back = ctlframe::read_buf(&mut r).map_err(|e| Error::Protocol(e.to_string()))?;
            if back.len() != b.len() {
                return Err(Error::Protocol(format!(
                    "a buffer of {} bytes came back as {} bytes",
                    b.len(),
                    back.len()
                )));
            }
            b.copy_from_slice(back);
        }
        Ok(ret)
    }

    fn map_foreign(&mut self, domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error> {
        let contiguous = gfns.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        let mut offsets = Vec::with_capacity(gfns.len());
        if contiguous && gfns.len() > 1 {
            // One MAP_RANGE per chunk: run-length replies instead of a machine frame per page.
            for (k, chunk) in gfns
                .chunks(xen_abi::ctlserver::MAP_RANGE_MAX as usize)
                .enumerate()
            {
                self.map_range(domid, chunk[0], chunk.len() as u32, &mut offsets)
                    .map_err(|e| match e {
                        Error::Hypercall { ret, .. } => Error::Hypercall {
                            op: format!(
                                "mapping frames {:#x}.. of domain {domid}",
                                gfns[k * xen_abi::ctlserver::MAP_RANGE_MAX as usize]
                            ),
                            ret,
                        },
                        other => other,
                    })?;
            }
        } else {
            let seq = self.send(Kind::Map, |w| ctlframe::write_map(w, domid, gfns))?;
            let payload = self.reply(seq, Kind::Result, Instant::now() + REPLY_TIMEOUT)?;
            let (ret, mut r) =
                ctlframe::read_result(&payload).map_err(|e| Error::Protocol(e.to_string()))?;
            if ret < 0 {
                return Err(Error::Hypercall {
                    op: format!("mapping frames of domain {domid}"),
                    ret,
                });
            }
            let list = ctlframe::read_buf(&mut r).map_err(|e| Error::Protocol(e.to_string()))?;
            if list.len() != gfns.len() * 8 {
                return Err(Error::Protocol(
                    "the MAP reply has the wrong number of frames".into(),
                ));
            }
            for (i, c) in list.chunks_exact(8).enumerate() {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                let v = i64::from_le_bytes(a);
                if v < 0 {
                    return Err(Error::Hypercall {
                        op: format!("mapping frame {:#x} of domain {domid}", gfns[i]),
                        ret: v,
                    });
                }
                offsets.push((v as u64) * PAGE as u64);
            }
        }
        let m = Mapping::pages(self.ram.as_raw_fd(), &offsets)
            .map_err(|e| Error::io("mapping the machine's RAM file", e))?;
        Ok(ForeignMapping::from_mmap(m))
    }

    fn bind_virq(&mut self, virq: u32) -> Result<u32, Error> {
        // struct evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; }
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&virq.to_le_bytes());
        self.evtchn_op(EVTCHNOP_BIND_VIRQ, &mut b, || {
            format!("binding VIRQ {virq}")
        })?;
        Ok(u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
    }

    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, Error> {
        // struct evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t remote_port, local_port; }
        let mut b = [0u8; 12];
        b[..2].copy_from_slice(&domid.to_le_bytes());
        b[4..8].copy_from_slice(&remote_port.to_le_bytes());
        self.evtchn_op(
            xen_abi::ctlserver::EVTCHNOP_BIND_INTERDOMAIN,
            &mut b,
            || format!("binding port {remote_port} of domain {domid}"),
        )?;
        Ok(u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
    }

    fn poll_notified(&mut self) -> Result<Vec<u32>, Error> {
        let mut b = vec![0u8; 4 + 4 * 256];
        self.evtchn_op(
            xen_abi::ctlserver::XENRS_EVTCHNOP_POLL_NOTIFIED,
            &mut b,
            || "asking which channels fired".into(),
        )?;
        let n = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).min(256);
        Ok(b[4..4 + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn unbind(&mut self, port: u32) -> Result<(), Error> {
        self.evtchn_op(
            xen_abi::ctlserver::EVTCHNOP_CLOSE,
            &mut port.to_le_bytes(),
            || format!("closing port {port}"),
        )
    }

    fn notify(&mut self, port: u32) -> Result<(), Error> {
        self.evtchn_op(EVTCHNOP_SEND, &mut port.to_le_bytes(), || {
            format!("sending an event on port {port}")
        })
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<Option<u32>, Error> {
        if let Some(p) = self.events.pop_front() {
            return Ok(Some(p));
        }
        let deadline = Instant::now() + timeout;
        while let Some((h, payload)) = self.next_frame(deadline)? {
            if h.kind == Kind::Event {
                if let Ok(p) = ctlframe::Reader::new(&payload).u32() {
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted hypervisor end: answers HELLO, then one HYPERCALL by doubling arg 1 into ret and writing
    /// "ok" into buffer 0, and emits an EVENT before the RESULT.
    fn peer(mut s: UnixStream) {
        let mut rx = Vec::new();
        let mut buf = [0u8; 4096];
        let mut out = vec![0u8; 70_000];
        let mut replies = 0;
        while replies < 2 {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                return;
            }
            rx.extend_from_slice(&buf[..n]);
            while let Decoded::Frame { header, consumed } = ctlframe::decode(&rx) {
                let payload = rx[ctlframe::HEADER_LEN..consumed].to_vec();
                rx.drain(..consumed);
                let len = match header.kind {
                    Kind::Hello => ctlframe::encode(&mut out, Kind::Hello, header.seq, |w| {
                        Hello {
                            version: 1,
                            ram_bytes: 64 << 20,
                            nr_cpus: 2,
                            xen_version: 0x4_0013,
                        }
                        .write(w)
                    }),
                    Kind::Hypercall => {
                        let (h, mut r) = ctlframe::read_hypercall(&payload).expect("hypercall");
                        let mut b0 = ctlframe::read_buf(&mut r).expect("buf").to_vec();
                        b0[..2].copy_from_slice(b"ok");
                        let ev =
                            ctlframe::encode(&mut out, Kind::Event, 0, |w| w.u32(9)).expect("ev");
                        s.write_all(&out[..ev]).expect("write");
                        ctlframe::encode(&mut out, Kind::Result, header.seq, |w| {
                            ctlframe::write_result(w, h.args[1] as i64 * 2, &[&b0])
                        })
                    }
                    _ => panic!("unexpected frame"),
                }
                .expect("encode");
                // Garbage before the reply must be skipped by the transport.
                s.write_all(b"\x00junk").expect("write");
                s.write_all(&out[..len]).expect("write");
                replies += 1;
            }
        }
    }

    #[test]
    fn hypercall_round_trip_over_a_socket() {
        let (a, b) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || peer(b));
        let ram = tempfile();
        let mut tr = SandboxTransport::over(a, ram, Duration::from_secs(5)).expect("hello");
        assert_eq!(tr.hello().nr_cpus, 2);
        let mut data = *b"xxxx";
        let mut call = Call::new(
            36,
            [
                Arg::Buf(0),
                Arg::Value(21),
                Arg::Value(0),
                Arg::Value(0),
                Arg::Value(0),
            ],
        );
        call.bufs.push(&mut data);
        assert_eq!(tr.hypercall(&mut call).expect("call"), 42);
        drop(call);
        assert_eq!(&data, b"okxx");
        assert_eq!(
            tr.wait_event(Duration::from_millis(10)).expect("event"),
            Some(9)
        );
        t.join().expect("peer");
    }

    fn tempfile() -> File {
        let p = std::env::temp_dir().join(format!("xl-sandbox-ram-{}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .expect("ram file");
        let _ = std::fs::remove_file(&p);
        f
    }
}
