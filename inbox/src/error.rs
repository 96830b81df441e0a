//! What can go wrong in an inbox operation.

use thiserror::Error;

/// A failed inbox operation.
#[derive(Debug, Error)]
pub enum InboxError {
    /// An id does not fit the store's signed 64-bit fields (ids must be below 2^63).
    #[error("id {0} is out of range: ids must be below 2^63")]
    IdOutOfRange(u64),
    /// MongoDB refused the operation or could not be reached.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored document lacks a field or holds a value of the wrong type.
    #[error("malformed stored document: {0}")]
    Corrupt(String),
    /// Other writers kept taking the next seq of `inbox`; nothing of the
    /// unresolved messages was stored, so the whole call may be retried.
    #[error("inbox {inbox}: gave up after {rounds} contended rounds of seq allocation")]
    Contended {
        /// The inbox whose seq could not be allocated.
        inbox: u64,
        /// How many rounds in a row made no progress.
        rounds: u32,
    },
}

/// Converts an id of the API (u64) to its stored form (i64), refusing ids >= 2^63.
pub(crate) fn to_i64(id: u64) -> Result<i64, InboxError> {
    i64::try_from(id).map_err(|_| InboxError::IdOutOfRange(id))
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
