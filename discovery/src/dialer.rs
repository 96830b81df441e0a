//! gRPC channels to one particular node, by address.
//!
//! msg_job pushes a message to the access node that holds the recipient, not
//! to any access node, so it dials that node's address; channels are cached so
//! each push reuses the node's HTTP/2 connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::DiscoveryError;
use crate::tls::client_tls;

/// How long to wait for a TCP connection to a node before a call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The gRPC endpoint for an address: `host:port` or an `http://` /
/// `https://` URI. Plain HTTP/2, unless the process uses mutual TLS (see
/// [`use_client_tls`](crate::use_client_tls)): then always TLS, whatever
/// scheme the address names, so that no configured address can dodge it.
pub fn endpoint_for(addr: &str) -> Result<Endpoint, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let authority = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    if authority.contains("://") {
        return Err(invalid("only http:// and https:// are dialed".to_owned()));
    }
    let tls = client_tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map_err(|err| invalid(err.to_string()))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|err| invalid(err.to_string()))?;
    }
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

/// A cache of lazily connected channels, one per address. Clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Dialer {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `addr`, created on first use. It connects on its first
    /// call and reconnects by itself after a failure. Must be called inside a
    /// tokio runtime.
    pub fn channel(&self, addr: &str) -> Result<Channel, DiscoveryError> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint_for(addr)?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Drops the cached channel to `addr` (say, once its node has left), so
    /// its connection closes when the last clone in use is dropped.
    pub fn forget(&self, addr: &str) {
        self.channels.lock().remove(addr);
    }

    /// How many addresses have a cached channel.
    pub fn len(&self) -> usize {
        self.channels.lock().len()
    }

    /// Whether no channel is cached.
    pub fn is_empty(&self) -> bool {
        self.channels.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_when_they_lack_one() {
        assert_eq!(
            endpoint_for("127.0.0.1:7002").unwrap().uri().to_string(),
            "http://127.0.0.1:7002/"
        );
        assert_eq!(
            endpoint_for("http://node:1").unwrap().uri().to_string(),
            "http://node:1/"
        );
        assert!(matches!(
            endpoint_for("bad host:1"),
            Err(DiscoveryError::InvalidAddress { .. })
        ));
    }

    #[tokio::test]
    async fn channels_are_cached_per_address() {
        let dialer = Dialer::new();
        dialer.channel("127.0.0.1:1").unwrap();
        dialer.channel("127.0.0.1:1").unwrap();
        dialer.clone().channel("127.0.0.1:2").unwrap();
        assert_eq!(dialer.len(), 2);
        dialer.forget("127.0.0.1:1");
        assert_eq!(dialer.len(), 1);
    }
}
