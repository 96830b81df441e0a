//! The membership log: the port through which register tells the message
//! store (manager) who joined and who left each group, so that a member reads
//! a group's messages from the moment it joined and none after it left.
//!
//! The order is the contract: register calls [`MembershipLog::joined`] before
//! a member becomes visible (so no message can reach a member the log does not
//! know of) and [`MembershipLog::left`] after it stopped being one (see
//! `crate::registry` for why that way round).

mod manager;
mod recording;

pub use manager::ManagerLog;
pub use recording::{Change, Hold, RecordingLog};

use futures::future::BoxFuture;
use thiserror::Error;

use crate::model::{GroupId, UserId};

/// The log refused or could not be reached; the change may not be recorded.
#[derive(Debug, Error)]
#[error("membership log: {0}")]
pub struct LogError(String);

impl LogError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Records who is a member of which group, outside register.
///
/// Each call carries the change's `epoch`, taken before the change: the log
/// ignores a change older than the last one it applied to the pair, so calls
/// that arrive out of order (a retried `left` after a newer `joined`) cannot
/// undo a newer change.
pub trait MembershipLog: Send + Sync {
    /// `user` is about to become a member of `group`. Repeating it while the
    /// user is a member is harmless.
    fn joined(
        &self,
        user: UserId,
        group: GroupId,
        epoch: u64,
    ) -> BoxFuture<'_, Result<(), LogError>>;
    /// `user` has stopped being a member of `group`. Repeating it is harmless.
    fn left(&self, user: UserId, group: GroupId, epoch: u64)
    -> BoxFuture<'_, Result<(), LogError>>;
}
