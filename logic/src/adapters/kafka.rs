//! Publishing accepted messages to Kafka.
//!
//! The producer is idempotent with `acks=all`, so a send is acknowledged only
//! once every in-sync replica has it and a retried batch is never written
//! twice. One topic per kind of message; the key (recipient or group id)
//! keeps one inbox or one group in one partition, hence in order.

use std::time::Duration;

use fishchat_rpc::events::ChatEvent;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ports::{Kind, Publisher, Refusal};

/// How long a record may wait in the producer for others to share its request.
/// A few milliseconds of delivery latency buys batches under load.
const LINGER_MS: u64 = 5;

/// Topics and producer settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic of direct messages.
    pub p2p_topic: String,
    /// Topic of group messages.
    pub group_topic: String,
    /// Partitions of each topic when logic has to create it.
    pub partitions: i32,
    /// How long a send may wait for the broker before it fails.
    pub send_timeout_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            p2p_topic: "fishchat.p2p".into(),
            group_topic: "fishchat.group".into(),
            partitions: 8,
            send_timeout_ms: 10_000,
        }
    }
}

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct SetupError(#[from] KafkaError);

/// Publishes [`ChatEvent`]s, encoded as protobuf.
pub struct KafkaPublisher {
    producer: FutureProducer,
    config: KafkaConfig,
}

impl KafkaPublisher {
    /// Creates the topics when missing and an idempotent producer.
    pub async fn connect(config: KafkaConfig) -> Result<Self, SetupError> {
        ensure_topics(
            &config.brokers,
            &[&config.p2p_topic, &config.group_topic],
            config.partitions,
        )
        .await?;
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Each record waits LINGER_MS for company, so under load records travel to the
            // broker in batches (one request and one log append per partition) and lz4
            // compresses a batch rather than a record.
            .set("compression.type", "lz4")
            .set("linger.ms", LINGER_MS.to_string())
            .set("message.timeout.ms", config.send_timeout_ms.to_string())
            .create()?;
        Ok(Self { producer, config })
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, kind: Kind, key: u64, event: &ChatEvent) -> Result<(), Refusal> {
        let topic = match kind {
            Kind::Direct => &self.config.p2p_topic,
            Kind::Group => &self.config.group_topic,
        };
        let key = key.to_string();
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        self.producer
            .send(record, Duration::from_millis(self.config.send_timeout_ms))
            .await
            .map(|_| ())
            .map_err(|(err, _)| Refusal::unavailable("kafka", err))
    }
}

/// Creates each topic with `partitions` partitions unless it exists.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "cannot create topic");
                });
            }
        }
    }
    Ok(())
}
