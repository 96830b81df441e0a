//! The service's settings, from its TOML file, `FISHCHAT_MSG_JOB_<KEY>` and the command line.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of msg_job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server (health and reflection).
    pub grpc_listen: SocketAddr,
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
