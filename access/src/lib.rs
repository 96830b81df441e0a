//! The FishChat access tier: client connections held in hand-rolled mio event
//! loops, with almost no memory per idle connection.
//!
//! - [`event_loop`]: one `mio::Poll` per thread, a slab of [`conn::Conn`]s, a
//!   timer [`wheel`]; reads, decodes, answers pings, sends requests upstream.
//! - [`upstream`]: the tokio side, calling logic for each request and routing
//!   the answer back through the loop's [`mailbox`].
//! - [`table`]: user → connections, sharded, so pushes find their targets.
//! - [`push`]: the Access gRPC service msg_job pushes to.
//! - [`node`]: all of it started together; [`config`] and [`metrics`].

pub mod config;
pub mod conn;
pub mod event_loop;
pub mod frames;
pub mod mailbox;
pub mod metrics;
pub mod node;
pub mod push;
pub mod table;
pub mod upstream;
pub mod wheel;

pub use config::Config;
pub use metrics::Metrics;
pub use node::AccessNode;
pub use push::PushService;
