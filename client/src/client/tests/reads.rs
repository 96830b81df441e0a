//! Read positions (READ, READ_UPDATE) and history.

use super::*;

#[tokio::test]
async fn read_marks_a_conversation_and_keeps_the_position() {
    let mut server = FakeServer::start().await;
    let (client, _events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=4)).await;
    let (read, ()) = tokio::join!(client.read(BOB, 3), async {
        let (id, Body::Read(read)) = conn.recv().await else {
            panic!("expected READ");
        };
        assert_eq!((read.conversation, read.seq), (Some(BOB.into()), 3));
        let reply = pb::ReadReply {
            read_seq: 3,
            unread: 1,
        };
        conn.send(id, reply).await;
    });
    assert_eq!(read.unwrap().unread, 1);
    let bob = client.conversation(BOB).unwrap();
    assert_eq!((bob.read_seq, bob.unread), (3, 1));
}

#[tokio::test]
async fn read_updates_tell_own_devices_from_the_peers_receipt() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=5)).await;
    for seq in 1..=5 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    let update = |reader_user_id, read_seq| pb::ReadUpdate {
        conversation: Some(BOB.into()),
        reader_user_id,
        read_seq,
    };
    // Bob read what user 1 sent: a receipt; user 1's own position stays.
    conn.send(0, update(9, 2)).await;
    assert_eq!(
        next_event(&mut events).await,
        Some(Event::ReadReceipt {
            conversation: BOB,
            reader_user_id: 9,
            read_seq: 2
        })
    );
    assert_eq!(client.conversation(BOB).map(|i| i.read_seq), Some(0));
    // User 1 read on another device.
    conn.send(0, update(1, 4)).await;
    assert_eq!(
        next_event(&mut events).await,
        Some(Event::Read {
            conversation: BOB,
            read_seq: 4,
            unread: 1
        })
    );
    // A position that does not move is no news.
    conn.send(0, update(1, 3)).await;
    conn.push(messages(6..=6)).await;
    assert_eq!(next_seq(&mut events).await, 6);
    let bob = client.conversation(BOB).unwrap();
    assert_eq!((bob.read_seq, bob.unread), (4, 2));
}

#[tokio::test]
async fn history_asks_before_a_seq_and_survives_a_reconnect() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let paging = tokio::spawn({
        let client = client.clone();
        async move { client.history(BOB, 40, 2).await }
    });
    let expected = pb::HistoryRequest {
        conversation: Some(BOB.into()),
        before_seq: 40,
        limit: 2,
    };
    let (_, Body::History(asked)) = conn.recv().await else {
        panic!("expected HISTORY");
    };
    assert_eq!(asked, expected);
    drop(conn);
    expect_disconnected(&mut events).await;
    let mut conn = reconnected(&mut server, &mut events).await;
    conn.list_nothing().await;
    let (id, Body::History(asked)) = conn.recv().await else {
        panic!("expected HISTORY again");
    };
    assert_eq!(asked, expected);
    let reply = pb::HistoryReply {
        messages: vec![crate::testing::message(39), crate::testing::message(38)],
        has_more: true,
    };
    conn.send(id, reply.clone()).await;
    let history = crate::testing::within("the history", paging).await;
    assert_eq!(history.unwrap().unwrap(), reply);
}

#[tokio::test]
async fn a_refused_history_is_an_error_with_the_servers_code() {
    let mut server = FakeServer::start().await;
    let (client, _events, mut conn) = connect(&mut server).await;
    let (history, ()) = tokio::join!(client.history(Conversation::Group(5), 0, 0), async {
        let (id, _) = conn.recv().await;
        let error = pb::Error {
            code: ErrorCode::NotGroupMember as i32,
            message: "not a member".into(),
        };
        conn.send(id, error).await;
    });
    match history {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::NotGroupMember),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
