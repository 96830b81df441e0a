//! Across hosts: FishChat on five hosts made of network namespaces on one
//! machine (see `fishchat_e2e::netns`): the servers on one, register,
//! manager, logic, msg_job and the gateway on another, one access node on
//! each of two more, and the clients on the fifth. One access host's link
//! is cut mid-conversation (no reset reaches anyone, as when a cable is
//! pulled); its clients must notice by the heartbeat deadline, move to the
//! other access node through the gateway, and every message sent before and
//! after the cut must reach both ends of its conversation exactly once.
//!
//! Needs root and iproute2's `ip` (CI runs as root); without root it fails
//! saying so.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fishchat_client::{Client, ClientError, ClientOptions, Conversation, Event, StoredMessage};
use fishchat_e2e::cluster::{Cluster, Layout};
use fishchat_e2e::netns::{Network, Stack};
use fishchat_e2e::wait_until;

const SERVERS: &str = "srv";
const SERVICES: &str = "svc";
const ACCESS_A: &str = "acc-a";
const ACCESS_B: &str = "acc-b";
const CLIENTS: &str = "cli";

/// Pairs of users chatting with each other.
const PAIRS: usize = 10;
/// Messages each user sends its partner before the cut, and again after it.
const PER_PHASE: usize = 5;
/// The access nodes' heartbeat: a client hears nothing for three intervals
/// before it gives a connection up, so this bounds how soon the cut is noticed.
const HEARTBEAT_MS: &str = "1000";
/// A client's patience with one request or one connection attempt; a send
/// that runs out of it is made again with its first client_msg_id.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one send (each up to [`REQUEST_TIMEOUT`]).
const SEND_TRIES: usize = 12;
/// How long a condition may take: a cut node leaves etcd only when its
/// 10 s lease runs out, and until then the gateway may still offer it.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn clients_of_a_cut_off_access_host_move_to_the_other_and_lose_nothing() {
    let started = Instant::now();
    let network = Network::create(&[SERVERS, SERVICES, ACCESS_A, ACCESS_B, CLIENTS]);
    let stack = Stack::up(&network, SERVERS);
    eprintln!(
        "servers up on {} after {:.1} s",
        network.host(SERVERS).ip,
        started.elapsed().as_secs_f64()
    );
    let layout = Layout {
        servers: stack.servers(),
        services: network.host(SERVICES).host(),
        access: vec![network.host(ACCESS_A).host(), network.host(ACCESS_B).host()],
        tests: network.host(CLIENTS).ip.into(),
    };
    network.run_in(CLIENTS, || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cut_and_move(&network, layout));
    });
    eprintln!("done after {:.1} s", started.elapsed().as_secs_f64());
}

/// What one client's events showed.
#[derive(Debug, Default)]
struct Seen {
    /// The node of each login, in order.
    nodes: Vec<String>,
    /// Connections lost.
    disconnects: usize,
    /// Every message delivered, in delivery order.
    messages: Vec<(Conversation, StoredMessage)>,
}

/// One user's client, its partner, and what its events showed.
struct Peer {
    user: u64,
    partner: u64,
    client: Client,
    seen: Arc<Mutex<Seen>>,
}

impl Peer {
    fn node(&self) -> Option<String> {
        self.seen.lock().unwrap().nodes.last().cloned()
    }

    /// The messages delivered in the conversation with the partner.
    fn chat(&self) -> Vec<StoredMessage> {
        let partner = Conversation::User(self.partner);
        let seen = self.seen.lock().unwrap();
        seen.messages
            .iter()
            .filter(|(c, _)| *c == partner)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

async fn cut_and_move(network: &Network, layout: Layout) {
    let mut cluster = Cluster::start_on("hosts", layout, &[]).await;
    // Node i runs on the layout's access host i.
    let mut nodes = Vec::new();
    for host in [ACCESS_A, ACCESS_B] {
        let index = cluster
            .add_access(&[("HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS)])
            .await;
        eprintln!(
            "access node {index} on host {host} ({})",
            cluster.access[index].client
        );
        nodes.push(format!("{}-access-{index}", cluster.name));
    }
    let (node_a, node_b) = (nodes[0].clone(), nodes[1].clone());
    let gateway = cluster.add_gateway().await;

    let mut users = Vec::new();
    for i in 0..2 * PAIRS {
        users.push(cluster.new_user(&format!("u{i}")).await);
    }
    let mut peers = Vec::new();
    // One at a time, so that the gateway, which balances on the clients it
    // handed each node, spreads them over both.
    for (i, (user, token)) in users.iter().enumerate() {
        let partner = users[i ^ 1].0;
        let options = ClientOptions {
            gateway: Some(gateway.to_string()),
            request_timeout: REQUEST_TIMEOUT,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..ClientOptions::new(token, "d")
        };
        let (client, mut events) = Client::connect(options).await.unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut seen = record.lock().unwrap();
                match event {
                    Event::Connected { node, .. } => seen.nodes.push(node),
                    Event::Disconnected { .. } => seen.disconnects += 1,
                    Event::Message {
                        conversation,
                        message,
                    } => seen.messages.push((conversation, message)),
                    _ => {}
                }
            }
        });
        let peer = Peer {
            user: *user,
            partner,
            client,
            seen,
        };
        wait_until(DEADLINE, "the client's first login", async || peer.node()).await;
        peers.push(peer);
    }

    let mut acked = exchange(&peers, "before").await;
    wait_delivered(&peers, &acked, "every message sent before the cut").await;

    let on_a: BTreeSet<usize> = (0..peers.len())
        .filter(|&i| peers[i].node().as_deref() == Some(node_a.as_str()))
        .collect();
    let logins_before: Vec<usize> = peers
        .iter()
        .map(|p| p.seen.lock().unwrap().nodes.len())
        .collect();
    eprintln!(
        "{} of {} clients on {ACCESS_A}, the rest on {ACCESS_B}; cutting {ACCESS_A}'s link",
        on_a.len(),
        peers.len()
    );
    assert!(
        !on_a.is_empty() && on_a.len() < peers.len(),
        "the gateway put every client on one node; the cut would test nothing"
    );
    network.cut(ACCESS_A);
    let cut_at = Instant::now();

    // Sent at once: the first sends of the clients on the cut host go down
    // a dead connection and must be made again after the move.
    for (chat, ids) in exchange(&peers, "after").await {
        acked.entry(chat).or_default().extend(ids);
    }
    let sent_after = cut_at.elapsed();
    let moved = wait_until(
        DEADLINE,
        "every client of the cut host to log in on the other",
        async || {
            on_a.iter()
                .all(|&i| {
                    let seen = peers[i].seen.lock().unwrap();
                    seen.nodes[logins_before[i]..].contains(&node_b)
                })
                .then(|| cut_at.elapsed())
        },
    )
    .await;
    wait_delivered(&peers, &acked, "every message, before and after the cut").await;
    eprintln!(
        "the cut host's clients all logged in on {ACCESS_B} within {:.1} s of the cut; \
         every send acknowledged within {:.1} s",
        moved.as_secs_f64(),
        sent_after.as_secs_f64()
    );

    let mut lost = 0;
    let mut duplicated = 0;
    for (i, peer) in peers.iter().enumerate() {
        let want = &acked[&conversation_key(peer.user, peer.partner)];
        let got = peer.chat();
        let ids: Vec<u64> = got.iter().map(|m| m.server_msg_id).collect();
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        lost += want.difference(&distinct).count();
        duplicated += ids.len() - distinct.len();
        assert_eq!(
            &distinct, want,
            "client {i}: the messages of its conversation, sent by either side"
        );
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (1..=want.len() as u64).collect();
        assert_eq!(seqs, expected, "client {i}: each seq once, in order");
        let seen = peer.seen.lock().unwrap();
        assert_eq!(
            seen.messages.len(),
            got.len(),
            "client {i}: no message outside its one conversation"
        );
        assert_eq!(
            seen.nodes.last(),
            Some(&node_b),
            "client {i} ends on the node that was not cut"
        );
        if on_a.contains(&i) {
            assert!(
                seen.disconnects > 0,
                "client {i} on the cut host noticed the loss"
            );
        }
    }
    eprintln!(
        "{} messages in {} conversations: {lost} lost, {duplicated} duplicated",
        acked.values().map(BTreeSet::len).sum::<usize>(),
        acked.len()
    );
    assert_eq!((lost, duplicated), (0, 0));

    // The server's side: nothing left to sync, and each message stored once.
    for (i, peer) in peers.iter().enumerate() {
        let chat = Conversation::User(peer.partner);
        let more = peer.client.sync(chat).await.unwrap();
        assert!(more.is_empty(), "client {i}: a sync found {more:?}");
        let history = peer.client.history(chat, 0, 100).await.unwrap();
        let mut stored: Vec<u64> = history.messages.iter().map(|m| m.server_msg_id).collect();
        stored.sort_unstable();
        let want: Vec<u64> = acked[&conversation_key(peer.user, peer.partner)]
            .iter()
            .copied()
            .collect();
        assert_eq!(stored, want, "client {i}: the stored conversation");
    }
}

/// A conversation's key: its two users, lower first.
fn conversation_key(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

/// Every client sends [`PER_PHASE`] messages to its partner, all clients at
/// once; returns the server ids of the acks, by conversation.
async fn exchange(peers: &[Peer], phase: &str) -> BTreeMap<(u64, u64), BTreeSet<u64>> {
    let mut sending = tokio::task::JoinSet::new();
    for peer in peers {
        let client = peer.client.clone();
        let (from, to) = (peer.user, peer.partner);
        let phase = phase.to_owned();
        sending.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_PHASE {
                let text = format!("{phase} {from}>{to} #{n}");
                ids.push(send_surely(&client, to, &text).await);
            }
            (conversation_key(from, to), ids)
        });
    }
    let mut acked: BTreeMap<(u64, u64), BTreeSet<u64>> = BTreeMap::new();
    while let Some(done) = sending.join_next().await {
        let (key, ids) = done.unwrap();
        acked.entry(key).or_default().extend(ids);
    }
    acked
}

/// Sends `text` to `to` until it is acknowledged, every try under the same
/// client_msg_id (the text), so that a try whose ack was lost with its
/// connection is not stored twice; returns the server's id.
async fn send_surely(client: &Client, to: u64, text: &str) -> u64 {
    for _ in 0..SEND_TRIES {
        match client
            .send_to_user_with_id(text.to_owned(), to, text.to_owned())
            .await
        {
            Ok(ack) => return ack.server_msg_id,
            Err(ClientError::Timeout(_)) => {}
            Err(err) => panic!("send {text:?}: {err}"),
        }
    }
    panic!("send {text:?}: no ack in {SEND_TRIES} tries of {REQUEST_TIMEOUT:?}");
}

/// Waits until both ends of every conversation hold each acknowledged
/// message of it.
async fn wait_delivered(peers: &[Peer], acked: &BTreeMap<(u64, u64), BTreeSet<u64>>, what: &str) {
    wait_until(DEADLINE, what, async || {
        peers
            .iter()
            .all(|peer| {
                let got: BTreeSet<u64> = peer.chat().iter().map(|m| m.server_msg_id).collect();
                acked[&conversation_key(peer.user, peer.partner)].is_subset(&got)
            })
            .then_some(())
    })
    .await;
}
