//! The gateway's settings, from its TOML file, the environment
//! (`FISHCHAT_GATEWAY_<KEY>`) and the command line.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the gateway process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the TCP front door (client protocol framing).
    pub listen: SocketAddr,
    /// Address of the HTTP front door (`GET /lookup`, `GET /healthz`).
    pub http_listen: SocketAddr,
    /// Address of the gRPC server (health and reflection).
    pub grpc_listen: SocketAddr,
    /// Address of the metrics HTTP server (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// etcd endpoints, `host:port` each.
    pub etcd_endpoints: Vec<String>,
    /// This node's id in etcd; a unique one is made up when absent.
    pub node_id: Option<String>,
    /// Seconds a TCP connection may stay silent before it is closed.
    pub idle_timeout_secs: u64,
    /// Largest frame accepted on the TCP front door (header + body), in bytes.
    pub max_frame_len: u32,
    /// The service name access nodes register under.
    pub access_service: String,
    /// TTL of this node's etcd lease, in seconds.
    pub lease_ttl_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            etcd_endpoints: vec!["127.0.0.1:2379".to_owned()],
            node_id: None,
            idle_timeout_secs: 30,
            // A lookup is an empty body: a kilobyte leaves room and caps what a peer can make us hold.
            max_frame_len: 1024,
            access_service: "access".to_owned(),
            lease_ttl_secs: 10,
        }
    }
}

impl Config {
    /// How long a TCP connection may stay silent (at least a second: zero
    /// would close every connection before its first frame).
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// The TTL of this node's etcd lease.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Address of the TCP front door (client protocol framing) [default: 127.0.0.1:7000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Address of the HTTP front door (`GET /lookup`, `GET /healthz`) [default: 127.0.0.1:8000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Address of the gRPC server (health, reflection) [default: 127.0.0.1:7001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// etcd endpoints, `host:port` each, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// This node's id in etcd [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Seconds a TCP connection may stay silent before it is closed [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Largest frame accepted on the TCP front door (header + body), in bytes [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_len: Option<u32>,
    /// The service name access nodes register under [default: access].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_service: Option<String>,
    /// TTL of this node's etcd lease, in seconds [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl_secs: Option<u64>,
}
