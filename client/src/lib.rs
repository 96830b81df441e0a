//! The FishChat client library.
//!
//! [`Connection`] speaks the framed wire protocol over any async byte stream;
//! login, sending, sync and reconnection are built on it.

mod connection;

pub use connection::{Connection, ConnectionError};
