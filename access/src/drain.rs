//! The pace of a drain. Kicking every client with RECONNECT at once sends them
//! all to the gateway in the same instant, which answers from loads up to a
//! report old, so they land together on whichever node looked emptiest. A
//! drain instead kicks its connections evenly over a window, and closes what
//! is left at its deadline.

use std::time::{Duration, Instant};

/// One loop's drain in progress.
#[derive(Debug)]
pub(crate) struct Drain {
    started: Instant,
    spread: Duration,
    deadline: Instant,
    total: usize,
    /// Connections not yet told to reconnect, next last.
    pending: Vec<usize>,
}

impl Drain {
    /// A drain of the connections in `slots` starting at `now`: kicked over
    /// `spread`, the stragglers closed after `timeout`.
    pub(crate) fn new(
        slots: Vec<usize>,
        now: Instant,
        spread: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            started: now,
            spread: spread.min(timeout),
            deadline: now + timeout,
            total: slots.len(),
            pending: slots,
        }
    }

    /// The connections whose turn to be kicked has come by `now`: as many as
    /// bring the kicked share level with the share of the window elapsed.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<usize> {
        let elapsed = now.saturating_duration_since(self.started);
        let share = if elapsed >= self.spread {
            self.total
        } else {
            // total × elapsed / spread, rounded up, in u128 so no product overflows.
            let total = self.total as u128;
            let due = (total * elapsed.as_nanos()).div_ceil(self.spread.as_nanos());
            usize::try_from(due).unwrap_or(self.total)
        };
        let kicked = self.total - self.pending.len();
        let now_due = share.saturating_sub(kicked).min(self.pending.len());
        self.pending.split_off(self.pending.len() - now_due)
    }

    /// Whether the drain's time is up: what is still open gets closed.
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn kicks_are_spread_evenly_over_the_window_and_each_slot_comes_once() {
        let start = Instant::now();
        let mut drain = Drain::new((0..100).collect(), start, 1_000 * MS, 5_000 * MS);
        assert!(drain.due(start).is_empty(), "nothing at the first instant");
        assert_eq!(drain.due(start + 100 * MS).len(), 10);
        assert!(drain.due(start + 100 * MS).is_empty(), "not twice");
        assert_eq!(drain.due(start + 550 * MS).len(), 45);
        let rest = drain.due(start + 1_000 * MS);
        assert_eq!(rest.len(), 45);
        assert!(drain.due(start + 2_000 * MS).is_empty());
        assert!(!drain.is_over(start + 4_999 * MS));
        assert!(drain.is_over(start + 5_000 * MS));
    }

    #[test]
    fn every_slot_is_kicked_exactly_once_across_the_drain() {
        let start = Instant::now();
        let mut drain = Drain::new((0..37).collect(), start, 700 * MS, 5_000 * MS);
        let mut kicked: Vec<usize> = (0..=10)
            .flat_map(|step| drain.due(start + step * 100 * MS))
            .collect();
        kicked.sort_unstable();
        assert_eq!(kicked, (0..37).collect::<Vec<_>>());
    }

    #[test]
    fn no_window_kicks_everyone_at_once_and_a_window_past_the_deadline_ends_at_it() {
        let start = Instant::now();
        let mut at_once = Drain::new(vec![4, 5, 6], start, Duration::ZERO, 5_000 * MS);
        assert_eq!(at_once.due(start).len(), 3);
        let mut long = Drain::new((0..10).collect(), start, 60_000 * MS, 1_000 * MS);
        assert_eq!(long.due(start + 1_000 * MS).len(), 10);
        let mut empty = Drain::new(Vec::new(), start, 1_000 * MS, 1_000 * MS);
        assert!(empty.due(start + 500 * MS).is_empty());
    }
}
