//! The storage side of the pipeline: what msg_job needs from a message store.
//!
//! The trait is owned here, by its user, so the pipeline does not depend on
//! MongoDB and can be tested against [`crate::MemoryStore`].

use std::future::Future;

use thiserror::Error;

/// A message to store and where it was sent: the conversation crate's own
/// types, so the MongoDB adapter hands them over unchanged.
pub use fishchat_conversations::{ConvKey, NewMessage, Target};

/// Why a batch could not be stored; the pipeline retries it, uncommitted.
#[derive(Debug, Error)]
#[error("message store failed: {0}")]
pub struct StoreError(pub String);

/// A store that assigns per-conversation seqs and ignores redeliveries.
pub trait MessageStore: Send + Sync {
    /// Stores every message in its conversation, in the given order, and
    /// returns each one's seq in the same order. A message already stored
    /// (same conversation and `server_msg_id`) stores nothing and returns its
    /// existing seq, so a whole batch may be retried after a partial success.
    fn store(
        &self,
        messages: &[NewMessage],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// Makes stored messages visible to SYNC_CONVERSATIONS: raises each
    /// conversation's head to the highest seq given (never lowers it). Called
    /// after `store`, before the messages are pushed; safe to repeat. A store
    /// that keeps no separate heads has nothing to do.
    fn raise_heads(
        &self,
        _stored: &[(ConvKey, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// A shared store is a store: the pipeline and a test can hold the same one.
impl<S: MessageStore> MessageStore for std::sync::Arc<S> {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        S::store(self, messages).await
    }

    async fn raise_heads(&self, stored: &[(ConvKey, u64)]) -> Result<(), StoreError> {
        S::raise_heads(self, stored).await
    }
}

/// Conversations held in memory with the real store's semantics (seqs from
/// 1 per conversation, dedup by server_msg_id), for tests of the pipeline.
#[derive(Debug, Default)]
pub struct MemoryStore {
    conversations: parking_lot::Mutex<std::collections::HashMap<ConvKey, Vec<NewMessage>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages of `key` in seq order (the first has seq 1).
    pub fn messages(&self, key: ConvKey) -> Vec<NewMessage> {
        self.conversations
            .lock()
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    /// How many messages all conversations hold together.
    pub fn total(&self) -> usize {
        self.conversations.lock().values().map(Vec::len).sum()
    }

    fn store_one(&self, message: &NewMessage) -> u64 {
        let mut conversations = self.conversations.lock();
        let stored = conversations.entry(message.key()).or_default();
        if let Some(at) = stored
            .iter()
            .position(|m| m.server_msg_id == message.server_msg_id)
        {
            return at as u64 + 1;
        }
        stored.push(message.clone());
        stored.len() as u64
    }
}

impl MessageStore for MemoryStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        Ok(messages.iter().map(|m| self.store_one(m)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64, from: u64, to: u64) -> NewMessage {
        NewMessage {
            server_msg_id: id,
            from_user_id: from,
            target: Target::ToUserId(to),
            body: bytes::Bytes::from_static(b"hi"),
            timestamp_ms: 0,
            client_msg_id: format!("c{id}"),
        }
    }

    #[tokio::test]
    async fn both_directions_share_one_sequence_and_redeliveries_keep_their_seq() {
        let store = MemoryStore::new();
        let seqs = store
            .store(&[msg(1, 1, 2), msg(2, 2, 1), msg(1, 1, 2), msg(3, 1, 3)])
            .await
            .unwrap();
        assert_eq!(seqs, [1, 2, 1, 1]);
        assert_eq!(store.messages(ConvKey::direct(1, 2)).len(), 2);
        assert_eq!(store.total(), 3);
    }
}
