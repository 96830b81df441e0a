//! Service registration and resolution over etcd leases.
//!
//! Every FishChat process announces itself under `/fishchat/<service>/<node_id>`
//! with a [`Registration`]: the key is bound to a lease that a background task
//! keeps alive, so a node that dies disappears on its own after the TTL, and a
//! node that stops cleanly [`deregister`](Registration::deregister)s at once.
//! Callers follow a service with a [`Resolver`], which mirrors the live nodes
//! (get, then watch) and feeds them to a load-balanced gRPC channel; a
//! [`Dialer`] reaches one particular node (the access node holding a user).

mod backoff;
mod dialer;
mod error;
mod etcd;
mod node;
mod registration;
mod resolver;
mod tls;

pub use dialer::{Dialer, endpoint_for};
pub use error::DiscoveryError;
pub use node::{
    NAMESPACE_VAR, NodeInfo, Nodes, ROOT, default_node_id, namespace, node_key, service_prefix,
};
pub use registration::{DEFAULT_TTL, Registration};
pub use resolver::Resolver;
pub use tls::use_client_tls;
