//! The Kafka side: make sure the topics exist, and build the consumer.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long topic creation may take before startup fails.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates each of `topics` with `partitions` partitions unless it exists.
///
/// Topics are not auto-created on every broker (tansu never does), and a
/// consumer subscribed to a missing topic would sit idle; "already exists" is
/// the normal case after the first start.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = tokio::time::timeout(ADMIN_TIMEOUT, admin.create_topics(&new, &options))
        .await
        .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut))??;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "topic exists")
            }
            Err((topic, code)) => {
                tracing::error!(%topic, ?code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// A consumer in `group_id` subscribed to `topics`, committing only by hand.
///
/// Offsets are committed by the pipeline after each stored batch; a group
/// with no committed offset starts at the earliest record so nothing produced
/// before the first start is missed; only committed transactions are read.
///
/// With an `instance_id` (the node id) the consumer is a static group member:
/// a node restarted within the session timeout, even after `kill -9`, takes
/// its old place and partitions at once instead of waiting for the broker to
/// notice the dead member. (Measured on tansu 0.6: after `kill -9` of a
/// dynamic member that led the group, its restarted successor was left with
/// no partitions indefinitely.) The cost: partitions of a node that stops for
/// good wait for the session timeout before another node takes them.
pub fn consumer(
    brokers: &str,
    group_id: &str,
    instance_id: Option<&str>,
    topics: &[String],
    fetch_wait_ms: u64,
) -> Result<StreamConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        // The broker may hold a fetch this long waiting for data (see the
        // `fetch_wait_ms` setting for the trade-off).
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    if let Some(instance) = instance_id {
        config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer = config.create()?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
