//! FishChat register: accounts, login tokens, sessions and groups.
//!
//! One domain module ([`Registry`]) holds the rules; two thin surfaces expose
//! it: the internal gRPC service other FishChat services call ([`rpc`]) and a
//! small JSON API for apps and curl ([`http`]). The domain reaches its
//! storage only through the traits in [`store`]: MongoDB keeps what must last
//! (users, groups, members, join requests, invitations), Redis what expires or
//! churns (tokens, sessions). Membership changes are told to manager through
//! [`membership`] and announced on Redis pub/sub through [`announce`].

pub mod announce;
pub mod config;
pub mod dead_nodes;
pub mod error;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod password;
pub mod registry;
pub mod rpc;
pub mod store;
pub mod token;

pub use config::Config;
pub use error::{Error, StoreError};
pub use registry::{LoginLimits, Outbound, Registry, Stores, TokenPolicy};
