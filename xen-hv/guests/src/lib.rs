//! The runtime of xen-hv's test guests: the 32-bit PVH entry that switches to long mode, Xen hypercalls (through
//! the hypercall page or a raw `vmmcall`), a console over `console_io`, and the PASS/FAIL reporting protocol the
//! hypervisor judges: `PASS <name>` / `FAIL <name>: reason`, and `EXPECT-CRASH <name>: why` before a guest
//! misbehaves on purpose.
//!
//! On the host only the pure helpers build, so `cargo test --workspace` covers them.
#![cfg_attr(target_os = "none", no_std)]

#[cfg(target_os = "none")]
mod rt;
#[cfg(target_os = "none")]
pub use rt::*;

/// A tiny deterministic pseudo-random generator (xorshift64*) for the hostile guest's argument fuzzing.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// True when `ret` is a hypercall error: a negative errno in -4095..=-1.
pub fn is_error(ret: u64) -> bool {
    let r = ret as i64;
    (-4095..0).contains(&r)
}

/// A fixed-capacity text buffer for formatting without allocation.
#[derive(Debug)]
pub struct Buf<const N: usize> {
    data: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self {
            data: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Buf<N> {
    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl<const N: usize> core::fmt::Write for Buf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.data[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    #[test]
    fn helpers() {
        let mut r = Rng::new(0);
        let a = r.next_u64();
        assert_ne!(a, r.next_u64());
        assert!(is_error((-38i64) as u64));
        assert!(!is_error(0));
        assert!(!is_error(0x4_0011));
        let mut b = Buf::<8>::default();
        let _ = write!(b, "hello world");
        assert_eq!(b.as_bytes(), b"hello wo");
    }
}
