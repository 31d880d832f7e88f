//! A domain's PV console from the control domain's side: the `xencons_interface` ring page whose frame the
//! builder stored in `HVM_PARAM_CONSOLE_PFN`. The guest produces into `out`, the control domain consumes it,
//! and the reverse for `in` (`public/io/console.h`); input is signalled on the channel in
//! `HVM_PARAM_CONSOLE_EVTCHN`.
//!
//! [`service::ConsoleService`] is the control domain's console daemon (Xen's xenconsoled): it drains every
//! domain's ring all the time, so a guest never stalls on a full ring, keeps what arrives while nobody is
//! attached, and connects one client at a time (`virsh console`).

pub mod service;

use xen_abi::memres::{
    CONS_IN_CONS, CONS_IN_PROD, CONS_IN_SIZE, CONS_OUT_CONS, CONS_OUT_PROD, CONS_OUT_SIZE,
    HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN,
};

use crate::transport::{Error, Transport};

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The console ring of one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Console {
    /// The domain.
    pub domid: u16,
    /// The ring's guest frame.
    pub gfn: u64,
    /// The control domain's end of the console channel, once bound ([`Console::bind`]).
    pub port: Option<u32>,
}

impl Console {
    /// Finds the ring of `domid` through `HVM_PARAM_CONSOLE_PFN`.
    pub fn open<T: Transport>(t: &mut T, domid: u16) -> Result<Self, Error> {
        let gfn = t.hvm_get_param(domid, HVM_PARAM_CONSOLE_PFN)?;
        if gfn == 0 {
            return Err(Error::Config(format!("domain {domid} has no console ring")));
        }
        Ok(Self {
            domid,
            gfn,
            port: None,
        })
    }

    /// Binds the control domain's end of the guest's console channel (`HVM_PARAM_CONSOLE_EVTCHN`), so that
    /// [`Console::write`] wakes the guest. Guests without the channel (they poll with `CONSOLEIO_read` or not
    /// at all) keep working without it.
    pub fn bind<T: Transport>(&mut self, t: &mut T) -> Result<(), Error> {
        if self.port.is_some() {
            return Ok(());
        }
        let remote = t.hvm_get_param(self.domid, HVM_PARAM_CONSOLE_EVTCHN)?;
        if remote != 0 {
            let remote = u32::try_from(remote).map_err(|_| {
                Error::Config(format!("domain {} has a bad console channel", self.domid))
            })?;
            self.port = Some(t.bind_interdomain(self.domid, remote)?);
        }
        Ok(())
    }

    /// Closes the channel [`Console::bind`] bound.
    pub fn unbind<T: Transport>(&mut self, t: &mut T) -> Result<(), Error> {
        match self.port.take() {
            Some(p) => t.unbind(p),
            None => Ok(()),
        }
    }

    /// Takes everything the guest has written since the last read. A producer index further ahead than the
    /// ring's size (a confused or hostile guest) is clamped to the last ring's worth of bytes.
    pub fn read<T: Transport>(&self, t: &mut T) -> Result<Vec<u8>, Error> {
        let mut m = t.map_foreign(self.domid, &[self.gfn])?;
        let cons = rd32(&m, CONS_OUT_CONS);
        let prod = rd32(&m, CONS_OUT_PROD);
        let mut avail = prod.wrapping_sub(cons) as usize;
        let mut start = cons;
        if avail > CONS_OUT_SIZE {
            start = prod.wrapping_sub(CONS_OUT_SIZE as u32);
            avail = CONS_OUT_SIZE;
        }
        let out = (0..avail)
            .map(|i| m[CONS_IN_SIZE + (start.wrapping_add(i as u32) as usize % CONS_OUT_SIZE)])
            .collect();
        wr32(&mut m, CONS_OUT_CONS, prod);
        Ok(out)
    }

    /// Queues bytes for the guest; returns how many fit.
    pub fn write<T: Transport>(&self, t: &mut T, data: &[u8]) -> Result<usize, Error> {
        let mut m = t.map_foreign(self.domid, &[self.gfn])?;
        let cons = rd32(&m, CONS_IN_CONS);
        let prod = rd32(&m, CONS_IN_PROD);
        let used = (prod.wrapping_sub(cons) as usize).min(CONS_IN_SIZE);
        let n = data.len().min(CONS_IN_SIZE - used);
        for (i, b) in data[..n].iter().enumerate() {
            m[prod.wrapping_add(i as u32) as usize % CONS_IN_SIZE] = *b;
        }
        wr32(&mut m, CONS_IN_PROD, prod.wrapping_add(n as u32));
        drop(m);
        if let (Some(port), true) = (self.port, n > 0) {
            t.notify(port)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{
        build,
        tests::{kernel, spec},
    };
    use crate::transport::fake::FakeXen;

    #[test]
    fn reads_what_the_guest_wrote_and_writes_its_input() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let c = Console::open(&mut x, b.domid).expect("console");
        assert_eq!(c.gfn, b.console_gfn);
        let page = c.gfn * 4096;
        // The guest writes "hello\n" at out[2046..] (wrapping) with out_prod = 2052 and out_cons = 2046.
        let msg = b"hello\n";
        for (i, ch) in msg.iter().enumerate() {
            let at = page + (CONS_IN_SIZE + (2046 + i) % CONS_OUT_SIZE) as u64;
            assert!(x.write_guest(b.domid, at, &[*ch]));
        }
        x.write_guest(b.domid, page + CONS_OUT_CONS as u64, &2046u32.to_le_bytes());
        x.write_guest(b.domid, page + CONS_OUT_PROD as u64, &2052u32.to_le_bytes());
        assert_eq!(c.read(&mut x).expect("read"), msg);
        assert_eq!(c.read(&mut x).expect("read again"), b"", "consumed");
        assert_eq!(
            x.read_guest(b.domid, page + CONS_OUT_CONS as u64, 4)
                .expect("cons"),
            2052u32.to_le_bytes()
        );
        // A hostile producer index: at most one ring's worth.
        x.write_guest(
            b.domid,
            page + CONS_OUT_PROD as u64,
            &100_000u32.to_le_bytes(),
        );
        assert_eq!(c.read(&mut x).expect("read").len(), CONS_OUT_SIZE);
        // Input.
        assert_eq!(c.write(&mut x, b"ls\n").expect("write"), 3);
        assert_eq!(x.read_guest(b.domid, page, 3).expect("in"), b"ls\n");
        assert_eq!(
            x.read_guest(b.domid, page + CONS_IN_PROD as u64, 4)
                .expect("prod"),
            3u32.to_le_bytes()
        );
        assert_eq!(
            c.write(&mut x, &[b'x'; 2000]).expect("write"),
            CONS_IN_SIZE - 3,
            "ring full"
        );
    }

    #[test]
    fn input_wakes_the_guest_through_the_bound_console_channel() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let mut c = Console::open(&mut x, b.domid).expect("console");
        assert_eq!(c.write(&mut x, b"a").expect("write"), 1);
        assert!(x.state.borrow().sent.is_empty(), "no channel bound yet");
        c.bind(&mut x).expect("bind");
        let local = c.port.expect("bound");
        assert_eq!(c.write(&mut x, b"b").expect("write"), 1);
        assert_eq!(x.state.borrow().sent, vec![(b.domid, b.console_port)]);
        // Nothing written, nothing signalled.
        assert_eq!(c.write(&mut x, b"").expect("write"), 0);
        assert_eq!(x.state.borrow().sent.len(), 1);
        c.unbind(&mut x).expect("unbind");
        assert!(!x.state.borrow().bound.contains_key(&local));
        assert!(x.unbind(local).is_err(), "closed twice");
    }

    #[test]
    fn a_restored_ring_is_read_from_where_its_indices_stand() {
        let mut x = FakeXen::default();
        let b = build(&mut x, &spec(kernel(true, 0x10_0000, &[0; 8]))).expect("built");
        let c = Console::open(&mut x, b.domid).expect("console");
        let page = c.gfn * 4096;
        // Restored memory: the indices are where the guest left them, about to wrap.
        let cons = u32::MAX - 2;
        let msg = b"resumed\n";
        for (i, ch) in msg.iter().enumerate() {
            let at = cons.wrapping_add(i as u32) as usize % CONS_OUT_SIZE;
            assert!(x.write_guest(b.domid, page + (CONS_IN_SIZE + at) as u64, &[*ch]));
        }
        let prod = cons.wrapping_add(msg.len() as u32);
        x.write_guest(b.domid, page + CONS_OUT_CONS as u64, &cons.to_le_bytes());
        x.write_guest(b.domid, page + CONS_OUT_PROD as u64, &prod.to_le_bytes());
        x.write_guest(b.domid, page + CONS_IN_CONS as u64, &7u32.to_le_bytes());
        x.write_guest(b.domid, page + CONS_IN_PROD as u64, &7u32.to_le_bytes());
        assert_eq!(c.read(&mut x).expect("read"), msg);
        assert_eq!(
            x.read_guest(b.domid, page + CONS_OUT_CONS as u64, 4)
                .expect("cons"),
            prod.to_le_bytes()
        );
        // Input goes in after the guest's input index, which is not reset.
        assert_eq!(c.write(&mut x, b"k").expect("write"), 1);
        assert_eq!(x.read_guest(b.domid, page + 7, 1).expect("in"), b"k");
        assert_eq!(
            x.read_guest(b.domid, page + CONS_IN_PROD as u64, 4)
                .expect("prod"),
            8u32.to_le_bytes()
        );
    }
}
