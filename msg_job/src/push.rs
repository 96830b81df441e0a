//! The push side of the pipeline: hand stored messages to whoever is online.
//!
//! Pushing is best effort by design: the message is already stored and
//! committed, and a client that missed a push syncs from its last seq. So a
//! [`Pusher`] reports what happened and never returns an error to retry.

use std::future::Future;

use fishchat_codec::pb::StoredMessage;

/// The newly stored messages of one user's inbox, in seq order.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDelivery {
    /// The inbox's owner.
    pub user_id: u64,
    /// The messages with their seqs in this inbox, ascending.
    pub messages: Vec<StoredMessage>,
}

/// What one push round did, for logs and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Access nodes that took every push request sent to them.
    pub nodes_pushed: u64,
    /// Connections the nodes queued a frame on.
    pub delivered_connections: u64,
    /// Session lookups or node pushes that failed (logged; the users will sync).
    pub failures: u64,
}

/// Finds the nodes holding some users and pushes their messages there.
pub trait Pusher: Send + Sync {
    /// Pushes every delivery to the nodes holding its user; offline users are skipped.
    fn push(&self, deliveries: Vec<UserDelivery>) -> impl Future<Output = PushOutcome> + Send;
}

/// Pushing nowhere, for a pipeline that only stores (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPush;

impl Pusher for NoPush {
    async fn push(&self, _deliveries: Vec<UserDelivery>) -> PushOutcome {
        PushOutcome::default()
    }
}
