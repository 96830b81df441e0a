//! What the manager needs from the conversation store.
//!
//! The RPC surface depends on this trait rather than on MongoDB, so it names
//! only what it uses; the real store is
//! [`fishchat_conversations::ConversationStore`].

use std::future::Future;

use fishchat_codec::pb;
use fishchat_conversations::{ConvError, ConvKey, ConversationStore, Page, ReadOutcome};

/// The read side of conversations, as the manager serves it.
pub trait Conversations: Send + Sync + 'static {
    /// The user's conversations that differ from what the client holds.
    fn sync_conversations(
        &self,
        user: u64,
        request: &pb::SyncConversationsRequest,
    ) -> impl Future<Output = Result<pb::SyncConversationsReply, ConvError>> + Send;
    /// Messages of one conversation after a seq, ascending, one page.
    fn sync(
        &self,
        user: u64,
        key: ConvKey,
        after_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Page, ConvError>> + Send;
    /// Messages of one conversation before a seq, newest first, one page.
    fn history(
        &self,
        user: u64,
        key: ConvKey,
        before_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Page, ConvError>> + Send;
    /// Moves the user's read position forward.
    fn read(
        &self,
        user: u64,
        key: ConvKey,
        seq: u64,
    ) -> impl Future<Output = Result<ReadOutcome, ConvError>> + Send;
    /// Records a join (change `epoch` of the pair); returns the last seq the member cannot see.
    fn joined(
        &self,
        user: u64,
        group: u64,
        epoch: u64,
    ) -> impl Future<Output = Result<u64, ConvError>> + Send;
    /// Records a leave (change `epoch` of the pair); returns the last seq the former member sees.
    fn left(
        &self,
        user: u64,
        group: u64,
        epoch: u64,
    ) -> impl Future<Output = Result<u64, ConvError>> + Send;
}

impl Conversations for ConversationStore {
    async fn sync_conversations(
        &self,
        user: u64,
        request: &pb::SyncConversationsRequest,
    ) -> Result<pb::SyncConversationsReply, ConvError> {
        ConversationStore::sync_conversations(self, user, request).await
    }

    async fn sync(
        &self,
        user: u64,
        key: ConvKey,
        after: u64,
        limit: u32,
    ) -> Result<Page, ConvError> {
        ConversationStore::sync(self, user, key, after, limit).await
    }

    async fn history(
        &self,
        user: u64,
        key: ConvKey,
        before: u64,
        limit: u32,
    ) -> Result<Page, ConvError> {
        ConversationStore::history(self, user, key, before, limit).await
    }

    async fn read(&self, user: u64, key: ConvKey, seq: u64) -> Result<ReadOutcome, ConvError> {
        ConversationStore::read(self, user, key, seq).await
    }

    async fn joined(&self, user: u64, group: u64, epoch: u64) -> Result<u64, ConvError> {
        ConversationStore::joined(self, user, group, epoch).await
    }

    async fn left(&self, user: u64, group: u64, epoch: u64) -> Result<u64, ConvError> {
        ConversationStore::left(self, user, group, epoch).await
    }
}
