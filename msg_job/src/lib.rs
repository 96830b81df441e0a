//! msg_job: takes accepted messages off Kafka, stores each into every inbox it
//! belongs in, commits the Kafka offsets, then pushes the stored messages to
//! the access nodes holding the recipients.
//!
//! The order of those steps is the point of the crate: an offset is committed
//! only after its message is stored (no loss), a message is pushed only after
//! it is stored (order), and storing is idempotent per (inbox, server_msg_id)
//! so the uncommitted tail redelivered after a crash never makes a second copy.
//! Storage and push sit behind the small traits [`InboxStore`] and [`Pusher`],
//! so the pipeline is tested with in-memory stand-ins as well as the real ones.

pub mod config;
pub mod event;
pub mod grpc_push;
pub mod kafka;
pub mod memory;
pub mod mongo;
pub mod pipeline;
pub mod push;
pub mod store;

pub use config::Config;
pub use memory::MemoryInbox;
pub use pipeline::{Pipeline, PipelineError, Stats};
pub use push::{PushOutcome, Pusher, UserDelivery};
pub use store::{Conversation, InboxStore, NewMessage, StoreError};
