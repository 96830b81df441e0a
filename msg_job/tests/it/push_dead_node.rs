//! A stuck access node costs its users their pushes, not everyone their messages.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fishchat_e2e::{unique_name, wait_until};
use fishchat_msg_job::grpc_push::{GrpcPusher, SESSION_CAPACITY, SESSION_TTL, SessionCache};
use fishchat_msg_job::{ConvKey, MemoryStore, NewMessage};

use crate::common::{
    DEADLINE, Producer, all_committed, assert_all_committed, assert_stored, direct, expected,
    p2p_record, start, topics,
};
use crate::fakes::{FakeAccess, FakeRegister, session, silent_addr};

/// How long the pusher waits for one node's push (`grpc_push`'s private
/// `PUSH_TIMEOUT`): what each batch would lose if a stuck node held it up.
const PUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// Messages in the stream.
const MESSAGES: u64 = 400;

/// Most messages per batch: the stream takes at least `MESSAGES / BATCH` batches.
const BATCH: usize = 10;

/// Users 1-4 are on a healthy node, users 11-14 on a node that takes pushes
/// and never answers, users 21-24 behind a socket that accepts connections
/// and never speaks; every message goes to a healthy user and a stuck one.
/// The stream is stored and committed, and the healthy node's users get
/// every push, within half the time a pusher waiting for a stuck node in
/// every batch would need (20 s), a tenth of what waiting for it per message
/// would (200 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_access_node_does_not_hold_up_consumption() {
    let store = Arc::new(MemoryStore::new());
    let healthy = FakeAccess::checking(Arc::clone(&store));
    let stuck = FakeAccess::hanging();
    let (healthy_addr, stuck_addr) = (healthy.serve(), stuck.serve());
    let mut sessions: Vec<_> = (1..=4).map(|u| session(u, &healthy_addr, u)).collect();
    sessions.extend((11..=14).map(|u| session(u, &stuck_addr, u)));
    let silent_addr = silent_addr().await;
    sessions.extend((21..=24).map(|u| session(u, &silent_addr, u)));
    let register = FakeRegister::new(sessions);
    let register_addr = register.serve();

    let topics = topics("mj-stuck", 1, 2).await;
    let messages: Vec<NewMessage> = (1..=MESSAGES)
        .map(|id| {
            let stuck_node = if id % 3 == 0 { 20 } else { 10 };
            let (healthy_user, stuck_user) = (1 + id % 4, stuck_node + 1 + (id / 4) % 4);
            if id % 2 == 0 {
                direct(id, stuck_user, healthy_user)
            } else {
                direct(id, healthy_user, stuck_user)
            }
        })
        .collect();
    let records: Vec<_> = messages.iter().map(|m| p2p_record(&topics[0], m)).collect();

    let sessions = Arc::new(SessionCache::new(SESSION_TTL, SESSION_CAPACITY));
    let pusher = GrpcPusher::new(&register_addr, sessions).expect("pusher");
    let group_id = unique_name("mj-stuck");
    let running = start(&group_id, &topics, Arc::clone(&store), pusher, BATCH);
    wait_until(DEADLINE, "the consumer in its group", async || {
        (fishchat_e2e::kafka_group_members(&group_id).await == 1).then_some(())
    })
    .await;
    let started = Instant::now();
    // A stream, not one burst: many batches, each of which could wait for the stuck node.
    let producer = Producer::new();
    for chunk in records.chunks(BATCH) {
        producer.send(chunk).await;
    }
    let deadline = PUSH_TIMEOUT * (MESSAGES as u32 / BATCH as u32) / 2;
    let stats = Arc::clone(&running.stats);
    // The clock started with the stream.
    wait_until(
        deadline.saturating_sub(started.elapsed()),
        "the whole stream stored and committed",
        async || {
            (stats.committed_records.get() == MESSAGES && all_committed(&group_id, &topics).await)
                .then_some(())
        },
    )
    .await;
    running.stop().await;

    let want = expected(&messages);
    assert_stored(&store, &want);
    assert_all_committed(&group_id, &topics).await;
    for user in 1..=4 {
        let got: Vec<(ConvKey, u64)> = healthy
            .pushed_to(user)
            .iter()
            .map(|&(key, seq, _)| (key, seq))
            .collect();
        let all: BTreeSet<(ConvKey, u64)> = want
            .iter()
            .filter(|(key, _)| key.is_party(user))
            .flat_map(|(key, ids)| (1..=ids.len() as u64).map(|seq| (*key, seq)))
            .collect();
        assert_eq!(got.len(), all.len(), "user {user}: a push lost or repeated");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), all, "user {user}");
    }
    assert_eq!(healthy.violations(), Vec::<String>::new());
    assert!(
        !stuck.requests().is_empty(),
        "the stuck node was never tried"
    );
    assert!(stats.push_failures.get() >= 1);
}
