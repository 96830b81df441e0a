//! What the chat domain needs from the outside world, one trait per concern,
//! so the domain is testable without servers and each adapter can be swapped.

use std::future::Future;

use fishchat_codec::ErrorCode;
use fishchat_rpc::events::ChatEvent;
use thiserror::Error;

/// A refusal or failure, with the protocol code the client will see.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    /// The protocol error code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A backend that could not answer; the request had no effect and may be retried.
    pub fn unavailable(what: &str, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Unavailable, format!("{what}: {err}"))
    }
}

/// The first acceptance of a (sender, client message id): what every resend gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Accepted {
    /// The server message id.
    pub server_msg_id: u64,
    /// When the server first accepted the message.
    pub timestamp_ms: i64,
    /// A hash of what was sent (kind, recipient or group, body): a resend
    /// must match it to be answered as the first message.
    pub fingerprint: u64,
}

/// Users and groups (the register service).
pub trait Directory: Send + Sync {
    /// Whether a user exists.
    fn user_exists(&self, user_id: u64) -> impl Future<Output = Result<bool, Refusal>> + Send;
    /// The members of a group; `UNKNOWN_GROUP` when there is no such group.
    fn group_members(
        &self,
        group_id: u64,
    ) -> impl Future<Output = Result<Vec<u64>, Refusal>> + Send;
}

/// One (sender, client message id) to claim, with the acceptance to record if it is the first.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The authenticated sender.
    pub sender: u64,
    /// The client's id for the message.
    pub client_msg_id: &'a str,
    /// What to record when nothing is recorded yet.
    pub candidate: Accepted,
}

/// Remembers the first acceptance of each (sender, client message id).
pub trait Dedup: Send + Sync {
    /// Records each claim's candidate unless one is recorded already for its
    /// key, and returns the recorded one (the candidate when it was first):
    /// one result per claim, in order. Claims are settled in order, so of two
    /// claims of one key in a batch the first wins.
    fn claim(
        &self,
        claims: &[Claim<'_>],
    ) -> impl Future<Output = Vec<Result<Accepted, Refusal>>> + Send;
}

/// Hands out server message ids, unique across every logic node.
pub trait IdSource: Send + Sync {
    /// The next unused id.
    fn next_id(&self) -> impl Future<Output = Result<u64, Refusal>> + Send;
}

/// Which topic a message goes to; each kind has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Direct messages.
    Direct,
    /// Group messages.
    Group,
}

/// The broker.
pub trait Publisher: Send + Sync {
    /// Publishes `event` under `key` (its conversation, so one conversation
    /// stays in one partition) and resolves once the broker has it durably.
    fn publish(
        &self,
        kind: Kind,
        key: &str,
        event: &ChatEvent,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;
}
