//! A coarse timer wheel: each connection sits in one bucket, with no timer
//! object of its own.
//!
//! A connection's deadline lives in the connection itself and moves forward
//! with every frame, without touching the wheel. When the wheel reaches an
//! entry's bucket it hands the entry back; the loop then compares the
//! connection's current deadline with now and either closes it or puts it back
//! in the bucket of its new deadline. So a busy connection costs nothing per
//! frame, and every connection costs one 12-byte entry. When a deadline moves
//! earlier (a logged-in connection's heartbeat deadline is shorter than its
//! login deadline, a closing one gets a short linger) the connection is filed
//! again and its older entry is dropped when it comes back.

/// Buckets in the wheel; with 100 ms ticks one turn is 51.2 s, and longer
/// deadlines simply go round more than once.
const BUCKETS: usize = 512;

/// An entry: the connection's slab slot, the low half of its id (which
/// tells a reused slot apart), and the tick it was filed for (which tells a
/// superseded entry apart: the connection remembers the tick of its live one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Slab slot.
    pub slot: u32,
    /// Low 32 bits of the connection id.
    pub tag: u32,
    /// The deadline the entry was filed for.
    pub at: u32,
}

/// The wheel, counting time in ticks.
#[derive(Debug)]
pub struct Wheel {
    buckets: Vec<Vec<Entry>>,
    /// The last tick whose bucket was handed back.
    now: u64,
}

impl Wheel {
    /// An empty wheel whose current tick is `now`.
    pub fn new(now: u64) -> Self {
        Self {
            buckets: vec![Vec::new(); BUCKETS],
            now,
        }
    }

    /// Files `entry` to come back once the wheel reaches tick `entry.at`
    /// (the next tick at the earliest).
    pub fn insert(&mut self, entry: Entry) {
        let at = u64::from(entry.at).max(self.now + 1);
        self.buckets[(at % BUCKETS as u64) as usize].push(entry);
    }

    /// Moves the wheel to tick `now`, appending to `due` every entry whose
    /// bucket was passed. Entries may be early by whole turns: the caller
    /// checks each against its connection's real deadline.
    pub fn advance(&mut self, now: u64, due: &mut Vec<Entry>) {
        // A long stall passes every bucket at most once.
        let end = now.min(self.now + BUCKETS as u64);
        while self.now < end {
            self.now += 1;
            due.append(&mut self.buckets[(self.now % BUCKETS as u64) as usize]);
        }
        self.now = self.now.max(now);
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slot: u32, at: u64) -> Entry {
        Entry {
            slot,
            tag: slot,
            at: at as u32,
        }
    }

    #[test]
    fn entries_come_back_when_their_tick_is_passed() {
        let mut wheel = Wheel::new(0);
        wheel.insert(entry(1, 3));
        wheel.insert(entry(2, 5));
        let mut due = Vec::new();
        wheel.advance(2, &mut due);
        assert!(due.is_empty());
        wheel.advance(4, &mut due);
        assert_eq!(due, [entry(1, 3)]);
        due.clear();
        wheel.advance(5, &mut due);
        assert_eq!(due, [entry(2, 5)]);
    }

    #[test]
    fn a_deadline_in_the_past_comes_back_on_the_next_tick() {
        let mut wheel = Wheel::new(10);
        wheel.insert(entry(1, 3));
        let mut due = Vec::new();
        wheel.advance(11, &mut due);
        assert_eq!(due, [entry(1, 3)]);
    }

    #[test]
    fn a_far_deadline_comes_back_early_by_whole_turns_and_a_stall_loses_nothing() {
        let mut wheel = Wheel::new(0);
        let far = 3 * BUCKETS as u64 + 7;
        wheel.insert(entry(1, far));
        let mut due = Vec::new();
        wheel.advance(10 * BUCKETS as u64, &mut due);
        assert_eq!(
            due,
            [entry(1, far)],
            "handed back once, for the caller to re-check"
        );
        assert_eq!(wheel.now(), 10 * BUCKETS as u64);
    }
}
