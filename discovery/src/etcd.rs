//! Connecting to etcd with the deadlines discovery relies on.
//!
//! No per-request timeout is set on the client itself: it would also cut the
//! long-lived watch and keep-alive streams. Unary calls are bounded with
//! [`bounded`] instead, and HTTP/2 pings detect a dead connection under a stream.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::error::DiscoveryError;

/// How long one unary etcd call may take before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a TCP connection to an etcd endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Interval of HTTP/2 pings; above etcd's default minimum of 5 s so the
/// server never answers "too many pings".
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered before the connection is dropped.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for `endpoints`. The client connects lazily: the first request is
/// what proves etcd answers.
pub(crate) async fn connect(endpoints: &[String]) -> Result<Client, DiscoveryError> {
    if endpoints.is_empty() {
        return Err(DiscoveryError::NoEndpoints);
    }
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
        .with_keep_alive_while_idle(true);
    Ok(Client::connect(endpoints, Some(options)).await?)
}

/// Runs one unary etcd call under [`REQUEST_TIMEOUT`].
pub(crate) async fn bounded<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DiscoveryError::Timeout(REQUEST_TIMEOUT)),
    }
}
