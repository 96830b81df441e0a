//! Catching up after a login, and in-order delivery of pushes, per conversation.

use std::collections::BTreeMap;

use fishchat_codec::pb::StoredMessage;

use super::*;
use crate::testing::{group_messages, message, next_message, within};

const GROUP: Conversation = Conversation::Group(5);
const CAROL: Conversation = Conversation::User(7);

/// Collects message events until `Synced`: the seqs per conversation, in arrival order.
async fn messages_until_synced(events: &mut Events) -> BTreeMap<Conversation, Vec<u64>> {
    let mut got: BTreeMap<Conversation, Vec<u64>> = BTreeMap::new();
    loop {
        match next_event(events).await {
            Some(Event::Message {
                conversation,
                message,
            }) => got.entry(conversation).or_default().push(message.seq),
            Some(Event::Synced) => return got,
            other => panic!("expected messages then Synced, got {other:?}"),
        }
    }
}

fn carol_message(seq: u64) -> StoredMessage {
    StoredMessage {
        from_user_id: 7,
        ..message(seq)
    }
}

#[tokio::test]
async fn the_listing_pages_and_a_summary_with_a_gap_is_synced_in_order() {
    let mut server = FakeServer::start().await;
    let opts = options(&server.addr);
    let (client, mut events, mut conn) = connect_with(&mut server, opts).await;
    let first = vec![
        summary(BOB, 3, 1, messages(1..=3), false),
        summary(GROUP, 50, 0, group_messages(5, 41..=50), true),
    ];
    let request = conn.list(first, true).await;
    assert_eq!(request.known, []);
    assert_eq!(request.after, None);
    let second = vec![summary(CAROL, 1, 0, vec![carol_message(1)], false)];
    let request = conn.list(second, false).await;
    assert_eq!(
        request.after,
        Some(GROUP.into()),
        "the next page starts after the last"
    );
    let known: Vec<_> = request.known.iter().map(|k| k.seq).collect();
    assert_eq!(
        known,
        [3, 0],
        "bob and the group, as the first page left them"
    );
    // The group's gap: every page after what the client holds, until no more.
    conn.sync(GROUP, 0, group_messages(5, 1..=30), true).await;
    conn.sync(GROUP, 30, group_messages(5, 31..=42), false)
        .await;
    let got = messages_until_synced(&mut events).await;
    assert_eq!(got[&BOB], [1, 2, 3]);
    assert_eq!(got[&CAROL], [1]);
    assert_eq!(
        got[&GROUP],
        (1..=50).collect::<Vec<_>>(),
        "each seq once, in order"
    );
    let unread: Vec<_> = client
        .conversations()
        .iter()
        .map(|i| (i.conversation, i.seq, i.unread))
        .collect();
    assert_eq!(unread, [(CAROL, 1, 1), (BOB, 3, 2), (GROUP, 50, 50)]);
}

#[tokio::test]
async fn a_push_that_skips_ahead_syncs_the_gap_first() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=1)).await;
    assert_eq!(next_seq(&mut events).await, 1);
    conn.push(messages(4..=4)).await;
    let (id, conversation, after) = conn.expect_sync().await;
    assert_eq!((conversation, after), (BOB, 1));
    // Other conversations go on meanwhile; 5 waits behind the gap with 4.
    conn.push(group_messages(5, 1..=1)).await;
    assert_eq!(next_message(&mut events).await, (GROUP, 1));
    conn.push(messages(5..=5)).await;
    let reply = pb::SyncReply {
        messages: messages(2..=3),
        has_more: false,
    };
    conn.send(id, reply).await;
    for seq in 2..=5 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    assert_eq!(client.conversation(BOB).map(|i| i.seq), Some(5));
}

#[tokio::test]
async fn re_pushed_seqs_are_dropped() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=2)).await;
    conn.push(messages(2..=3)).await;
    conn.push(messages(1..=1)).await;
    conn.push(messages(4..=4)).await;
    for seq in 1..=4 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    // A request the server sees next proves nothing else was asked in between.
    let (history, ()) = tokio::join!(client.history(BOB, 0, 10), async {
        let (id, body) = conn.recv().await;
        assert!(matches!(body, Body::History(_)), "{body:?}");
        conn.send(id, pb::HistoryReply::default()).await;
    });
    history.unwrap();
    conn.push(messages(3..=3)).await;
    conn.push(messages(5..=5)).await;
    assert_eq!(next_seq(&mut events).await, 5, "3 was delivered before");
}

#[tokio::test]
async fn a_push_during_the_listing_waits_for_its_summary() {
    let mut server = FakeServer::start().await;
    let opts = options(&server.addr);
    let (client, mut events, mut conn) = connect_with(&mut server, opts).await;
    let (id, _) = conn.expect_listing().await;
    // Stored after the listing was read: its summary ends at 3, the push brings 4.
    conn.push(messages(4..=4)).await;
    let reply = pb::SyncConversationsReply {
        conversations: vec![summary(BOB, 3, 0, messages(1..=3), false)],
        has_more: false,
    };
    conn.send(id, reply).await;
    let got = messages_until_synced(&mut events).await;
    assert_eq!(got[&BOB], [1, 2, 3, 4]);
    // No SYNC was needed: the next request the server sees is this one.
    let (read, ()) = tokio::join!(client.read(BOB, 4), async {
        let (id, body) = conn.recv().await;
        assert!(matches!(body, Body::Read(_)), "{body:?}");
        let reply = pb::ReadReply {
            read_seq: 4,
            unread: 0,
        };
        conn.send(id, reply).await;
    });
    assert_eq!(read.unwrap().read_seq, 4);
}

#[tokio::test]
async fn a_direct_message_sent_from_another_device_is_filed_under_the_peer() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let mine = StoredMessage {
        from_user_id: 1,
        conversation: Some(pb::stored_message::Conversation::ToUserId(9)),
        ..message(1)
    };
    conn.push(vec![mine]).await;
    conn.push(messages(2..=2)).await;
    assert_eq!(next_seq(&mut events).await, 1);
    assert_eq!(next_seq(&mut events).await, 2);
    let bob = client.conversation(BOB).unwrap();
    assert_eq!((bob.seq, bob.head_seq, bob.unread), (2, 2, 2));
    assert_eq!(client.conversation(Conversation::User(1)), None);
}

#[tokio::test]
async fn sync_returns_messages_instead_of_emitting_them() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let (synced, ()) = tokio::join!(client.sync(BOB), async {
        conn.sync(BOB, 0, messages(1..=2), true).await;
        conn.sync(BOB, 2, messages(3..=3), false).await;
    });
    let seqs: Vec<u64> = synced.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let (synced, ()) = tokio::join!(client.sync(BOB), conn.sync(BOB, 3, Vec::new(), false));
    assert_eq!(synced.unwrap(), []);
    conn.push(vec![message(3), message(4)]).await;
    assert_eq!(
        next_seq(&mut events).await,
        4,
        "synced messages are not emitted again"
    );
}

#[tokio::test]
async fn a_sync_cut_off_by_a_reconnect_goes_on_after_the_listing() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let syncing = tokio::spawn({
        let client = client.clone();
        async move { client.sync(GROUP).await }
    });
    let (_, conversation, _) = conn.expect_sync().await;
    assert_eq!(conversation, GROUP);
    drop(conn);
    expect_disconnected(&mut events).await;
    let mut conn = reconnected(&mut server, &mut events).await;
    conn.list_nothing().await;
    conn.sync(GROUP, 0, group_messages(5, 1..=2), false).await;
    let synced = within("the sync", syncing).await.unwrap().unwrap();
    assert_eq!(synced.len(), 2);
    expect_synced(&mut events).await;
}
