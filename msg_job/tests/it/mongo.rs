//! msg_job with the real conversation store in MongoDB, end to end, and the
//! built binary killed with -9 midway.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use fishchat_conversations::{ConversationStore, MESSAGES};
use fishchat_e2e::{unique_name, wait_until};
use fishchat_msg_job::ConvKey;
use fishchat_msg_job::push::NoPush;
use mongodb::bson::{Document, doc};

use crate::common::{
    DEADLINE, EVENT_GROUPS, Expected, all_committed, assert_all_committed, committed_count, events,
    produce, start, topics,
};

/// The member of every group of [`events`] through whom the tests read groups.
const GROUP_READER: u64 = 201;

/// A fresh, prepared database, after proving MongoDB answers; the reader of
/// the events' groups joined each before its first message.
async fn fresh_store() -> (mongodb::Database, ConversationStore) {
    let client = fishchat_e2e::mongo().await;
    let database = client.database(&unique_name("mj"));
    let store = ConversationStore::new(&database);
    store.prepare().await.expect("prepare the store");
    for group in EVENT_GROUPS {
        store.joined(GROUP_READER, group, 1).await.expect("join");
    }
    (database, store)
}

async fn message_count(database: &mongodb::Database) -> u64 {
    database
        .collection::<Document>(MESSAGES)
        .count_documents(doc! {})
        .await
        .expect("count")
}

/// Every message of `key` as (seq, server_msg_id), synced page by page as a
/// party (direct) or a member (group) would.
async fn conversation(store: &ConversationStore, key: ConvKey) -> Vec<(u64, u64)> {
    let reader = match key {
        ConvKey::Direct { low, .. } => low,
        ConvKey::Group(_) => GROUP_READER,
    };
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |(seq, _)| *seq);
        let page = store.sync(reader, key, after, 500).await.expect("sync");
        all.extend(page.messages.iter().map(|m| (m.seq, m.server_msg_id)));
        if !page.has_more {
            return all;
        }
    }
}

/// Checks that each conversation holds exactly the expected messages once,
/// at seqs 1..=n in produced order, with its head at n, and that nothing
/// else was stored.
async fn assert_conversations(
    database: &mongodb::Database,
    store: &ConversationStore,
    expected: &Expected,
) {
    for (key, ids) in expected {
        let want: Vec<(u64, u64)> = (1..).zip(ids.iter().copied()).collect();
        assert_eq!(conversation(store, *key).await, want, "conversation {key}");
        assert_eq!(
            store.head(*key).await.expect("head"),
            ids.len() as u64,
            "head of {key}"
        );
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(message_count(database).await, total as u64, "copies stored");
}

/// The pipeline with the real MongoDB store: every conversation gets seqs
/// 1..=n in produced order; a second group re-reading everything stores nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_into_mongodb_and_a_full_redelivery_adds_nothing() {
    let (database, store) = fresh_store().await;
    let topics = topics("mj-mongo", 2, 3).await;
    let (records, expected) = events(&topics[0], &topics[1], 300);
    produce(&records).await;

    let group_id = unique_name("mj-mongo");
    let running = start(&group_id, &topics, store.clone(), NoPush, 64);
    running.wait_committed(300).await;
    running.stop().await;
    assert_conversations(&database, &store, &expected).await;
    assert_all_committed(&group_id, &topics).await;

    // Another group starts from the earliest offset: all 300 redelivered,
    // through a store that shares none of the first one's caches.
    let replay = start(
        &unique_name("mj-mongo-replay"),
        &topics,
        ConversationStore::new(&database),
        NoPush,
        64,
    );
    let stats = Arc::clone(&replay.stats);
    replay.wait_committed(300).await;
    replay.stop().await;
    assert_eq!(stats.stored_messages.get(), 300);
    assert_conversations(&database, &store, &expected).await;
}

/// A child process killed (-9) when dropped, so a failing test leaves no job running.
struct Job(Child);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the built binary against the test's topics, group and database.
fn spawn_job(topics: &[String], group_id: &str, database: &str) -> Job {
    let child = Command::new(env!("CARGO_BIN_EXE_fishchat-msg-job"))
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--kafka-brokers", &fishchat_e2e::kafka_brokers()])
        .args(["--group-id", group_id])
        .args(["--p2p-topic", &topics[0]])
        .args(["--group-topic", &topics[1]])
        .args(["--partitions", "4"])
        .args(["--batch-size", "100"])
        .args(["--mongo-url", &fishchat_e2e::mongo_url()])
        .args(["--database", database])
        .args(["--redis-url", &fishchat_e2e::redis_url()])
        // Nothing listens there: every push lookup fails at once, as when register is down.
        .args(["--register-addr", "http://127.0.0.1:1"])
        // Warnings and errors reach the test's captured output; the failed
        // lookups of every batch would drown them.
        .env("RUST_LOG", "warn,fishchat_msg_job::grpc_push=error")
        .env(
            "FISHCHAT_MSG_JOB_ETCD_ENDPOINTS",
            format!("[\"{}\"]", fishchat_e2e::etcd_endpoint()),
        )
        // Its own etcd namespace, so concurrent tests' registrations never meet.
        .env("FISHCHAT_ETCD_NAMESPACE", format!("/{group_id}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start fishchat-msg-job");
    Job(child)
}

/// The binary is killed with -9 midway through 10,000 events and started
/// again: every conversation holds each message exactly once at seqs 1..=n in
/// produced order; then SIGTERM stops it cleanly with everything committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_midway_loses_and_duplicates_nothing() {
    let (database, store) = fresh_store().await;
    let topics = topics("mj-crash", 2, 4).await;
    let (records, expected) = events(&topics[0], &topics[1], 10_000);
    produce(&records).await;
    let group_id = unique_name("mj-crash");

    let mut first = spawn_job(&topics, &group_id, database.name());
    let at_kill = wait_until(DEADLINE, "a fifth of the messages stored", async || {
        let count = message_count(&database).await;
        (count >= 2_000).then_some(count)
    })
    .await;
    first.0.kill().expect("kill -9");
    first.0.wait().expect("reap");
    let after_kill = message_count(&database).await;
    assert!(
        after_kill < 10_000,
        "finished before the kill ({at_kill} at kill)"
    );
    assert!(
        committed_count(&group_id, &topics).await < 10_000,
        "everything was committed before the kill"
    );

    let mut second = spawn_job(&topics, &group_id, database.name());
    wait_until(
        DEADLINE,
        "every message stored after the restart",
        async || (message_count(&database).await >= 10_000).then_some(()),
    )
    .await;
    wait_until(
        DEADLINE,
        "every offset committed after the restart",
        async || all_committed(&group_id, &topics).await.then_some(()),
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = wait_until(DEADLINE, "the job to exit after SIGTERM", async || {
        second.0.try_wait().expect("try_wait")
    })
    .await;
    assert!(exit.success(), "exit after SIGTERM: {exit}");

    assert_conversations(&database, &store, &expected).await;
    assert_all_committed(&group_id, &topics).await;
}
