//! The cache itself: entries by id, tickets, invalidation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A lookup's place in the order of announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Values by id, dropped when their id is announced.
#[derive(Debug)]
pub struct AnnouncedCache<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<u64, (V, Instant)>,
    /// Counts announcements; tickets are readings of it.
    clock: u64,
    /// The clock at each id's latest announcement.
    announced: HashMap<u64, u64>,
    /// Tickets below this may not fill: `announced` was cleared since.
    floor: u64,
    /// Subscribed: announcements are arriving, so entries can be trusted.
    live: bool,
}

impl<V: Clone> AnnouncedCache<V> {
    /// An empty cache, not yet live, keeping entries `ttl` and at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                clock: 0,
                announced: HashMap::new(),
                floor: 0,
                live: false,
            }),
            ttl,
            capacity,
        }
    }

    /// Takes a ticket; take it before asking the source of truth.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.lock().clock)
    }

    /// The cached value of `id`, if fresh.
    pub fn get(&self, id: u64) -> Option<V> {
        let inner = self.inner.lock();
        let (value, at) = inner.entries.get(&id)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// The cached values of `ids`, and the ids that missed.
    pub fn get_many(&self, ids: impl IntoIterator<Item = u64>) -> (Vec<(u64, V)>, Vec<u64>) {
        let inner = self.inner.lock();
        let mut hits = Vec::new();
        let mut misses = Vec::new();
        for id in ids {
            match inner.entries.get(&id) {
                Some((value, at)) if at.elapsed() < self.ttl => hits.push((id, value.clone())),
                _ => misses.push(id),
            }
        }
        (hits, misses)
    }

    /// Caches what a lookup that took `ticket` learned, except ids announced
    /// since the ticket (their value may already be old) and anything at all
    /// while the cache is not live.
    pub fn fill(&self, ticket: Ticket, values: impl IntoIterator<Item = (u64, V)>) {
        let mut inner = self.inner.lock();
        if !inner.live || ticket.0 < inner.floor {
            return;
        }
        let now = Instant::now();
        for (id, value) in values {
            if inner.announced.get(&id).is_some_and(|&at| at > ticket.0) {
                continue;
            }
            if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&id) {
                inner.entries.clear();
            }
            inner.entries.insert(id, (value, now));
        }
    }

    /// Drops `id`: register announced that it changed.
    pub fn announce(&self, id: u64) {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let clock = inner.clock;
        inner.entries.remove(&id);
        if inner.announced.len() >= self.capacity {
            // Forgetting who was announced is only safe if every lookup that
            // started before now is refused.
            inner.announced.clear();
            inner.floor = clock;
        }
        inner.announced.insert(id, clock);
    }

    /// Empties the cache; `live` says whether announcements now arrive.
    pub fn reset(&self, live: bool) {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        inner.floor = inner.clock;
        inner.entries.clear();
        inner.announced.clear();
        inner.live = live;
    }

    /// Whether the cache is subscribed and trusted.
    pub fn is_live(&self) -> bool {
        self.inner.lock().live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> AnnouncedCache<u32> {
        let cache = AnnouncedCache::new(Duration::from_secs(60), 100);
        cache.reset(true);
        cache
    }

    #[test]
    fn nothing_is_cached_until_live() {
        let cache = AnnouncedCache::new(Duration::from_secs(60), 100);
        cache.fill(cache.ticket(), [(1, 5)]);
        assert_eq!(cache.get(1), None);
        cache.reset(true);
        cache.fill(cache.ticket(), [(1, 5)]);
        assert_eq!(cache.get(1), Some(5));
        cache.reset(false);
        assert_eq!(cache.get(1), None, "a lost subscription empties it");
    }

    #[test]
    fn an_announcement_during_a_lookup_keeps_its_answer_out() {
        let cache = cache();
        let ticket = cache.ticket();
        cache.announce(1);
        cache.fill(ticket, [(1, 5), (2, 6)]);
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2), Some(6));
        cache.fill(cache.ticket(), [(1, 7)]);
        assert_eq!(
            cache.get(1),
            Some(7),
            "a lookup after the announcement may fill"
        );
        cache.announce(1);
        assert_eq!(cache.get_many([1, 2]), (vec![(2, 6)], vec![1]));
    }

    #[test]
    fn entries_expire_and_the_bounds_hold() {
        let cache = AnnouncedCache::new(Duration::ZERO, 2);
        cache.reset(true);
        cache.fill(cache.ticket(), [(1, 5)]);
        assert_eq!(cache.get(1), None, "expired at once");
        let cache = AnnouncedCache::new(Duration::from_secs(60), 2);
        cache.reset(true);
        let old = cache.ticket();
        cache.announce(1);
        cache.announce(2);
        cache.announce(3);
        cache.fill(old, [(4, 1)]);
        assert_eq!(
            cache.get(4),
            None,
            "announcements were forgotten after this ticket"
        );
    }
}
