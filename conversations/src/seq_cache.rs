//! The last seq a writer has seen exist, per inbox: a hint that saves one
//! round trip per store.
//!
//! Only seqs confirmed to exist (inserted by us, or read from the store) are
//! ever recorded, and a value only moves up, so the hint is never ahead of
//! the store. A stale (too low) hint costs a duplicate-key error and a
//! re-read, never a wrong seq. The map is cleared when it grows past a cap,
//! which only costs re-reads.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many inboxes the cache remembers before it starts over.
const CAPACITY: usize = 100_000;

/// Per-inbox hints of the highest seq seen to exist.
#[derive(Debug, Default)]
pub(crate) struct SeqCache {
    last: Mutex<HashMap<u64, u64>>,
}

impl SeqCache {
    /// The hint for `inbox`, if any.
    pub(crate) fn get(&self, inbox: u64) -> Option<u64> {
        self.lock().get(&inbox).copied()
    }

    /// Records that `seq` exists in `inbox`.
    pub(crate) fn saw(&self, inbox: u64, seq: u64) {
        let mut last = self.lock();
        if last.len() >= CAPACITY && !last.contains_key(&inbox) {
            last.clear();
        }
        let entry = last.entry(inbox).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    /// Drops the hint for `inbox`, so the next store reads the current max.
    pub(crate) fn forget(&self, inbox: u64) {
        self.lock().remove(&inbox);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so poisoning is ignored.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_only_move_up_and_can_be_forgotten() {
        let cache = SeqCache::default();
        assert_eq!(cache.get(1), None);
        cache.saw(1, 5);
        cache.saw(1, 3);
        assert_eq!(cache.get(1), Some(5));
        cache.forget(1);
        assert_eq!(cache.get(1), None);
    }
}
