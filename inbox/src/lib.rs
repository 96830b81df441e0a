//! Inboxes in MongoDB: per-user messages with strictly increasing seqs, and delivery cursors.
//!
//! Every user has one inbox. A message stored into an inbox gets that inbox's
//! next seq; seqs of an inbox are exactly `1, 2, 3, ...` with no gaps and
//! appear in order, so a client that synced up to N and asks for "after N"
//! gets exactly what it lacks. [`writer`] explains how seqs are allocated
//! without a counter, and why that holds with many concurrent writers, Kafka
//! redeliveries and restarts.
//!
//! # API
//!
//! [`MongoInbox`] is the only type with behaviour; callers wrap it behind
//! their own traits.
//!
//! Setup:
//! * `MongoInbox::connect(url: &str, database: &str) -> Result<MongoInbox, InboxError>`
//! * `MongoInbox::new(database: &mongodb::Database) -> MongoInbox`
//! * `ensure_indexes(&self) -> Result<(), InboxError>`: once at startup.
//!
//! Write side (msg_job):
//! * `store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, InboxError>`:
//!   one seq per item, in item order; idempotent per (inbox, server_msg_id).
//!
//! Read side (manager, logic):
//! * `sync(&self, user: u64, after_seq: u64, limit: u32) -> Result<Page, InboxError>`
//! * `max_seq(&self, user: u64) -> Result<u64, InboxError>`
//! * `history(&self, user: u64, peer: Peer, before_seq: u64, limit: u32) -> Result<Page, InboxError>`
//! * `ack(&self, user: u64, device: &str, up_to_seq: u64) -> Result<u64, InboxError>`
//! * `cursor(&self, user: u64, device: &str) -> Result<u64, InboxError>`
//! * `unread(&self, user: u64, device: &str) -> Result<u64, InboxError>`
//!
//! Limits: a page `limit` of 0 means [`DEFAULT_PAGE`]; above [`MAX_PAGE`] it
//! is capped ([`page_limit`]). Ids are `u64` in the API and `i64` in MongoDB:
//! ids of 2^63 and above are refused with [`InboxError::IdOutOfRange`].

mod cursor;
mod error;
mod message;
mod read;
mod seq_cache;
mod store;
pub mod writer;

pub use error::InboxError;
pub use message::{Conversation, NewMessage, Peer};
pub use read::{DEFAULT_PAGE, MAX_PAGE, Page, page_limit};
pub use store::{CURSORS, MESSAGES, MongoInbox};
