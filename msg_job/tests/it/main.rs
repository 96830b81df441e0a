//! msg_job against the real Kafka broker (and, for the adapter, real MongoDB).
//!
//! One test binary, so the shared helpers in `common` are all used.

mod common;
mod mongo;
mod pipeline;
mod push;
