//! user id → the senders of that user's connection tasks.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc::Sender;

/// One logged-in connection, as pushes reach it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Unique in this process.
    pub conn_id: u64,
    /// The connection task's queue of encoded frames.
    pub tx: Sender<Bytes>,
}

/// Every logged-in connection by user.
#[derive(Debug, Default)]
pub struct Registry {
    users: DashMap<u64, Vec<Peer>>,
    next_conn_id: AtomicU64,
}

impl Registry {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a logged-in connection of `user_id`.
    pub fn insert(&self, user_id: u64, peer: Peer) {
        self.users.entry(user_id).or_default().push(peer);
    }

    /// Forgets connection `conn_id` of `user_id`.
    pub fn remove(&self, user_id: u64, conn_id: u64) {
        if let Some(mut peers) = self.users.get_mut(&user_id) {
            peers.retain(|p| p.conn_id != conn_id);
        }
        self.users.remove_if(&user_id, |_, peers| peers.is_empty());
    }

    /// Queues `frame` on every connection of `user_id`; returns how many took it.
    pub fn send(&self, user_id: u64, frame: &Bytes) -> usize {
        self.users.get(&user_id).map_or(0, |peers| {
            peers
                .iter()
                .filter(|p| p.tx.try_send(frame.clone()).is_ok())
                .count()
        })
    }
}
