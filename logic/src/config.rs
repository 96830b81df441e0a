//! logic's settings, from its TOML file, the environment
//! (`FISHCHAT_LOGIC_<KEY>`) and the command line (see `fishchat_node::load_config`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::adapters::kafka::KafkaConfig;
use crate::chat::Limits;

/// Settings of a logic node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server.
    pub grpc_listen: SocketAddr,
    /// Address of the metrics HTTP server (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// This node's id in etcd; a unique one (`<hostname>-<pid>-<random>`) is made up when absent.
    pub node_id: Option<String>,
    /// etcd endpoints, `host:port` each.
    pub etcd_endpoints: Vec<String>,
    /// Redis URL (dedup records, message ids).
    pub redis_url: String,
    /// Prefix of every Redis key logic writes.
    pub key_prefix: String,
    /// How long a client message id is remembered for deduplication, in seconds.
    pub dedup_ttl_secs: u64,
    /// Message ids reserved per Redis round trip.
    pub id_block: u64,
    /// Largest message body in bytes.
    pub max_body: usize,
    /// Kafka bootstrap servers, comma-separated.
    pub kafka_brokers: String,
    /// Topic of direct messages, keyed by conversation.
    pub p2p_topic: String,
    /// Topic of group messages, keyed by conversation.
    pub group_topic: String,
    /// Partitions of each topic when logic has to create it.
    pub partitions: i32,
    /// How long a send may wait for the broker, in milliseconds.
    pub send_timeout_ms: u64,
    /// How long a record waits in the Kafka producer for others to share its request, in milliseconds.
    pub kafka_linger_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7020)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9120)),
            node_id: None,
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "fc:".into(),
            dedup_ttl_secs: 7 * 24 * 3600,
            id_block: 1000,
            max_body: Limits::default().max_body,
            kafka_brokers: KafkaConfig::default().brokers,
            p2p_topic: KafkaConfig::default().p2p_topic,
            group_topic: KafkaConfig::default().group_topic,
            partitions: KafkaConfig::default().partitions,
            send_timeout_ms: KafkaConfig::default().send_timeout_ms,
            kafka_linger_ms: KafkaConfig::default().linger_ms,
        }
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Address of the gRPC server [default: 127.0.0.1:7020].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9120].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// This node's id in etcd [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// etcd endpoints, `host:port` each, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Redis URL (dedup records, message ids) [default: redis://127.0.0.1:6379].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key logic writes [default: fc:].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// How long a client message id is remembered for deduplication, in seconds [default: 604800].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_ttl_secs: Option<u64>,
    /// Message ids reserved per Redis round trip [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_block: Option<u64>,
    /// Largest message body, in bytes [default: 16384].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<usize>,
    /// Kafka bootstrap servers, comma-separated [default: 127.0.0.1:9092].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// Topic of direct messages, keyed by conversation [default: fishchat.p2p].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p_topic: Option<String>,
    /// Topic of group messages, keyed by conversation [default: fishchat.group].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_topic: Option<String>,
    /// Partitions of each topic when logic has to create it [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// How long a send may wait for the broker, in milliseconds [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_timeout_ms: Option<u64>,
    /// How long a record waits in the Kafka producer for others to share its request, in milliseconds [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_linger_ms: Option<u64>,
}
