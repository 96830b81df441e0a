//! The FishChat access tier: client connections held in hand-rolled mio event
//! loops, with almost no memory per idle connection.
//!
//! Inside (crate-private):
//! - `session`: the client protocol of one connection as pure functions
//!   (state, frame or reply, time → next state and what to do), fuzzed.
//! - `event_loop`: one `mio::Poll` per thread and a slab of `conn::Conn`s;
//!   reads, decodes, applies the session's decisions, sweeps the deadlines
//!   that came due, and writes each iteration's frames straight to the sockets.
//! - `upstream`: the tokio side, calling logic for each request and routing
//!   the answer back through the loop's `mailbox`.
//! - `table`: user → connections, sharded, so pushes find their targets.
//! - `device_id`: the device ids of sessions, one shared copy of each.
//! - `heap`: a burst's freed memory handed back to the system once it ends.
//! - `tls`: optional TLS on the client port, rustls driven by the loops.
//! - `push`: the Access gRPC service msg_job pushes to.
//! - `node`: all of it started together; `config`.
//!
//! Public: [`AccessNode`] (start, drain, stop), its [`Config`], its [`Metrics`]
//! and their HTTP endpoint ([`metrics`]), and the [`PushService`] it serves.

mod config;
mod conn;
mod device_id;
mod drain;
mod event_loop;
mod frames;
#[cfg(fuzzing)]
pub mod fuzzing;
mod heap;
mod login_guard;
mod mailbox;
pub mod metrics;
mod node;
mod push;
mod send_rate;
mod session;
mod table;
mod tls;
mod upstream;

pub use config::{Config, Overrides};
pub use metrics::Metrics;
pub use node::AccessNode;
pub use push::PushService;
