//! msg_job: takes accepted messages off Kafka, stores each once in its
//! conversation (where it gets the conversation's next seq), pushes one
//! encoded frame per conversation and batch to the access nodes holding the
//! recipients, then commits the Kafka offsets.
//!
//! The order of those steps is the point of the crate ([`pipeline`]): an
//! offset is committed only after its message is stored and pushed (no loss,
//! nothing stored left unpushed), a message is pushed only after it is stored
//! (order), and storing is idempotent per (conversation, server_msg_id), so
//! the uncommitted tail redelivered after a crash never makes a second copy.
//! Storage and push sit behind the small traits [`MessageStore`] and
//! [`Pusher`], so the pipeline is tested with in-memory stand-ins as well as
//! the real ones.

pub mod config;
mod error_pace;
pub mod event;
pub mod grpc_push;
pub mod kafka;
pub mod mongo;
pub mod pipeline;
pub mod push;
pub mod store;

pub use config::Config;
pub use pipeline::{Pipeline, PipelineError, Stats};
pub use push::{Outgoing, PushOutcome, Pusher};
pub use store::{ConvKey, MemoryStore, MessageStore, NewMessage, StoreError, Target};
