//! The FishChat gateway: tells a client which access node to connect to.
//!
//! It follows the live access nodes in etcd (their client addresses and
//! loads) and answers a lookup with a lightly loaded one (see [`directory`]), over the client
//! protocol's framing on TCP ([`tcp`]) or over HTTP ([`http`]). [`Gateway`]
//! binds and runs everything from a [`Config`]; the binary only wires it to the
//! command line and signals.

pub mod config;
pub mod directory;
pub mod http;
pub mod reply;
pub mod server;
pub mod tcp;

pub use config::Config;
pub use directory::{Directory, Route};
pub use server::{Gateway, GatewayError};
