//! The physical frame allocator: free RAM kept as a sorted list of ranges, carved from the boot memory map minus
//! the hypervisor image, the boot structures and the boot modules. Allocations are page-granular and may ask for
//! an alignment (domains take 2 MiB-aligned blocks).

/// Page size.
pub const PAGE: u64 = 4096;
/// Maximum number of disjoint free ranges tracked.
pub const MAX_RANGES: usize = 128;

/// A free-range allocator over physical memory.
#[derive(Debug, Clone)]
pub struct FrameAllocator {
    ranges: [(u64, u64); MAX_RANGES],
    len: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            ranges: [(0, 0); MAX_RANGES],
            len: 0,
        }
    }

    /// The free ranges as `(base, end)`, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.ranges().iter().map(|(b, e)| e - b).sum()
    }

    /// Adds `[base, base + len)` rounded inwards to pages, merging with neighbours; returns false when the table
    /// is full.
    pub fn add(&mut self, base: u64, len: u64) -> bool {
        let start = base.next_multiple_of(PAGE);
        let end = base.saturating_add(len) & !(PAGE - 1);
        if end <= start {
            return true;
        }
        // Remove any overlap first so the ranges stay disjoint.
        self.remove(start, end - start);
        let pos = self
            .ranges()
            .iter()
            .position(|r| r.0 > start)
            .unwrap_or(self.len);
        if self.len == MAX_RANGES {
            return false;
        }
        self.ranges.copy_within(pos..self.len, pos + 1);
        self.ranges[pos] = (start, end);
        self.len += 1;
        self.merge();
        true
    }

    fn merge(&mut self) {
        let mut i = 0;
        while i + 1 < self.len {
            if self.ranges[i].1 >= self.ranges[i + 1].0 {
                self.ranges[i].1 = self.ranges[i].1.max(self.ranges[i + 1].1);
                self.ranges.copy_within(i + 2..self.len, i + 1);
                self.len -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Removes `[base, base + len)` (rounded outwards to pages) from the free memory.
    pub fn remove(&mut self, base: u64, len: u64) {
        let start = base & !(PAGE - 1);
        let end = base.saturating_add(len).next_multiple_of(PAGE);
        let mut i = 0;
        while i < self.len {
            let (b, e) = self.ranges[i];
            if e <= start || b >= end {
                i += 1;
                continue;
            }
            match (b < start, e > end) {
                (true, true) => {
                    if self.len == MAX_RANGES {
                        // Keep the lower part only rather than losing track of the reservation.
                        self.ranges[i].1 = start;
                        return;
                    }
                    self.ranges.copy_within(i + 1..self.len, i + 2);
                    self.ranges[i] = (b, start);
                    self.ranges[i + 1] = (end, e);
                    self.len += 1;
                    return;
                }
                (true, false) => {
                    self.ranges[i].1 = start;
                    i += 1;
                }
                (false, true) => {
                    self.ranges[i].0 = end;
                    i += 1;
                }
                (false, false) => {
                    self.ranges.copy_within(i + 1..self.len, i);
                    self.len -= 1;
                }
            }
        }
    }

    /// Allocates `size` bytes (rounded up to pages) aligned to `align` (a power of two, at least a page), from the
    /// lowest fitting address.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let size = size.max(1).checked_next_multiple_of(PAGE)?;
        let align = align.max(PAGE);
        if !align.is_power_of_two() {
            return None;
        }
        let base = self.ranges().iter().find_map(|&(b, e)| {
            let a = b.checked_next_multiple_of(align)?;
            (a.checked_add(size)? <= e).then_some(a)
        })?;
        self.remove(base, size);
        Some(base)
    }

    /// Returns an allocation to the free memory.
    pub fn free(&mut self, base: u64, size: u64) -> bool {
        self.add(base, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_reservations_and_allocates_aligned() {
        let mut f = FrameAllocator::new();
        assert!(f.add(0x10_0000, 0x1000_0000 - 0x10_0000));
        f.remove(0x20_0000, 0x5_3000); // the image
        f.remove(0x80_0000, 0x1234); // a module, rounded out to 2 pages
        assert_eq!(
            f.ranges(),
            &[
                (0x10_0000, 0x20_0000),
                (0x25_3000, 0x80_0000),
                (0x80_2000, 0x1000_0000)
            ]
        );
        let total = f.free_bytes();
        let a = f.alloc(0x40_0000, 0x20_0000).expect("fits");
        assert_eq!(
            a, 0x40_0000,
            "the lowest 2 MiB-aligned fit, ending at the module"
        );
        let p = f.alloc(1, 0).expect("a page");
        assert_eq!(p, 0x10_0000);
        assert_eq!(f.free_bytes(), total - 0x40_0000 - PAGE);
        assert!(f.free(a, 0x40_0000));
        assert!(f.free(p, PAGE));
        assert_eq!(f.free_bytes(), total);
        assert_eq!(f.alloc(0x2000_0000, 0), None, "more than exists");
        assert_eq!(f.alloc(PAGE, 3 * PAGE), None, "bad alignment");
    }

    #[test]
    fn merges_and_ignores_sub_page_ranges() {
        let mut f = FrameAllocator::new();
        assert!(f.add(0x3000, 0x1000));
        assert!(f.add(0x1000, 0x2000));
        assert!(f.add(0x5800, 0x100));
        assert_eq!(f.ranges(), &[(0x1000, 0x4000)]);
        assert!(f.add(0x2000, 0x4000));
        assert_eq!(f.ranges(), &[(0x1000, 0x6000)]);
    }
}
