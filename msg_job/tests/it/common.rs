//! Helpers shared by the pipeline tests: unique topics on the real broker, an
//! idempotent producer keyed by conversation, a running pipeline, the group's
//! committed offsets, and what each conversation should hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::DEFAULT_MAX_FRAME_LEN;
use fishchat_msg_job::pipeline::BatchConfig;
use fishchat_msg_job::{
    ConvKey, MemoryStore, MessageStore, NewMessage, Pipeline, PipelineError, Pusher, Stats, Target,
    event, kafka,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A record to produce: (topic, key, payload).
pub type Record = (String, String, Vec<u8>);

/// What each conversation should hold: its server_msg_ids in produced order,
/// so the i-th must have seq i + 1.
pub type Expected = BTreeMap<ConvKey, Vec<u64>>;

/// How long any wait for the broker or the pipeline may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Creates fresh topics with `partitions` partitions, after proving the broker answers.
pub async fn topics(prefix: &str, count: usize, partitions: i32) -> Vec<String> {
    fishchat_e2e::kafka_admin().await;
    let names: Vec<String> = (0..count)
        .map(|i| fishchat_e2e::unique_name(&format!("{prefix}{i}")))
        .collect();
    kafka::ensure_topics(&fishchat_e2e::kafka_brokers(), &names, partitions)
        .await
        .expect("create topics");
    names
}

/// A direct message from `from` to `to`.
pub fn direct(id: u64, from: u64, to: u64) -> NewMessage {
    NewMessage {
        server_msg_id: id,
        from_user_id: from,
        target: Target::ToUserId(to),
        body: Bytes::from(format!("body {id}")),
        timestamp_ms: 1_700_000_000_000 + id as i64,
        client_msg_id: format!("c-{id}"),
    }
}

/// A message from `from` to group `group`.
pub fn in_group(id: u64, from: u64, group: u64) -> NewMessage {
    NewMessage {
        target: Target::GroupId(group),
        ..direct(id, from, 0)
    }
}

/// The record logic would produce for `message`: keyed by its conversation,
/// pushed to `recipients`.
pub fn record(topic: &str, message: &NewMessage, recipients: &[u64]) -> Record {
    (
        topic.to_owned(),
        message.key().to_string(),
        event::encode(message, recipients),
    )
}

/// The record of a direct message, pushed to its recipient and its sender.
pub fn p2p_record(topic: &str, message: &NewMessage) -> Record {
    let Target::ToUserId(to) = message.target else {
        panic!("not a direct message");
    };
    record(topic, message, &[to, message.from_user_id])
}

/// What the conversations hold once `messages` are stored in the given order.
pub fn expected<'a>(messages: impl IntoIterator<Item = &'a NewMessage>) -> Expected {
    let mut expected = Expected::new();
    for message in messages {
        expected
            .entry(message.key())
            .or_default()
            .push(message.server_msg_id);
    }
    expected
}

/// The groups [`events`] sends to; user 201 is a recipient of every group message.
pub const EVENT_GROUPS: [u64; 3] = [1000, 1001, 1002];

/// `count` events over a p2p and a group topic (every tenth to a group), and
/// what each conversation should hold.
pub fn events(p2p: &str, group: &str, count: u64) -> (Vec<Record>, Expected) {
    let mut records = Vec::new();
    let mut messages = Vec::new();
    for id in 1..=count {
        let from = 100 + id % 7;
        if id % 10 == 0 {
            let message = in_group(id, from, EVENT_GROUPS[(id % 3) as usize]);
            records.push(record(group, &message, &[from, 201, 202 + id % 3]));
            messages.push(message);
        } else {
            let message = direct(id, from, 1 + id % 17);
            records.push(p2p_record(p2p, &message));
            messages.push(message);
        }
    }
    (records, expected(&messages))
}

/// Asserts `store` holds exactly `expected`: each message once, at seqs
/// 1..=n of its conversation in produced order, and nothing else.
pub fn assert_stored(store: &MemoryStore, expected: &Expected) {
    for (key, want) in expected {
        let got: Vec<u64> = store
            .messages(*key)
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        assert_eq!(&got, want, "conversation {key} (seq i+1 is the i-th)");
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(
        store.total(),
        total,
        "messages stored outside the expected ones"
    );
}

/// An idempotent, acks=all producer, as logic's.
pub struct Producer(FutureProducer);

impl Producer {
    /// A producer to the stack's broker.
    pub fn new() -> Self {
        let producer = fishchat_e2e::kafka_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self(producer)
    }

    /// Produces `(topic, key, payload)` records in order and waits until the broker has them all.
    pub async fn send(&self, records: &[Record]) {
        let sends = records.iter().map(|(topic, key, payload)| async move {
            self.0
                .send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(err, _)| err)
                .expect("produce");
        });
        futures::future::join_all(sends).await;
    }
}

/// Produces `(topic, key, payload)` records in order with a fresh [`Producer`].
pub async fn produce(records: &[Record]) {
    Producer::new().send(records).await;
}

/// A pipeline running in a task, and the switch that stops it.
pub struct Running {
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Set to true to stop it.
    pub stop: watch::Sender<bool>,
    /// The task; its result is the pipeline's.
    pub task: JoinHandle<Result<(), PipelineError>>,
}

impl Running {
    /// Waits until exactly `records` records have been stored and committed.
    pub async fn wait_committed(&self, records: u64) {
        let stats = Arc::clone(&self.stats);
        fishchat_e2e::wait_until(
            DEADLINE,
            &format!("{records} records committed"),
            async || (stats.committed_records.get() == records).then_some(()),
        )
        .await;
    }

    /// Stops the pipeline and waits for it to return cleanly.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("pipeline did not stop")
            .expect("pipeline panicked")
            .expect("pipeline failed");
    }
}

/// Starts a pipeline in `group` over `topics`.
pub fn start<S, P>(
    group: &str,
    topics: &[String],
    store: S,
    pusher: P,
    max_messages: usize,
) -> Running
where
    S: MessageStore + 'static,
    P: Pusher + 'static,
{
    start_member(group, None, topics, store, pusher, max_messages)
}

/// Like [`start`], as the static member `instance` when given.
pub fn start_member<S, P>(
    group: &str,
    instance: Option<&str>,
    topics: &[String],
    store: S,
    pusher: P,
    max_messages: usize,
) -> Running
where
    S: MessageStore + 'static,
    P: Pusher + 'static,
{
    let consumer = kafka::consumer(&fishchat_e2e::kafka_brokers(), group, instance, topics, 10)
        .expect("consumer");
    let batch = BatchConfig {
        max_messages,
        linger: Duration::from_millis(20),
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
    };
    let pipeline = Pipeline::new(consumer, store, pusher, batch);
    let stats = pipeline.stats();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(pipeline.run(stopped));
    Running { stats, stop, task }
}

/// Per partition of `topics`: (the group's committed offset, the high watermark).
pub async fn committed_and_high(group: &str, topics: &[String]) -> Vec<(String, i32, Offset, i64)> {
    let group = group.to_owned();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", fishchat_e2e::kafka_brokers())
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let mut list = TopicPartitionList::new();
        let mut highs = Vec::new();
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), timeout)
                .expect("metadata");
            for partition in metadata.topics()[0].partitions() {
                list.add_partition(topic, partition.id());
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition.id(), timeout)
                    .expect("watermarks");
                highs.push(high);
            }
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .zip(highs)
            .map(|(e, high)| (e.topic().to_owned(), e.partition(), e.offset(), high))
            .collect()
    })
    .await
    .expect("committed offsets task")
}

/// How many records of `topics` the group has committed, over all partitions.
pub async fn committed_count(group: &str, topics: &[String]) -> i64 {
    committed_and_high(group, topics)
        .await
        .iter()
        .map(|(_, _, offset, _)| match offset {
            Offset::Offset(o) => *o,
            _ => 0,
        })
        .sum()
}

/// Whether every partition's committed offset is its high watermark.
pub async fn all_committed(group: &str, topics: &[String]) -> bool {
    committed_and_high(group, topics)
        .await
        .iter()
        .all(|(_, _, committed, high)| match committed {
            Offset::Offset(o) => o == high,
            Offset::Invalid => *high == 0,
            _ => false,
        })
}

/// Asserts every partition's committed offset is its high watermark: a fresh
/// consumer of the group would get nothing new.
pub async fn assert_all_committed(group: &str, topics: &[String]) {
    for (topic, partition, committed, high) in committed_and_high(group, topics).await {
        let committed = match committed {
            Offset::Offset(o) => o,
            Offset::Invalid if high == 0 => 0,
            other => panic!("{topic}/{partition}: committed {other:?}, high {high}"),
        };
        assert_eq!(committed, high, "{topic}/{partition} not fully committed");
    }
}
