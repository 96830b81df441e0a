//! What can go wrong in a conversation operation.

use thiserror::Error;

/// A failed conversation operation.
#[derive(Debug, Error)]
pub enum ConvError {
    /// An id does not fit the store's signed 64-bit fields (ids must be below 2^63).
    #[error("id {0} is out of range: ids must be below 2^63")]
    IdOutOfRange(u64),
    /// MongoDB refused the operation or could not be reached.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored document lacks a field or holds a value of the wrong type.
    #[error("malformed stored document: {0}")]
    Corrupt(String),
    /// Other writers kept taking the next seq of a conversation; nothing of
    /// the unresolved messages was stored, so the whole call may be retried.
    #[error(
        "conversation {conversation}: gave up after {rounds} contended rounds of seq allocation"
    )]
    Contended {
        /// The conversation whose seq could not be allocated.
        conversation: String,
        /// How many rounds in a row made no progress.
        rounds: u32,
    },
    /// MongoDB ran a multi-statement write but did not apply all of it (it
    /// answers `ok: 1` all the same). The statements are idempotent upserts, so
    /// the whole call may be retried.
    #[error("writing to {collection}: {problem}")]
    Write {
        /// The collection written to.
        collection: String,
        /// What went wrong.
        problem: WriteProblem,
    },
    /// A request named no conversation.
    #[error("no conversation named")]
    NoConversation,
    /// The user is not (and never was) a member of the group.
    #[error("user {user} is not a member of group {group}")]
    NotMember {
        /// The user asking.
        user: u64,
        /// The group.
        group: u64,
    },
    /// The database holds data of the older per-user inbox layout.
    #[error(
        "database {database} holds per-user inboxes of FishChat before conversations \
         (collections {collections}); they are not migrated. Reset the data: \
         `scripts/stack purge` for the local stack (it deletes all its data), or drop those collections \
         (mongosh: use {database}; db.messages.drop(); db.cursors.drop())"
    )]
    OldLayout {
        /// The database.
        database: String,
        /// The old collections found.
        collections: String,
    },
}

/// Why a multi-statement write did not fully apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriteProblem {
    /// The server refused some statements; the others were applied.
    #[error(
        "{refused} of {statements} upserts refused; the first on {filter}: code {code}: {message}"
    )]
    Refused {
        /// Statements sent.
        statements: usize,
        /// Statements refused.
        refused: usize,
        /// The filter of the first refused statement (the document it targets).
        filter: String,
        /// The server's error code for it.
        code: i32,
        /// The server's message for it.
        message: String,
    },
    /// The statements ran but the write concern was not satisfied, so they
    /// may not survive a failover.
    #[error("write concern not satisfied: code {code}: {message}")]
    Concern {
        /// The server's error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The reply does not say what happened to every statement.
    #[error("unreadable reply: {0}")]
    Unreadable(String),
}

/// Converts an id of the API (u64) to its stored form (i64), refusing ids >= 2^63.
pub(crate) fn to_i64(id: u64) -> Result<i64, ConvError> {
    i64::try_from(id).map_err(|_| ConvError::IdOutOfRange(id))
}

/// A seq or position from the API as a filter bound: above the stored range
/// simply matches nothing, so it saturates instead of failing.
pub(crate) fn bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// MongoDB's code for a unique-index violation.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// Whether `err` is a unique-index violation, whatever operation reported it.
pub(crate) fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|w| w.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}
