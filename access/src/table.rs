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
//! A user's entry also holds the bucket their sends on this node draw from
//! (see `send_rate`), so that many devices of one user cannot multiply the
//! per-connection rate.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::send_rate::SendRate;

/// Number of shards: enough that two loops and the gRPC workers rarely meet on one lock.
const SHARDS: usize = 64;

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

/// Most users have one device connected; that one entry lives inline.
type Entries = SmallVec<[ConnRef; 1]>;

/// Connections marked replaced per shard before the marks are dropped: marks
/// of logins that never reach the table (their connection went, or their
/// reply was lost) must not pile up.
const MAX_REPLACED: usize = 1024;

/// One user's connections on this node, and their shared send bucket.
#[derive(Debug)]
struct User {
    conns: Entries,
    send_tokens: u16,
    send_refilled: u32,
}

impl Default for User {
    fn default() -> Self {
        Self {
            conns: Entries::new(),
            send_tokens: u16::MAX,
            send_refilled: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    users: HashMap<u64, User>,
    /// Connection ids replaced by a later login of their device before their
    /// own login was added.
    replaced: HashSet<u64>,
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
    fn shard(&self, user_id: u64) -> &Mutex<Shard> {
        // Ids are sequential, so the low bits spread users evenly.
        &self.shards[(user_id % SHARDS as u64) as usize]
    }

    /// Records a logged-in connection of `user_id`, unless a later login of
    /// its device already replaced it: false then, and the caller kicks it.
    pub fn insert(&self, user_id: u64, conn: ConnRef) -> bool {
        let mut shard = self.shard(user_id).lock();
        if shard.replaced.remove(&conn.conn_id) {
            return false;
        }
        shard.users.entry(user_id).or_default().conns.push(conn);
        true
    }

    /// The connection `conn_id` of `user_id` that a later login replaced, if
    /// it is here; if not, its login may still be on its way, so it is marked
    /// for [`insert`](Self::insert) to refuse.
    pub fn find_or_mark_replaced(&self, user_id: u64, conn_id: u64) -> Option<ConnRef> {
        let mut shard = self.shard(user_id).lock();
        let found = shard
            .users
            .get(&user_id)
            .and_then(|user| user.conns.iter().find(|c| c.conn_id == conn_id).copied());
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
        self.shard(user_id).lock().replaced.remove(&conn_id);
    }

    /// Forgets the connection `conn_id` of `user_id`; true when it was there.
    pub fn remove(&self, user_id: u64, conn_id: u64) -> bool {
        let mut shard = self.shard(user_id).lock();
        let Some(user) = shard.users.get_mut(&user_id) else {
            return false;
        };
        let before = user.conns.len();
        user.conns.retain(|c| c.conn_id != conn_id);
        let removed = user.conns.len() != before;
        if user.conns.is_empty() {
            shard.users.remove(&user_id);
        }
        removed
    }

    /// Calls `f` with each connection of `user_id`; returns how many there were.
    pub fn for_each(&self, user_id: u64, mut f: impl FnMut(ConnRef)) -> usize {
        let shard = self.shard(user_id).lock();
        match shard.users.get(&user_id) {
            Some(user) => {
                user.conns.iter().copied().for_each(&mut f);
                user.conns.len()
            }
            None => 0,
        }
    }

    /// Takes one send of `user_id` from the bucket their connections here
    /// share, at tick `now` (see [`SendRate::take`]); false when it is empty.
    pub(crate) fn take_send(&self, user_id: u64, rate: &SendRate, now: u32) -> bool {
        let mut shard = self.shard(user_id).lock();
        match shard.users.get_mut(&user_id) {
            Some(user) => rate.take(&mut user.send_tokens, &mut user.send_refilled, now),
            None => true,
        }
    }

    /// The connection `conn_id` of `user_id`, if it is here.
    pub fn find(&self, user_id: u64, conn_id: u64) -> Option<ConnRef> {
        let shard = self.shard(user_id).lock();
        shard
            .users
            .get(&user_id)?
            .conns
            .iter()
            .find(|c| c.conn_id == conn_id)
            .copied()
    }

    /// Number of users with at least one connection.
    pub fn users(&self) -> usize {
        self.shards.iter().map(|s| s.lock().users.len()).sum()
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

    #[test]
    fn several_devices_of_one_user_are_all_found_and_removed_one_by_one() {
        let table = ConnTable::default();
        assert!(table.insert(7, conn(1)));
        assert!(table.insert(7, conn(2)));
        assert!(table.insert(71, conn(3)));
        let mut seen = Vec::new();
        assert_eq!(table.for_each(7, |c| seen.push(c.conn_id)), 2);
        assert_eq!(seen, [1, 2]);
        assert_eq!(table.find(7, 2), Some(conn(2)));
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
    fn a_connection_replaced_before_its_login_arrives_is_refused_once() {
        let table = ConnTable::default();
        assert!(table.insert(7, conn(1)));
        // Already here: found, not marked.
        assert_eq!(table.find_or_mark_replaced(7, 1), Some(conn(1)));
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
