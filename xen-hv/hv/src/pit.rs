//! Channel 2 of the 8254 programmable interval timer and the port 0x61 gate, the part of the PC timer a Linux
//! guest uses to measure its CPU frequency at boot (`quick_pit_calibrate`, `pit_calibrate_tsc`). The counter
//! runs from system time at the PIT's 1.193182 MHz; channels 0 and 1 (interrupt and refresh) are not offered.
//!
//! Without it, reads of absent ports return all ones, which reads as a counter stuck at 0xffff: Linux then polls
//! it 100 000 times before giving up, seconds of exits under emulation.

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Channel 2 data port.
pub const PORT_CH2: u16 = 0x42;
/// Mode/command port.
pub const PORT_CMD: u16 = 0x43;
/// System control port B (gate of channel 2, speaker, OUT2 status).
pub const PORT_B: u16 = 0x61;

/// The emulated channel 2.
#[derive(Debug, Clone, Default)]
pub struct Pit2 {
    /// Reload value (0 means 65536).
    reload: u16,
    /// System time when counting started.
    start_ns: u64,
    /// Access mode: 1 low byte, 2 high byte, 3 low then high.
    access: u8,
    /// Next byte written / read is the high one (low/high access).
    write_hi: bool,
    read_hi: bool,
    pending_lo: u8,
    latched: Option<u16>,
    /// Port 0x61 bits 0 (gate) and 1 (speaker data).
    port_b: u8,
}

impl Pit2 {
    /// True for the ports this device answers.
    pub fn owns(port: u16) -> bool {
        matches!(port, PORT_CH2 | PORT_CMD | PORT_B)
    }

    fn ticks(&self, now_ns: u64) -> u64 {
        let ns = now_ns.saturating_sub(self.start_ns);
        (u128::from(ns) * u128::from(PIT_HZ) / 1_000_000_000) as u64
    }

    fn period(&self) -> u64 {
        if self.reload == 0 {
            65536
        } else {
            u64::from(self.reload)
        }
    }

    /// The current count (mode 0: counts down from the reload value, wrapping after terminal count).
    pub fn count(&self, now_ns: u64) -> u16 {
        if self.port_b & 1 == 0 {
            return self.reload;
        }
        let t = self.ticks(now_ns);
        (self.period().wrapping_sub(t) & 0xffff) as u16
    }

    /// OUT2: high once the count reached zero (mode 0).
    fn out2(&self, now_ns: u64) -> bool {
        self.port_b & 1 != 0 && self.ticks(now_ns) >= self.period()
    }

    /// A byte written to `port`.
    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            PORT_CMD => {
                if value >> 6 != 2 {
                    return;
                }
                let access = (value >> 4) & 3;
                if access == 0 {
                    self.latched = Some(self.count(now_ns));
                    self.read_hi = false;
                } else {
                    self.access = access;
                    self.write_hi = false;
                    self.read_hi = false;
                    self.latched = None;
                }
            }
            PORT_CH2 => {
                let done = match self.access {
                    1 => {
                        self.reload = (self.reload & 0xff00) | u16::from(value);
                        true
                    }
                    2 => {
                        self.reload = (self.reload & 0x00ff) | (u16::from(value) << 8);
                        true
                    }
                    _ if !self.write_hi => {
                        self.pending_lo = value;
                        self.write_hi = true;
                        false
                    }
                    _ => {
                        self.reload = u16::from(self.pending_lo) | (u16::from(value) << 8);
                        self.write_hi = false;
                        true
                    }
                };
                if done {
                    self.start_ns = now_ns;
                }
            }
            PORT_B => {
                let rising = self.port_b & 1 == 0 && value & 1 != 0;
                self.port_b = value & 3;
                if rising {
                    self.start_ns = now_ns;
                }
            }
            _ => {}
        }
    }

    /// A byte read from `port`.
    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        match port {
            PORT_CH2 => {
                let value = self.latched.unwrap_or_else(|| self.count(now_ns));
                let byte = match self.access {
                    2 => (value >> 8) as u8,
                    3 if self.read_hi => (value >> 8) as u8,
                    _ => value as u8,
                };
                if self.access == 3 {
                    self.read_hi = !self.read_hi;
                    if !self.read_hi {
                        self.latched = None;
                    }
                } else {
                    self.latched = None;
                }
                byte
            }
            PORT_B => {
                // Bit 4 toggles with the DRAM refresh (every 15 us); bit 5 is OUT2.
                let refresh = ((now_ns / 15_085) & 1) as u8;
                self.port_b | (refresh << 4) | (u8::from(self.out2(now_ns)) << 5)
            }
            // The command port is write-only.
            _ => 0xff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn channel_two_counts_down_at_the_pit_rate() {
        let mut p = Pit2::default();
        // What quick_pit_calibrate does: gate on, speaker off; channel 2, lo/hi, mode 0; reload 0xffff.
        p.write(PORT_B, 0x01, 0);
        p.write(PORT_CMD, 0xb0, 0);
        p.write(PORT_CH2, 0xff, 0);
        p.write(PORT_CH2, 0xff, 0);
        let read = |p: &mut Pit2, t| {
            let lo = p.read(PORT_CH2, t);
            let hi = p.read(PORT_CH2, t);
            u16::from(lo) | (u16::from(hi) << 8)
        };
        assert_eq!(read(&mut p, 0), 0xffff);
        // 1 ms is 1193 ticks.
        assert_eq!(read(&mut p, MS), 0xffff - 1193);
        assert_eq!(
            p.read(PORT_B, MS) & 0x20,
            0,
            "OUT2 low before terminal count"
        );
        assert_ne!(
            p.read(PORT_B, 60 * MS) & 0x20,
            0,
            "OUT2 high after 0xffff ticks"
        );
        // A latch freezes the value until both bytes are read.
        p.write(PORT_CMD, 0x80, 2 * MS);
        assert_eq!(read(&mut p, 3 * MS), 0xffff - 2386);
        assert_eq!(read(&mut p, 3 * MS), 0xffff - 3579);
    }

    #[test]
    fn gate_off_holds_the_count_and_other_channels_are_ignored() {
        let mut p = Pit2::default();
        p.write(PORT_CMD, 0x90, 0); // channel 2, low byte only
        p.write(PORT_CH2, 100, 0);
        assert_eq!(p.read(PORT_CH2, 5 * MS), 100, "gate low: not counting");
        p.write(PORT_B, 1, 5 * MS);
        assert_eq!(p.read(PORT_CH2, 5 * MS + 50_000), (100 - 59) as u8);
        p.write(PORT_CMD, 0x34, 0); // channel 0: not emulated
        assert_eq!(p.read(PORT_CMD, 0), 0xff);
        assert!(Pit2::owns(0x61) && !Pit2::owns(0x40));
    }
}
