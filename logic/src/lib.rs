//! logic: the access tier's single upstream.
//!
//! Every request arrives with the user id the access node authenticated; the
//! domain ([`chat`]) checks it (the recipient exists, the sender belongs to
//! the group, the body fits), deduplicates by (sender, client message id),
//! assigns the server message id and hands the message to the broker,
//! answering only once the broker has it. The outside world is reached
//! through the small traits in [`ports`]; [`adapters`] implements them over
//! Redis, Kafka and the register and manager services.

pub mod adapters;
pub mod cached_groups;
pub mod chat;
pub mod config;
pub mod known_users;
pub mod notify;
pub mod ports;
pub mod service;

pub use config::{Config, Overrides};
