//! Against the Kafka broker: a client left with no broker at all (the state
//! librdkafka #5301 leaves it in) gets its bootstrap servers back and reaches
//! the broker, and a client that has its broker is left alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fishchat_rebootstrap::Rebootstrap;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::statistics::Statistics;

struct Watched {
    rebootstrap: Rebootstrap,
    reports: AtomicU64,
}

impl ClientContext for Watched {
    fn stats(&self, statistics: Statistics) {
        self.rebootstrap.check(&statistics);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

impl ProducerContext for Watched {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

const DEADLINE: Duration = Duration::from_secs(20);

/// A producer whose `bootstrap.servers` is `configured`, watched by a
/// `Rebootstrap` that knows the real brokers.
fn producer(configured: &str) -> BaseProducer<Watched> {
    let context = Watched {
        rebootstrap: Rebootstrap::new(&fishchat_e2e::kafka_brokers()).expect("no NUL"),
        reports: AtomicU64::new(0),
    };
    let producer: BaseProducer<Watched> = ClientConfig::new()
        .set("bootstrap.servers", configured)
        .set("statistics.interval.ms", "100")
        .create_with_context(context)
        .expect("a producer");
    producer.context().rebootstrap.attach(producer.client());
    producer
}

/// Polls until the producer gets the cluster's metadata; panics at the deadline.
fn reach_broker(producer: &BaseProducer<Watched>) {
    let started = Instant::now();
    loop {
        producer.poll(Duration::from_millis(50));
        if let Ok(metadata) = producer
            .client()
            .fetch_metadata(None, Duration::from_millis(200))
            && !metadata.brokers().is_empty()
        {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no broker reached within {DEADLINE:?}"
        );
    }
}

/// Polls until `count` more statistics reports have arrived.
fn more_reports(producer: &BaseProducer<Watched>, count: u64) {
    let until = producer.context().reports.load(Ordering::Relaxed) + count;
    let started = Instant::now();
    while producer.context().reports.load(Ordering::Relaxed) < until {
        producer.poll(Duration::from_millis(50));
        assert!(
            started.elapsed() < DEADLINE,
            "no statistics within {DEADLINE:?}"
        );
    }
}

#[test]
fn a_client_with_no_broker_gets_its_bootstrap_servers_back() {
    // No bootstrap servers: nothing to connect to, as after a Metadata
    // response with no broker in it has removed every one.
    let producer = producer("");
    reach_broker(&producer);
    let repairs = producer.context().rebootstrap.repairs();
    assert!(repairs >= 1, "reached a broker without a repair");
    // With its broker it is left alone.
    more_reports(&producer, 5);
    assert_eq!(producer.context().rebootstrap.repairs(), repairs);
}

#[test]
fn a_client_with_its_broker_is_left_alone() {
    let producer = producer(&fishchat_e2e::kafka_brokers());
    reach_broker(&producer);
    more_reports(&producer, 5);
    assert_eq!(producer.context().rebootstrap.repairs(), 0);
}
