//! The manager's settings: TOML file, then `FISHCHAT_MANAGER_<KEY>`
//! environment variables, then command-line options (see `fishchat_node::load_config`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of the manager service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server (the `Manager` service, health, reflection).
    pub grpc_listen: SocketAddr,
    /// Address of the metrics HTTP server (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// MongoDB connection string (inboxes, cursors).
    pub mongo_url: String,
    /// MongoDB database name.
    pub database: String,
    /// This node's id, unique among manager nodes (its etcd key).
    pub node_id: String,
    /// etcd endpoints, for registering this node.
    pub etcd_endpoints: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7030)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9130)),
            mongo_url: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
            database: "fishchat".into(),
            node_id: fishchat_discovery::default_node_id(),
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
        }
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Address of the gRPC server (the `Manager` service, health, reflection) [default: 127.0.0.1:7030].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9130].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// MongoDB connection string (inboxes, cursors) [default: mongodb://127.0.0.1:27017/?directConnection=true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo_url: Option<String>,
    /// MongoDB database name [default: fishchat].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// This node's id, unique among manager nodes (its etcd key) [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// etcd endpoints, for registering this node, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
}
