//! The hypervisor as the back end of a domain's PV console ring (`xencons_interface`): what xenconsoled does in
//! Xen, done in place: the guest's output is taken from the `out` ring when it signals its console port, typed
//! input is put into the `in` ring. Pure functions over the page's bytes, tested on the host.

use xen_abi::memres::{
    CONS_IN_CONS, CONS_IN_PROD, CONS_IN_SIZE, CONS_OUT_CONS, CONS_OUT_PROD, CONS_OUT_SIZE,
};

fn get(page: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
}

fn put(page: &mut [u8], at: usize, v: u32) {
    page[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Moves up to `out.len()` bytes the guest produced into `out`, advancing `out_cons`; returns how many. A
/// producer index more than a ring ahead (a corrupt or hostile ring) is treated as a full ring.
pub fn drain_out(page: &mut [u8], out: &mut [u8]) -> usize {
    let cons = get(page, CONS_OUT_CONS);
    let prod = get(page, CONS_OUT_PROD);
    let avail = (prod.wrapping_sub(cons) as usize).min(CONS_OUT_SIZE);
    let n = avail.min(out.len());
    for (i, b) in out[..n].iter_mut().enumerate() {
        *b = page[CONS_IN_SIZE + (cons as usize + i) % CONS_OUT_SIZE];
    }
    put(page, CONS_OUT_CONS, cons.wrapping_add(n as u32));
    n
}

/// Puts as much of `data` as fits into the guest's `in` ring, advancing `in_prod`; returns how many bytes.
pub fn push_in(page: &mut [u8], data: &[u8]) -> usize {
    let cons = get(page, CONS_IN_CONS);
    let prod = get(page, CONS_IN_PROD);
    let used = (prod.wrapping_sub(cons) as usize).min(CONS_IN_SIZE);
    let n = (CONS_IN_SIZE - used).min(data.len());
    for (i, &b) in data[..n].iter().enumerate() {
        page[(prod as usize + i) % CONS_IN_SIZE] = b;
    }
    put(page, CONS_IN_PROD, prod.wrapping_add(n as u32));
    n
}

/// Free space in the guest's `in` ring.
pub fn in_space(page: &[u8]) -> usize {
    let used =
        (get(page, CONS_IN_PROD).wrapping_sub(get(page, CONS_IN_CONS)) as usize).min(CONS_IN_SIZE);
    CONS_IN_SIZE - used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_wrap_and_stay_bounded() {
        let mut page = vec![0u8; 4096];
        // The guest wrote "hi" at the very end of its out ring and "!" at the start (indices wrapped).
        put(&mut page, CONS_OUT_CONS, u32::MAX - 1);
        put(&mut page, CONS_OUT_PROD, 1);
        page[CONS_IN_SIZE + CONS_OUT_SIZE - 2] = b'h';
        page[CONS_IN_SIZE + CONS_OUT_SIZE - 1] = b'i';
        page[CONS_IN_SIZE] = b'!';
        let mut out = [0u8; 8];
        assert_eq!(drain_out(&mut page, &mut out), 3);
        assert_eq!(&out[..3], b"hi!");
        assert_eq!(get(&page, CONS_OUT_CONS), 1);
        assert_eq!(drain_out(&mut page, &mut out), 0);
        // A hostile producer far ahead reads as one full ring, never more.
        put(&mut page, CONS_OUT_PROD, 1 + 100_000);
        let mut big = vec![0u8; 10_000];
        assert_eq!(drain_out(&mut page, &mut big), CONS_OUT_SIZE);
        // Input fills the in ring up to its size.
        assert_eq!(push_in(&mut page, b"ls\r"), 3);
        assert_eq!(&page[..3], b"ls\r");
        assert_eq!(in_space(&page), CONS_IN_SIZE - 3);
        assert_eq!(push_in(&mut page, &vec![b'x'; 2000]), CONS_IN_SIZE - 3);
        assert_eq!(push_in(&mut page, b"y"), 0);
        put(&mut page, CONS_IN_CONS, 3);
        assert_eq!(push_in(&mut page, b"yz"), 2);
        assert_eq!(&page[..2], b"yz");
    }
}
