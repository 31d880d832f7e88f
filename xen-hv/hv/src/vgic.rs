//! The guests' view of a GICv3 beyond the CPU interface: the distributor at 0x03001000 and one redistributor
//! frame pair per vCPU from 0x03020000 (Xen's guest layout), emulated from stage-2 data aborts. There are no
//! SPIs (GICD_TYPER.ITLinesNumber = 0) and no LPIs; the distributor is RAZ/WI apart from its control and ID
//! registers; each vCPU's redistributor keeps its wake state, group, enable, priority and configuration
//! registers. Interrupts themselves reach the guest through the list registers of the virtual CPU interface
//! (`arch/aarch64/vcpu.rs`); the enable bits are recorded for the guest to read back but do not gate that
//! delivery. Pure register logic, tested on the host.

/// Guest-physical base of the distributor.
pub const GICD_BASE: u64 = 0x0300_1000;
/// Size of the distributor.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Guest-physical base of the first redistributor.
pub const GICR_BASE: u64 = 0x0302_0000;
/// Size of one redistributor (RD_base and SGI_base frames).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// GICD_IIDR / GICR_IIDR: implementer Arm.
const IIDR: u64 = 0x43b;
/// GICD_PIDR2 / GICR_PIDR2: architecture version 3.
const PIDR2: u64 = 0x3b;

/// One vCPU's view of the distributor and its own redistributor.
#[derive(Debug, Clone)]
pub struct Vgic {
    vcpu: u64,
    nr_vcpus: u64,
    gicd_ctlr: u64,
    waker: u64,
    group: u64,
    enabled: u64,
    priority: [u8; 32],
    icfgr1: u64,
}

impl Vgic {
    /// The reset state for vCPU `vcpu` of `nr_vcpus`.
    pub fn new(vcpu: u32, nr_vcpus: u32) -> Self {
        Self {
            vcpu: u64::from(vcpu),
            nr_vcpus: u64::from(nr_vcpus.max(1)),
            gicd_ctlr: 0,
            // ProcessorSleep and ChildrenAsleep set, as after reset.
            waker: 0b110,
            group: 0,
            enabled: 0,
            priority: [0; 32],
            icfgr1: 0,
        }
    }

    /// True when `gpa` lies in the emulated distributor or redistributors.
    pub fn claims(&self, gpa: u64) -> bool {
        (GICD_BASE..GICD_BASE + GICD_SIZE).contains(&gpa)
            || (GICR_BASE..GICR_BASE + GICR_STRIDE * self.nr_vcpus).contains(&gpa)
    }

    /// A read of `size` bytes at `gpa`.
    pub fn read(&self, gpa: u64, size: u64) -> u64 {
        let v = if gpa >= GICR_BASE {
            self.read_gicr(gpa - GICR_BASE, size)
        } else {
            self.read_gicd(gpa - GICD_BASE)
        };
        if size >= 8 {
            v
        } else {
            v & ((1u64 << (8 * size)) - 1)
        }
    }

    fn read_gicd(&self, off: u64) -> u64 {
        match off {
            0x0000 => self.gicd_ctlr,
            // IDbits: 10 bits of INTID; ITLinesNumber 0 (SGIs and PPIs only); CPUNumber for legacy.
            0x0004 => (9 << 19) | ((self.nr_vcpus - 1).min(7) << 5),
            0x0008 => IIDR,
            0xffe8 => PIDR2,
            _ => 0,
        }
    }

    fn read_gicr(&self, off: u64, size: u64) -> u64 {
        let frame = off / GICR_STRIDE;
        let off = off % GICR_STRIDE;
        let mine = frame == self.vcpu;
        let last = u64::from(frame + 1 == self.nr_vcpus);
        let typer = (frame << 32) | (frame << 8) | (last << 4);
        match off {
            0x0004 => IIDR,
            0x0008 if size >= 8 => typer,
            0x0008 => typer & 0xffff_ffff,
            0x000c => typer >> 32,
            0x0014 if mine => self.waker,
            0x0014 => 0b110,
            0xffe8 => PIDR2,
            0x1_0080 if mine => self.group,
            0x1_0100 | 0x1_0180 if mine => self.enabled,
            0x1_0400..=0x1_041f if mine => {
                let at = (off - 0x1_0400) as usize;
                (0..size as usize)
                    .take_while(|i| at + i < 32)
                    .fold(0, |v, i| v | (u64::from(self.priority[at + i]) << (8 * i)))
            }
            // SGIs are edge-triggered.
            0x1_0c00 => 0xaaaa_aaaa,
            0x1_0c04 if mine => self.icfgr1,
            _ => 0,
        }
    }

    /// A write of `size` bytes of `v` at `gpa`; writes to other vCPUs' redistributors are ignored.
    pub fn write(&mut self, gpa: u64, size: u64, v: u64) {
        if gpa < GICR_BASE {
            if gpa - GICD_BASE == 0 {
                // ARE (bit 4), EnableGrp1 (bit 1), EnableGrp0 (bit 0); RWP always reads 0.
                self.gicd_ctlr = v & 0x13;
            }
            return;
        }
        let off = gpa - GICR_BASE;
        if off / GICR_STRIDE != self.vcpu {
            return;
        }
        match off % GICR_STRIDE {
            // ProcessorSleep; ChildrenAsleep follows it at once.
            0x0014 => self.waker = if v & 0b10 != 0 { 0b110 } else { 0 },
            0x1_0080 => self.group = v & 0xffff_ffff,
            0x1_0100 => self.enabled |= v & 0xffff_ffff,
            0x1_0180 => self.enabled &= !(v & 0xffff_ffff),
            o @ 0x1_0400..=0x1_041f => {
                let at = (o - 0x1_0400) as usize;
                for i in (0..size as usize).take_while(|i| at + i < 32) {
                    self.priority[at + i] = (v >> (8 * i)) as u8;
                }
            }
            0x1_0c04 => self.icfgr1 = v & 0xffff_ffff,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributor_and_redistributors() {
        let mut g = Vgic::new(1, 2);
        assert!(g.claims(GICD_BASE) && g.claims(GICR_BASE + 2 * GICR_STRIDE - 4));
        assert!(!g.claims(GICR_BASE + 2 * GICR_STRIDE) && !g.claims(GICD_BASE - 4));
        assert_eq!(g.read(GICD_BASE + 0xffe8, 4) >> 4 & 0xf, 3, "GICv3");
        assert_eq!(g.read(GICD_BASE + 4, 4) & 0x1f, 0, "no SPIs");
        g.write(GICD_BASE, 4, 0x8000_0013);
        assert_eq!(g.read(GICD_BASE, 4), 0x13, "RWP never set");
        // Frame 0 is vCPU 0's, frame 1 ours and the last.
        assert_eq!(g.read(GICR_BASE + 8, 8), 0);
        assert_eq!(
            g.read(GICR_BASE + GICR_STRIDE + 8, 8),
            (1 << 32) | (1 << 8) | (1 << 4)
        );
        assert_eq!(g.read(GICR_BASE + GICR_STRIDE + 0xc, 4), 1);
        // Wake handshake: clearing ProcessorSleep clears ChildrenAsleep.
        let waker = GICR_BASE + GICR_STRIDE + 0x14;
        assert_eq!(g.read(waker, 4), 0b110);
        g.write(waker, 4, 0);
        assert_eq!(g.read(waker, 4), 0);
        // Enables, priorities (bytewise and wordwise), configuration.
        let sgi = GICR_BASE + GICR_STRIDE + 0x1_0000;
        g.write(sgi + 0x100, 4, (1 << 27) | (1 << 31));
        g.write(sgi + 0x180, 4, 1 << 31);
        assert_eq!(g.read(sgi + 0x100, 4), 1 << 27);
        g.write(sgi + 0x400 + 27, 1, 0xa0);
        g.write(sgi + 0x400 + 28, 4, 0x8090_a0b0);
        assert_eq!(g.read(sgi + 0x400 + 24, 4), 0xa0 << 24);
        assert_eq!(g.read(sgi + 0x400 + 28, 4), 0x8090_a0b0);
        assert_eq!(g.read(sgi + 0xc00, 4), 0xaaaa_aaaa);
        // Writes to another vCPU's redistributor are ignored.
        g.write(GICR_BASE + 0x1_0100, 4, u64::MAX);
        assert_eq!(g.read(GICR_BASE + 0x1_0100, 4), 0);
        assert_eq!(g.read(GICR_BASE + 0x14, 4), 0b110);
    }
}
