//! Kafka smoke test: FishChat's message pipeline relies on standard Kafka semantics, namely that an
//! idempotent producer delivers every keyed record once and in order per key, and that a consumer
//! group resumes exactly at its committed offsets after a consumer leaves. A broken guarantee here
//! means lost, duplicated or reordered chat messages, so this checks each of them on the broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use fishchat_e2e::{kafka_admin, kafka_config, unique_name, wait_until};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const KEYS: u32 = 20;
const PER_KEY: u32 = 50;
const TOTAL: usize = (KEYS * PER_KEY) as usize;
/// How many records the first consumer handles from each partition before it commits and leaves:
/// stopping mid-way in every partition makes each one prove the resume point. With these key names
/// each partition holds 250 records (partitioning is deterministic), and the test checks that every
/// partition has more than this.
const FIRST_PER_PARTITION: usize = 100;
const FIRST_CONSUMER: usize = FIRST_PER_PARTITION * PARTITIONS as usize;
/// Broker calls that block a thread (metadata, watermarks) give up after this long.
const BROKER_CALL: Duration = Duration::from_secs(5);

/// One consumed record, reduced to what the assertions need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    counter: u32,
}

/// Decodes a record whose value is `"<key>:<counter>"`, checking the value matches its key.
fn decode(message: &BorrowedMessage<'_>) -> Seen {
    let key = std::str::from_utf8(message.key().expect("record has a key")).expect("utf-8 key");
    let value =
        std::str::from_utf8(message.payload().expect("record has a value")).expect("utf-8 value");
    let (value_key, counter) = value.rsplit_once(':').expect("value is key:counter");
    assert_eq!(value_key, key, "value {value} arrived under key {key}");
    Seen {
        partition: message.partition(),
        offset: message.offset(),
        key: key.to_owned(),
        counter: counter.parse().expect("numeric counter"),
    }
}

/// A consumer in `group` that commits only what the test commits and starts new groups at the
/// beginning of each partition.
fn consumer(group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Short enough that a member that died uncleanly is dropped quickly, long enough for a
        // loaded CI machine; the heartbeat must stay well below it.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Receives records until `n` of them were handled, failing if that takes longer than `deadline`
/// (which includes joining the group). `handle` decides whether a record is handled; the others
/// are received but dropped unhandled, as by a consumer that stops before getting to them.
async fn consume(
    consumer: &StreamConsumer,
    n: usize,
    deadline: Duration,
    who: &str,
    mut handle: impl FnMut(&Seen) -> bool,
) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(n);
    let receive = async {
        while seen.len() < n {
            let message = consumer.recv().await.expect("consume");
            let record = decode(&message);
            if handle(&record) {
                seen.push(record);
            }
        }
    };
    if tokio::time::timeout(deadline, receive).await.is_err() {
        panic!(
            "{who} got {} of {n} records within {deadline:?}",
            seen.len()
        );
    }
    seen
}

/// The offset to commit for each partition: one past the last record handled there.
fn next_offsets(seen: &[Seen]) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for record in seen {
        let entry = next.entry(record.partition).or_insert(0);
        *entry = (*entry).max(record.offset + 1);
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_then_group_resumes_at_committed_offsets() {
    let admin = kafka_admin().await;
    let topic = unique_name("fishchat-e2e-kafka");
    let group = unique_name("fishchat-e2e-group");

    // Topics are created explicitly: FishChat must not depend on broker auto-creation.
    let options = AdminOptions::new().operation_timeout(Some(BROKER_CALL));
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await
        .expect("create topic request");
    for result in created {
        result.unwrap_or_else(|(name, err)| panic!("create topic {name}: {err}"));
    }
    wait_until(
        Duration::from_secs(10),
        "the new topic's partitions to appear in metadata",
        async || {
            let metadata = tokio::task::block_in_place(|| {
                admin.inner().fetch_metadata(Some(&topic), BROKER_CALL)
            })
            .ok()?;
            let partitions = metadata.topics().first()?.partitions().len();
            (partitions == PARTITIONS as usize).then_some(())
        },
    )
    .await;

    // Produce: every key's counter rises 0..PER_KEY, interleaved across keys, enqueued strictly
    // in order so per-key order is what the broker must preserve.
    let producer: FutureProducer = kafka_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The compression and linger logic uses, so the test covers the batches it sends.
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create producer");
    let mut pending = Vec::with_capacity(TOTAL);
    for counter in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("user-{k:02}");
            let value = format!("{key}:{counter:04}");
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                .map_err(|(err, _)| err)
                .expect("enqueue record");
            pending.push((key, delivery));
        }
    }
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut delivered_offsets = HashSet::new();
    let deliveries = async {
        for (key, delivery) in pending {
            let delivery = delivery
                .await
                .expect("delivery report dropped")
                .unwrap_or_else(|(err, _)| panic!("record for {key} not delivered: {err}"));
            assert!(
                delivered_offsets.insert((delivery.partition, delivery.offset)),
                "two records delivered at partition {} offset {}",
                delivery.partition,
                delivery.offset
            );
            let first = *partition_of_key
                .entry(key.clone())
                .or_insert(delivery.partition);
            assert_eq!(
                first, delivery.partition,
                "key {key} spread over partitions"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(30), deliveries)
        .await
        .expect("not every record was delivered within 30 s");
    let mut high_watermarks = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let (low, high) = tokio::task::block_in_place(|| {
            producer
                .client()
                .fetch_watermarks(&topic, partition, BROKER_CALL)
        })
        .expect("fetch watermarks");
        assert_eq!(low, 0, "partition {partition} of a new topic starts at 0");
        high_watermarks.insert(partition, high);
    }
    assert_eq!(
        high_watermarks.values().sum::<i64>(),
        TOTAL as i64,
        "the broker holds a different number of records than were delivered: {high_watermarks:?}"
    );
    for (partition, high) in &high_watermarks {
        assert!(
            *high > FIRST_PER_PARTITION as i64,
            "partition {partition} holds only {high} records: the keys no longer spread evenly"
        );
    }

    // First consumer: handle the first records of each partition, commit exactly those, and
    // leave the group. Records it receives past its share stay uncommitted and must come back.
    let first = consumer(&group, &topic);
    let mut handled_per_partition: HashMap<i32, usize> = HashMap::new();
    let first_seen = consume(
        &first,
        FIRST_CONSUMER,
        Duration::from_secs(30),
        "first consumer",
        |record| {
            let handled = handled_per_partition.entry(record.partition).or_default();
            *handled += 1;
            *handled <= FIRST_PER_PARTITION
        },
    )
    .await;
    let committed = next_offsets(&first_seen);
    assert_eq!(
        committed.values().copied().collect::<Vec<_>>(),
        vec![FIRST_PER_PARTITION as i64; PARTITIONS as usize],
        "the first consumer handled the first {FIRST_PER_PARTITION} records of each partition"
    );
    let mut commit = TopicPartitionList::new();
    for (&partition, &offset) in &committed {
        commit
            .add_partition_offset(&topic, partition, Offset::Offset(offset))
            .expect("build commit list");
    }
    tokio::task::block_in_place(|| first.commit(&commit, CommitMode::Sync)).expect("commit");
    // Dropping a group consumer closes it, which blocks until it has left the group.
    tokio::task::spawn_blocking(move || drop(first))
        .await
        .expect("close first consumer");

    // Second consumer in the same group: the group's committed offsets are what we committed,
    // and it receives exactly the records the first one did not handle.
    let second = consumer(&group, &topic);
    let mut all_partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        all_partitions.add_partition(&topic, partition);
    }
    let stored = tokio::task::block_in_place(|| {
        second.committed_offsets(all_partitions, Duration::from_secs(10))
    })
    .expect("read committed offsets");
    for (&partition, &expected) in &committed {
        let offset = stored
            .find_partition(&topic, partition)
            .expect("partition in committed list")
            .offset();
        assert_eq!(
            offset,
            Offset::Offset(expected),
            "the group's committed offset for partition {partition}"
        );
    }
    let second_seen = consume(
        &second,
        TOTAL - FIRST_CONSUMER,
        Duration::from_secs(40),
        "second consumer",
        |_| true,
    )
    .await;

    // The second consumer starts every partition exactly at the committed offset.
    let mut first_offset_seen = BTreeMap::new();
    for record in &second_seen {
        first_offset_seen
            .entry(record.partition)
            .or_insert(record.offset);
    }
    assert_eq!(
        first_offset_seen, committed,
        "first offset the second consumer got in each partition vs the committed offsets"
    );
    // Both consumers together read every partition to its end.
    let mut end = next_offsets(&first_seen);
    for (partition, next) in next_offsets(&second_seen) {
        end.insert(partition, next);
    }
    for (partition, high) in &high_watermarks {
        assert_eq!(
            end.get(partition).copied().unwrap_or(0),
            *high,
            "partition {partition} not read to its end"
        );
    }

    // Union is every record, each once; each key's counters strictly increase across the handover.
    let mut unique = HashSet::new();
    for record in first_seen.iter().chain(&second_seen) {
        assert!(
            unique.insert((record.key.clone(), record.counter)),
            "duplicate record {record:?}"
        );
    }
    assert_eq!(unique.len(), TOTAL, "some records were never consumed");
    let mut last_counter: HashMap<&str, u32> = HashMap::new();
    for record in first_seen.iter().chain(&second_seen) {
        if let Some(previous) = last_counter.insert(&record.key, record.counter) {
            assert!(
                record.counter > previous,
                "key {} went from counter {previous} to {}",
                record.key,
                record.counter
            );
        }
        assert_eq!(
            partition_of_key.get(&record.key),
            Some(&record.partition),
            "record {record:?} consumed from another partition than it was delivered to"
        );
    }

    tokio::task::spawn_blocking(move || drop(second))
        .await
        .expect("close second consumer");
    // Best effort: topic names are unique per run, so a leftover topic harms nothing.
    let _ = admin.delete_topics(&[&topic], &options).await;
}

/// The `scripts/stack status` line for Kafka: (state, answers).
fn stack_status_of_kafka(port: u16, stack_dir: &std::path::Path) -> (String, String) {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
    let output = std::process::Command::new(script)
        .arg("status")
        .env("FISHCHAT_KAFKA_PORT", port.to_string())
        .env("FISHCHAT_STACK_DIR", stack_dir)
        .output()
        .expect("run scripts/stack status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("kafka "))
        .unwrap_or_else(|| panic!("no kafka line in:\n{stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[1].to_owned(), fields[fields.len() - 1].to_owned())
}

/// Readiness is a real request: a port that accepts connections and then drops every request
/// (as a wedged broker did, alive and holding its port) is not a broker that answers; the real
/// broker is.
#[test]
fn stack_status_tells_a_broker_that_fails_requests_from_a_healthy_one() {
    let stack_dir = std::env::temp_dir().join(unique_name("stack-status"));
    let wedged = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let wedged_port = wedged.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in wedged.incoming().flatten() {
            // Read the request, then close without answering.
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut &stream, &mut buf);
        }
    });
    assert_eq!(
        stack_status_of_kafka(wedged_port, &stack_dir).1,
        "no",
        "a port that drops requests passed for a broker"
    );

    let real_port: u16 = fishchat_e2e::kafka_brokers()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the test broker's port");
    assert_eq!(
        stack_status_of_kafka(real_port, &stack_dir),
        ("external".to_owned(), "yes".to_owned()),
        "the running broker, seen from a stack folder that did not start it"
    );
}
