//! The service's settings, from its TOML file, `FISHCHAT_MSG_JOB_<KEY>` and the command line.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of msg_job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server (health and reflection).
    pub grpc_listen: SocketAddr,
    /// Address of the metrics HTTP server (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// This node's id, as it will appear in etcd.
    pub node_id: String,
    /// Kafka bootstrap servers, comma-separated.
    pub kafka_brokers: String,
    /// Kafka consumer group shared by every msg_job node.
    pub group_id: String,
    /// Topic of direct messages, keyed by conversation.
    pub p2p_topic: String,
    /// Topic of group messages, keyed by conversation.
    pub group_topic: String,
    /// Partitions of each topic when msg_job has to create it.
    pub partitions: i32,
    /// Most records stored and committed together.
    pub batch_size: usize,
    /// How long a batch waits for more records after its first one, in milliseconds.
    pub linger_ms: u64,
    /// Longest time the broker may hold an empty fetch, in milliseconds
    /// (librdkafka's `fetch.wait.max.ms`). The broker answers a held fetch as
    /// soon as a record arrives, so this adds no latency; it only sets how
    /// often an idle consumer asks again.
    pub fetch_wait_ms: u64,
    /// The register service, for session lookups before a push.
    pub register_addr: String,
    /// Redis, where register announces session changes; msg_job caches
    /// sessions and drops an entry when its user's sessions change.
    pub redis_url: String,
    /// MongoDB connection string of the conversation store.
    pub mongo_url: String,
    /// MongoDB database of the conversation store.
    pub database: String,
    /// etcd endpoints, for registering this node.
    pub etcd_endpoints: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7040)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9140)),
            node_id: "msg-job-1".to_owned(),
            kafka_brokers: "127.0.0.1:9092".to_owned(),
            group_id: "fishchat-msg-job".to_owned(),
            p2p_topic: "fishchat.p2p".to_owned(),
            group_topic: "fishchat.group".to_owned(),
            partitions: 8,
            batch_size: 500,
            linger_ms: 2,
            fetch_wait_ms: 500,
            register_addr: "http://127.0.0.1:7010".to_owned(),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            mongo_url: "mongodb://127.0.0.1:27017/?directConnection=true".to_owned(),
            database: "fishchat".to_owned(),
            etcd_endpoints: vec!["127.0.0.1:2379".to_owned()],
        }
    }
}

impl Config {
    /// The topics consumed: direct messages and group messages.
    pub fn topics(&self) -> Vec<String> {
        vec![self.p2p_topic.clone(), self.group_topic.clone()]
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Address of the gRPC server (health, reflection) [default: 127.0.0.1:7040].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9140].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// This node's id in etcd and its static member id in the Kafka consumer group [default: msg-job-1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Kafka bootstrap servers, comma-separated [default: 127.0.0.1:9092].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// Kafka consumer group shared by every msg_job node [default: fishchat-msg-job].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Topic of direct messages, keyed by conversation [default: fishchat.p2p].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p_topic: Option<String>,
    /// Topic of group messages, keyed by conversation [default: fishchat.group].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_topic: Option<String>,
    /// Partitions of each topic when msg_job has to create it [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Most records stored and committed together [default: 500].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// How long a batch waits for more records after its first one, in milliseconds [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linger_ms: Option<u64>,
    /// Longest time the broker may hold an empty fetch, in milliseconds [default: 500].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_wait_ms: Option<u64>,
    /// The register service, for session lookups before a push [default: http://127.0.0.1:7010].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_addr: Option<String>,
    /// Redis, where register announces session changes [default: redis://127.0.0.1:6379].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// MongoDB connection string of the conversation store [default: mongodb://127.0.0.1:27017/?directConnection=true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo_url: Option<String>,
    /// MongoDB database of the conversation store [default: fishchat].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// etcd endpoints, for registering this node, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
}
