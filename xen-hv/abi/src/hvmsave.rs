//! The HVM context records of `XEN_DOMCTL_gethvmcontext` / `XEN_DOMCTL_sethvmcontext`
//! (`public/hvm/save.h`, `public/arch-x86/hvm/save.h`): a sequence of records, each a descriptor
//! (`typecode`, `instance`, `length`) followed by `length` bytes, starting with a [`HEADER`] record and ending
//! with an [`END`] record. The processor record is Xen's `struct hvm_hw_cpu`, so a context saved here reads
//! like one saved by Xen.
//!
//! As in Xen, a vCPU that is down has no [`CPU`] record, and loading one brings the vCPU up.

use crate::plain::Plain;

/// `HVM_FILE_MAGIC` of [`HvmSaveHeader::magic`].
pub const FILE_MAGIC: u32 = 0x5438_1286;
/// `HVM_FILE_VERSION`.
pub const FILE_VERSION: u32 = 1;

/// Record type `END` (no payload).
pub const END: u16 = 0;
/// Record type `HEADER` ([`HvmSaveHeader`]).
pub const HEADER: u16 = 1;
/// Record type `CPU` ([`HvmHwCpu`], instance = vCPU id).
pub const CPU: u16 = 2;
/// Record type `LAPIC` ([`HvmHwLapic`], instance = vCPU id).
pub const LAPIC: u16 = 5;
/// Record type `LAPIC_REGS` (the 1 KiB local APIC register page, instance = vCPU id).
pub const LAPIC_REGS: u16 = 6;

/// Size of a record descriptor.
pub const DESC_LEN: usize = 8;
/// Size of the `LAPIC_REGS` payload.
pub const LAPIC_REGS_LEN: usize = 1024;

/// `struct hvm_save_descriptor` (8 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Descriptor {
    /// Record type.
    pub typecode: u16,
    /// Instance (the vCPU id for per-vCPU records).
    pub instance: u16,
    /// Payload bytes that follow.
    pub length: u32,
}

/// `struct hvm_save_header` (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmSaveHeader {
    /// [`FILE_MAGIC`].
    pub magic: u32,
    /// [`FILE_VERSION`].
    pub version: u32,
    /// Version of the hypervisor that saved it.
    pub changeset: u64,
    /// CPUID leaf 1 eax of the saving machine.
    pub cpuid: u32,
    /// The guest's TSC frequency in kHz.
    pub gtsc_khz: u32,
}

/// `struct hvm_hw_cpu` (1032 bytes): a vCPU's processor state. Segment `*_arbytes` use the VMX layout (type,
/// S, DPL, P in bits 0..7; AVL, L, D/B, G in bits 12..15; bit 16 = unusable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct HvmHwCpu {
    /// The FXSAVE image of the x87/SSE state.
    pub fpu_regs: [u8; 512],
    /// rax, rbx, rcx, rdx, rbp, rsi, rdi, rsp, r8..r15 in this order.
    pub gprs: [u64; 16],
    /// rip.
    pub rip: u64,
    /// rflags.
    pub rflags: u64,
    /// cr0.
    pub cr0: u64,
    /// cr2.
    pub cr2: u64,
    /// cr3.
    pub cr3: u64,
    /// cr4.
    pub cr4: u64,
    /// dr0..dr3.
    pub dr: [u64; 4],
    /// dr6.
    pub dr6: u64,
    /// dr7.
    pub dr7: u64,
    /// Selectors of cs, ds, es, fs, gs, ss, tr, ldtr ([`SEG_CS`] ...).
    pub sel: [u32; 8],
    /// Limits of the eight segments, then idtr, then gdtr.
    pub limit: [u32; 10],
    /// Bases of the eight segments, then idtr, then gdtr.
    pub base: [u64; 10],
    /// Attributes of the eight segments (VMX layout).
    pub arbytes: [u32; 8],
    /// `IA32_SYSENTER_CS`.
    pub sysenter_cs: u64,
    /// `IA32_SYSENTER_ESP`.
    pub sysenter_esp: u64,
    /// `IA32_SYSENTER_EIP`.
    pub sysenter_eip: u64,
    /// `IA32_KERNEL_GS_BASE`.
    pub shadow_gs: u64,
    /// Which MSRs below are valid (unused here: all are).
    pub msr_flags: u64,
    /// `IA32_LSTAR`.
    pub msr_lstar: u64,
    /// `IA32_STAR`.
    pub msr_star: u64,
    /// `IA32_CSTAR`.
    pub msr_cstar: u64,
    /// `IA32_FMASK`.
    pub msr_syscall_mask: u64,
    /// `IA32_EFER`.
    pub msr_efer: u64,
    /// `IA32_TSC_AUX`.
    pub msr_tsc_aux: u64,
    /// The guest's TSC.
    pub tsc: u64,
    /// An event being injected: vector (bits 0..7), type (8..10), error code valid (11), valid (31).
    pub pending_event: u32,
    /// Its error code.
    pub error_code: u32,
    /// `XEN_X86_FPU_INITIALISED` (bit 0).
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
}

impl Default for HvmHwCpu {
    fn default() -> Self {
        Self {
            fpu_regs: [0; 512],
            gprs: [0; 16],
            rip: 0,
            rflags: 0,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            dr: [0; 4],
            dr6: 0,
            dr7: 0,
            sel: [0; 8],
            limit: [0; 10],
            base: [0; 10],
            arbytes: [0; 8],
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            shadow_gs: 0,
            msr_flags: 0,
            msr_lstar: 0,
            msr_star: 0,
            msr_cstar: 0,
            msr_syscall_mask: 0,
            msr_efer: 0,
            msr_tsc_aux: 0,
            tsc: 0,
            pending_event: 0,
            error_code: 0,
            flags: 0,
            pad0: 0,
        }
    }
}

/// Index of cs in [`HvmHwCpu::sel`], `limit`, `base` and `arbytes`.
pub const SEG_CS: usize = 0;
/// ds.
pub const SEG_DS: usize = 1;
/// es.
pub const SEG_ES: usize = 2;
/// fs.
pub const SEG_FS: usize = 3;
/// gs.
pub const SEG_GS: usize = 4;
/// ss.
pub const SEG_SS: usize = 5;
/// tr.
pub const SEG_TR: usize = 6;
/// ldtr.
pub const SEG_LDTR: usize = 7;
/// idtr in `limit` and `base`.
pub const SEG_IDTR: usize = 8;
/// gdtr in `limit` and `base`.
pub const SEG_GDTR: usize = 9;
/// Index of rax in [`HvmHwCpu::gprs`].
pub const GPR_RAX: usize = 0;

/// `XEN_X86_FPU_INITIALISED` of [`HvmHwCpu::flags`].
pub const FPU_INITIALISED: u32 = 1;

/// SVM's 12-bit segment attributes to the VMX layout of `arbytes`.
pub const fn svm_to_arbytes(attr: u16) -> u32 {
    let a = attr as u32;
    (a & 0xff) | ((a & 0xf00) << 4)
}

/// The VMX layout of `arbytes` to SVM's 12-bit segment attributes (the unusable bit is dropped).
pub const fn arbytes_to_svm(ar: u32) -> u16 {
    ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
}

/// `struct hvm_hw_lapic` (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HvmHwLapic {
    /// `IA32_APIC_BASE`.
    pub apic_base_msr: u64,
    /// Disabled flags (bit 0 hardware, bit 1 software).
    pub disabled: u32,
    /// The timer's divide value.
    pub timer_divisor: u32,
}

// SAFETY: `#[repr(C)]` structures of integers and integer arrays with explicit padding; sizes checked below.
unsafe impl Plain for Descriptor {}
// SAFETY: as above.
unsafe impl Plain for HvmSaveHeader {}
// SAFETY: as above.
unsafe impl Plain for HvmHwCpu {}
// SAFETY: as above.
unsafe impl Plain for HvmHwLapic {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Descriptor>() == 8);
    assert!(size_of::<HvmSaveHeader>() == 24);
    assert!(size_of::<HvmHwCpu>() == 1032);
    assert!(offset_of!(HvmHwCpu, gprs) == 512);
    assert!(offset_of!(HvmHwCpu, rip) == 640);
    assert!(offset_of!(HvmHwCpu, cr0) == 656);
    assert!(offset_of!(HvmHwCpu, dr6) == 720);
    assert!(offset_of!(HvmHwCpu, sel) == 736);
    assert!(offset_of!(HvmHwCpu, limit) == 768);
    assert!(offset_of!(HvmHwCpu, base) == 808);
    assert!(offset_of!(HvmHwCpu, arbytes) == 888);
    assert!(offset_of!(HvmHwCpu, sysenter_cs) == 920);
    assert!(offset_of!(HvmHwCpu, shadow_gs) == 944);
    assert!(offset_of!(HvmHwCpu, msr_efer) == 992);
    assert!(offset_of!(HvmHwCpu, tsc) == 1008);
    assert!(offset_of!(HvmHwCpu, pending_event) == 1016);
    assert!(offset_of!(HvmHwCpu, flags) == 1024);
    assert!(size_of::<HvmHwLapic>() == 16);
};

/// Why a context buffer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextError {
    /// A descriptor or payload runs past the end of the buffer.
    Truncated,
    /// The first record is not a valid header.
    BadHeader,
    /// A record's length does not match its type.
    BadLength(u16),
    /// No END record.
    NoEnd,
    /// The output buffer is too small.
    NoRoom,
}

impl core::fmt::Display for ContextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("HVM context truncated"),
            Self::BadHeader => f.write_str("HVM context does not start with a valid header"),
            Self::BadLength(t) => write!(f, "HVM context record of type {t} has the wrong length"),
            Self::NoEnd => f.write_str("HVM context has no end record"),
            Self::NoRoom => f.write_str("HVM context buffer too small"),
        }
    }
}

/// One record of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Record type.
    pub typecode: u16,
    /// Instance.
    pub instance: u16,
    /// Payload.
    pub data: &'a [u8],
}

/// Checks a whole context (header first, known records with their sizes, an END record) and returns its
/// records between the header and END.
pub fn parse(buf: &[u8]) -> Result<impl Iterator<Item = Record<'_>> + '_, ContextError> {
    let mut off = 0;
    let mut first = true;
    let mut end = None;
    while off < buf.len() {
        let d = Descriptor::read_from(&buf[off..]).ok_or(ContextError::Truncated)?;
        let start = off + DESC_LEN;
        let stop = start
            .checked_add(d.length as usize)
            .filter(|&e| e <= buf.len())
            .ok_or(ContextError::Truncated)?;
        let data = &buf[start..stop];
        let want = match d.typecode {
            END => Some(0),
            HEADER => Some(core::mem::size_of::<HvmSaveHeader>()),
            CPU => Some(core::mem::size_of::<HvmHwCpu>()),
            LAPIC => Some(core::mem::size_of::<HvmHwLapic>()),
            LAPIC_REGS => Some(LAPIC_REGS_LEN),
            _ => None,
        };
        if want.is_some_and(|w| w != data.len()) {
            return Err(ContextError::BadLength(d.typecode));
        }
        if first {
            let ok = d.typecode == HEADER
                && HvmSaveHeader::read_from(data)
                    .is_some_and(|h| h.magic == FILE_MAGIC && h.version == FILE_VERSION);
            if !ok {
                return Err(ContextError::BadHeader);
            }
            first = false;
        }
        off = stop;
        if d.typecode == END {
            end = Some(off);
            break;
        }
    }
    let end = end.ok_or(if first {
        ContextError::BadHeader
    } else {
        ContextError::NoEnd
    })?;
    Ok(Records {
        buf: &buf[..end],
        off: 0,
    }
    .filter(|r| r.typecode != HEADER && r.typecode != END))
}

struct Records<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        let d = Descriptor::read_from(self.buf.get(self.off..)?)?;
        let start = self.off + DESC_LEN;
        let stop = start + d.length as usize;
        self.off = stop;
        Some(Record {
            typecode: d.typecode,
            instance: d.instance,
            data: self.buf.get(start..stop)?,
        })
    }
}

/// Appends records to a caller's buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    /// A writer that starts with the header record.
    pub fn new(buf: &'a mut [u8], header: &HvmSaveHeader) -> Self {
        let mut w = Self {
            buf,
            len: 0,
            overflow: false,
        };
        w.push(HEADER, 0, header.as_bytes());
        w
    }

    /// Appends one record; remembers when it did not fit.
    pub fn push(&mut self, typecode: u16, instance: u16, data: &[u8]) {
        let need = DESC_LEN + data.len();
        let Some(dst) = self.buf.get_mut(self.len..self.len + need) else {
            self.overflow = true;
            self.len += need;
            return;
        };
        let d = Descriptor {
            typecode,
            instance,
            length: data.len() as u32,
        };
        dst[..DESC_LEN].copy_from_slice(d.as_bytes());
        dst[DESC_LEN..].copy_from_slice(data);
        self.len += need;
    }

    /// Appends the END record; returns the bytes used, or [`ContextError::NoRoom`] with the size needed.
    pub fn finish(mut self) -> Result<usize, (ContextError, usize)> {
        self.push(END, 0, &[]);
        if self.overflow {
            Err((ContextError::NoRoom, self.len))
        } else {
            Ok(self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> HvmSaveHeader {
        HvmSaveHeader {
            magic: FILE_MAGIC,
            version: FILE_VERSION,
            ..HvmSaveHeader::default()
        }
    }

    #[test]
    fn round_trip_and_size_query() {
        let cpu = HvmHwCpu {
            rip: 0x1234,
            ..HvmHwCpu::default()
        };
        let mut buf = vec![0u8; 4096];
        let mut w = Writer::new(&mut buf, &header());
        w.push(CPU, 1, cpu.as_bytes());
        w.push(LAPIC_REGS, 1, &[7u8; LAPIC_REGS_LEN]);
        let n = w.finish().unwrap();
        assert_eq!(n, 8 + 24 + 8 + 1032 + 8 + 1024 + 8);
        let recs: Vec<_> = parse(&buf[..n]).unwrap().collect();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].typecode, recs[0].instance), (CPU, 1));
        assert_eq!(HvmHwCpu::read_from(recs[0].data).unwrap().rip, 0x1234);
        assert_eq!(recs[1].data[0], 7);
        // Too small a buffer reports the size needed.
        let mut small = [0u8; 64];
        let mut w = Writer::new(&mut small, &header());
        w.push(CPU, 0, cpu.as_bytes());
        assert_eq!(
            w.finish(),
            Err((ContextError::NoRoom, 8 + 24 + 8 + 1032 + 8))
        );
    }

    #[test]
    fn malformed_contexts_are_refused() {
        assert_eq!(parse(&[]).err(), Some(ContextError::BadHeader));
        let mut buf = vec![0u8; 256];
        let n = Writer::new(&mut buf, &header()).finish().unwrap();
        assert!(parse(&buf[..n]).is_ok());
        // No END.
        assert_eq!(parse(&buf[..n - 8]).err(), Some(ContextError::NoEnd));
        // Wrong magic.
        let mut bad = buf.clone();
        bad[8] ^= 1;
        assert_eq!(parse(&bad[..n]).err(), Some(ContextError::BadHeader));
        // A CPU record of the wrong size, and one running past the end.
        let mut w = Writer::new(&mut buf, &header());
        w.push(CPU, 0, &[0u8; 16]);
        let n = w.finish().unwrap();
        assert_eq!(parse(&buf[..n]).err(), Some(ContextError::BadLength(CPU)));
        assert_eq!(parse(&buf[..40]).err(), Some(ContextError::Truncated));
    }

    #[test]
    fn attribute_layouts_convert_both_ways() {
        // A 64-bit code segment: type 0xb, S, P, L.
        let svm = 0x029b;
        assert_eq!(svm_to_arbytes(svm), 0x209b);
        assert_eq!(arbytes_to_svm(0x209b), svm);
        assert_eq!(arbytes_to_svm(0x1_0000), 0);
    }
}
