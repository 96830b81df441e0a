//! Conversations in MongoDB: each message stored once, in its conversation,
//! with a per-conversation seq, and one record per (user, conversation).
//!
//! A conversation is a direct chat between two users or a group ([`ConvKey`]).
//! Its seqs are exactly `1, 2, 3, ...` with no gap and appear in order, the
//! same for every member; [`writer`] explains how they are allocated without
//! a counter and fenced against a second writer. Per-user state (read
//! position, the range a group member may see) lives in member records
//! written at join, first message, leave and read, never per message
//! ([`members`]).
//!
//! # API
//!
//! [`ConversationStore`] is the only type with behaviour; callers wrap it
//! behind their own traits.
//!
//! * Setup: `connect(url, database)`, `new(&Database)`, `prepare()` (refuses
//!   the older per-user layout, creates indexes).
//! * Write side (msg_job): `store(&[NewMessage]) -> seqs`.
//! * Membership (manager, for register): `joined(user, group)`, `left(user, group)`.
//! * Read side (manager): `sync_conversations`, `sync`, `history`, `read`,
//!   `membership`, `head`.
//!
//! Ids are `u64` in the API and `i64` in MongoDB: ids of 2^63 and above are
//! refused with [`ConvError::IdOutOfRange`].

mod error;
mod key;
pub mod members;
mod message;
mod read;
mod store;
mod summary;
mod upsert;
pub mod writer;

pub use error::{ConvError, WriteProblem};
pub use key::ConvKey;
pub use members::{Membership, ReadOutcome};
pub use message::{NewMessage, Target};
pub use read::{DEFAULT_PAGE, MAX_PAGE, Page, page_limit};
pub use store::{ConversationStore, HEADS, MEMBERS, MESSAGES};
pub use summary::{DEFAULT_CONVERSATIONS, DEFAULT_NEWEST, MAX_CONVERSATIONS, MAX_NEWEST};
