//! The storage side of the pipeline: what msg_job needs from an inbox store.
//!
//! The trait is owned here, by its user, so the pipeline does not depend on
//! MongoDB and can be tested against [`crate::MemoryInbox`].

use std::future::Future;

use thiserror::Error;

/// A message to store and where it was sent: the inbox crate's own types,
/// so the MongoDB adapter hands them over unchanged.
pub use fishchat_inbox::{Conversation, NewMessage};

/// Why a batch could not be stored; the pipeline retries it, uncommitted.
#[derive(Debug, Error)]
#[error("inbox store failed: {0}")]
pub struct StoreError(pub String);

/// An inbox store that assigns seqs and ignores redeliveries.
pub trait InboxStore: Send + Sync {
    /// Stores every `(inbox, message)` in the given order and returns each
    /// one's seq in that inbox, in the same order. Storing a message already in
    /// the inbox (same `server_msg_id`) stores nothing and returns its existing
    /// seq, so a whole batch may be retried after a partial success.
    fn store(
        &self,
        items: &[(u64, NewMessage)],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;
}

/// A shared store is a store: the pipeline and a test can hold the same one.
impl<S: InboxStore> InboxStore for std::sync::Arc<S> {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        S::store(self, items).await
    }
}
