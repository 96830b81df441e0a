//! The MongoDB adapter end to end, and the built binary killed with -9 midway.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fishchat_e2e::{unique_name, wait_until};
use fishchat_inbox::MongoInbox;
use fishchat_msg_job::push::NoPush;
use mongodb::bson::{Document, doc};

use crate::common::{
    DEADLINE, Expected, assert_all_committed, committed_and_high, events, produce, start, topics,
};

/// A fresh database with the inbox indexes, after proving MongoDB answers.
async fn fresh_inbox() -> (mongodb::Database, MongoInbox) {
    let client = fishchat_e2e::mongo().await;
    let database = client.database(&unique_name("mj"));
    let inbox = MongoInbox::new(&database);
    inbox.ensure_indexes().await.expect("indexes");
    (database, inbox)
}

async fn message_count(database: &mongodb::Database) -> u64 {
    database
        .collection::<Document>(fishchat_inbox::MESSAGES)
        .count_documents(doc! {})
        .await
        .expect("count")
}

/// Every message of `user`'s inbox as (seq, server_msg_id), synced page by page.
async fn inbox_of(inbox: &MongoInbox, user: u64) -> Vec<(u64, u64)> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |(seq, _)| *seq);
        let page = inbox.sync(user, after, 500).await.expect("sync");
        all.extend(page.messages.iter().map(|m| (m.seq, m.server_msg_id)));
        if !page.has_more {
            return all;
        }
    }
}

/// Checks that each inbox holds exactly the expected messages once, with seqs
/// 1..=n, and in produced order within each Kafka key.
async fn assert_inboxes(inbox: &MongoInbox, expected: &Expected) {
    for (user, sent) in expected {
        let stored = inbox_of(inbox, *user).await;
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=sent.len() as u64).collect::<Vec<_>>(),
            "inbox {user}: seqs"
        );
        let mut ids: Vec<u64> = stored.iter().map(|(_, id)| *id).collect();
        let position: HashMap<u64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut last_by_key: HashMap<u64, usize> = HashMap::new();
        for (key, id) in sent {
            let at = *position
                .get(id)
                .unwrap_or_else(|| panic!("inbox {user} lacks {id}"));
            if let Some(previous) = last_by_key.insert(*key, at) {
                assert!(
                    previous < at,
                    "inbox {user}: {id} before an earlier message of key {key}"
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), sent.len(), "inbox {user} holds a duplicate");
    }
}

/// The pipeline with the real MongoDB store: every inbox gets seqs 1..=n in
/// partition order; a second group re-reading everything stores nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_into_mongodb_and_a_full_redelivery_adds_nothing() {
    let (database, inbox) = fresh_inbox().await;
    let topics = topics("mj-mongo", 2, 3).await;
    let (records, expected) = events(&topics[0], &topics[1], 300);
    let total: usize = expected.values().map(Vec::len).sum();
    produce(&records).await;

    let group_id = unique_name("mj-mongo");
    let running = start(&group_id, &topics, inbox.clone(), NoPush, 64);
    running.wait_committed(300).await;
    running.stop().await;
    assert_eq!(message_count(&database).await, total as u64);
    assert_inboxes(&inbox, &expected).await;
    assert_all_committed(&group_id, &topics).await;

    // Another group starts from the earliest offset: all 300 redelivered.
    let replay = start(
        &unique_name("mj-mongo-replay"),
        &topics,
        inbox.clone(),
        NoPush,
        64,
    );
    let stats = Arc::clone(&replay.stats);
    replay.wait_committed(300).await;
    replay.stop().await;
    assert_eq!(stats.stored_items.load(Ordering::SeqCst), total as u64);
    assert_eq!(
        message_count(&database).await,
        total as u64,
        "the replay stored copies"
    );
    assert_inboxes(&inbox, &expected).await;
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
/// again: every inbox holds each message exactly once, in order; then SIGTERM
/// stops it cleanly with everything committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_midway_loses_and_duplicates_nothing() {
    let (database, inbox) = fresh_inbox().await;
    let topics = topics("mj-crash", 2, 4).await;
    let (records, expected) = events(&topics[0], &topics[1], 10_000);
    let total = expected.values().map(Vec::len).sum::<usize>() as u64;
    produce(&records).await;
    let group_id = unique_name("mj-crash");

    let mut first = spawn_job(&topics, &group_id, database.name());
    let at_kill = wait_until(DEADLINE, "a fifth of the messages stored", async || {
        let count = message_count(&database).await;
        (count >= total / 5).then_some(count)
    })
    .await;
    first.0.kill().expect("kill -9");
    first.0.wait().expect("reap");
    let after_kill = message_count(&database).await;
    assert!(
        after_kill < total,
        "finished before the kill ({at_kill} at kill)"
    );
    let committed: i64 = committed_and_high(&group_id, &topics)
        .await
        .iter()
        .map(|(_, _, offset, _)| offset.to_raw().unwrap_or(0).max(0))
        .sum();
    assert!(
        committed < 10_000,
        "everything was committed before the kill"
    );

    let mut second = spawn_job(&topics, &group_id, database.name());
    wait_until(
        DEADLINE,
        "every message stored after the restart",
        async || (message_count(&database).await >= total).then_some(()),
    )
    .await;
    wait_until(
        DEADLINE,
        "every offset committed after the restart",
        async || {
            let all = committed_and_high(&group_id, &topics).await;
            all.iter()
                .all(|(_, _, offset, high)| *high == 0 || offset.to_raw() == Some(*high))
                .then_some(())
        },
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

    assert_eq!(message_count(&database).await, total, "copies stored");
    assert_inboxes(&inbox, &expected).await;
}
