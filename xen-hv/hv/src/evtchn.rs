//! Event channels with the 2-level ABI: the per-domain port table (VIRQ and IPI bindings) and the pending /
//! mask / selector bit logic over `shared_info` and `vcpu_info`, as pure functions tested on the host.

use xen_abi::errno::Errno;

/// Ports per domain (the 2-level ABI allows 4096 on 64-bit guests; this is the number offered).
pub const NR_PORTS: usize = 1024;
/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;
/// `VIRQ_TIMER`.
pub const VIRQ_TIMER: u32 = 0;

/// What a port is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Not in use.
    Free,
    /// A virtual interrupt of one vCPU.
    Virq {
        /// `VIRQ_*`.
        virq: u32,
        /// Target vCPU.
        vcpu: u32,
    },
    /// An inter-processor interrupt to one vCPU.
    Ipi {
        /// Target vCPU.
        vcpu: u32,
    },
    /// A channel to another domain (allocated unbound by the toolstack for the control domain, as the console
    /// and xenstore channels are); events from the other end are delivered to `vcpu`.
    Interdomain {
        /// The domain at the other end.
        remote: u16,
        /// The vCPU notified (`EVTCHNOP_bind_vcpu` moves it).
        vcpu: u32,
    },
    /// The domain's PV console, whose other end is the hypervisor; events to the guest go to vCPU 0.
    Console,
}

impl Binding {
    /// The vCPU events on this binding are delivered to (`None` for a free port).
    pub fn vcpu(self) -> Option<u32> {
        match self {
            Self::Free => None,
            Self::Virq { vcpu, .. } | Self::Ipi { vcpu } | Self::Interdomain { vcpu, .. } => {
                Some(vcpu)
            }
            Self::Console => Some(0),
        }
    }
}

/// A domain's ports.
#[derive(Debug, Clone)]
pub struct Table {
    ports: [Binding; NR_PORTS],
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// All ports free (port 0 is never handed out, as in Xen).
    pub const fn new() -> Self {
        Self {
            ports: [Binding::Free; NR_PORTS],
        }
    }

    fn alloc(&mut self, b: Binding) -> Result<u32, Errno> {
        let port = (1..NR_PORTS)
            .find(|&p| self.ports[p] == Binding::Free)
            .ok_or(Errno::Enospc)?;
        self.ports[port] = b;
        Ok(port as u32)
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::Einval);
        }
        if self.virq_port(virq, vcpu).is_some() {
            return Err(Errno::Eexist);
        }
        self.alloc(Binding::Virq { virq, vcpu })
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        self.alloc(Binding::Ipi { vcpu })
    }

    /// `EVTCHNOP_alloc_unbound` on behalf of the toolstack: a channel whose other end is `remote`, notifying
    /// vCPU 0.
    pub fn alloc_interdomain(&mut self, remote: u16) -> Result<u32, Errno> {
        self.alloc(Binding::Interdomain { remote, vcpu: 0 })
    }

    /// Reserves `port` for a channel to `remote` (ports the toolstack allocated before the table existed).
    pub fn reserve_interdomain(&mut self, port: u32, remote: u16) -> Result<(), Errno> {
        match self.ports.get_mut(port as usize) {
            Some(b) if *b == Binding::Free && port != 0 => {
                *b = Binding::Interdomain { remote, vcpu: 0 };
                Ok(())
            }
            _ => Err(Errno::Einval),
        }
    }

    /// `EVTCHNOP_bind_vcpu`: only channels to other domains move (per-vCPU VIRQs and IPIs are fixed, as in Xen).
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Errno> {
        match self.ports.get_mut(port as usize) {
            Some(Binding::Interdomain { vcpu: v, .. }) => {
                *v = vcpu;
                Ok(())
            }
            Some(Binding::Free) | None => Err(Errno::Einval),
            Some(_) => Err(Errno::Einval),
        }
    }

    /// Allocates the port of the domain's PV console (the hypervisor is its back end).
    pub fn bind_console(&mut self) -> Result<u32, Errno> {
        self.alloc(Binding::Console)
    }

    /// `EVTCHNOP_close`.
    pub fn close(&mut self, port: u32) -> Result<(), Errno> {
        match self.ports.get_mut(port as usize) {
            Some(b) if *b != Binding::Free => {
                *b = Binding::Free;
                Ok(())
            }
            _ => Err(Errno::Einval),
        }
    }

    /// The binding of `port` (`Free` for ports out of range).
    pub fn get(&self, port: u32) -> Binding {
        self.ports
            .get(port as usize)
            .copied()
            .unwrap_or(Binding::Free)
    }

    /// The port bound to `virq` of `vcpu`.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        self.ports
            .iter()
            .position(|b| *b == Binding::Virq { virq, vcpu })
            .map(|p| p as u32)
    }
}

const PENDING: usize = 2048;
const MASK: usize = 2560;

fn bit(bytes: &[u8], base: usize, n: usize) -> bool {
    bytes[base + n / 8] & (1 << (n % 8)) != 0
}

fn set_bit(bytes: &mut [u8], base: usize, n: usize, v: bool) {
    if v {
        bytes[base + n / 8] |= 1 << (n % 8);
    } else {
        bytes[base + n / 8] &= !(1 << (n % 8));
    }
}

/// True when `port` is pending in `shared` (the `shared_info` page).
pub fn is_pending(shared: &[u8], port: u32) -> bool {
    let p = port as usize;
    p < NR_PORTS && shared.len() >= MASK + NR_PORTS / 8 && bit(shared, PENDING, p)
}

/// Marks `port` pending in `shared` (the `shared_info` page) and, unless the port is masked or was already
/// pending, sets its word in `vcpu_info`'s `evtchn_pending_sel` and `evtchn_upcall_pending`. Returns true when
/// the vCPU should get an upcall (the upcall mask in `vcpu_info` is clear).
pub fn set_pending(shared: &mut [u8], vcpu_info: &mut [u8], port: u32) -> bool {
    let p = port as usize;
    if p >= NR_PORTS || shared.len() < MASK + NR_PORTS / 8 || vcpu_info.len() < 16 {
        return false;
    }
    if bit(shared, PENDING, p) {
        return false;
    }
    set_bit(shared, PENDING, p, true);
    if bit(shared, MASK, p) {
        return false;
    }
    raise_selector(vcpu_info, p / 64)
}

fn raise_selector(vcpu_info: &mut [u8], word: usize) -> bool {
    set_bit(vcpu_info, 8, word, true);
    vcpu_info[0] = 1;
    vcpu_info[1] == 0
}

/// `EVTCHNOP_unmask`: clears the mask bit and re-raises the port if it is pending. Returns true when the vCPU
/// should get an upcall.
pub fn unmask(shared: &mut [u8], vcpu_info: &mut [u8], port: u32) -> bool {
    let p = port as usize;
    if p >= NR_PORTS || shared.len() < MASK + NR_PORTS / 8 || vcpu_info.len() < 16 {
        return false;
    }
    set_bit(shared, MASK, p, false);
    if bit(shared, PENDING, p) {
        raise_selector(vcpu_info, p / 64)
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_bind_and_close() {
        let mut t = Table::new();
        let timer = t.bind_virq(VIRQ_TIMER, 0).expect("bind");
        assert_eq!(timer, 1);
        assert_eq!(t.bind_virq(VIRQ_TIMER, 0), Err(Errno::Eexist));
        assert_eq!(t.bind_virq(VIRQ_TIMER, 1), Ok(2));
        assert_eq!(t.bind_virq(NR_VIRQS, 0), Err(Errno::Einval));
        let ipi = t.bind_ipi(0).expect("ipi");
        assert_eq!(t.get(ipi), Binding::Ipi { vcpu: 0 });
        assert_eq!(t.virq_port(VIRQ_TIMER, 1), Some(2));
        assert_eq!(t.close(timer), Ok(()));
        assert_eq!(t.close(timer), Err(Errno::Einval));
        assert_eq!(t.close(u32::MAX), Err(Errno::Einval));
        assert_eq!(t.bind_ipi(1), Ok(1), "freed ports are reused");
        let dom0 = t.alloc_interdomain(0).expect("interdomain");
        assert_eq!(t.get(dom0), Binding::Interdomain { remote: 0, vcpu: 0 });
        assert_eq!(t.bind_vcpu(dom0, 1), Ok(()));
        assert_eq!(t.get(dom0).vcpu(), Some(1));
        assert_eq!(
            t.bind_vcpu(ipi, 1),
            Err(Errno::Einval),
            "IPIs stay on their vCPU"
        );
        assert_eq!(t.reserve_interdomain(dom0, 0), Err(Errno::Einval), "in use");
        assert_eq!(
            t.reserve_interdomain(0, 0),
            Err(Errno::Einval),
            "port 0 is never used"
        );
        assert_eq!(t.close(dom0), Ok(()));
        assert_eq!(t.reserve_interdomain(dom0, 0), Ok(()));
        assert_eq!(t.close(dom0), Ok(()));
        for _ in 4..NR_PORTS {
            t.bind_ipi(0).expect("room");
        }
        assert_eq!(t.bind_ipi(0), Err(Errno::Enospc));
    }

    #[test]
    fn console_port_is_an_ordinary_port() {
        let mut t = Table::new();
        let ipi = t.bind_ipi(0).expect("bind");
        let console = t.bind_console().expect("bind");
        assert_ne!(ipi, console);
        assert_eq!(t.get(console), Binding::Console);
        assert_eq!(t.virq_port(VIRQ_TIMER, 0), None);
        t.close(console).expect("close");
        assert_eq!(t.get(console), Binding::Free);
    }

    #[test]
    fn pending_mask_and_selector_bits() {
        let mut shared = vec![0u8; 4096];
        let mut vi = [0u8; 64];
        // Port 70: word 1 of the selector.
        assert!(set_pending(&mut shared, &mut vi, 70));
        assert_eq!(shared[PENDING + 70 / 8], 1 << (70 % 8));
        assert_eq!(vi[0], 1);
        assert_eq!(vi[8], 0b10);
        // Already pending: no second upcall.
        assert!(!set_pending(&mut shared, &mut vi, 70));
        // A masked port is recorded but raises nothing until unmasked.
        let mut vi2 = [0u8; 64];
        shared[MASK] = 1 << 3;
        assert!(!set_pending(&mut shared, &mut vi2, 3));
        assert_eq!(vi2[0], 0);
        assert!(unmask(&mut shared, &mut vi2, 3));
        assert_eq!((vi2[0], vi2[8]), (1, 1));
        // The vCPU's upcall mask suppresses the upcall, not the bookkeeping.
        let mut vi3 = [0u8; 64];
        vi3[1] = 1;
        assert!(!set_pending(&mut shared, &mut vi3, 200));
        assert_eq!(vi3[0], 1);
        // Out-of-range ports and short buffers are ignored.
        assert!(!set_pending(&mut shared, &mut vi, NR_PORTS as u32));
        assert!(!set_pending(&mut [0u8; 8], &mut vi, 1));
    }
}
