//! The local APIC of a guest vCPU, in x2APIC mode from the start (as firmware may hand it over), reached only
//! through the x2APIC MSRs (`0x800..=0x83f`) and `IA32_APIC_BASE`.
//!
//! This is the part of Xen's emulated local APIC that a PVH Linux guest uses: it finds its APIC through CPUID
//! and the MADT, programs the spurious-vector and LVT registers, and then leaves timekeeping to the Xen
//! per-vCPU timers and IPIs to event channels. Interrupts it sends to itself (`irq_work`, the self-IPI
//! register) are queued here and injected by the hypervisor; the APIC timer counts nothing (Xen guests use
//! `VCPUOP_set_singleshot_timer`), and IPIs to other vCPUs are reported to the caller.

/// `IA32_APIC_BASE`.
pub const APIC_BASE_MSR: u32 = 0x1b;
/// `IA32_APIC_BASE`: the bootstrap processor.
pub const BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE`: x2APIC mode.
pub const BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE`: APIC enabled.
pub const BASE_ENABLE: u64 = 1 << 11;
/// The APIC's default physical base.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;

const ID: u32 = 0x802;
const VERSION: u32 = 0x803;
const TPR: u32 = 0x808;
const PPR: u32 = 0x80a;
const EOI: u32 = 0x80b;
const LDR: u32 = 0x80d;
const SVR: u32 = 0x80f;
const ISR0: u32 = 0x810;
const IRR7: u32 = 0x827;
const ESR: u32 = 0x828;
const LVT_CMCI: u32 = 0x82f;
const ICR: u32 = 0x830;
const LVT_TIMER: u32 = 0x832;
const LVT_ERROR: u32 = 0x837;
const TIMER_INITIAL: u32 = 0x838;
const TIMER_CURRENT: u32 = 0x839;
const TIMER_DIVIDE: u32 = 0x83e;
const SELF_IPI: u32 = 0x83f;

/// A masked LVT entry.
const LVT_MASKED: u32 = 1 << 16;

/// An interrupt command the guest issued for other vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    /// The vector (fixed delivery) or the start page (SIPI).
    pub vector: u8,
    /// Delivery mode (`0` fixed, `4` NMI, `5` INIT, `6` start-up).
    pub mode: u8,
    /// Destination x2APIC ID (`u32::MAX` for all but self).
    pub dest: u32,
}

/// One vCPU's local APIC.
#[derive(Debug, Clone)]
pub struct VLapic {
    id: u32,
    base: u64,
    tpr: u32,
    svr: u32,
    esr: u32,
    /// CMCI, timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; 7],
    timer_initial: u32,
    timer_divide: u32,
    icr: u64,
    pending: [u64; 4],
}

impl VLapic {
    /// The APIC of the vCPU with x2APIC ID `id` (the bootstrap processor when `bsp`), enabled in x2APIC mode.
    pub const fn new(id: u32, bsp: bool) -> Self {
        Self {
            id,
            base: DEFAULT_BASE | BASE_ENABLE | BASE_EXTD | if bsp { BASE_BSP } else { 0 },
            tpr: 0,
            svr: 0xff,
            esr: 0,
            lvt: [LVT_MASKED; 7],
            timer_initial: 0,
            timer_divide: 0,
            icr: 0,
            pending: [0; 4],
        }
    }

    /// True for the MSRs this APIC answers.
    pub fn owns(msr: u32) -> bool {
        msr == APIC_BASE_MSR || (0x800..=0x83f).contains(&msr)
    }

    /// RDMSR; `None` for registers that cannot be read (the caller injects #GP).
    pub fn read(&self, msr: u32) -> Option<u64> {
        let v = match msr {
            APIC_BASE_MSR => return Some(self.base),
            ID => self.id,
            // Version 0x14 (integrated), 7 LVT entries (max index 6), no EOI broadcast suppression.
            VERSION => 0x0006_0014,
            TPR => self.tpr,
            PPR => self.tpr & 0xf0,
            LDR => ((self.id & 0xffff_fff0) << 12) | (1 << (self.id & 0xf)),
            SVR => self.svr,
            ISR0..=IRR7 => 0,
            ESR => self.esr,
            LVT_CMCI => self.lvt[0],
            ICR => return Some(self.icr),
            0x833..=LVT_ERROR => self.lvt[(msr - 0x831) as usize],
            LVT_TIMER => self.lvt[1],
            TIMER_INITIAL => self.timer_initial,
            TIMER_CURRENT => 0,
            TIMER_DIVIDE => self.timer_divide,
            _ => return None,
        };
        Some(u64::from(v))
    }

    /// WRMSR: `Err(())` when the write faults (#GP), `Ok(Some(ipi))` when it sends an interrupt to another
    /// vCPU.
    #[allow(clippy::result_unit_err)]
    pub fn write(&mut self, msr: u32, value: u64) -> Result<Option<Ipi>, ()> {
        let v32 = value as u32;
        let reserved_high = value >> 32 != 0 && msr != ICR && msr != APIC_BASE_MSR;
        if reserved_high {
            return Err(());
        }
        match msr {
            APIC_BASE_MSR => {
                // Leaving x2APIC mode (or disabling the APIC) is not offered: the guest keeps x2APIC.
                if value & (BASE_ENABLE | BASE_EXTD) != BASE_ENABLE | BASE_EXTD {
                    return Err(());
                }
                self.base = (value & !0xfff) | (self.base & BASE_BSP) | BASE_ENABLE | BASE_EXTD;
            }
            TPR => self.tpr = v32 & 0xff,
            EOI => {
                if v32 != 0 {
                    return Err(());
                }
            }
            SVR => self.svr = v32 & 0x13ff,
            ESR => self.esr = 0,
            LVT_CMCI => self.lvt[0] = v32,
            LVT_TIMER => self.lvt[1] = v32,
            0x833..=LVT_ERROR => self.lvt[(msr - 0x831) as usize] = v32,
            TIMER_INITIAL => self.timer_initial = v32,
            TIMER_DIVIDE => self.timer_divide = v32 & 0xb,
            SELF_IPI => self.raise(v32 as u8),
            ICR => {
                self.icr = value & !(1 << 12);
                return Ok(self.command(value));
            }
            _ => return Err(()),
        }
        Ok(None)
    }

    fn command(&mut self, icr: u64) -> Option<Ipi> {
        let vector = icr as u8;
        let mode = ((icr >> 8) & 7) as u8;
        let dest = (icr >> 32) as u32;
        match (icr >> 18) & 3 {
            // Self.
            1 => {
                if mode == 0 {
                    self.raise(vector);
                }
                None
            }
            // All including self.
            2 => {
                if mode == 0 {
                    self.raise(vector);
                }
                Some(Ipi {
                    vector,
                    mode,
                    dest: u32::MAX,
                })
            }
            3 => Some(Ipi {
                vector,
                mode,
                dest: u32::MAX,
            }),
            _ if dest == self.id => {
                if mode == 0 {
                    self.raise(vector);
                }
                None
            }
            _ => Some(Ipi { vector, mode, dest }),
        }
    }

    /// Queues `vector` for this vCPU (vectors below 16 are reserved and dropped, as a real APIC flags them in
    /// ESR).
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.esr |= 1 << 6;
            return;
        }
        self.pending[usize::from(vector / 64)] |= 1 << (vector % 64);
    }

    /// Takes the highest queued vector, if the APIC is software-enabled.
    pub fn take_pending(&mut self) -> Option<u8> {
        if self.svr & (1 << 8) == 0 {
            return None;
        }
        for w in (0..4).rev() {
            if self.pending[w] != 0 {
                let bit = 63 - self.pending[w].leading_zeros();
                self.pending[w] &= !(1 << bit);
                return Some((w as u32 * 64 + bit) as u8);
            }
        }
        None
    }

    /// True when a vector is queued.
    pub fn has_pending(&self) -> bool {
        self.svr & (1 << 8) != 0 && self.pending.iter().any(|w| *w != 0)
    }

    /// The APIC as Xen's `LAPIC` and `LAPIC_REGS` save records: each x2APIC register `0x800 + n` at byte
    /// `n * 16` of the register page, queued vectors in the IRR.
    pub fn save(&self, regs: &mut [u8; 1024]) -> xen_abi::hvmsave::HvmHwLapic {
        regs.fill(0);
        let mut put = |msr: u32, v: u32| {
            let at = ((msr - 0x800) as usize) << 4;
            regs[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(ID, self.id);
        put(VERSION, 0x0006_0014);
        put(TPR, self.tpr);
        put(SVR, self.svr);
        put(ESR, self.esr);
        put(LVT_CMCI, self.lvt[0]);
        put(LVT_TIMER, self.lvt[1]);
        for (i, msr) in (0x833..=LVT_ERROR).enumerate() {
            put(msr, self.lvt[2 + i]);
        }
        put(TIMER_INITIAL, self.timer_initial);
        put(TIMER_DIVIDE, self.timer_divide);
        put(ICR, self.icr as u32);
        put(ICR + 1, (self.icr >> 32) as u32);
        for dword in 0..8u32 {
            let word = self.pending[(dword / 2) as usize];
            let bits = (word >> (32 * (dword % 2))) as u32;
            put(0x820 + dword, bits);
        }
        xen_abi::hvmsave::HvmHwLapic {
            apic_base_msr: self.base,
            disabled: u32::from(self.svr & (1 << 8) == 0) << 1,
            timer_divisor: self.timer_divide,
        }
    }

    /// Loads `LAPIC` and `LAPIC_REGS` records written by [`VLapic::save`] (or by Xen for an x2APIC-mode APIC);
    /// false, with nothing changed, when they describe an APIC this one cannot be (not enabled in x2APIC mode,
    /// another ID).
    pub fn load(&mut self, hw: &xen_abi::hvmsave::HvmHwLapic, regs: &[u8; 1024]) -> bool {
        let get = |msr: u32| {
            let at = ((msr - 0x800) as usize) << 4;
            u32::from_le_bytes([regs[at], regs[at + 1], regs[at + 2], regs[at + 3]])
        };
        if hw.apic_base_msr & (BASE_ENABLE | BASE_EXTD) != BASE_ENABLE | BASE_EXTD
            || get(ID) != self.id
        {
            return false;
        }
        self.base = hw.apic_base_msr;
        self.tpr = get(TPR) & 0xff;
        self.svr = get(SVR) & 0x13ff;
        self.esr = get(ESR);
        self.lvt[0] = get(LVT_CMCI);
        self.lvt[1] = get(LVT_TIMER);
        for (i, msr) in (0x833..=LVT_ERROR).enumerate() {
            self.lvt[2 + i] = get(msr);
        }
        self.timer_initial = get(TIMER_INITIAL);
        self.timer_divide = get(TIMER_DIVIDE) & 0xb;
        self.icr = u64::from(get(ICR)) | (u64::from(get(ICR + 1)) << 32);
        self.pending = [0; 4];
        for dword in 0..8u32 {
            let bits = u64::from(get(0x820 + dword));
            self.pending[(dword / 2) as usize] |= bits << (32 * (dword % 2));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let mut a = VLapic::new(1, false);
        a.write(SVR, 0x1ff).unwrap();
        a.write(TPR, 0x20).unwrap();
        a.write(0x835, 0x700).unwrap();
        a.raise(0xec);
        a.raise(0x31);
        let mut regs = [0u8; 1024];
        let hw = a.save(&mut regs);
        assert_eq!(hw.apic_base_msr & BASE_EXTD, BASE_EXTD);
        let mut b = VLapic::new(1, false);
        assert!(b.load(&hw, &regs));
        assert_eq!(b.read(SVR), Some(0x1ff));
        assert_eq!(b.read(TPR), Some(0x20));
        assert_eq!(b.read(0x835), Some(0x700));
        assert_eq!(b.take_pending(), Some(0xec));
        assert_eq!(b.take_pending(), Some(0x31));
        // Another vCPU's APIC, or one not in x2APIC mode, is refused and nothing changes.
        let mut c = VLapic::new(2, false);
        assert!(!c.load(&hw, &regs));
        assert_eq!(c.read(SVR), Some(0xff));
        let legacy = xen_abi::hvmsave::HvmHwLapic {
            apic_base_msr: DEFAULT_BASE | BASE_ENABLE,
            ..hw
        };
        assert!(!b.load(&legacy, &regs));
    }

    #[test]
    fn identity_and_mode() {
        let a = VLapic::new(3, false);
        assert_eq!(a.read(ID), Some(3));
        assert_eq!(
            a.read(APIC_BASE_MSR),
            Some(DEFAULT_BASE | BASE_ENABLE | BASE_EXTD)
        );
        assert_eq!(
            VLapic::new(0, true)
                .read(APIC_BASE_MSR)
                .map(|b| b & BASE_BSP),
            Some(BASE_BSP)
        );
        // Logical ID: cluster 0, bit 3.
        assert_eq!(a.read(LDR), Some(1 << 3));
        assert_eq!(VLapic::new(17, false).read(LDR), Some((1 << 16) | 2));
        assert!(VLapic::owns(0x80f) && VLapic::owns(APIC_BASE_MSR) && !VLapic::owns(0x840));
    }

    #[test]
    fn registers_keep_what_linux_writes_and_reject_the_rest() {
        let mut a = VLapic::new(0, true);
        assert_eq!(a.write(SVR, 0x1ff), Ok(None));
        assert_eq!(a.read(SVR), Some(0x1ff));
        assert_eq!(a.write(LVT_TIMER, 0x100ef), Ok(None));
        assert_eq!(a.read(LVT_TIMER), Some(0x100ef));
        assert_eq!(a.write(0x835, 0x700), Ok(None));
        assert_eq!(a.read(0x835), Some(0x700), "LINT0");
        assert_eq!(a.write(TPR, 0x20), Ok(None));
        assert_eq!(a.read(PPR), Some(0x20));
        assert_eq!(a.write(EOI, 0), Ok(None));
        assert_eq!(a.write(EOI, 1), Err(()), "EOI takes only 0");
        assert_eq!(a.read(EOI), None, "write-only");
        assert_eq!(a.write(ID, 5), Err(()), "read-only");
        assert_eq!(a.write(0x840, 0), Err(()));
        assert_eq!(a.write(TPR, 1 << 40), Err(()), "reserved high half");
        // Leaving x2APIC mode is refused; moving the base keeps the mode and the BSP bit.
        assert_eq!(a.write(APIC_BASE_MSR, DEFAULT_BASE | BASE_ENABLE), Err(()));
        assert_eq!(
            a.write(APIC_BASE_MSR, 0xfed0_0000 | BASE_ENABLE | BASE_EXTD),
            Ok(None)
        );
        assert_eq!(
            a.read(APIC_BASE_MSR),
            Some(0xfed0_0000 | BASE_ENABLE | BASE_EXTD | BASE_BSP)
        );
    }

    #[test]
    fn self_ipis_queue_by_priority_and_others_are_reported() {
        let mut a = VLapic::new(1, false);
        // Software-disabled APIC: nothing is delivered yet.
        a.write(SELF_IPI, 0xf6).expect("self ipi");
        assert_eq!(a.take_pending(), None);
        a.write(SVR, 0x1ff).expect("enable");
        a.write(ICR, (1 << 18) | 0x31).expect("self shorthand");
        a.write(ICR, (1u64 << 32) | 0x40).expect("to own ID");
        assert!(a.has_pending());
        assert_eq!(a.take_pending(), Some(0xf6));
        assert_eq!(a.take_pending(), Some(0x40));
        assert_eq!(a.take_pending(), Some(0x31));
        assert_eq!(a.take_pending(), None);
        assert_eq!(
            a.write(ICR, (2u64 << 32) | 0x50),
            Ok(Some(Ipi {
                vector: 0x50,
                mode: 0,
                dest: 2
            }))
        );
        assert_eq!(
            a.write(ICR, (3 << 18) | (5 << 8)),
            Ok(Some(Ipi {
                vector: 0,
                mode: 5,
                dest: u32::MAX
            })),
            "INIT to all others"
        );
        // Reserved vectors are dropped and flagged.
        a.raise(3);
        assert_eq!(a.take_pending(), None);
        assert_ne!(a.read(ESR), Some(0));
    }
}
