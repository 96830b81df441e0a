//! The FishChat client library.
//!
//! [`Connection`] speaks the framed wire protocol over any async byte stream.
//! [`Client`] builds a resilient session on it: it finds an access node
//! through the gateway, logs in, syncs what it missed, delivers pushed
//! messages in seq order exactly once, keeps the heartbeat, and reconnects
//! with backoff, resending unanswered sends with their original client_msg_id.
//! [`register::RegisterApi`] talks to the register service's HTTP API
//! (accounts, login tokens, groups).
//!
//! ```no_run
//! use fishchat_client::{Client, ClientOptions, Event};
//!
//! # async fn demo() -> Result<(), fishchat_client::ClientError> {
//! let mut options = ClientOptions::new("token-from-register", "laptop");
//! options.gateway = Some("127.0.0.1:7000".into());
//! let (client, mut events) = Client::connect(options).await?;
//! client.send_to_user(1002, "hi bob").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(message) = event {
//!         println!("seq {} from {}", message.seq, message.from_user_id);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod connection;
mod driver;
mod error;
mod establish;
mod event;
mod options;
pub mod register;
mod state;
#[cfg(test)]
mod testing;

pub use client::Client;
pub use connection::{Connection, ConnectionError};
pub use error::ClientError;
pub use event::{Event, Events};
pub use fishchat_codec::pb::{SendAck, StoredMessage};
pub use fishchat_codec::{ErrorCode, KickReason};
pub use options::{ClientOptions, DEFAULT_GATEWAY};
