//! `fishchat-manager`: the message store's read side over gRPC: sync, cursors,
//! unread counts, history.
//!
//! The service is thin: [`validate`] checks the request, [`store::InboxReader`]
//! (implemented by `fishchat_inbox::MongoInbox`) does the work, and
//! [`service::ManagerService`] maps between the two. The inbox crate explains
//! why seqs are contiguous and ordered, which is what makes sync and unread
//! counts exact.

pub mod config;
pub mod service;
pub mod store;
pub mod validate;

pub use config::{Config, Overrides};
pub use service::ManagerService;
pub use store::InboxReader;
