//! Sends: acks, refusals, retries and resends across reconnects.

use super::*;
use crate::testing::within;

#[tokio::test]
async fn a_send_in_flight_is_resent_with_its_id_after_the_connection_drops() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_to_user(2, "hello").await }
    });
    let first_id = match conn.recv().await {
        (_, Body::SendToUser(send)) => {
            assert_eq!((send.to_user_id, &send.body[..]), (2, &b"hello"[..]));
            send.client_msg_id
        }
        other => panic!("expected SEND_TO_USER, got {other:?}"),
    };
    drop(conn);
    expect_disconnected(&mut events).await;
    let mut conn = reconnected(&mut server, &mut events).await;
    // The listing goes first, then the resend.
    conn.list_nothing().await;
    let (id, Body::SendToUser(send)) = conn.recv().await else {
        panic!("expected SEND_TO_USER again");
    };
    assert_eq!(send.client_msg_id, first_id);
    let ack = pb::SendAck {
        client_msg_id: first_id.clone(),
        server_msg_id: 77,
        seq: 0,
        timestamp_ms: 5,
        error: None,
    };
    conn.send(id, ack.clone()).await;
    let acked = within("the send's ack", sending).await.unwrap().unwrap();
    assert_eq!(acked, ack);
}

#[tokio::test]
async fn a_refused_send_is_an_error_with_the_servers_code() {
    let mut server = FakeServer::start().await;
    let (client, _events, mut conn) = connect(&mut server).await;
    let (sent, ()) = tokio::join!(client.send_to_group(5, "hi"), async {
        let (id, body) = conn.recv().await;
        let Body::SendToGroup(send) = body else {
            panic!("expected SEND_TO_GROUP, got {body:?}");
        };
        let error = pb::Error {
            code: ErrorCode::NotGroupMember as i32,
            message: "not a member".into(),
        };
        let ack = pb::SendAck {
            client_msg_id: send.client_msg_id,
            error: Some(error),
            ..Default::default()
        };
        conn.send(id, ack).await;
    });
    match sent {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(
                (code, message.as_str()),
                (ErrorCode::NotGroupMember, "not a member")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unavailable_send_is_retried_with_the_same_id() {
    let mut server = FakeServer::start().await;
    let (client, _events, mut conn) = connect(&mut server).await;
    let (sent, ()) = tokio::join!(client.send_to_user(2, "x"), async {
        let (id, Body::SendToUser(first)) = conn.recv().await else {
            panic!("expected SEND_TO_USER");
        };
        let error = pb::Error {
            code: ErrorCode::Unavailable as i32,
            message: "later".into(),
        };
        conn.send(id, error).await;
        let (id, Body::SendToUser(again)) = conn.recv().await else {
            panic!("expected SEND_TO_USER again");
        };
        assert_eq!(again.client_msg_id, first.client_msg_id);
        let ack = pb::SendAck {
            client_msg_id: again.client_msg_id,
            server_msg_id: 8,
            ..Default::default()
        };
        conn.send(id, ack).await;
    });
    assert_eq!(sent.unwrap().server_msg_id, 8);
}

#[tokio::test]
async fn a_send_times_out_when_nothing_answers() {
    let mut server = FakeServer::start().await;
    let mut opts = options(&server.addr);
    opts.request_timeout = Duration::from_millis(500);
    let (client, _events, mut conn) = connect_with(&mut server, opts).await;
    conn.list_nothing().await;
    let sent = client.send_to_user(2, "x").await;
    assert!(matches!(sent, Err(ClientError::Timeout(_))), "{sent:?}");
}

#[tokio::test]
async fn a_resend_that_differs_from_the_first_is_its_own_error() {
    let mut server = FakeServer::start().await;
    let (client, _events, mut conn) = connect(&mut server).await;
    let send = client.send_to_user_with_id("m-1".into(), 2, "not what it was");
    let (sent, ()) = tokio::join!(send, async {
        let (id, Body::SendToUser(send)) = conn.recv().await else {
            panic!("expected SEND_TO_USER");
        };
        let error = pb::Error {
            code: ErrorCode::ResendMismatch as i32,
            message: "m-1 went to user 3".into(),
        };
        let ack = pb::SendAck {
            client_msg_id: send.client_msg_id,
            error: Some(error),
            ..Default::default()
        };
        conn.send(id, ack).await;
    });
    match sent {
        Err(ClientError::ResendMismatch {
            client_msg_id,
            message,
        }) => assert_eq!(
            (client_msg_id.as_str(), message.as_str()),
            ("m-1", "m-1 went to user 3")
        ),
        other => panic!("expected ResendMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_send_only_client_asks_for_nothing_after_login() {
    let mut server = FakeServer::start().await;
    let mut opts = options(&server.addr);
    opts.catch_up = false;
    let (client, mut events, mut conn) = connect_with(&mut server, opts).await;
    expect_synced(&mut events).await;
    // A push beyond a gap waits instead of starting a sync.
    conn.push(messages(3..=3)).await;
    let (sent, ()) = tokio::join!(client.send_to_user(9, "hi"), async {
        let (id, body) = conn.recv().await;
        let Body::SendToUser(send) = body else {
            panic!("expected SEND_TO_USER first, got {body:?}");
        };
        let ack = pb::SendAck {
            client_msg_id: send.client_msg_id,
            server_msg_id: 4,
            ..Default::default()
        };
        conn.send(id, ack).await;
    });
    assert_eq!(sent.unwrap().server_msg_id, 4);
    // The push was read before the ack; a SYNC it started would come before this.
    let (history, ()) = tokio::join!(client.history(BOB, 0, 1), async {
        let (id, body) = conn.recv().await;
        assert!(matches!(body, Body::History(_)), "{body:?}");
        conn.send(id, pb::HistoryReply::default()).await;
    });
    history.unwrap();
}
