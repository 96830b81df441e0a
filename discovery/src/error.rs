//! What can go wrong talking to etcd or reading what is stored there.

use std::time::Duration;

use thiserror::Error;

/// A registration or resolution step that failed.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// etcd refused the request or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer within the request deadline.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// A node description could not be encoded as JSON.
    #[error("node description: {0}")]
    Json(#[from] serde_json::Error),
    /// A registered address is not a valid URI for a gRPC channel.
    #[error("invalid node address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as registered.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No etcd endpoint was configured.
    #[error("no etcd endpoint configured")]
    NoEndpoints,
}
