//! The client against a scripted fake access node.

use std::time::Duration;

use fishchat_codec::pb;
use fishchat_codec::{Body, ErrorCode, KickReason};

use super::*;
use crate::event::Event;
use crate::testing::{FakeConn, FakeServer, message, messages, next_event, next_seq, within};

fn options(addr: &str) -> ClientOptions {
    let mut options = ClientOptions::new("tk", "dev");
    options.gateway = None;
    options.access = Some(addr.to_owned());
    options.request_timeout = Duration::from_secs(5);
    options.backoff_initial = Duration::from_millis(10);
    options.backoff_max = Duration::from_millis(50);
    options.auto_ack = false;
    options
}

/// Connects with `options`, logs in as user 1 with `last_acked`, and checks the Connected event.
async fn connect_with(
    server: &mut FakeServer,
    options: ClientOptions,
    last_acked: u64,
) -> (Client, Events, FakeConn) {
    let (connected, conn) = tokio::join!(Client::connect(options), async {
        let mut conn = server.accept().await;
        conn.login_as(1, last_acked, 0).await;
        conn
    });
    let (client, mut events) = connected.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        Some(Event::Connected {
            node: server.addr.clone(),
            user_id: 1
        })
    );
    (client, events, conn)
}

/// Connects and answers the first sync with nothing.
async fn connect(server: &mut FakeServer) -> (Client, Events, FakeConn) {
    let (client, events, mut conn) = connect_with(server, options(&server.addr), 0).await;
    conn.sync_empty(0).await;
    (client, events, conn)
}

/// Expects a reconnect: accepts, logs in, and answers the sync after `after_seq` with nothing.
async fn reconnected(server: &mut FakeServer, events: &mut Events) -> FakeConn {
    let mut conn = server.accept().await;
    conn.login().await;
    assert!(matches!(
        next_event(events).await,
        Some(Event::Connected { .. })
    ));
    conn
}

async fn expect_disconnected(events: &mut Events) -> String {
    match next_event(events).await {
        Some(Event::Disconnected { error }) => error,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_login_is_an_error_without_retrying() {
    let mut server = FakeServer::start().await;
    let (connected, ()) = tokio::join!(Client::connect(options(&server.addr)), async {
        server
            .accept()
            .await
            .refuse_login(ErrorCode::BadToken)
            .await;
    });
    match connected {
        Err(ClientError::Login { code, .. }) => assert_eq!(code, ErrorCode::BadToken),
        other => panic!("expected a login error, got {:?}", other.map(|_| ())),
    }
    assert!(server.nothing_accepted(), "a refused login must not retry");
}

#[tokio::test]
async fn login_reports_the_user_and_the_node() {
    let mut server = FakeServer::start().await;
    let (client, _events, _conn) = connect(&mut server).await;
    assert_eq!(client.user_id(), 1);
    assert_eq!(client.last_seen_seq(), 0);
}

#[tokio::test]
async fn the_gateway_names_the_node_to_connect_to() {
    let mut gateway = FakeServer::start().await;
    let mut access = FakeServer::start().await;
    let mut opts = options(&access.addr);
    opts.gateway = Some(gateway.addr.clone());
    let access_addr = access.addr.clone();
    let reply = pb::GatewayReply {
        access_addr,
        node_id: "node-7".into(),
    };
    let (connected, _conn) = tokio::join!(Client::connect(opts), async {
        answer_lookup(&mut gateway, reply).await;
        let mut conn = access.accept().await;
        conn.login().await;
        conn
    });
    let (_client, mut events) = connected.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        Some(Event::Connected {
            node: "node-7".into(),
            user_id: 1
        })
    );
}

/// Answers one GATEWAY_LOOKUP on the next gateway connection with `reply`.
async fn answer_lookup(gateway: &mut FakeServer, reply: impl Into<Body>) {
    let mut lookup = gateway.accept().await;
    let (id, body) = lookup.recv().await;
    assert!(matches!(body, Body::GatewayLookup(_)), "{body:?}");
    lookup.send(id, reply).await;
}

#[tokio::test]
async fn every_reconnect_asks_the_gateway_again() {
    let mut gateway = FakeServer::start().await;
    let mut first = FakeServer::start().await;
    let mut second = FakeServer::start().await;
    let mut opts = options(&first.addr);
    opts.gateway = Some(gateway.addr.clone());
    let node = |server: &FakeServer, id: &str| pb::GatewayReply {
        access_addr: server.addr.clone(),
        node_id: id.into(),
    };
    let (to_first, to_second) = (node(&first, "node-a"), node(&second, "node-b"));
    let (connected, mut conn) = tokio::join!(Client::connect(opts), async {
        answer_lookup(&mut gateway, to_first).await;
        let mut conn = first.accept().await;
        conn.login().await;
        conn
    });
    let (_client, mut events) = connected.unwrap();
    assert!(
        matches!(next_event(&mut events).await, Some(Event::Connected { node, .. }) if node == "node-a")
    );
    conn.sync_empty(0).await;
    conn.kick(KickReason::Reconnect).await;
    answer_lookup(&mut gateway, to_second).await;
    let mut conn = second.accept().await;
    conn.login().await;
    assert!(matches!(
        next_event(&mut events).await,
        Some(Event::Kicked { .. })
    ));
    assert!(
        matches!(next_event(&mut events).await, Some(Event::Connected { node, .. }) if node == "node-b")
    );
    conn.sync_empty(0).await;
}

#[tokio::test]
async fn a_gateway_without_nodes_fails_the_first_connect() {
    let mut gateway = FakeServer::start().await;
    let mut opts = options("unused:1");
    opts.gateway = Some(gateway.addr.clone());
    let unavailable = pb::Error {
        code: ErrorCode::Unavailable as i32,
        message: "no access node".into(),
    };
    let (connected, ()) = tokio::join!(
        Client::connect(opts),
        answer_lookup(&mut gateway, unavailable)
    );
    let err = connected.map(|_| ()).unwrap_err();
    assert!(matches!(err, ClientError::Gateway { .. }), "{err}");
    assert!(err.to_string().contains("no access node"), "{err}");
}

#[tokio::test]
async fn sync_pages_on_connect_and_resumes_after_a_reconnect() {
    let mut server = FakeServer::start().await;
    let opts = options(&server.addr);
    let (client, mut events, mut conn) = connect_with(&mut server, opts, 0).await;
    conn.sync(0, messages(1..=2), true).await;
    conn.sync(2, messages(3..=3), false).await;
    for seq in 1..=3 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    drop(conn);
    expect_disconnected(&mut events).await;
    let mut conn = reconnected(&mut server, &mut events).await;
    conn.sync(3, messages(4..=4), false).await;
    assert_eq!(next_seq(&mut events).await, 4);
    assert_eq!(client.last_seen_seq(), 4);
}

#[tokio::test]
async fn a_push_that_skips_ahead_syncs_the_gap_first() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=1)).await;
    assert_eq!(next_seq(&mut events).await, 1);
    conn.push(messages(3..=3)).await;
    conn.sync(1, messages(2..=3), false).await;
    assert_eq!(next_seq(&mut events).await, 2);
    assert_eq!(next_seq(&mut events).await, 3);
    assert_eq!(client.last_seen_seq(), 3);
}

#[tokio::test]
async fn pushes_during_a_sync_wait_for_one_more_round() {
    let mut server = FakeServer::start().await;
    let opts = options(&server.addr);
    let (_client, mut events, mut conn) = connect_with(&mut server, opts, 0).await;
    let (id, after) = conn.expect_sync().await;
    assert_eq!(after, 0);
    // Stored after the sync page was read: the page misses it, the push arrives first.
    conn.push(messages(3..=3)).await;
    conn.send(
        id,
        pb::SyncReply {
            messages: messages(1..=2),
            has_more: false,
        },
    )
    .await;
    conn.sync(2, messages(3..=3), false).await;
    for seq in 1..=3 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
}

#[tokio::test]
async fn re_pushed_seqs_are_dropped() {
    let mut server = FakeServer::start().await;
    let (_client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=2)).await;
    conn.push(messages(2..=3)).await;
    conn.push(messages(1..=1)).await;
    conn.push(messages(4..=4)).await;
    for seq in 1..=4 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
}

#[tokio::test]
async fn auto_ack_acknowledges_what_was_delivered() {
    let mut server = FakeServer::start().await;
    let mut opts = options(&server.addr);
    opts.auto_ack = true;
    let (client, mut events, mut conn) = connect_with(&mut server, opts, 0).await;
    conn.sync(0, messages(1..=2), false).await;
    conn.push(messages(3..=3)).await;
    for seq in 1..=3 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    // A manual ack is written too; it marks the point where the earlier acks were read.
    let (acked, ()) = tokio::join!(client.ack(3), async {
        while conn.acks.len() < 3 {
            let frame = conn.recv_any().await.unwrap();
            if let (_, Body::DeliveryAck(ack)) = frame {
                conn.acks.push(ack.up_to_seq);
            }
        }
    });
    acked.unwrap();
    assert_eq!(conn.acks, [2, 3, 3]);
}

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
    let mut resent = None;
    while resent.is_none() {
        match conn.recv().await {
            (id, Body::Sync(_)) => conn.send(id, pb::SyncReply::default()).await,
            (id, Body::SendToUser(send)) => resent = Some((id, send)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (id, send) = resent.unwrap();
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
    let (client, _events, mut conn) = connect_with(&mut server, opts, 0).await;
    conn.sync_empty(0).await;
    let sent = client.send_to_user(2, "x").await;
    assert!(matches!(sent, Err(ClientError::Timeout(_))), "{sent:?}");
}

#[tokio::test]
async fn duplicate_login_stops_the_client() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    conn.kick(KickReason::DuplicateLogin).await;
    drop(conn);
    assert!(matches!(
        next_event(&mut events).await,
        Some(Event::Kicked {
            reason: KickReason::DuplicateLogin,
            ..
        })
    ));
    assert_eq!(next_event(&mut events).await, None, "the client must stop");
    assert!(
        server.nothing_accepted(),
        "no reconnect after DUPLICATE_LOGIN"
    );
    assert!(matches!(client.sync().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_reconnect_kick_reconnects_and_syncs() {
    let mut server = FakeServer::start().await;
    let (_client, mut events, mut conn) = connect(&mut server).await;
    conn.push(messages(1..=1)).await;
    assert_eq!(next_seq(&mut events).await, 1);
    conn.kick(KickReason::Reconnect).await;
    assert!(matches!(
        next_event(&mut events).await,
        Some(Event::Kicked {
            reason: KickReason::Reconnect,
            ..
        })
    ));
    let mut conn = reconnected(&mut server, &mut events).await;
    conn.sync(1, messages(2..=2), false).await;
    assert_eq!(next_seq(&mut events).await, 2);
}

#[tokio::test]
async fn the_state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeServer::start().await;
    let mut opts = options(&server.addr);
    opts.state_file = Some(dir.path().join("state.json"));
    let (client, mut events, mut conn) = connect_with(&mut server, opts.clone(), 0).await;
    conn.sync(0, messages(1..=3), false).await;
    for seq in 1..=3 {
        assert_eq!(next_seq(&mut events).await, seq);
    }
    let (closed, logout) = tokio::join!(client.close(), conn.recv());
    let () = closed;
    assert!(matches!(logout.1, Body::Logout(_)));
    assert_eq!(next_event(&mut events).await, None);

    // A new process: the server knows no acks, the state file does.
    let (client, _events, mut conn) = connect_with(&mut server, opts.clone(), 0).await;
    conn.sync_empty(3).await;
    assert_eq!(client.last_seen_seq(), 3);
    // Another device of the same user starts from scratch.
    opts.device_id = "other".into();
    let (client, _events, mut conn) = connect_with(&mut server, opts, 0).await;
    conn.sync_empty(0).await;
    assert_eq!(client.last_seen_seq(), 0);
}

#[tokio::test]
async fn sync_returns_messages_instead_of_emitting_them() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let (synced, ()) = tokio::join!(client.sync(), async {
        conn.sync(0, messages(1..=2), true).await;
        conn.sync(2, messages(3..=3), false).await;
    });
    let seqs: Vec<u64> = synced.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(client.last_seen_seq(), 3);
    conn.push(vec![message(3), message(4)]).await;
    assert_eq!(
        next_seq(&mut events).await,
        4,
        "synced messages are not emitted again"
    );
}

#[tokio::test]
async fn a_malformed_frame_during_login_is_an_error() {
    let mut server = FakeServer::start().await;
    let (connected, ()) = tokio::join!(Client::connect(options(&server.addr)), async {
        let mut conn = server.accept().await;
        conn.recv().await;
        // Length 8, version 9: not a frame stream this client speaks.
        conn.send_raw(&[0, 0, 0, 8, 9, 0, 0, 2, 0, 0, 0, 1]).await;
    });
    let err = connected.map(|_| ()).unwrap_err();
    assert!(matches!(err, ClientError::Connection { .. }), "{err}");
}

#[tokio::test]
async fn a_malformed_frame_in_a_session_reconnects() {
    let mut server = FakeServer::start().await;
    let (_client, mut events, mut conn) = connect(&mut server).await;
    // A PUSH whose body is not a protobuf message.
    conn.send_raw(&[0, 0, 0, 10, 1, 0, 0, 8, 0, 0, 0, 0, 0xff, 0xff])
        .await;
    let error = expect_disconnected(&mut events).await;
    assert!(error.contains("Push"), "{error}");
    let mut conn = reconnected(&mut server, &mut events).await;
    // An unexpected frame is a protocol error too.
    conn.sync_empty(0).await;
    conn.send(0, pb::LoginReply::default()).await;
    let error = expect_disconnected(&mut events).await;
    assert!(error.contains("unexpected"), "{error}");
    reconnected(&mut server, &mut events).await;
}

#[tokio::test]
async fn a_silent_server_is_dead_after_three_heartbeats() {
    let mut server = FakeServer::start().await;
    let (connected, mut conn) = tokio::join!(Client::connect(options(&server.addr)), async {
        let mut conn = server.accept().await;
        conn.login_as(1, 0, 200).await;
        conn
    });
    let (_client, mut events) = connected.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Some(Event::Connected { .. })
    ));
    conn.sync_empty(0).await;
    // The client pings; nobody answers.
    let (_, ping) = conn.recv_any().await.unwrap();
    assert!(matches!(ping, Body::Ping(_)));
    let error = expect_disconnected(&mut events).await;
    assert!(error.contains("no frame"), "{error}");
    reconnected(&mut server, &mut events).await;
}

#[tokio::test]
async fn close_logs_out_and_ends_the_events() {
    let mut server = FakeServer::start().await;
    let (client, mut events, mut conn) = connect(&mut server).await;
    let other = client.clone();
    let ((), (_, logout)) = tokio::join!(client.close(), conn.recv());
    assert!(matches!(logout, Body::Logout(_)));
    assert_eq!(next_event(&mut events).await, None);
    assert!(matches!(
        other.send_to_user(2, "late").await,
        Err(ClientError::Closed)
    ));
}
