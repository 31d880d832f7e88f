//! What x86 guests see of the platform beyond the hypercall ABI: CPUID leaves (Xen's 0x40000000 range and
//! filtered host leaves) and the hypercall page.

use xen_abi::xen::cpuid;
use xen_hv::paging::{PageTable, PhysMem};

/// The CPUID result for vCPU `vcpu` of domain `domid`.
pub fn guest_cpuid(domid: u16, vcpu: u32, leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        cpuid::BASE => [
            cpuid::MAX_LEAF,
            cpuid::SIGNATURE[0],
            cpuid::SIGNATURE[1],
            cpuid::SIGNATURE[2],
        ],
        0x4000_0001 => [xen_hv::VERSION.0 << 16 | xen_hv::VERSION.1, 0, 0, 0],
        0x4000_0002 => [1, cpuid::HYPERCALL_MSR, 0, 0],
        0x4000_0004 => [
            cpuid::HVM_VCPU_ID_PRESENT | cpuid::HVM_DOMID_PRESENT,
            vcpu,
            u32::from(domid),
            0,
        ],
        0x4000_0003..=0x4fff_ffff => [0; 4],
        0xd | 0x8000_000a => [0; 4],
        _ => {
            let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
            let (a, mut b, mut c, mut d) = (r.eax, r.ebx, r.ecx, r.edx);
            match leaf {
                1 => {
                    // Hide VMX, XSAVE/OSXSAVE and AVX (guest XCR0 is not switched), announce a hypervisor and
                    // the emulated local APIC in x2APIC mode (`xen_hv::vlapic`), and report the vCPU id as the
                    // initial APIC id.
                    c &= !((1 << 5) | (1 << 26) | (1 << 27) | (1 << 28));
                    c |= (1 << 31) | (1 << 21);
                    d |= 1 << 9;
                    // Machine check (MCE, MCA) and MTRR MSRs are not offered.
                    d &= !((1 << 7) | (1 << 12) | (1 << 14));
                    b = (b & 0x00ff_ffff) | (vcpu << 24);
                }
                7 if subleaf == 0 => {
                    // AVX2 and AVX-512 need XSAVE state.
                    b &= !((1 << 5)
                        | (1 << 16)
                        | (1 << 17)
                        | (1 << 21)
                        | (1 << 26)
                        | (1 << 27)
                        | (1 << 28)
                        | (1 << 30)
                        | (1 << 31));
                    c &= !(1 << 22);
                }
                // TSC_AUX is not switched, so RDTSCP (and RDPID, leaf 7) are not offered: the guest would write the
                // MSR (Linux does, per CPU) and read the host's value.
                0x8000_0001 => {
                    c &= !(1 << 2);
                    d &= !(1 << 27);
                }
                _ => {}
            }
            [a, b, c, d]
        }
    }
}

/// Fills the guest page at guest-physical `val` (which must translate into the domain's RAM at
/// `mem_base..mem_base + mem_bytes`) with hypercall stubs; false when it cannot.
pub fn fill_hypercall_page<M: PhysMem>(
    mem: &M,
    npt: &PageTable,
    (mem_base, mem_bytes): (u64, u64),
    val: u64,
    copy: impl FnOnce(u64, &[u8]),
) -> bool {
    if val & 0xfff != 0 {
        return false;
    }
    let Some(hpa) = npt.translate(mem, val) else {
        return false;
    };
    if hpa < mem_base || hpa >= mem_base + mem_bytes {
        return false;
    }
    let mut page = [0u8; 4096];
    for (i, stub) in page.chunks_exact_mut(32).enumerate() {
        if i == 23 {
            // iret is a PV-only hypercall: trap.
            stub[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&(i as u32).to_le_bytes());
        stub[5..8].copy_from_slice(&[0x0f, 0x01, 0xd9]);
        stub[8] = 0xc3;
    }
    copy(hpa, &page);
    true
}
