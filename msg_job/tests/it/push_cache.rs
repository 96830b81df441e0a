//! The session cache behind the pusher: used while nothing changes, dropped
//! for a user the moment register announces its sessions changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fishchat_announcements::listen;
use fishchat_e2e::{unique_name, wait_until};
use fishchat_msg_job::grpc_push::{GrpcPusher, SESSION_CAPACITY, SESSION_TTL, SessionCache};
use fishchat_msg_job::{ConvKey, MemoryStore};
use tokio::sync::watch;

use crate::common::{DEADLINE, direct, p2p_record, produce, start, topics};
use crate::fakes::{FakeAccess, FakeRegister, session};

/// How soon a moved user's next message must reach its new node: far below
/// the cache's time to live, so only the announcement can explain it.
const MOVE_DEADLINE: Duration = Duration::from_secs(10);

/// PUBLISHes `payload` on `channel` of the stack's Redis, as register
/// announces; returns how many subscribers got it.
async fn publish(channel: &str, payload: &str) -> i64 {
    let mut redis = fishchat_e2e::redis().await;
    redis::AsyncCommands::publish(&mut redis, channel, payload)
        .await
        .expect("PUBLISH")
}

/// User 1 is on node A: a push finds it through register and caches it; a
/// second push finds it in the cache (no new lookup). Then user 1 logs in on
/// node B instead, and register announces it: the next message reaches B, not
/// A, at once, after one lookup of user 1 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moved_to_another_node_is_pushed_there_after_the_announcement() {
    let store = Arc::new(MemoryStore::new());
    let node_a = FakeAccess::checking(Arc::clone(&store));
    let node_b = FakeAccess::checking(Arc::clone(&store));
    let (addr_a, addr_b) = (node_a.serve(), node_b.serve());
    let register = FakeRegister::new(vec![session(1, &addr_a, 1)]);
    let register_addr = register.serve();

    // A channel of this test's own, so no other run's announcements reach its cache.
    let channel: &'static str = Box::leak(unique_name("mj-sessions").into_boxed_str());
    let sessions = Arc::new(SessionCache::new(SESSION_TTL, SESSION_CAPACITY));
    let (stop_listening, stopped) = watch::channel(false);
    let listening = tokio::spawn(listen(
        fishchat_e2e::redis_url(),
        channel,
        Arc::clone(&sessions),
        stopped,
    ));
    wait_until(DEADLINE, "the cache subscribed", async || {
        sessions.is_live().then_some(())
    })
    .await;

    let topics = topics("mj-stale", 1, 1).await;
    let pusher = GrpcPusher::new(&register_addr, Arc::clone(&sessions)).expect("pusher");
    let running = start(
        &unique_name("mj-stale"),
        &topics,
        Arc::clone(&store),
        pusher,
        10,
    );
    let key = ConvKey::direct(1, 2);
    let got = |node: &FakeAccess, seq: u64| {
        node.pushed_to(1)
            .iter()
            .any(|&(k, s, _)| k == key && s == seq)
    };

    // User 2, the sender, is offline: a recipient too, and cached as "nowhere".
    produce(&[p2p_record(&topics[0], &direct(1, 2, 1))]).await;
    running.wait_committed(1).await;
    assert!(got(&node_a, 1), "the first message did not reach node A");
    let filled = Instant::now();
    assert_eq!(
        sessions.get(1),
        Some(vec![addr_a.clone()]),
        "user 1 not cached on A"
    );
    assert_eq!(register.calls(), [vec![1, 2]]);

    produce(&[p2p_record(&topics[0], &direct(2, 2, 1))]).await;
    running.wait_committed(2).await;
    assert!(got(&node_a, 2), "the second message did not reach node A");
    assert_eq!(
        register.calls().len(),
        1,
        "an unchanged user was looked up again"
    );

    register.set_sessions(vec![session(1, &addr_b, 2)]);
    assert_eq!(
        publish(channel, "1").await,
        1,
        "the cache is not subscribed"
    );
    wait_until(
        MOVE_DEADLINE,
        "the announcement to drop user 1",
        async || sessions.get(1).is_none().then_some(()),
    )
    .await;
    assert!(sessions.get(2).is_some(), "an unannounced user was dropped");
    produce(&[p2p_record(&topics[0], &direct(3, 2, 1))]).await;
    wait_until(MOVE_DEADLINE, "the third message on node B", async || {
        got(&node_b, 3).then_some(())
    })
    .await;
    running.wait_committed(3).await;
    running.stop().await;

    assert!(!got(&node_a, 3), "the third message went to the old node");
    assert_eq!(node_a.pushed_to(1).len(), 2);
    assert_eq!(register.calls(), [vec![1, 2], vec![1]]);
    assert!(
        filled.elapsed() < SESSION_TTL,
        "the cached entry may have expired on its own"
    );
    assert_eq!(node_a.violations(), Vec::<String>::new());
    assert_eq!(node_b.violations(), Vec::<String>::new());

    stop_listening.send_replace(true);
    tokio::time::timeout(DEADLINE, listening)
        .await
        .expect("listen did not stop")
        .expect("listen panicked");
}
