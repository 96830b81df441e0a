//! What the manager needs from the message store, and the MongoDB inbox providing it.
//!
//! The RPC surface depends on this trait rather than on MongoDB, so it names
//! only what it uses and a different store can slot in; the real store is
//! [`fishchat_inbox::MongoInbox`].

use std::future::Future;

use fishchat_inbox::{InboxError, MongoInbox, Page, Peer};

/// The read side of the inboxes, as the manager serves it.
pub trait InboxReader: Send + Sync + 'static {
    /// Messages after `after_seq`, ascending, one page.
    fn sync(
        &self,
        user: u64,
        after_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Page, InboxError>> + Send;
    /// The inbox's highest seq (0 when empty).
    fn max_seq(&self, user: u64) -> impl Future<Output = Result<u64, InboxError>> + Send;
    /// Moves a device's cursor forward; returns the cursor after the move.
    fn ack(
        &self,
        user: u64,
        device: &str,
        up_to_seq: u64,
    ) -> impl Future<Output = Result<u64, InboxError>> + Send;
    /// A device's cursor (0 before its first ack).
    fn cursor(
        &self,
        user: u64,
        device: &str,
    ) -> impl Future<Output = Result<u64, InboxError>> + Send;
    /// Messages after a device's cursor.
    fn unread(
        &self,
        user: u64,
        device: &str,
    ) -> impl Future<Output = Result<u64, InboxError>> + Send;
    /// One conversation, newest first, one page.
    fn history(
        &self,
        user: u64,
        peer: Peer,
        before_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Page, InboxError>> + Send;
}

impl InboxReader for MongoInbox {
    async fn sync(&self, user: u64, after_seq: u64, limit: u32) -> Result<Page, InboxError> {
        MongoInbox::sync(self, user, after_seq, limit).await
    }

    async fn max_seq(&self, user: u64) -> Result<u64, InboxError> {
        MongoInbox::max_seq(self, user).await
    }

    async fn ack(&self, user: u64, device: &str, up_to_seq: u64) -> Result<u64, InboxError> {
        MongoInbox::ack(self, user, device, up_to_seq).await
    }

    async fn cursor(&self, user: u64, device: &str) -> Result<u64, InboxError> {
        MongoInbox::cursor(self, user, device).await
    }

    async fn unread(&self, user: u64, device: &str) -> Result<u64, InboxError> {
        MongoInbox::unread(self, user, device).await
    }

    async fn history(
        &self,
        user: u64,
        peer: Peer,
        before_seq: u64,
        limit: u32,
    ) -> Result<Page, InboxError> {
        MongoInbox::history(self, user, peer, before_seq, limit).await
    }
}
