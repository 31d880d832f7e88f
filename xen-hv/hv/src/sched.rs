//! The vCPU scheduler's policy, as data: round robin over runnable vCPUs, with blocked vCPUs woken when their
//! timer deadline passes or an event is raised. The architecture code asks [`RoundRobin::pick`] for the next
//! vCPU on each scheduling point (timer tick, yield, block, shutdown).

/// A vCPU's scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Ready to run.
    Runnable,
    /// Running on a physical CPU.
    Running,
    /// Waiting for an event or for system time to reach the deadline (0: no deadline).
    Blocked(u64),
    /// Not started yet (a secondary vCPU before `VCPUOP_up`).
    Down,
    /// Its domain is gone.
    Dead,
}

/// Round-robin over a fixed set of vCPU slots.
#[derive(Debug, Clone)]
pub struct RoundRobin<const N: usize> {
    states: [State; N],
    len: usize,
    last: usize,
}

impl<const N: usize> Default for RoundRobin<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RoundRobin<N> {
    /// An empty scheduler.
    pub const fn new() -> Self {
        Self {
            states: [State::Dead; N],
            len: 0,
            last: usize::MAX,
        }
    }

    /// Adds a runnable vCPU, returning its slot.
    pub fn add(&mut self) -> Option<usize> {
        self.add_with(State::Runnable)
    }

    /// Adds a vCPU in state `s`, returning its slot: the first slot `reusable` accepts among the dead ones, or a
    /// new one.
    pub fn add_with(&mut self, s: State) -> Option<usize> {
        self.add_reusing(s, |_| false)
    }

    /// Like [`RoundRobin::add_with`], reusing the first dead slot for which `reusable` (the owner has released
    /// everything the slot held) is true.
    pub fn add_reusing(&mut self, s: State, reusable: impl Fn(usize) -> bool) -> Option<usize> {
        if let Some(i) = (0..self.len).find(|&i| self.states[i] == State::Dead && reusable(i)) {
            self.states[i] = s;
            return Some(i);
        }
        if self.len == N {
            return None;
        }
        self.states[self.len] = s;
        self.len += 1;
        Some(self.len - 1)
    }

    /// The state of slot `i`.
    pub fn state(&self, i: usize) -> State {
        self.states.get(i).copied().unwrap_or(State::Dead)
    }

    /// Sets the state of slot `i`.
    pub fn set(&mut self, i: usize, s: State) {
        if i < self.len {
            self.states[i] = s;
        }
    }

    /// Makes a blocked vCPU runnable (an event arrived).
    pub fn wake(&mut self, i: usize) {
        if matches!(self.state(i), State::Blocked(_)) {
            self.states[i] = State::Runnable;
        }
    }

    /// True when no vCPU is left alive.
    pub fn all_dead(&self) -> bool {
        self.states[..self.len].iter().all(|s| *s == State::Dead)
    }

    /// True when live vCPUs remain but none can ever run again on its own: none runnable or running, and every
    /// blocked one waits without a deadline (with no event source left that could wake it).
    pub fn stuck(&self) -> bool {
        let live = &self.states[..self.len];
        live.iter()
            .any(|s| matches!(s, State::Blocked(0) | State::Down))
            && live
                .iter()
                .all(|s| matches!(s, State::Blocked(0) | State::Down | State::Dead))
    }

    /// The earliest deadline among blocked vCPUs.
    pub fn next_deadline(&self) -> Option<u64> {
        self.states[..self.len]
            .iter()
            .filter_map(|s| match s {
                State::Blocked(d) if *d != 0 => Some(*d),
                _ => None,
            })
            .min()
    }

    /// Wakes vCPUs whose deadline is at or before `now`, calling `woken` with each slot.
    pub fn expire_each(&mut self, now: u64, mut woken: impl FnMut(usize)) {
        for (i, s) in self.states[..self.len].iter_mut().enumerate() {
            if let State::Blocked(d) = *s {
                if d != 0 && d <= now {
                    *s = State::Runnable;
                    woken(i);
                }
            }
        }
    }

    /// Wakes vCPUs whose deadline is at or before `now`, returning a bit per woken slot (first 64 slots).
    pub fn expire(&mut self, now: u64) -> u64 {
        let mut bits = 0;
        self.expire_each(now, |i| {
            if i < 64 {
                bits |= 1 << i;
            }
        });
        bits
    }

    /// Picks the next runnable vCPU after the last one picked and marks it running; `None` when every live vCPU
    /// is blocked or running elsewhere.
    pub fn pick(&mut self, now: u64) -> Option<usize> {
        self.expire(now);
        if self.len == 0 {
            return None;
        }
        for step in 1..=self.len {
            let i = self.last.wrapping_add(step) % self.len;
            if self.states[i] == State::Runnable {
                self.states[i] = State::Running;
                self.last = i;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_over_runnable_vcpus() {
        let mut s = RoundRobin::<4>::new();
        for _ in 0..3 {
            s.add();
        }
        let mut seen = Vec::new();
        for _ in 0..6 {
            let i = s.pick(0).expect("runnable");
            seen.push(i);
            s.set(i, State::Runnable);
        }
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(s.add_with(State::Down), Some(3));
        assert_eq!(s.add(), None);
        for _ in 0..4 {
            let i = s.pick(0).expect("runnable");
            assert_ne!(i, 3, "a down vCPU is never picked");
            s.set(i, State::Runnable);
        }
        s.set(3, State::Runnable);
        assert!((0..4).any(|_| {
            let i = s.pick(0).expect("runnable");
            s.set(i, State::Runnable);
            i == 3
        }));
    }

    #[test]
    fn blocked_vcpus_wake_at_their_deadline() {
        let mut s = RoundRobin::<2>::new();
        s.add();
        s.add();
        s.set(0, State::Blocked(100));
        s.set(1, State::Dead);
        assert_eq!(s.pick(50), None);
        assert_eq!(s.next_deadline(), Some(100));
        assert_eq!(s.pick(100), Some(0));
        assert_eq!(s.state(0), State::Running);
        s.set(0, State::Blocked(0));
        assert_eq!(
            s.pick(u64::MAX),
            None,
            "no deadline: only an event wakes it"
        );
        s.wake(0);
        assert_eq!(s.pick(0), Some(0));
        assert!(!s.all_dead());
        s.set(0, State::Blocked(0));
        assert!(
            s.stuck(),
            "blocked without a deadline and nothing else alive"
        );
        s.set(1, State::Blocked(5));
        assert!(!s.stuck(), "a timer can still wake vCPU 1");
        s.set(1, State::Dead);
        s.set(0, State::Dead);
        assert!(s.all_dead());
        assert!(!s.stuck());
    }

    #[test]
    fn dead_slots_are_reused_once_released() {
        let mut s = RoundRobin::<3>::new();
        assert_eq!(s.add(), Some(0));
        assert_eq!(s.add(), Some(1));
        s.set(0, State::Dead);
        // Not released yet: a new slot.
        assert_eq!(s.add_reusing(State::Runnable, |_| false), Some(2));
        assert_eq!(s.add_reusing(State::Runnable, |_| false), None, "full");
        assert_eq!(s.add_reusing(State::Down, |i| i == 0), Some(0));
        assert_eq!(s.state(0), State::Down);
        // Deadlines of every slot are reported, not only the first 64.
        s.set(1, State::Blocked(5));
        let mut woken = Vec::new();
        s.expire_each(10, |i| woken.push(i));
        assert_eq!(woken.as_slice(), &[1]);
    }
}
