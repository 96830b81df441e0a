//! The Kafka side: make sure the topics exist, and build the consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fishchat_rebootstrap::{self as rebootstrap, Rebootstrap};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

/// How long topic creation may take before startup fails.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker keeps a silent member's partitions before handing them
/// to others: the outage a node that dies for good causes, and the window in
/// which a restarted static member gets its partitions back without a rebalance.
pub const SESSION_TIMEOUT_MS: u64 = 10_000;

/// How long leaving may take: the final commit and librdkafka's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pipeline's consumer.
pub type PipelineConsumer = StreamConsumer<Observed>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// The consumer's context: reads the lag per partition from librdkafka's
/// statistics, times asynchronous commits until the broker answers, and gives
/// the consumer its bootstrap servers back if it ever drops every broker.
#[derive(Debug)]
pub struct Observed {
    lag: Family<PartitionLabels, Gauge>,
    commits: Family<Vec<(&'static str, &'static str)>, Counter>,
    commit_seconds: Histogram,
    commit_started: Mutex<Option<Instant>>,
    rebootstrap: Rebootstrap,
}

impl Observed {
    fn new(rebootstrap: Rebootstrap) -> Self {
        Self {
            rebootstrap,
            lag: Family::default(),
            commits: Family::default(),
            // 100 µs to about 3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            commit_started: Mutex::new(None),
        }
    }

    /// Registers `consumer_lag`, `commits` and `commit_seconds`.
    pub fn register(&self, registry: &mut Registry) {
        for result in ["ok", "error"] {
            self.commits.get_or_create_owned(&vec![("result", result)]);
        }
        registry.register(
            "consumer_lag",
            "Records of an assigned partition not yet consumed (from librdkafka's statistics, every second)",
            self.lag.clone(),
        );
        registry.register(
            "commits",
            "Offset commits the broker answered, by result",
            self.commits.clone(),
        );
        registry.register(
            "commit_seconds",
            "From handing offsets to the consumer to the broker's answer",
            self.commit_seconds.clone(),
        );
    }

    /// Notes that a commit was just handed to the consumer.
    pub fn committing(&self) {
        *self.commit_started.lock() = Some(Instant::now());
    }
}

impl ClientContext for Observed {
    fn stats(&self, statistics: Statistics) {
        self.rebootstrap.check(&statistics);
        for (topic, stats) in statistics.topics {
            for (partition, stats) in stats.partitions {
                // Partition -1 is librdkafka's internal one; a lag of -1 means not known yet.
                if partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                let labels = PartitionLabels {
                    topic: topic.clone(),
                    partition,
                };
                self.lag.get_or_create(&labels).set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for Observed {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Some(started) = self.commit_started.lock().take() {
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        let result = if result.is_ok() { "ok" } else { "error" };
        self.commits.get_or_create(&vec![("result", result)]).inc();
    }
}

/// Creates each of `topics` with `partitions` partitions unless it exists.
///
/// The stack's broker does not auto-create topics (a typo in a client's topic
/// name must not make a topic with the default partition count), and a
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
/// Fetches are long polls: the broker holds an empty fetch up to
/// `fetch_wait_ms` and answers as soon as one byte (`fetch.min.bytes`) is
/// there, so an idle consumer sends about two fetches a second per broker and
/// a new record is delivered at once.
///
/// With an `instance_id` (the node id) the consumer is a static group member.
/// What that buys on Apache Kafka: a node restarted within the session timeout,
/// even after `kill -9`, takes back its old member id and partitions at once,
/// with no rebalance; a dynamic member's successor would join as a stranger
/// and the whole group would wait out the dead member's session (10 s) before
/// anyone consumed its partitions. The cost: a static member does not leave
/// the group when it stops, so the partitions of a node stopped for good wait
/// for the session timeout before another node takes them.
pub fn consumer(
    brokers: &str,
    group_id: &str,
    instance_id: Option<&str>,
    topics: &[String],
    fetch_wait_ms: u64,
) -> Result<PipelineConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    rebootstrap::configure(&mut config)
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    if let Some(instance) = instance_id {
        config.set("group.instance.id", instance);
    }
    let rebootstrap =
        Rebootstrap::new(brokers).map_err(|err| KafkaError::ClientCreation(err.to_string()))?;
    let consumer: PipelineConsumer = config.create_with_context(Observed::new(rebootstrap))?;
    consumer.context().rebootstrap.attach(consumer.client());
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Commits `last` (when there is one) and closes `consumer`, giving up after
/// [`CLOSE_TIMEOUT`].
///
/// Both block: librdkafka's close waits for the group coordinator to settle,
/// and a close that lands while the broker holds a JoinGroup (a restart racing
/// a rebalance) can wait out the whole rebalance, minutes, during which the
/// process could not exit. So both run on a thread of their own, and past the
/// deadline the process leaves without them. That costs what a crash costs:
/// the uncommitted tail is redelivered, and the store absorbs it.
pub async fn close(consumer: PipelineConsumer, last: Option<TopicPartitionList>) {
    let (done, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            if let Some(last) = last
                && let Err(err) = consumer.commit(&last, CommitMode::Sync)
            {
                tracing::warn!(%err, "final commit failed; the tail will be redelivered");
            }
            drop(consumer);
            let _ = done.send(());
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "no thread to close the Kafka consumer on; leaving without closing it");
        return;
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        tracing::warn!(
            timeout_ms = CLOSE_TIMEOUT.as_millis() as u64,
            "the Kafka consumer did not close in time; leaving without it"
        );
    }
}

/// Asks the broker for one topic's metadata, for health checks: it answers
/// only while the broker is up and the topic exists. A client of its own, so
/// that a check never waits behind the pipeline's consumer.
#[derive(Clone)]
pub struct BrokerCheck {
    client: Arc<BaseConsumer>,
    topic: String,
}

impl BrokerCheck {
    /// A check of `topic` on `brokers`; connects lazily, so it fails only on bad configuration.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_owned(),
        })
    }

    /// Fails when the broker does not answer within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<(), KafkaError> {
        let check = self.clone();
        // librdkafka's metadata request blocks the calling thread.
        tokio::task::spawn_blocking(move || {
            check
                .client
                .fetch_metadata(Some(&check.topic), timeout)
                .map(drop)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}
