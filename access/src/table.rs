//! The sharded connection table: user id → where each of the user's
//! connections lives (event loop, slab slot, connection id).
//!
//! Pushes arrive on gRPC threads and must find their connections without a
//! global lock, so the table is split into shards by user id, each behind its
//! own `parking_lot` mutex. Only the event loop that owns a connection adds or
//! removes its entry; everyone else only reads.

use std::collections::HashMap;

use parking_lot::Mutex;
use smallvec::SmallVec;

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

/// user id → connections, sharded.
#[derive(Debug)]
pub struct ConnTable {
    shards: Vec<Mutex<HashMap<u64, Entries>>>,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl ConnTable {
    fn shard(&self, user_id: u64) -> &Mutex<HashMap<u64, Entries>> {
        // Ids are sequential, so the low bits spread users evenly.
        &self.shards[(user_id % SHARDS as u64) as usize]
    }

    /// Records a logged-in connection of `user_id`.
    pub fn insert(&self, user_id: u64, conn: ConnRef) {
        self.shard(user_id)
            .lock()
            .entry(user_id)
            .or_default()
            .push(conn);
    }

    /// Forgets the connection `conn_id` of `user_id`; true when it was there.
    pub fn remove(&self, user_id: u64, conn_id: u64) -> bool {
        let mut shard = self.shard(user_id).lock();
        let Some(entries) = shard.get_mut(&user_id) else {
            return false;
        };
        let before = entries.len();
        entries.retain(|c| c.conn_id != conn_id);
        let removed = entries.len() != before;
        if entries.is_empty() {
            shard.remove(&user_id);
        }
        removed
    }

    /// Calls `f` with each connection of `user_id`; returns how many there were.
    pub fn for_each(&self, user_id: u64, mut f: impl FnMut(ConnRef)) -> usize {
        let shard = self.shard(user_id).lock();
        match shard.get(&user_id) {
            Some(entries) => {
                entries.iter().copied().for_each(&mut f);
                entries.len()
            }
            None => 0,
        }
    }

    /// The connection `conn_id` of `user_id`, if it is here.
    pub fn find(&self, user_id: u64, conn_id: u64) -> Option<ConnRef> {
        let shard = self.shard(user_id).lock();
        shard
            .get(&user_id)?
            .iter()
            .find(|c| c.conn_id == conn_id)
            .copied()
    }

    /// Number of users with at least one connection.
    pub fn users(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
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
        table.insert(7, conn(1));
        table.insert(7, conn(2));
        table.insert(71, conn(3));
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
}
