//! An in-memory [`InboxStore`] with the real store's semantics (seqs from 1,
//! dedup by (inbox, server_msg_id)), for tests of the pipeline.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::store::{InboxStore, NewMessage, StoreError};

/// One inbox: its messages in seq order (seq = position + 1) and an index by server id.
#[derive(Debug, Default)]
struct Inbox {
    messages: Vec<NewMessage>,
    seq_of: HashMap<u64, u64>,
}

/// Inboxes held in a map; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryInbox {
    inboxes: Mutex<HashMap<u64, Inbox>>,
}

impl MemoryInbox {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages of `inbox` in seq order (the first has seq 1).
    pub fn messages(&self, inbox: u64) -> Vec<NewMessage> {
        self.inboxes
            .lock()
            .get(&inbox)
            .map(|i| i.messages.clone())
            .unwrap_or_default()
    }

    /// How many messages all inboxes hold together.
    pub fn total(&self) -> usize {
        self.inboxes.lock().values().map(|i| i.messages.len()).sum()
    }

    /// Stores one item; returns its seq (the existing one for a redelivery).
    pub fn store_one(&self, inbox: u64, message: &NewMessage) -> u64 {
        let mut inboxes = self.inboxes.lock();
        let entry = inboxes.entry(inbox).or_default();
        if let Some(seq) = entry.seq_of.get(&message.server_msg_id) {
            return *seq;
        }
        entry.messages.push(message.clone());
        let seq = entry.messages.len() as u64;
        entry.seq_of.insert(message.server_msg_id, seq);
        seq
    }
}

impl InboxStore for MemoryInbox {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        Ok(items
            .iter()
            .map(|(inbox, message)| self.store_one(*inbox, message))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Conversation;

    fn msg(id: u64) -> NewMessage {
        NewMessage {
            server_msg_id: id,
            from_user_id: 1,
            conversation: Conversation::ToUserId(2),
            body: bytes::Bytes::from_static(b"hi"),
            timestamp_ms: 0,
            client_msg_id: format!("c{id}"),
        }
    }

    #[tokio::test]
    async fn redelivery_returns_the_first_seq_and_stores_nothing() {
        let store = MemoryInbox::new();
        let seqs = store
            .store(&[(2, msg(10)), (1, msg(10)), (2, msg(11))])
            .await
            .unwrap();
        assert_eq!(seqs, [1, 1, 2]);
        let again = store.store(&[(2, msg(11)), (2, msg(12))]).await.unwrap();
        assert_eq!(again, [2, 3]);
        assert_eq!(store.total(), 4);
        let ids: Vec<u64> = store.messages(2).iter().map(|m| m.server_msg_id).collect();
        assert_eq!(ids, [10, 11, 12]);
    }
}
