//! Xen's pvclock arithmetic (`vcpu_time_info`): a guest turns a TSC delta into nanoseconds as
//! `((delta << shift) * mul) >> 32` (a right shift when `shift` is negative). The hypervisor picks `mul` and
//! `shift` from the TSC frequency the way Xen's `set_time_scale` does.

/// `XEN_PVCLOCK_TSC_STABLE_BIT`: the TSC is synchronised across vCPUs.
pub const PVCLOCK_TSC_STABLE: u8 = 1;

/// The (`tsc_to_system_mul`, `tsc_shift`) pair for a TSC running at `tsc_hz`.
pub fn scale(tsc_hz: u64) -> (u32, i8) {
    const NS_PER_SEC: u64 = 1_000_000_000;
    let mut tps = tsc_hz.max(1);
    let mut shift: i8 = 0;
    while tps > 2 * NS_PER_SEC {
        tps >>= 1;
        shift -= 1;
    }
    while tps <= NS_PER_SEC {
        tps <<= 1;
        shift += 1;
    }
    // NS_PER_SEC < tps <= 2 * NS_PER_SEC, so the quotient is below 2^32.
    let mul = ((NS_PER_SEC << 32) / tps) as u32;
    (mul, shift)
}

/// Nanoseconds for a TSC delta, as a guest computes them.
pub fn ns(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_match_the_frequency() {
        for hz in [
            1_000_000u64,
            999_999_999,
            1_000_000_000,
            2_500_000_000,
            3_999_999_999,
            10_000_000_000,
        ] {
            let (mul, shift) = scale(hz);
            assert!(mul >= 1 << 31, "{hz}: mul {mul:#x} keeps precision");
            // One second of TSC is one second of system time, within 1 ppm.
            let one_s = ns(hz, mul, shift);
            assert!(one_s.abs_diff(1_000_000_000) <= 1_000, "{hz}: {one_s}");
        }
        assert_eq!(ns(0, 0x8000_0000, 1), 0);
    }
}
