//! The ACPI tables a PVH guest gets (as libxl builds them with libacpi for Xen's PVH guests): an RSDP whose
//! address goes into `hvm_start_info.rsdp_paddr`, an XSDT, a hardware-reduced FADT, a DSDT that only declares
//! the `\_S5` sleep state, and a MADT with one local APIC per vCPU.
//!
//! Linux needs the MADT to use its local APIC (and so to start the Xen per-vCPU timers from
//! `setup_percpu_clockev`) and to find secondary vCPUs; the FADT's sleep control and reset registers are the
//! guest's way to power off and reboot, which xen-hv turns into `SHUTDOWN_poweroff` and `SHUTDOWN_reboot`.

/// I/O port of the FADT's `SLEEP_CONTROL_REG`.
pub const SLEEP_CONTROL_PORT: u16 = 0xb000;
/// I/O port of the FADT's `SLEEP_STATUS_REG`.
pub const SLEEP_STATUS_PORT: u16 = 0xb001;
/// I/O port of the FADT's `RESET_REG`.
pub const RESET_PORT: u16 = 0xb002;
/// The value the guest writes to [`RESET_PORT`].
pub const RESET_VALUE: u8 = 0x0f;
/// `SLP_TYPx` of `\_S5` in the DSDT.
pub const S5_TYPE: u8 = 5;
/// `SLP_EN` in the sleep control register.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// The local APIC address the MADT reports.
pub const LAPIC_ADDRESS: u32 = 0xfee0_0000;
/// Most vCPUs the tables describe (one MADT entry each, all in one page).
pub const MAX_VCPUS: usize = 128;

const OEM_ID: &[u8; 6] = b"XENRS ";
const OEM_TABLE_ID: &[u8; 8] = b"XENHVPVH";
const HEADER: usize = 36;

/// What a write to one of the ACPI ports asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    /// Enter S5: power off.
    PowerOff,
    /// The reset register: reboot.
    Reset,
    /// Anything else (other sleep states, status register writes): no action.
    None,
}

/// Decodes a byte written to an ACPI port.
pub fn port_write(port: u16, value: u8) -> PortRequest {
    match port {
        SLEEP_CONTROL_PORT if value & SLEEP_ENABLE != 0 && (value >> 2) & 0x7 == S5_TYPE => {
            PortRequest::PowerOff
        }
        RESET_PORT if value == RESET_VALUE => PortRequest::Reset,
        _ => PortRequest::None,
    }
}

/// Why the tables could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No vCPU, or more than [`MAX_VCPUS`].
    BadVcpuCount(usize),
    /// The output buffer is smaller than the tables.
    NoRoom(usize),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadVcpuCount(n) => write!(f, "ACPI tables for {n} vCPUs (1 to {MAX_VCPUS})"),
            Self::NoRoom(n) => write!(f, "the ACPI tables need {n} bytes"),
        }
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

fn header(t: &mut [u8], sig: &[u8; 4], revision: u8) {
    let len = t.len() as u32;
    t[..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[8] = revision;
    t[9] = 0;
    t[10..16].copy_from_slice(OEM_ID);
    t[16..24].copy_from_slice(OEM_TABLE_ID);
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(b"XRS ");
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
}

fn seal(t: &mut [u8]) {
    t[9] = 0;
    t[9] = checksum(t);
}

/// A Generic Address Structure for one byte-wide I/O port.
fn gas_io(out: &mut [u8], port: u16) {
    out[0] = 1; // System I/O
    out[1] = 8; // bit width
    out[2] = 0; // bit offset
    out[3] = 1; // byte access
    out[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
}

const FADT_LEN: usize = 276;
/// `Name (_S5, Package (2) { 5, 5 })` in AML.
const DSDT_AML: [u8; 12] = [
    0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x0a, S5_TYPE, 0x0a, S5_TYPE,
];

/// The bytes the tables take for `vcpus` vCPUs.
pub fn size(vcpus: usize) -> usize {
    36 + (HEADER + 16) + FADT_LEN + (HEADER + DSDT_AML.len()) + (HEADER + 8 + 8 * vcpus)
}

/// Writes the tables for a guest with `vcpus` vCPUs (APIC IDs 0..vcpus) into `out`, which the guest sees at
/// guest-physical `gpa`; returns the RSDP's guest-physical address (`gpa`: it comes first).
pub fn build(out: &mut [u8], gpa: u64, vcpus: usize) -> Result<u64, AcpiError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(AcpiError::BadVcpuCount(vcpus));
    }
    let need = size(vcpus);
    if out.len() < need {
        return Err(AcpiError::NoRoom(need));
    }
    out[..need].fill(0);
    let rsdp_at = 0;
    let xsdt_at = 36;
    let fadt_at = xsdt_at + HEADER + 16;
    let dsdt_at = fadt_at + FADT_LEN;
    let madt_at = dsdt_at + HEADER + DSDT_AML.len();
    let at = |off: usize| gpa + off as u64;

    // MADT.
    {
        let t = &mut out[madt_at..madt_at + HEADER + 8 + 8 * vcpus];
        header(t, b"APIC", 4);
        t[36..40].copy_from_slice(&LAPIC_ADDRESS.to_le_bytes());
        // Flags 0: no PC-AT 8259 pair.
        for id in 0..vcpus {
            let e = &mut t[44 + 8 * id..52 + 8 * id];
            e[0] = 0; // Processor Local APIC
            e[1] = 8;
            e[2] = id as u8; // ACPI processor UID
            e[3] = id as u8; // APIC ID
            e[4..8].copy_from_slice(&1u32.to_le_bytes()); // enabled
        }
        seal(t);
    }
    // DSDT.
    {
        let t = &mut out[dsdt_at..dsdt_at + HEADER + DSDT_AML.len()];
        header(t, b"DSDT", 2);
        t[HEADER..].copy_from_slice(&DSDT_AML);
        seal(t);
    }
    // FADT (revision 6, hardware-reduced).
    {
        let t = &mut out[fadt_at..fadt_at + FADT_LEN];
        header(t, b"FACP", 6);
        let dsdt = at(dsdt_at);
        t[40..44].copy_from_slice(&(dsdt as u32).to_le_bytes());
        // IAPC_BOOT_ARCH: VGA not present (bit 2), CMOS RTC not present (bit 5).
        t[109..111].copy_from_slice(&((1u16 << 2) | (1 << 5)).to_le_bytes());
        // Flags: RESET_REG_SUP (bit 10), HW_REDUCED_ACPI (bit 20).
        t[112..116].copy_from_slice(&((1u32 << 10) | (1 << 20)).to_le_bytes());
        gas_io(&mut t[116..128], RESET_PORT);
        t[128] = RESET_VALUE;
        t[131] = 0; // minor version
        t[140..148].copy_from_slice(&dsdt.to_le_bytes());
        gas_io(&mut t[244..256], SLEEP_CONTROL_PORT);
        gas_io(&mut t[256..268], SLEEP_STATUS_PORT);
        t[268..276].copy_from_slice(b"XenVMM\0\0");
        seal(t);
    }
    // XSDT.
    {
        let t = &mut out[xsdt_at..xsdt_at + HEADER + 16];
        header(t, b"XSDT", 1);
        t[36..44].copy_from_slice(&at(fadt_at).to_le_bytes());
        t[44..52].copy_from_slice(&at(madt_at).to_le_bytes());
        seal(t);
    }
    // RSDP (ACPI 2.0+).
    {
        let t = &mut out[rsdp_at..rsdp_at + 36];
        t[..8].copy_from_slice(b"RSD PTR ");
        t[9..15].copy_from_slice(OEM_ID);
        t[15] = 2;
        t[20..24].copy_from_slice(&36u32.to_le_bytes());
        t[24..32].copy_from_slice(&at(xsdt_at).to_le_bytes());
        t[8] = checksum(&t[..20]);
        t[32] = checksum(t);
    }
    Ok(at(rsdp_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn table(page: &[u8], gpa: u64, addr: u64) -> &[u8] {
        let off = (addr - gpa) as usize;
        let len = u32::from_le_bytes(page[off + 4..off + 8].try_into().expect("len")) as usize;
        &page[off..off + len]
    }

    #[test]
    fn tables_link_up_and_checksum() {
        let gpa = 0x9ffd000;
        let mut page = [0xffu8; 4096];
        let rsdp = build(&mut page, gpa, 2).expect("built");
        assert_eq!(rsdp, gpa);
        let r = &page[..36];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(r), 0);
        assert_eq!(r[15], 2, "ACPI 2.0 RSDP");
        let xsdt_addr = u64::from_le_bytes(r[24..32].try_into().expect("xsdt"));
        let xsdt = table(&page, gpa, xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        let entries: Vec<u64> = xsdt[36..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
            .collect();
        assert_eq!(entries.len(), 2);
        let fadt = table(&page, gpa, entries[0]);
        assert_eq!((&fadt[..4], fadt.len(), fadt[8]), (&b"FACP"[..], 276, 6));
        assert_eq!(sum(fadt), 0);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().expect("flags"));
        assert_ne!(flags & (1 << 20), 0, "hardware-reduced");
        let dsdt_addr = u64::from_le_bytes(fadt[140..148].try_into().expect("x_dsdt"));
        let dsdt = table(&page, gpa, dsdt_addr);
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(sum(dsdt), 0);
        assert_eq!(&dsdt[37..41], b"_S5_");
        assert_eq!(
            u16::from_le_bytes([fadt[248], fadt[249]]),
            SLEEP_CONTROL_PORT
        );
        let madt = table(&page, gpa, entries[1]);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(sum(madt), 0);
        assert_eq!(madt.len(), 44 + 16);
        assert_eq!(&madt[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&madt[52..60], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert!(
            page[size(2)..].iter().all(|b| *b == 0xff),
            "nothing past the tables"
        );
    }

    #[test]
    fn bad_requests_fail_cleanly() {
        let mut page = [0u8; 4096];
        assert_eq!(build(&mut page, 0, 0), Err(AcpiError::BadVcpuCount(0)));
        assert_eq!(build(&mut page, 0, 129), Err(AcpiError::BadVcpuCount(129)));
        assert_eq!(
            build(&mut page[..100], 0, 1),
            Err(AcpiError::NoRoom(size(1)))
        );
        assert!(size(MAX_VCPUS) <= 4096);
    }

    #[test]
    fn sleep_and_reset_ports_decode() {
        // Linux writes SLP_TYP << 2 | SLP_EN for S5.
        assert_eq!(
            port_write(SLEEP_CONTROL_PORT, (5 << 2) | 0x20),
            PortRequest::PowerOff
        );
        assert_eq!(port_write(SLEEP_CONTROL_PORT, 5 << 2), PortRequest::None);
        assert_eq!(
            port_write(SLEEP_CONTROL_PORT, (3 << 2) | 0x20),
            PortRequest::None
        );
        assert_eq!(port_write(SLEEP_STATUS_PORT, 0x80), PortRequest::None);
        assert_eq!(port_write(RESET_PORT, RESET_VALUE), PortRequest::Reset);
        assert_eq!(port_write(RESET_PORT, 1), PortRequest::None);
    }
}
