//! Store, order, commit, redelivery and malformed payloads, with the in-memory store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use fishchat_codec::pb::stored_message;
use fishchat_codec::{Body, FrameDecoder};
use fishchat_e2e::{kafka_tool, unique_name, wait_until};
use fishchat_msg_job::push::{NoPush, Outgoing, PushOutcome, Pusher};
use fishchat_msg_job::{ConvKey, MemoryStore, MessageStore, NewMessage, StoreError};
use parking_lot::Mutex;

use crate::common::{
    DEADLINE, all_committed, assert_all_committed, assert_stored, committed_and_high,
    committed_count, direct, events, expected, p2p_record, produce, start, start_member, topics,
};

/// 500 events, direct and group, over two 4-partition topics keyed by
/// conversation: every conversation holds its messages once, at seqs 1..=n
/// in produced order, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_500_events_once_per_conversation_in_order_and_commits() {
    let topics = topics("mj-order", 2, 4).await;
    let (p2p, group) = (&topics[0], &topics[1]);
    let (records, expected) = events(p2p, group, 500);
    produce(&records).await;

    let group_id = unique_name("mj-order");
    let store = Arc::new(MemoryStore::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 64);
    let stats = Arc::clone(&running.stats);
    running.wait_committed(500).await;
    running.stop().await;

    assert_stored(&store, &expected);
    assert_eq!(stats.stored_messages.get(), 500);
    assert_eq!(stats.malformed.get(), 0);
    assert_all_committed(&group_id, &topics).await;
}

/// Stores messages one by one into a shared [`MemoryStore`] and, once
/// `crash_after` are stored and at least one of the current batch is, hangs
/// forever without returning: the process "died" after storing part of a
/// batch and before committing it.
struct CrashingStore {
    inner: Arc<MemoryStore>,
    crash_after: usize,
    stored: AtomicUsize,
    crashed: AtomicBool,
}

impl MessageStore for CrashingStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            // Never at a batch's first message, so the batch in hand always
            // holds stored but uncommitted messages when the "crash" comes.
            if i > 0 && self.stored.load(Ordering::SeqCst) >= self.crash_after {
                self.crashed.store(true, Ordering::SeqCst);
                futures::future::pending::<()>().await;
            }
            seqs.extend(self.inner.store(std::slice::from_ref(message)).await?);
            self.stored.fetch_add(1, Ordering::SeqCst);
        }
        Ok(seqs)
    }
}

/// A consumer killed between storing and committing: its successor gets the
/// uncommitted tail again, part of it already stored, and every message ends
/// up stored exactly once at its seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_crash_before_commit_stores_each_message_once() {
    let topics = topics("mj-redeliver", 1, 3).await;
    let messages: Vec<NewMessage> = (1..=500_u64)
        .map(|id| direct(id, 100 + id % 5, id % 13 + 1))
        .collect();
    let records: Vec<_> = messages.iter().map(|m| p2p_record(&topics[0], m)).collect();
    produce(&records).await;

    let group_id = unique_name("mj-redeliver");
    let inner = Arc::new(MemoryStore::new());
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
    first.task.abort();
    let _ = first.task.await;
    // The aborted task dropped its consumer, which closed it: every commit it
    // sent has landed, so the broker's offsets are what the successor reads from.
    let stored_at_crash = inner.total() as i64;
    let committed_by_first = committed_count(&group_id, &topics).await;
    assert!(
        stored_at_crash >= 437,
        "{stored_at_crash} stored at the crash"
    );
    assert!(
        committed_by_first < stored_at_crash,
        "the batch in hand ({committed_by_first} committed of {stored_at_crash} stored) was committed"
    );

    let second = start(&group_id, &topics, Arc::clone(&inner), NoPush, 50);
    let stats = Arc::clone(&second.stats);
    wait_until(
        DEADLINE,
        "the successor to commit every record",
        async || all_committed(&group_id, &topics).await.then_some(()),
    )
    .await;
    second.stop().await;

    // The successor stored the whole uncommitted tail again, the part stored
    // before the crash included, and the store kept one copy of each.
    let restored = stats.stored_messages.get() as i64;
    assert_eq!(restored, 500 - committed_by_first);
    assert!(restored > 500 - stored_at_crash, "nothing was redelivered");
    assert_stored(&inner, &expected(&messages));
}

/// A payload that is not a ChatEvent is skipped, counted and committed; the
/// records around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_is_skipped_and_committed() {
    let topics = topics("mj-malformed", 1, 1).await;
    let topic = &topics[0];
    let key = ConvKey::direct(10, 20).to_string();
    let records = vec![
        p2p_record(topic, &direct(1, 10, 20)),
        (
            topic.clone(),
            key.clone(),
            b"\xff\xff\xff not protobuf".to_vec(),
        ),
        (topic.clone(), key, Vec::new()),
        p2p_record(topic, &direct(2, 20, 10)),
    ];
    produce(&records).await;

    let group_id = unique_name("mj-malformed");
    let store = Arc::new(MemoryStore::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 100);
    let stats = Arc::clone(&running.stats);
    running.wait_committed(4).await;
    running.stop().await;

    assert_stored(&store, &expected(&[direct(1, 10, 20), direct(2, 20, 10)]));
    // The garbage and the empty payload (an event naming no conversation).
    assert_eq!(stats.malformed.get(), 2);
    assert_all_committed(&group_id, &topics).await;
}

/// Stores the first half of each batch, then fails, until `healthy` is set: a
/// store that breaks mid-batch, as MongoDB can.
struct FlakyStore {
    inner: Arc<MemoryStore>,
    healthy: AtomicBool,
}

impl MessageStore for FlakyStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        if self.healthy.load(Ordering::SeqCst) {
            return self.inner.store(messages).await;
        }
        self.inner.store(&messages[..messages.len() / 2]).await?;
        Err(StoreError("injected failure after half the batch".into()))
    }
}

/// While the store fails nothing is committed and the batch is retried; once
/// it recovers, the retried batch completes without storing anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_retried_and_nothing_is_committed_meanwhile() {
    let topics = topics("mj-retry", 1, 1).await;
    let messages: Vec<NewMessage> = (1..=100_u64)
        .map(|id| {
            if id % 3 == 0 {
                direct(id, 600, 500)
            } else {
                direct(id, 500, 600)
            }
        })
        .collect();
    let records: Vec<_> = messages.iter().map(|m| p2p_record(&topics[0], m)).collect();
    produce(&records).await;

    let group_id = unique_name("mj-retry");
    let inner = Arc::new(MemoryStore::new());
    let flaky = Arc::new(FlakyStore {
        inner: Arc::clone(&inner),
        healthy: AtomicBool::new(false),
    });
    let running = start(&group_id, &topics, Arc::clone(&flaky), NoPush, 1000);
    let stats = Arc::clone(&running.stats);
    wait_until(DEADLINE, "two failed store attempts", async || {
        (stats.store_failures.get() >= 2).then_some(())
    })
    .await;
    assert!(inner.total() > 0, "the failing store stored nothing at all");
    assert_eq!(stats.committed_records.get(), 0);
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
    assert_stored(&inner, &expected(&messages));
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
    let store = Arc::new(MemoryStore::new());
    let running = start(&group_id, &topics, Arc::clone(&store), NoPush, 50);
    running.wait_committed(90).await;
    // Commits are asynchronous: wait until the broker has them all.
    wait_until(DEADLINE, "every offset committed", async || {
        all_committed(&group_id, &topics).await.then_some(())
    })
    .await;
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
/// partitions mid-stream; every message is still stored once, each conversation's at seqs
/// 1..=n in produced order, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_and_two_rebalances_store_each_message_once_in_order() {
    let topics = topics("mj-rebalance", 1, 4).await;
    let messages: Vec<NewMessage> = (1..=1200_u64)
        .map(|id| {
            let (a, b) = (100 + id % 5, id % 13 + 1);
            if id % 4 == 0 {
                direct(id, b, a)
            } else {
                direct(id, a, b)
            }
        })
        .collect();
    let records: Vec<_> = messages.iter().map(|m| p2p_record(&topics[0], m)).collect();
    let group_id = unique_name("mj-rebalance");
    let store = Arc::new(MemoryStore::new());
    let stored = |count: usize| {
        let store = Arc::clone(&store);
        async move || (store.total() >= count).then_some(())
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

    let first_stats = Arc::clone(&first.stats);
    first.stop().await;
    produce(&records[800..]).await;
    wait_until(DEADLINE, "all 1,200 stored", stored(1200)).await;
    let second_stats = Arc::clone(&second.stats);
    wait_until(DEADLINE, "every offset committed", async || {
        all_committed(&group_id, &topics).await.then_some(())
    })
    .await;
    second.stop().await;

    assert!(first_stats.committed_records.get() > 0);
    assert!(second_stats.committed_records.get() > 0);
    assert_stored(&store, &expected(&messages));
    assert_all_committed(&group_id, &topics).await;
}

/// A [`MemoryStore`] that remembers the heads raised.
#[derive(Default)]
struct HeadsStore {
    inner: MemoryStore,
    heads: Mutex<HashMap<ConvKey, u64>>,
}

impl MessageStore for HeadsStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        self.inner.store(messages).await
    }

    async fn raise_heads(&self, stored: &[(ConvKey, u64)]) -> Result<(), StoreError> {
        let mut heads = self.heads.lock();
        for &(key, seq) in stored {
            let head = heads.entry(key).or_default();
            *head = (*head).max(seq);
        }
        Ok(())
    }
}

/// Checks, for every pushed message, that its conversation's head had
/// reached its seq when it was pushed.
struct HeadsFirst {
    store: Arc<HeadsStore>,
    pushed: Arc<AtomicUsize>,
    early: Arc<AtomicUsize>,
}

impl Pusher for HeadsFirst {
    async fn push(&self, frames: Vec<Outgoing>) -> PushOutcome {
        for outgoing in frames {
            let mut bytes = BytesMut::from(&outgoing.frame[..]);
            let frame = FrameDecoder::new(u32::MAX)
                .decode(&mut bytes)
                .expect("a frame")
                .expect("a whole frame");
            let Ok(Body::Push(push)) = frame.body() else {
                panic!("not a PUSH frame");
            };
            let heads = self.store.heads.lock();
            for message in push.messages {
                let key = match message.conversation {
                    Some(stored_message::Conversation::ToUserId(to)) => {
                        ConvKey::direct(message.from_user_id, to)
                    }
                    Some(stored_message::Conversation::GroupId(group)) => ConvKey::Group(group),
                    None => panic!("a message without a conversation"),
                };
                if heads.get(&key).copied().unwrap_or(0) < message.seq {
                    self.early.fetch_add(1, Ordering::SeqCst);
                }
                self.pushed.fetch_add(1, Ordering::SeqCst);
            }
        }
        PushOutcome::default()
    }
}

/// A pushed message is visible to SYNC_CONVERSATIONS already: its
/// conversation's head was raised before the push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_are_raised_before_a_batch_is_pushed() {
    let topics = topics("mj-heads", 2, 4).await;
    let (records, expected) = events(&topics[0], &topics[1], 300);
    produce(&records).await;

    let group_id = unique_name("mj-heads");
    let store = Arc::new(HeadsStore::default());
    let (pushed, early) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pusher = HeadsFirst {
        store: Arc::clone(&store),
        pushed: Arc::clone(&pushed),
        early: Arc::clone(&early),
    };
    let running = start(&group_id, &topics, Arc::clone(&store), pusher, 32);
    running.wait_committed(300).await;
    running.stop().await;

    assert_eq!(pushed.load(Ordering::SeqCst), 300);
    assert_eq!(early.load(Ordering::SeqCst), 0, "pushed before its head");
    let heads = store.heads.lock().clone();
    for (key, ids) in &expected {
        assert_eq!(
            heads.get(key).copied(),
            Some(ids.len() as u64),
            "head of {key}"
        );
    }
}

/// A static member fenced by another consumer with its instance id (what a
/// broker restart did to msg_job in the chaos campaign) never consumes
/// again: the pipeline must end with an error, so the process exits and is
/// restarted, rather than poll a dead consumer and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_consumer_ends_the_pipeline_with_an_error() {
    let topics = topics("mj-fenced", 2, 1).await;
    let (p2p, group) = (&topics[0], &topics[1]);
    let (records, _) = events(p2p, group, 4);
    produce(&records).await;
    let group_id = unique_name("mj-fenced");
    let store = Arc::new(MemoryStore::new());
    let running = start_member(
        &group_id,
        Some("node-1"),
        &topics,
        Arc::clone(&store),
        NoPush,
        64,
    );
    running.wait_committed(4).await;

    // Another consumer joins as the same static member and keeps polling.
    let intruder = fishchat_msg_job::kafka::consumer(
        &fishchat_e2e::kafka_brokers(),
        &group_id,
        Some("node-1"),
        &topics,
        10,
    )
    .unwrap();
    let polling = tokio::spawn(async move {
        loop {
            let _ = intruder.recv().await;
        }
    });
    let ended = tokio::time::timeout(DEADLINE, running.task)
        .await
        .expect("the fenced pipeline kept running")
        .expect("the pipeline panicked");
    polling.abort();
    assert!(
        matches!(
            ended,
            Err(fishchat_msg_job::pipeline::PipelineError::Fatal { .. })
        ),
        "{ended:?}"
    );
}
