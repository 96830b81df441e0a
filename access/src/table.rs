//! The sharded connection table: user id → where each of the user's
//! connections lives (event loop, slab slot, connection id).
//!
//! Pushes arrive on gRPC threads and must find their connections without a
//! global lock, so the table is split into shards by user id, each behind its
//! own `parking_lot` mutex. Only the event loop that owns a connection adds or
//! removes its entry; everyone else only reads, except to mark a connection
//! replaced before its own login reached the table.
//!
//! That mark closes a race: two logins of one device at once are recorded
//! one after the other upstream, and the second names the first to be
//! kicked; but the first's reply may still be on its way to its loop, so the
//! kick finds nothing in the table. The kicker then marks the connection
//! replaced, under the same shard lock the loop takes to add it, and the loop
//! kicks it instead of adding it.
//!
//! A user's sends on this node also draw from one bucket (see `send_rate`),
//! so that many devices of one user cannot multiply the per-connection rate.
//!
//! Idle connections are counted in bytes, so each is one 16-byte record in
//! its shard's hash table (keyed by user id; a user with several devices has
//! several records under one key), not a per-user map entry with a vector
//! inside. A record keeps the user id, the loop and slot packed in 32 bits, and
//! only the low 32 bits of the connection id ([`tag`]): enough to tell a slot's
//! occupants apart, since two ids of one process share them only 2^32
//! connections apart. Send buckets live apart and only while they matter: a bucket is
//! made by a user's first send and dropped once it has filled up again, since
//! a full bucket is just what a fresh one would be.

use std::collections::{HashMap, HashSet};

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::send_rate::SendRate;

/// Number of shards: enough that two loops and the gRPC workers rarely meet on one lock.
const SHARDS: usize = 64;

/// Event loops a node may run: a loop's index takes the top 8 bits of a record's place.
pub const MAX_LOOPS: usize = 1 << 8;

/// Connections one loop may hold: a slot takes the low 24 bits of a place.
pub const MAX_SLOTS: usize = 1 << 24;

/// Where one connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    /// The connection's id, unique in this process; it guards against a reused slot.
    pub conn_id: u64,
    /// Its slot in the owning loop's slab.
    pub slot: u32,
    /// The owning event loop.
    pub loop_index: u16,
}

/// Where one connection lives, as the table knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The connection id's [`tag`], checked against the slot's occupant.
    pub tag: u32,
    /// Its slot in the owning loop's slab.
    pub slot: u32,
    /// The owning event loop.
    pub loop_index: u16,
}

/// The part of a connection id the table keeps and pushes carry.
pub fn tag(conn_id: u64) -> u32 {
    conn_id as u32
}

/// One connection of a user.
#[derive(Debug)]
struct Record {
    user_id: u64,
    tag: u32,
    /// The loop's index in the top 8 bits, the slot in the low 24.
    place: u32,
}

impl Record {
    fn new(user_id: u64, conn: ConnRef) -> Self {
        debug_assert!(usize::from(conn.loop_index) < MAX_LOOPS && (conn.slot as usize) < MAX_SLOTS);
        Self {
            user_id,
            tag: tag(conn.conn_id),
            place: u32::from(conn.loop_index) << 24 | conn.slot,
        }
    }

    fn is(&self, user_id: u64, conn_id: u64) -> bool {
        self.user_id == user_id && self.tag == tag(conn_id)
    }

    fn place(&self) -> Place {
        Place {
            tag: self.tag,
            slot: self.place & (MAX_SLOTS as u32 - 1),
            loop_index: (self.place >> 24) as u16,
        }
    }
}

/// Connections marked replaced per shard before the marks are dropped: marks
/// of logins that never reach the table (their connection went, or their
/// reply was lost) must not pile up.
const MAX_REPLACED: usize = 1024;

/// Send buckets a shard keeps before it looks for full ones to drop.
const MIN_BUCKET_SWEEP: usize = 16;

/// A user's send bucket (see [`SendRate::take`]).
#[derive(Debug)]
struct Bucket {
    tokens: u16,
    refilled: u32,
}

#[derive(Debug)]
struct Shard {
    conns: HashTable<Record>,
    /// Buckets of users who sent lately.
    buckets: HashMap<u64, Bucket>,
    /// Bucket count at which the next sweep for full buckets runs.
    sweep_at: usize,
    /// Connection ids replaced by a later login of their device before their
    /// own login was added.
    replaced: HashSet<u64>,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            conns: HashTable::new(),
            buckets: HashMap::new(),
            sweep_at: MIN_BUCKET_SWEEP,
            replaced: HashSet::new(),
        }
    }
}

impl Shard {
    fn conns_of(&self, hash: u64, user_id: u64) -> impl Iterator<Item = Place> + '_ {
        self.conns
            .iter_hash(hash)
            .filter(move |r| r.user_id == user_id)
            .map(Record::place)
    }

    fn find(&self, hash: u64, user_id: u64, conn_id: u64) -> Option<Place> {
        self.conns
            .find(hash, |r| r.is(user_id, conn_id))
            .map(Record::place)
    }
}

/// A user id's hash within its shard. User ids are assigned by register, not
/// chosen by clients, so a multiplicative hash is safe from collision
/// flooding; SipHash was a tenth of a push's CPU. Within a shard ids step by
/// `SHARDS`, so the quotient is what varies; the odd multiplier spreads it
/// over both the low bits (the bucket) and the high bits (the control byte).
fn hash_user(user_id: u64) -> u64 {
    (user_id / SHARDS as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// user id → connections, sharded.
#[derive(Debug)]
pub struct ConnTable {
    shards: Vec<Mutex<Shard>>,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ConnTable {
    /// The user's shard and hash.
    fn locate(&self, user_id: u64) -> (&Mutex<Shard>, u64) {
        // Ids are sequential, so the low bits spread users evenly.
        let shard = &self.shards[(user_id % SHARDS as u64) as usize];
        (shard, hash_user(user_id))
    }

    /// Records a logged-in connection of `user_id`, unless a later login of
    /// its device already replaced it: false then, and the caller kicks it.
    pub fn insert(&self, user_id: u64, conn: ConnRef) -> bool {
        let (shard, hash) = self.locate(user_id);
        let mut shard = shard.lock();
        if shard.replaced.remove(&conn.conn_id) {
            return false;
        }
        shard
            .conns
            .insert_unique(hash, Record::new(user_id, conn), |r| hash_user(r.user_id));
        true
    }

    /// The connection `conn_id` of `user_id` that a later login replaced, if
    /// it is here; if not, its login may still be on its way, so it is marked
    /// for [`insert`](Self::insert) to refuse.
    pub fn find_or_mark_replaced(&self, user_id: u64, conn_id: u64) -> Option<Place> {
        let (shard, hash) = self.locate(user_id);
        let mut shard = shard.lock();
        let found = shard.find(hash, user_id, conn_id);
        if found.is_none() {
            if shard.replaced.len() >= MAX_REPLACED {
                shard.replaced.clear();
            }
            shard.replaced.insert(conn_id);
        }
        found
    }

    /// Drops the mark of a replaced connection that went before its login
    /// was added.
    pub fn forget_replaced(&self, user_id: u64, conn_id: u64) {
        self.locate(user_id).0.lock().replaced.remove(&conn_id);
    }

    /// Forgets the connection `conn_id` of `user_id`; true when it was there.
    pub fn remove(&self, user_id: u64, conn_id: u64) -> bool {
        let (shard, hash) = self.locate(user_id);
        let mut shard = shard.lock();
        let Ok(entry) = shard.conns.find_entry(hash, |r| r.is(user_id, conn_id)) else {
            return false;
        };
        entry.remove();
        if shard.conns_of(hash, user_id).next().is_none() {
            shard.buckets.remove(&user_id);
        }
        true
    }

    /// Calls `f` with each connection of `user_id`; returns how many there were.
    pub fn for_each(&self, user_id: u64, mut f: impl FnMut(Place)) -> usize {
        let (shard, hash) = self.locate(user_id);
        let shard = shard.lock();
        let mut count = 0;
        for conn in shard.conns_of(hash, user_id) {
            f(conn);
            count += 1;
        }
        count
    }

    /// Takes one send of `user_id` from the bucket their connections here
    /// share, at tick `now` (see [`SendRate::take`]); false when it is empty.
    pub(crate) fn take_send(&self, user_id: u64, rate: &SendRate, now: u32) -> bool {
        let (shard, hash) = self.locate(user_id);
        let mut shard = shard.lock();
        if shard.conns_of(hash, user_id).next().is_none() {
            return true;
        }
        if shard.buckets.len() >= shard.sweep_at {
            shard
                .buckets
                .retain(|_, b| !rate.is_full(b.tokens, b.refilled, now));
            shard.sweep_at = (2 * shard.buckets.len()).max(MIN_BUCKET_SWEEP);
        }
        let bucket = shard.buckets.entry(user_id).or_insert(Bucket {
            tokens: u16::MAX,
            refilled: 0,
        });
        rate.take(&mut bucket.tokens, &mut bucket.refilled, now)
    }

    /// The connection `conn_id` of `user_id`, if it is here.
    pub fn find(&self, user_id: u64, conn_id: u64) -> Option<Place> {
        let (shard, hash) = self.locate(user_id);
        shard.lock().find(hash, user_id, conn_id)
    }

    /// Number of send buckets kept.
    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }

    /// Number of users with at least one connection.
    pub fn users(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock();
                let users: HashSet<u64> = shard.conns.iter().map(|r| r.user_id).collect();
                users.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(conn_id: u64) -> ConnRef {
        ConnRef {
            conn_id,
            slot: conn_id as u32,
            loop_index: 0,
        }
    }

    fn place(conn_id: u64) -> Place {
        Place {
            tag: tag(conn_id),
            slot: conn_id as u32,
            loop_index: 0,
        }
    }

    #[test]
    fn a_record_is_16_bytes_and_keeps_its_place() {
        assert_eq!(size_of::<Record>(), 16);
        let conn = ConnRef {
            conn_id: 7 << 32 | 9,
            slot: MAX_SLOTS as u32 - 1,
            loop_index: MAX_LOOPS as u16 - 1,
        };
        let record = Record::new(5, conn);
        assert_eq!(
            record.place(),
            Place {
                tag: 9,
                slot: conn.slot,
                loop_index: conn.loop_index
            }
        );
        assert!(record.is(5, conn.conn_id));
        assert!(!record.is(5, 8 << 32 | 10) && !record.is(6, conn.conn_id));
    }

    #[test]
    fn several_devices_of_one_user_are_all_found_and_removed_one_by_one() {
        let table = ConnTable::default();
        assert!(table.insert(7, conn(1)));
        assert!(table.insert(7, conn(2)));
        assert!(table.insert(71, conn(3)));
        let mut seen = Vec::new();
        assert_eq!(table.for_each(7, |c| seen.push(c.tag)), 2);
        assert_eq!(seen, [tag(1), tag(2)]);
        assert_eq!(table.find(7, 2), Some(place(2)));
        assert!(table.remove(7, 1));
        assert!(!table.remove(7, 1), "already gone");
        assert_eq!(table.for_each(7, |_| ()), 1);
        assert!(table.remove(7, 2));
        assert_eq!(table.users(), 1, "only user 71 remains");
        assert_eq!(table.find(7, 2), None);
    }

    #[test]
    fn a_users_connections_share_one_send_bucket() {
        let table = ConnTable::default();
        let rate = SendRate {
            per_second: 10,
            burst: 3,
        };
        assert!(table.insert(7, conn(1)));
        assert!(table.insert(7, conn(2)));
        assert!(table.insert(8, conn(3)));
        let sent = (0..6).filter(|_| table.take_send(7, &rate, 0)).count();
        assert_eq!(sent, 3, "the burst, whichever device sends");
        assert!(table.take_send(8, &rate, 0), "another user has their own");
        assert!(table.take_send(7, &rate, 1), "refilled a tick later");
    }

    #[test]
    fn send_buckets_are_kept_only_until_they_refill() {
        let table = ConnTable::default();
        let rate = SendRate {
            per_second: 10,
            burst: 1,
        };
        // One shard's users, so that its sweeps are what is seen.
        let user = |i: u64| i * SHARDS as u64;
        for i in 1..=100 {
            assert!(table.insert(user(i), conn(i)));
        }
        assert_eq!(table.buckets(), 0, "idle users have none");
        for i in 1..=40 {
            assert!(table.take_send(user(i), &rate, 0));
        }
        assert_eq!(table.buckets(), 40);
        // A tick later the first forty are full again; the next ones empty theirs.
        for i in 41..=70 {
            assert!(table.take_send(user(i), &rate, 1));
        }
        assert!(table.buckets() <= 30, "{} buckets", table.buckets());
        assert!(
            !table.take_send(user(70), &rate, 1),
            "an empty one was kept"
        );
        assert!(table.take_send(user(1), &rate, 1), "a dropped one is fresh");
        // A user's bucket goes with their last connection.
        assert!(table.remove(user(70), 70));
        assert!(
            table.take_send(user(70), &rate, 1),
            "no connection, no limit here"
        );
        assert!(table.insert(user(70), conn(70)));
        assert!(
            table.take_send(user(70), &rate, 1),
            "a new session, a new bucket"
        );
    }

    #[test]
    fn a_connection_replaced_before_its_login_arrives_is_refused_once() {
        let table = ConnTable::default();
        assert!(table.insert(7, conn(1)));
        // Already here: found, not marked.
        assert_eq!(table.find_or_mark_replaced(7, 1), Some(place(1)));
        assert!(table.insert(7, conn(3)));
        // Not here yet: marked, and its login is refused when it arrives.
        assert_eq!(table.find_or_mark_replaced(7, 2), None);
        assert!(!table.insert(7, conn(2)));
        assert_eq!(table.find(7, 2), None);
        // The mark is spent: a (new) connection with that id is not refused.
        assert!(table.insert(7, conn(2)));
        // A mark whose connection went is dropped.
        assert_eq!(table.find_or_mark_replaced(7, 4), None);
        table.forget_replaced(7, 4);
        assert!(table.insert(7, conn(4)));
    }
}
