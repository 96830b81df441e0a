//! Publishing accepted messages to Kafka.
//!
//! The producer is idempotent with `acks=all`, so a send is acknowledged only
//! once every in-sync replica has it and a retried batch is never written
//! twice. One topic per kind of message; the key (the conversation) keeps
//! one conversation in one partition, hence in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fishchat_rebootstrap::{self as rebootstrap, Rebootstrap};
use fishchat_rpc::events::ChatEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use crate::ports::{Kind, Publisher, Refusal};

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
    /// How long a record waits in the producer for others to share its
    /// request (librdkafka's `linger.ms`).
    pub linger_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            p2p_topic: "fishchat.p2p".into(),
            group_topic: "fishchat.group".into(),
            partitions: 8,
            send_timeout_ms: 10_000,
            linger_ms: 2,
        }
    }
}

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct SetupError(#[from] KafkaError);

/// How long the delivery-report thread waits in one poll. A report wakes it at
/// once, so this only bounds how soon it notices that the publisher is gone.
const POLL_SLICE: Duration = Duration::from_secs(1);

/// How long a dropped publisher waits for records still in flight.
const FLUSH_ON_DROP: Duration = Duration::from_secs(2);

/// A delivery report's way back to the send that waits for it.
type Delivery = oneshot::Sender<Result<(), KafkaError>>;

/// Hands each record's delivery report to the send waiting for it, and gives
/// the producer its bootstrap servers back if it ever drops every broker.
struct Deliveries {
    rebootstrap: Rebootstrap,
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: Statistics) {
        self.rebootstrap.check(&statistics);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Box<Delivery>) {
        // A send that gave up (its caller went away) no longer listens: nothing to do.
        let _ = waiting.send(result.as_ref().map(drop).map_err(|(err, _)| err.clone()));
    }
}

/// Publishes [`ChatEvent`]s, encoded as protobuf.
///
/// A `BaseProducer` with a thread of its own serving delivery reports, rather
/// than rdkafka's `FutureProducer`: that one polls in 100 ms slices and spins
/// through the last millisecond of each (the time left rounds down to a 0 ms
/// poll), which alone kept an idle logic at ~1% of a core.
pub struct KafkaPublisher {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
    config: KafkaConfig,
    metrics: ProduceMetrics,
}

/// What producing costs, by topic kind (`direct`, `group`).
#[derive(Debug)]
struct ProduceMetrics {
    latency: Family<Vec<(&'static str, &'static str)>, Histogram>,
    errors: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Each kind's latency and errors, looked up once rather than per record.
    direct: (Histogram, Counter),
    group: (Histogram, Counter),
}

impl Default for ProduceMetrics {
    fn default() -> Self {
        // 100 µs to about 3.3 s.
        let latency = Family::<_, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        let errors = Family::<_, Counter>::default();
        let of = |kind| {
            let labels = vec![("kind", kind)];
            (
                latency.get_or_create_owned(&labels),
                errors.get_or_create_owned(&labels),
            )
        };
        let (direct, group) = (of("direct"), of("group"));
        Self {
            latency,
            errors,
            direct,
            group,
        }
    }
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
        let producer: BaseProducer<Deliveries> = rebootstrap::configure(&mut ClientConfig::new())
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A send batch from an access node reaches the producer as one burst, so a
            // short linger is enough for its records to travel in one request (and one
            // log append) per partition, lz4 compressing each batch rather than a record.
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger_ms.to_string())
            .set("message.timeout.ms", config.send_timeout_ms.to_string())
            .create_with_context(Deliveries {
                rebootstrap: Rebootstrap::new(&config.brokers)
                    .map_err(|err| KafkaError::ClientCreation(err.to_string()))?,
            })?;
        producer.context().rebootstrap.attach(producer.client());
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = std::thread::Builder::new()
            .name("kafka-deliveries".into())
            .spawn({
                let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_SLICE);
                    }
                }
            })
            .map_err(|err| SetupError(KafkaError::ClientCreation(err.to_string())))?;
        Ok(Self {
            producer,
            stop,
            poller: Some(poller),
            config,
            metrics: ProduceMetrics::default(),
        })
    }

    /// Registers `produce_latency_seconds` (from handing a record to the
    /// producer to the broker's acknowledgement) and `produce_errors`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "produce_latency_seconds",
            "From handing a record to the Kafka producer to the broker's acknowledgement, by topic kind",
            self.metrics.latency.clone(),
        );
        registry.register(
            "produce_errors",
            "Records the Kafka producer could not deliver, by topic kind",
            self.metrics.errors.clone(),
        );
    }
}

impl KafkaPublisher {
    /// A cheap question to the broker, for health checks (see [`KafkaCheck`]).
    pub fn check(&self) -> KafkaCheck {
        KafkaCheck {
            producer: Arc::clone(&self.producer),
            topic: self.config.p2p_topic.clone(),
        }
    }
}

/// Asks the broker for the metadata of the direct-message topic: it answers
/// only when the broker is up and the topic exists.
#[derive(Clone)]
pub struct KafkaCheck {
    producer: Arc<BaseProducer<Deliveries>>,
    topic: String,
}

impl KafkaCheck {
    /// Fails with the reason when the broker does not answer in `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<(), String> {
        let (producer, topic) = (Arc::clone(&self.producer), self.topic.clone());
        // librdkafka's metadata call blocks its caller.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(drop)
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| err.to_string())?
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        if let Err(err) = self.producer.flush(FLUSH_ON_DROP) {
            tracing::warn!(%err, "records still unsent when logic's producer closed");
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, kind: Kind, key: &str, event: &ChatEvent) -> Result<(), Refusal> {
        let (topic, (latency, errors)) = match kind {
            Kind::Direct => (&self.config.p2p_topic, &self.metrics.direct),
            Kind::Group => (&self.config.group_topic, &self.metrics.group),
        };
        let started = Instant::now();
        let result = self.produce(topic, key, event).await;
        match &result {
            Ok(()) => latency.observe(started.elapsed().as_secs_f64()),
            Err(_) => {
                errors.inc();
            }
        }
        result
    }
}

impl KafkaPublisher {
    async fn produce(&self, topic: &str, key: &str, event: &ChatEvent) -> Result<(), Refusal> {
        let payload = event.encode_to_vec();
        let (delivered, delivery) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(delivered))
            .key(key)
            .payload(&payload);
        self.producer
            .send(record)
            .map_err(|(err, _)| Refusal::unavailable("kafka", err))?;
        match delivery.await {
            Ok(result) => result.map_err(|err| Refusal::unavailable("kafka", err)),
            Err(_) => Err(Refusal::unavailable("kafka", "the producer closed")),
        }
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
