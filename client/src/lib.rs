//! The FishChat client library.
//!
//! [`Connection`] speaks the framed wire protocol over any async byte stream.
//! [`Client`] builds a resilient session on it: it finds an access node
//! through the gateway, logs in, and after every login catches up on each
//! [`Conversation`] (a direct chat, named by the other user, or a group):
//! it lists what changed since what it holds, takes the newest messages, and
//! syncs any gap. Messages reach the application as [`Event::Message`] in seq
//! order per conversation, each once; a push that skips ahead waits while the
//! gap is synced. It keeps unread counts ([`Client::conversations`]), marks
//! conversations read ([`Client::read`]), pages back ([`Client::history`]),
//! keeps the heartbeat, and reconnects with backoff, resending unanswered
//! sends with their original client_msg_id. With a state file it remembers
//! per conversation what the application took, so a restart resumes there.
//! [`register::RegisterApi`] talks to the register service's HTTP API
//! (accounts, login tokens, user lookup, groups).
//!
//! ```no_run
//! use fishchat_client::{Client, ClientOptions, Conversation, Event};
//!
//! # async fn demo() -> Result<(), fishchat_client::ClientError> {
//! let mut options = ClientOptions::new("token-from-register", "laptop");
//! options.gateway = Some("127.0.0.1:7000".into());
//! let (client, mut events) = Client::connect(options).await?;
//! client.send_to_user(1002, "hi bob").await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Synced => {
//!             for info in client.conversations() {
//!                 println!("{}: {} unread", info.conversation, info.unread);
//!             }
//!         }
//!         Event::Message { conversation, message } => {
//!             println!("{conversation} #{} from {}", message.seq, message.from_user_id);
//!             client.read(conversation, message.seq).await?;
//!         }
//!         _ => {}
//!     }
//! }
//! let bob = Conversation::User(1002);
//! let older = client.history(bob, 0, 20).await?; // newest first
//! println!("{} older messages", older.messages.len());
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod connection;
mod conversation;
mod driver;
mod error;
mod establish;
mod event;
mod options;
pub mod register;
mod shared;
mod state;
mod table;
#[cfg(test)]
mod testing;
mod tls;

pub use client::Client;
pub use connection::{Connection, ConnectionError};
pub use conversation::{BadConversationId, Conversation, ConversationInfo, EmptyConversationRef};
pub use error::ClientError;
pub use event::{Event, Events};
pub use fishchat_codec::pb::{HistoryReply, ReadReply, SendAck, StoredMessage};
pub use fishchat_codec::{ErrorCode, KickReason};
pub use options::{ClientOptions, DEFAULT_GATEWAY};
pub use tls::{ClientTls, Stream, TlsError};
