//! `fishchat-manager`: the read side of conversations over gRPC: which
//! conversations changed, sync and history of one, read positions, and the
//! membership records register writes when users join or leave groups.
//!
//! The service is thin: [`validate`] checks the request, [`store::Conversations`]
//! (implemented by `fishchat_conversations::ConversationStore`) does the
//! work, and [`service::ManagerService`] maps between the two. The
//! conversation crate explains why seqs are gapless and ordered, which is
//! what makes sync and unread counts exact.

pub mod config;
pub mod service;
pub mod store;
pub mod validate;

pub use config::{Config, Overrides};
pub use service::ManagerService;
pub use store::Conversations;
