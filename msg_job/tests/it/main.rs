//! msg_job against the real Kafka broker, Redis and MongoDB, with fake
//! register and access nodes over real gRPC.
//!
//! One test binary, so the shared helpers in `common` and `fakes` are all used.

mod common;
mod fakes;
mod mongo;
mod pipeline;
mod push;
mod push_cache;
mod push_dead_node;
