//! Pushes after storing: what a fake access node gets, frame by frame and byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use fishchat_codec::{Command, DEFAULT_MAX_FRAME_LEN, encode_frame_to_bytes, pb};
use fishchat_e2e::unique_name;
use fishchat_msg_job::grpc_push::{GrpcPusher, SESSION_CAPACITY, SESSION_TTL, SessionCache};
use fishchat_msg_job::{ConvKey, MemoryStore, NewMessage};

use crate::common::{assert_stored, direct, expected, in_group, produce, record, start, topics};
use crate::fakes::{FakeAccess, FakeRegister, dead_addr, decode_push, key_of, session};

/// Users 1, 2 (two devices), 4, 5 and 6 are online on one fake node, user 3
/// on a dead one. Every stored message reaches the live node exactly once, in
/// a PUSH frame that is the codec's encoding of the stored messages at their
/// seqs; consecutive messages of a conversation with the same recipients
/// share a frame, and every frame goes to exactly its messages' recipients on
/// that node (a membership change within a batch starts a new frame); a group
/// message to many recipients there is one delivery naming them all. Nothing
/// is pushed before it is stored, and the dead node only costs a counted failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_message_is_pushed_once_per_conversation_and_batch_as_encoded() {
    let store = Arc::new(MemoryStore::new());
    let access = FakeAccess::checking(Arc::clone(&store));
    let node = access.serve();
    let online = [1_u64, 2, 4, 5, 6];
    let mut sessions: Vec<_> = online.iter().map(|&u| session(u, &node, u * 10)).collect();
    sessions.push(session(2, &node, 21));
    sessions.push(session(3, &dead_addr(), 30));
    let register = FakeRegister::new(sessions);
    let register_addr = register.serve();

    let topics = topics("mj-push", 1, 2).await;
    let mut sent: Vec<(NewMessage, Vec<u64>)> = Vec::new();
    for id in 1..=20 {
        let to = 1 + id % 2;
        sent.push((direct(id, 3, to), vec![to, 3]));
    }
    for id in 21..=24 {
        let (from, to) = if id % 2 == 0 { (1, 2) } else { (2, 1) };
        sent.push((direct(id, from, to), vec![to, from]));
    }
    // Membership changed between the first two: each goes to its own recipients only.
    sent.push((in_group(25, 1, 7), vec![1, 2]));
    sent.push((in_group(26, 2, 7), vec![2, 4]));
    sent.push((in_group(27, 3, 7), vec![1, 2, 3, 4, 5, 6]));
    let records: Vec<_> = sent.iter().map(|(m, r)| record(&topics[0], m, r)).collect();
    let recipients: HashMap<u64, &[u64]> = sent
        .iter()
        .map(|(m, r)| (m.server_msg_id, r.as_slice()))
        .collect();
    produce(&records).await;

    let sessions = Arc::new(SessionCache::new(SESSION_TTL, SESSION_CAPACITY));
    let pusher = GrpcPusher::new(&register_addr, sessions).expect("pusher");
    let running = start(
        &unique_name("mj-push"),
        &topics,
        Arc::clone(&store),
        pusher,
        100,
    );
    let stats = Arc::clone(&running.stats);
    // A batch is committed only after its push returned: every push is in.
    running.wait_committed(27).await;
    running.stop().await;

    assert_stored(&store, &expected(sent.iter().map(|(m, _)| m)));
    assert_eq!(access.violations(), Vec::<String>::new());
    let mut delivered: BTreeMap<ConvKey, Vec<u64>> = BTreeMap::new();
    let mut carried_by: HashMap<u64, Vec<Vec<u64>>> = HashMap::new();
    for request in access.requests() {
        let mut in_request = HashSet::new();
        for delivery in &request.deliveries {
            let push = decode_push(&delivery.frame).expect("a PUSH frame");
            let key = push
                .messages
                .first()
                .and_then(key_of)
                .expect("a frame with a message");
            in_request.insert(key);
            assert!(
                push.messages.iter().all(|m| key_of(m) == Some(key)),
                "a frame mixes conversations: {push:?}"
            );
            let stored = store.messages(key);
            let want = pb::Push {
                messages: push
                    .messages
                    .iter()
                    .map(|m| {
                        let at = usize::try_from(m.seq - 1).expect("seq");
                        stored.get(at).expect("a stored seq").stored(m.seq)
                    })
                    .collect(),
            };
            let encoded = encode_frame_to_bytes(Command::Push, 0, &want, DEFAULT_MAX_FRAME_LEN)
                .expect("encode");
            assert_eq!(
                delivery.frame, encoded,
                "{key}: not the stored messages as encoded"
            );
            for m in &push.messages {
                let mut own: Vec<u64> = recipients[&m.server_msg_id]
                    .iter()
                    .copied()
                    .filter(|user| online.contains(user))
                    .collect();
                own.sort_unstable();
                own.dedup();
                assert_eq!(
                    delivery.user_ids, own,
                    "{key}: message {} went to others than its recipients here",
                    m.server_msg_id
                );
            }
            delivered
                .entry(key)
                .or_default()
                .extend(push.messages.iter().map(|m| m.seq));
            for m in &push.messages {
                carried_by
                    .entry(m.server_msg_id)
                    .or_default()
                    .push(delivery.user_ids.clone());
            }
        }
    }
    for key in expected(sent.iter().map(|(m, _)| m)).keys() {
        let stored = store.messages(*key).len() as u64;
        assert_eq!(
            delivered.get(key),
            Some(&(1..=stored).collect::<Vec<_>>()),
            "{key}: each stored seq once, in order"
        );
    }
    assert_eq!(
        carried_by[&27],
        [vec![1, 2, 4, 5, 6]],
        "the wide group message"
    );
    assert_eq!(
        carried_by[&25],
        [vec![1, 2]],
        "before the membership change"
    );
    assert_eq!(carried_by[&26], [vec![2, 4]], "after the membership change");
    assert!(
        stats.push_failures.get() >= 1,
        "the dead node was not counted"
    );
}
