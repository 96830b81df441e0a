//! Chat end to end: `fishchat_client::Client`s talking through the gateway
//! and real access nodes to the whole backend, every service its own process
//! on the real servers.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::HashMap;
use std::time::Duration;

use fishchat_client::register::{JoinStatus, RegisterApi};
use fishchat_client::{Client, ClientOptions, Conversation, Event, Events, StoredMessage};
use fishchat_codec::{Body, pb};
use fishchat_e2e::cluster::Cluster;

/// How long one expected event may take (a debug build on a busy machine).
const DEADLINE: Duration = Duration::from_secs(30);

/// A cluster with one gateway and `nodes` access nodes.
async fn chat_cluster(test: &str, nodes: usize) -> Cluster {
    let mut cluster = Cluster::start(test).await;
    for _ in 0..nodes {
        cluster.add_access(&[]).await;
    }
    cluster.add_gateway().await;
    cluster
}

fn options(cluster: &Cluster, token: &str, device: &str) -> ClientOptions {
    let gateway = cluster.gateway.as_ref().expect("a gateway").tcp;
    ClientOptions {
        gateway: Some(gateway.to_string()),
        request_timeout: Duration::from_secs(20),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..ClientOptions::new(token, device)
    }
}

async fn connect(cluster: &Cluster, token: &str, device: &str) -> (Client, Events) {
    Client::connect(options(cluster, token, device))
        .await
        .unwrap()
}

/// The access node a fresh client logged in on.
async fn node_of(events: &mut Events) -> String {
    match tokio::time::timeout(DEADLINE, events.recv()).await {
        Ok(Some(Event::Connected { node, .. })) => node,
        other => panic!("expected a Connected event, got {other:?}"),
    }
}

/// The next `count` messages, skipping connection events.
async fn messages(events: &mut Events, count: usize) -> Vec<StoredMessage> {
    let mut got = Vec::new();
    while got.len() < count {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(Event::Message { message, .. })) => got.push(message),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client stopped after {} messages", got.len()),
            Err(_) => panic!("only {} of {count} messages arrived", got.len()),
        }
    }
    got
}

fn bodies(messages: &[StoredMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_chat_both_ways_and_a_group_of_three_talks() {
    let cluster = chat_cluster("chat-basic", 1).await;
    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let (carol, carol_token) = cluster.new_user("carol").await;
    let (a, mut a_events) = connect(&cluster, &alice_token, "a").await;
    let (b, mut b_events) = connect(&cluster, &bob_token, "b").await;
    let (c, mut c_events) = connect(&cluster, &carol_token, "c").await;

    a.send_to_user(bob, "hi bob").await.unwrap();
    let got = messages(&mut b_events, 1).await;
    assert_eq!(
        (got[0].from_user_id, bodies(&got)),
        (alice, vec!["hi bob".into()])
    );
    b.send_to_user(alice, "hi alice").await.unwrap();
    // Alice's inbox holds her own message first, then Bob's reply.
    // Alice's chat with Bob: her own message first, then Bob's reply, seqs 1 and 2.
    let got = messages(&mut a_events, 2).await;
    assert_eq!(bodies(&got), ["hi bob", "hi alice"]);
    assert_eq!(got[1].from_user_id, bob);
    assert_eq!(
        (got[0].seq, got[1].seq),
        (1, 2),
        "one sequence for both sides"
    );

    let register = RegisterApi::new(format!("http://{}", cluster.register_http));
    let group = register
        .create_group(&alice_token, "three", true)
        .await
        .unwrap();
    for token in [&bob_token, &carol_token] {
        let joined = register.join_group(token, group.group_id).await.unwrap();
        assert_eq!(joined, JoinStatus::Member, "an open group");
    }
    c.send_to_group(group.group_id, "hello group")
        .await
        .unwrap();
    // Bob's events also hold his own reply to Alice, before the group message.
    let got = messages(&mut b_events, 2).await;
    assert_eq!(bodies(&got), ["hi alice", "hello group"]);
    for events in [&mut a_events, &mut c_events] {
        let got = messages(events, 1).await;
        assert_eq!(bodies(&got), ["hello group"]);
        assert_eq!(
            (got[0].from_user_id, got[0].client_msg_id.is_empty()),
            (carol, false)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_user_gets_exactly_what_it_missed_in_order_once() {
    let cluster = chat_cluster("chat-offline", 1).await;
    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let (a, _a_events) = connect(&cluster, &alice_token, "a").await;
    let (b, _) = connect(&cluster, &bob_token, "b").await;
    b.close().await;

    let mut acks = Vec::new();
    for i in 0..100 {
        acks.push(a.send_to_user(bob, format!("m{i}")).await.unwrap());
    }
    let (b, mut b_events) = connect(&cluster, &bob_token, "b").await;
    let got = messages(&mut b_events, 100).await;
    assert_eq!(
        bodies(&got),
        (0..100).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let ids: Vec<u64> = got.iter().map(|m| m.server_msg_id).collect();
    assert_eq!(
        ids,
        acks.iter().map(|a| a.server_msg_id).collect::<Vec<_>>()
    );

    let chat = Conversation::User(alice);
    let read = b.read(chat, seqs[99]).await.unwrap();
    assert_eq!((read.read_seq, read.unread), (100, 0));
    b.close().await;
    // Another device, with no local memory: the shared read position says all is read.
    let (tablet, mut tablet_events) = connect(&cluster, &bob_token, "tablet").await;
    synced(&mut tablet_events).await;
    let info = tablet.conversation(chat).expect("the chat with alice");
    assert_eq!((info.head_seq, info.read_seq, info.unread), (100, 100, 0));
}

/// Waits until the client caught up after its login.
async fn synced(events: &mut Events) {
    loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(Event::Synced)) => return,
            Ok(Some(_)) => {}
            other => panic!("no Synced event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_devices_of_a_user_get_each_push_and_see_each_others_sends() {
    let cluster = chat_cluster("chat-devices", 1).await;
    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let (a, _a_events) = connect(&cluster, &alice_token, "a").await;
    let (phone, mut phone_events) = connect(&cluster, &bob_token, "phone").await;
    let (_laptop, mut laptop_events) = connect(&cluster, &bob_token, "laptop").await;

    a.send_to_user(bob, "to both").await.unwrap();
    for events in [&mut phone_events, &mut laptop_events] {
        assert_eq!(bodies(&messages(events, 1).await), ["to both"]);
    }
    let ack = phone
        .send_to_user(alice, "sent from the phone")
        .await
        .unwrap();
    let got = messages(&mut laptop_events, 1).await;
    assert_eq!(bodies(&got), ["sent from the phone"]);
    assert_eq!(
        (got[0].from_user_id, got[0].server_msg_id),
        (bob, ack.server_msg_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_access_node_mid_traffic_loses_nothing_acknowledged() {
    let mut cluster = chat_cluster("chat-node-dies", 2).await;
    let pairs = 4;
    let per_sender = 60;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut on_node: HashMap<String, usize> = HashMap::new();
    for i in 0..pairs {
        let (_s, s_token) = cluster.new_user(&format!("s{i}")).await;
        let (r, r_token) = cluster.new_user(&format!("r{i}")).await;
        let (sender, mut s_events) = connect(&cluster, &s_token, "d").await;
        *on_node.entry(node_of(&mut s_events).await).or_default() += 1;
        let (receiver, mut r_events) = connect(&cluster, &r_token, "d").await;
        *on_node.entry(node_of(&mut r_events).await).or_default() += 1;
        senders.push((sender, s_events, r));
        receivers.push((receiver, r_events));
    }
    // Kill the busier node (the gateway may have put everyone on one).
    let (victim, held) = on_node.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim = (0..cluster.access.len())
        .find(|i| victim.ends_with(&format!("-access-{i}")))
        .unwrap();
    eprintln!(
        "killing access node {victim}, which holds {held} of {} clients",
        2 * pairs
    );

    let mut sending = Vec::new();
    for (sender, events, to) in senders {
        sending.push(tokio::spawn(async move {
            // The sender's own copies arrive as events; keep them flowing.
            let _events = events;
            let mut acked = Vec::new();
            for n in 0..per_sender {
                let ack = sender.send_to_user(to, format!("{to}:{n}")).await.unwrap();
                acked.push(ack.server_msg_id);
            }
            acked
        }));
    }
    let mut received: Vec<Vec<StoredMessage>> = Vec::new();
    for (i, (_, events)) in receivers.iter_mut().enumerate() {
        received.push(messages(events, if i == 0 { 5 } else { 0 }).await);
    }
    cluster.access[victim].process.kill9();

    let mut acked = Vec::new();
    for task in sending {
        acked.push(task.await.unwrap());
    }
    for (i, (_, events)) in receivers.iter_mut().enumerate() {
        let rest = per_sender - received[i].len();
        received[i].extend(messages(events, rest).await);
        let ids: Vec<u64> = received[i].iter().map(|m| m.server_msg_id).collect();
        assert_eq!(
            ids, acked[i],
            "receiver {i}: every acknowledged message, once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_reaches_the_readers_other_device_and_the_sender_as_a_receipt() {
    let cluster = chat_cluster("chat-read", 1).await;
    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let (a, mut a_events) = connect(&cluster, &alice_token, "a").await;
    let (phone, mut phone_events) = connect(&cluster, &bob_token, "phone").await;
    let (_laptop, mut laptop_events) = connect(&cluster, &bob_token, "laptop").await;
    for i in 0..3 {
        a.send_to_user(bob, format!("m{i}")).await.unwrap();
    }
    messages(&mut phone_events, 3).await;
    let read = phone.read(Conversation::User(alice), 2).await.unwrap();
    assert_eq!((read.read_seq, read.unread), (2, 1));

    let receipt = next(&mut a_events, |event| match event {
        Event::ReadReceipt {
            conversation,
            reader_user_id,
            read_seq,
        } => Some((conversation, reader_user_id, read_seq)),
        _ => None,
    })
    .await;
    assert_eq!(receipt, (Conversation::User(bob), bob, 2));
    let moved = next(&mut laptop_events, |event| match event {
        Event::Read {
            conversation,
            read_seq,
            unread,
        } => Some((conversation, read_seq, unread)),
        _ => None,
    })
    .await;
    assert_eq!(moved, (Conversation::User(alice), 2, 1));
}

/// The first event `pick` accepts.
async fn next<T>(events: &mut Events, pick: impl Fn(Event) -> Option<T>) -> T {
    loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            other => panic!("the event never came: {other:?}"),
        }
    }
}

/// Sends made while the only logic node is killed -9 and started again wait
/// for it (they are safe to repeat: logic dedups by client message id) and
/// are acked, not refused; each is stored once. Raw connections, because
/// `fishchat_client` would hide a refusal by retrying it.
#[tokio::test(flavor = "multi_thread")]
async fn sends_wait_for_a_restarting_logic_instead_of_failing() {
    const SENDERS: usize = 4;
    /// A bound on each sender's loop, far above what the test needs.
    const MOST_PER_SENDER: u32 = 5_000;
    let mut cluster = chat_cluster("chat-logic-restart", 1).await;
    let access = cluster.access[0].client;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let (_bob, mut bob_events) = connect(&cluster, &bob_token, "phone").await;
    let mut sending = Vec::new();
    let (progress, mut acked_so_far) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for s in 0..SENDERS {
        let (_, token) = cluster.new_user(&format!("sender{s}")).await;
        let mut conn = fishchat_e2e::login(access, &token, "d").await;
        let progress = progress.clone();
        let stopped = stopped.clone();
        sending.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            // Sends back to back until told to stop, so that some are in
            // flight whenever logic goes away.
            for n in 1..=MOST_PER_SENDER {
                if *stopped.borrow() {
                    break;
                }
                let send: Body = pb::SendToUser {
                    client_msg_id: format!("{s}:{n}"),
                    to_user_id: bob,
                    body: format!("{s}:{n}").into_bytes().into(),
                }
                .into();
                conn.send(n, &send).await.unwrap();
                // Skip the sender's own copies (pushes); wait for this send's ack.
                let ack = loop {
                    match conn.recv().await.unwrap() {
                        (id, Body::SendAck(ack)) if id == n => break ack,
                        _ => {}
                    }
                };
                acks.push(ack);
                let _ = progress.send(());
            }
            acks
        }));
    }
    for _ in 0..SENDERS * 5 {
        acked_so_far.recv().await.unwrap();
    }
    cluster.logic[0].0.restart();
    // Stop once every sender got some acks from the restarted node too.
    for _ in 0..SENDERS * 5 {
        acked_so_far.recv().await.unwrap();
    }
    let logic = cluster.logic[0].1.to_string();
    fishchat_e2e::services::wait_healthy(&logic, DEADLINE).await;
    for _ in 0..SENDERS * 5 {
        acked_so_far.recv().await.unwrap();
    }
    stop.send_replace(true);
    let mut ids = Vec::new();
    for task in sending {
        for ack in task.await.unwrap() {
            assert_eq!(ack.error, None, "a send was refused across the restart");
            ids.push(ack.server_msg_id);
        }
    }
    let mut got: Vec<u64> = messages(&mut bob_events, ids.len())
        .await
        .iter()
        .map(|m| m.server_msg_id)
        .collect();
    got.sort_unstable();
    ids.sort_unstable();
    assert_eq!(got, ids, "each acked send stored and delivered once");
}

/// The short chaos campaign: pairs chat through two access nodes, two logic
/// nodes and the gateway while each FishChat service in turn is killed with
/// -9 and started again at once (as systemd would). After each fault every
/// receiver must get a message sent after the restart; at the end, every
/// acknowledged message must have reached its receiver exactly once, in
/// order. One row per fault is printed. (The servers are shared by the tests
/// running alongside, so restarting them is left to the bench's campaign.)
#[tokio::test(flavor = "multi_thread")]
async fn each_service_killed_in_turn_loses_and_duplicates_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const PAIRS: usize = 4;
    /// Each sender's bound: one send per 20 ms for at most this many.
    const MOST_PER_SENDER: u64 = 6_000;
    const BACK_DEADLINE: Duration = Duration::from_secs(60);
    let mut cluster = chat_cluster("chat-chaos", 2).await;
    cluster.add_logic().await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sending = Vec::new();
    let mut receiving = Vec::new();
    // Per pair: the next message number the sender will send, and what the
    // receiver got so far.
    let mut next_sent = Vec::new();
    let mut received: Vec<Arc<std::sync::Mutex<Vec<StoredMessage>>>> = Vec::new();
    for i in 0..PAIRS {
        let (_, s_token) = cluster.new_user(&format!("s{i}")).await;
        let (r, r_token) = cluster.new_user(&format!("r{i}")).await;
        let (sender, s_events) = connect(&cluster, &s_token, "d").await;
        let (receiver, mut r_events) = connect(&cluster, &r_token, "d").await;
        let next = Arc::new(AtomicU64::new(0));
        next_sent.push(next.clone());
        let stopped = stopped.clone();
        sending.push(tokio::spawn(async move {
            let _events = s_events;
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            let mut acked = Vec::new();
            for n in 0..MOST_PER_SENDER {
                if *stopped.borrow() {
                    break;
                }
                pace.tick().await;
                next.store(n, Ordering::SeqCst);
                let ack = sender.send_to_user(r, format!("{n}")).await.unwrap();
                acked.push(ack.server_msg_id);
            }
            acked
        }));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        received.push(got.clone());
        receiving.push(tokio::spawn(async move {
            let _receiver = receiver;
            while let Some(event) = r_events.recv().await {
                if let Event::Message { message, .. } = event {
                    got.lock().unwrap().push(message);
                }
            }
        }));
    }
    let newest = |got: &std::sync::Mutex<Vec<StoredMessage>>| {
        got.lock()
            .unwrap()
            .last()
            .and_then(|m| String::from_utf8_lossy(&m.body).parse::<u64>().ok())
    };
    // Every receiver gets a message its sender sent from now on.
    let all_back = async |next_sent: &[Arc<AtomicU64>], what: &str| {
        let marks: Vec<u64> = next_sent.iter().map(|n| n.load(Ordering::SeqCst)).collect();
        let start = std::time::Instant::now();
        fishchat_e2e::wait_until(BACK_DEADLINE, what, async || {
            received
                .iter()
                .zip(&marks)
                .all(|(got, mark)| newest(got).is_some_and(|n| n > *mark))
                .then_some(())
        })
        .await;
        start.elapsed()
    };
    all_back(&next_sent, "traffic to flow before any fault").await;

    eprintln!("{:<10} {:>8} {:>10}", "fault", "acked", "back (ms)");
    let faults = [
        "access-0", "access-1", "logic-0", "msg_job", "register", "manager", "gateway", "logic-1",
    ];
    for fault in faults {
        let process = match fault {
            "access-0" => &mut cluster.access[0].process,
            "access-1" => &mut cluster.access[1].process,
            "logic-0" => &mut cluster.logic[0].0,
            "logic-1" => &mut cluster.logic[1].0,
            "msg_job" => &mut cluster.msg_job,
            "register" => &mut cluster.register,
            "manager" => &mut cluster.manager,
            _ => &mut cluster.gateway.as_mut().unwrap().process,
        };
        process.kill9();
        process.restart();
        let back = all_back(
            &next_sent,
            &format!("every receiver to get new messages after {fault} restarted"),
        )
        .await;
        let acked: u64 = next_sent.iter().map(|n| n.load(Ordering::SeqCst)).sum();
        eprintln!("{fault:<10} {acked:>8} {:>10}", back.as_millis());
    }

    stop.send_replace(true);
    let mut acked = Vec::new();
    for task in sending {
        acked.push(task.await.unwrap());
    }
    for (i, got) in received.iter().enumerate() {
        let want = acked[i].len();
        fishchat_e2e::wait_until(
            BACK_DEADLINE,
            "every acknowledged message to arrive",
            async || (got.lock().unwrap().len() >= want).then_some(()),
        )
        .await;
        let ids: Vec<u64> = got
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.server_msg_id)
            .collect();
        assert_eq!(
            ids, acked[i],
            "pair {i}: every acknowledged message, once, in order"
        );
    }
    for task in receiving {
        task.abort();
    }
}
