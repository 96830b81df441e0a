//! Store, order, commit, redelivery and malformed payloads, with the in-memory store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fishchat_e2e::{kafka_tool, unique_name, wait_until};
use fishchat_msg_job::push::NoPush;
use fishchat_msg_job::{InboxStore, MemoryInbox, NewMessage, StoreError};

use crate::common::{
    DEADLINE, assert_all_committed, committed_and_high, direct, events, p2p_record, produce, start,
    topics,
};

/// 500 events, direct and group, over two 4-partition topics: every inbox gets
/// its messages once, in the order of their partition, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_500_events_in_partition_order_and_commits() {
    let topics = topics("mj-order", 2, 4).await;
    let (p2p, group) = (&topics[0], &topics[1]);
    let (records, expected) = events(p2p, group, 500);
    let expected_total: usize = expected.values().map(Vec::len).sum();
    produce(&records).await;

    let group_id = unique_name("mj-order");
    let store = Arc::new(MemoryInbox::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 64);
    wait_until(DEADLINE, "all 500 events stored", async || {
        (store.total() >= expected_total).then_some(())
    })
    .await;
    let stats = Arc::clone(&running.stats);
    running.wait_committed(500).await;
    running.stop().await;

    assert_eq!(store.total(), expected_total, "extra copies stored");
    for (inbox, sent) in &expected {
        let stored: Vec<u64> = store
            .messages(*inbox)
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        let mut sorted = stored.clone();
        sorted.sort_unstable();
        let mut want: Vec<u64> = sent.iter().map(|(_, id)| *id).collect();
        want.sort_unstable();
        assert_eq!(sorted, want, "inbox {inbox} holds the wrong messages");
        // Within one Kafka key (one partition) the inbox keeps the produced order.
        let position: HashMap<u64, usize> =
            stored.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut last_by_key: HashMap<u64, usize> = HashMap::new();
        for (key, id) in sent {
            let at = position[id];
            if let Some(previous) = last_by_key.insert(*key, at) {
                assert!(
                    previous < at,
                    "inbox {inbox}: message {id} stored before an earlier one of key {key}"
                );
            }
        }
    }
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    assert_all_committed(&group_id, &topics).await;
}

/// Stores items one by one into a shared [`MemoryInbox`] and, after `crash_after`
/// items, hangs forever without returning: the process "died" after storing
/// part of a batch and before committing it.
struct CrashingStore {
    inner: Arc<MemoryInbox>,
    crash_after: usize,
    stored: AtomicUsize,
    crashed: AtomicBool,
}

impl InboxStore for CrashingStore {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::with_capacity(items.len());
        for (inbox, message) in items {
            if self.stored.fetch_add(1, Ordering::SeqCst) >= self.crash_after {
                self.crashed.store(true, Ordering::SeqCst);
                futures::future::pending::<()>().await;
            }
            seqs.push(self.inner.store_one(*inbox, message));
        }
        Ok(seqs)
    }
}

/// A consumer killed between storing and committing: its successor gets the
/// uncommitted tail again, and every message ends up stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_crash_before_commit_stores_each_message_once() {
    let topics = topics("mj-redeliver", 1, 3).await;
    let records: Vec<_> = (1..=500_u64)
        .map(|id| p2p_record(&topics[0], &direct(id, 100 + id % 5, id % 13 + 1)))
        .collect();
    produce(&records).await;
    let expected_items = 1000;

    let group_id = unique_name("mj-redeliver");
    let inner = Arc::new(MemoryInbox::new());
    let crashing = Arc::new(CrashingStore {
        inner: Arc::clone(&inner),
        crash_after: 437,
        stored: AtomicUsize::new(0),
        crashed: AtomicBool::new(false),
    });
    let first = start(&group_id, &topics, Arc::clone(&crashing), NoPush, 50);
    wait_until(
        DEADLINE,
        "the first consumer to crash mid-batch",
        async || crashing.crashed.load(Ordering::SeqCst).then_some(()),
    )
    .await;
    let committed_by_first = first.stats.committed_records.load(Ordering::SeqCst);
    first.task.abort();
    let _ = first.task.await;
    assert_eq!(inner.total(), 437);
    assert!(committed_by_first < 500);

    let second = start(&group_id, &topics, Arc::clone(&inner), NoPush, 50);
    let stats = Arc::clone(&second.stats);
    wait_until(
        DEADLINE,
        "the successor to commit every record",
        async || {
            (stats.committed_records.load(Ordering::SeqCst) + committed_by_first == 500)
                .then_some(())
        },
    )
    .await;
    second.stop().await;

    // The successor re-stored the uncommitted tail, part of which was already stored.
    let restored = stats.stored_items.load(Ordering::SeqCst) as usize;
    assert_eq!(restored, 2 * (500 - committed_by_first as usize));
    assert!(restored > expected_items - 437, "nothing was redelivered");
    assert_eq!(inner.total(), expected_items);
    for inbox in (1..=13).chain(100..105) {
        let ids: Vec<u64> = inner
            .messages(inbox)
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "inbox {inbox} holds a duplicate");
        if inbox < 100 {
            // A recipient's messages all share one key, hence one partition: produced order.
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "inbox {inbox} out of order: {ids:?}"
            );
        }
    }
    assert_all_committed(&group_id, &topics).await;
}

/// A payload that is not a ChatEvent is skipped, counted and committed; the
/// records around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_is_skipped_and_committed() {
    let topics = topics("mj-malformed", 1, 1).await;
    let topic = &topics[0];
    let records = vec![
        p2p_record(topic, &direct(1, 10, 20)),
        (topic.clone(), 20, b"\xff\xff\xff not protobuf".to_vec()),
        (topic.clone(), 20, Vec::new()),
        p2p_record(topic, &direct(2, 10, 20)),
    ];
    produce(&records).await;

    let group_id = unique_name("mj-malformed");
    let store = Arc::new(MemoryInbox::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 100);
    let stats = Arc::clone(&running.stats);
    running.wait_committed(4).await;
    running.stop().await;

    let ids: Vec<u64> = store.messages(20).iter().map(|m| m.server_msg_id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(store.total(), 4);
    // The garbage and the empty payload (an event naming no conversation).
    assert_eq!(stats.malformed.load(Ordering::SeqCst), 2);
    assert_all_committed(&group_id, &topics).await;
}

/// Stores the first half of each batch, then fails, until `healthy` is set: a
/// store that breaks mid-batch, as MongoDB can.
struct FlakyStore {
    inner: Arc<MemoryInbox>,
    healthy: AtomicBool,
}

impl InboxStore for FlakyStore {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        if self.healthy.load(Ordering::SeqCst) {
            return self.inner.store(items).await;
        }
        for (inbox, message) in &items[..items.len() / 2] {
            self.inner.store_one(*inbox, message);
        }
        Err(StoreError("injected failure after half the batch".into()))
    }
}

/// While the store fails nothing is committed and the batch is retried; once
/// it recovers, the retried batch completes without storing anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_retried_and_nothing_is_committed_meanwhile() {
    let topics = topics("mj-retry", 1, 1).await;
    let records: Vec<_> = (1..=100_u64)
        .map(|id| p2p_record(&topics[0], &direct(id, 500, 600)))
        .collect();
    produce(&records).await;

    let group_id = unique_name("mj-retry");
    let inner = Arc::new(MemoryInbox::new());
    let flaky = Arc::new(FlakyStore {
        inner: Arc::clone(&inner),
        healthy: AtomicBool::new(false),
    });
    let running = start(&group_id, &topics, Arc::clone(&flaky), NoPush, 1000);
    let stats = Arc::clone(&running.stats);
    wait_until(DEADLINE, "two failed store attempts", async || {
        (stats.store_failures.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    assert!(inner.total() > 0, "the failing store stored nothing at all");
    assert_eq!(stats.committed_records.load(Ordering::SeqCst), 0);
    for (topic, partition, committed, _) in committed_and_high(&group_id, &topics).await {
        assert_eq!(
            committed,
            rdkafka::Offset::Invalid,
            "{topic}/{partition} committed while the store was failing"
        );
    }

    flaky.healthy.store(true, Ordering::SeqCst);
    running.wait_committed(100).await;
    running.stop().await;
    for inbox in [500, 600] {
        let ids: Vec<u64> = inner
            .messages(inbox)
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "inbox {inbox}");
    }
    assert_all_committed(&group_id, &topics).await;
}

/// What README tells operators to run (Kafka's own `kafka-consumer-groups`, which reads the
/// group through the admin API) shows msg_job's group as it is: its live member on every
/// partition and nothing to catch up while it runs; after it stops, the lag of what was
/// produced since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_group_its_members_committed_offsets_and_lag() {
    let topics = topics("mj-ops", 1, 3).await;
    let records: Vec<_> = (1..=90_u64)
        .map(|id| p2p_record(&topics[0], &direct(id, 7, id % 11 + 1)))
        .collect();
    produce(&records).await;

    let group_id = unique_name("mj-ops");
    let store = Arc::new(MemoryInbox::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 50);
    running.wait_committed(90).await;
    let group = group_id.clone();
    let live = tokio::task::spawn_blocking(move || kafka_tool::describe_group(&group))
        .await
        .expect("describe the group");
    assert_eq!(live.len(), 3, "one row per partition: {live:?}");
    assert_eq!(live.iter().map(|p| p.end).sum::<i64>(), 90);
    for partition in &live {
        assert_eq!(partition.committed, Some(partition.end), "{partition:?}");
        assert!(
            partition.consumer.is_some(),
            "no live member: {partition:?}"
        );
    }

    running.stop().await;
    produce(&records[..10]).await;
    let group = group_id.clone();
    let stopped = tokio::task::spawn_blocking(move || kafka_tool::describe_group(&group))
        .await
        .expect("describe the group");
    let lag: i64 = stopped
        .iter()
        .map(|p| p.end - p.committed.unwrap_or(0))
        .sum();
    assert_eq!(lag, 10, "lag after 10 more records: {stopped:?}");
    assert!(
        stopped.iter().all(|p| p.consumer.is_none()),
        "a stopped member still listed: {stopped:?}"
    );
}

/// Two consumers in one group: the second joining and then the first leaving each move
/// partitions mid-stream; every message is still stored once, each recipient's in the order
/// produced, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_and_two_rebalances_store_each_message_once_in_order() {
    let topics = topics("mj-rebalance", 1, 4).await;
    let records: Vec<_> = (1..=1200_u64)
        .map(|id| p2p_record(&topics[0], &direct(id, 100 + id % 5, id % 13 + 1)))
        .collect();
    let group_id = unique_name("mj-rebalance");
    let store = Arc::new(MemoryInbox::new());
    let stored = |records: usize| {
        let store = Arc::clone(&store);
        async move || (store.total() >= 2 * records).then_some(())
    };

    let first = start(&group_id, &topics, Arc::clone(&store), NoPush, 50);
    produce(&records[..400]).await;
    wait_until(DEADLINE, "the first 400 stored", stored(400)).await;

    let second = start(&group_id, &topics, Arc::clone(&store), NoPush, 50);
    wait_until(DEADLINE, "both consumers in the group", async || {
        (fishchat_e2e::kafka_group_members(&group_id).await == 2).then_some(())
    })
    .await;
    produce(&records[400..800]).await;
    wait_until(DEADLINE, "800 stored by the two", stored(800)).await;

    let first_committed = Arc::clone(&first.stats);
    first.stop().await;
    produce(&records[800..]).await;
    wait_until(DEADLINE, "all 1,200 stored", stored(1200)).await;
    let second_committed = Arc::clone(&second.stats);
    wait_until(DEADLINE, "every offset committed", async || {
        let all = committed_and_high(&group_id, &topics).await;
        all.iter()
            .all(|(_, _, committed, high)| *committed == rdkafka::Offset::Offset(*high))
            .then_some(())
    })
    .await;
    second.stop().await;

    assert!(first_committed.committed_records.load(Ordering::SeqCst) > 0);
    assert!(second_committed.committed_records.load(Ordering::SeqCst) > 0);
    assert_eq!(store.total(), 2400, "a message stored twice");
    for inbox in 1..=13 {
        let ids: Vec<u64> = store
            .messages(inbox)
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "inbox {inbox} out of order: {ids:?}"
        );
    }
    assert_all_committed(&group_id, &topics).await;
}
