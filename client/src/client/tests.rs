//! The client against a scripted fake access node: logging in, the gateway,
//! reconnects and their causes. Catching up, sends, reads and the state file
//! have a module each.

mod catchup;
mod reads;
mod resume;
mod sends;

use std::time::Duration;

use fishchat_codec::pb;
use fishchat_codec::{Body, ErrorCode, KickReason};

use super::*;
use crate::event::Event;
use crate::testing::{BOB, FakeConn, FakeServer, messages, next_event, next_seq, summary};

fn options(addr: &str) -> ClientOptions {
    let mut options = ClientOptions::new("tk", "dev");
    options.gateway = None;
    options.access = Some(addr.to_owned());
    options.request_timeout = Duration::from_secs(5);
    options.backoff_initial = Duration::from_millis(10);
    options.backoff_max = Duration::from_millis(50);
    options
}

/// Connects with `options`, logs in as user 1, and checks the Connected event;
/// the listing is left to the caller.
async fn connect_with(
    server: &mut FakeServer,
    options: ClientOptions,
) -> (Client, Events, FakeConn) {
    let (connected, conn) = tokio::join!(Client::connect(options), async {
        let mut conn = server.accept().await;
        conn.login().await;
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

/// Connects, answers the listing with nothing, and waits for `Synced`.
async fn connect(server: &mut FakeServer) -> (Client, Events, FakeConn) {
    let (client, mut events, mut conn) = connect_with(server, options(&server.addr)).await;
    conn.list_nothing().await;
    expect_synced(&mut events).await;
    (client, events, conn)
}

async fn expect_synced(events: &mut Events) {
    assert_eq!(next_event(events).await, Some(Event::Synced));
}

/// Expects a reconnect: accepts and logs in; the listing is left to the caller.
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
    assert_eq!(client.conversations(), []);
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
    conn.list_nothing().await;
    expect_synced(&mut events).await;
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
    conn.list_nothing().await;
    expect_synced(&mut events).await;
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
    assert!(matches!(client.sync(BOB).await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_reconnect_kick_reconnects_and_lists_from_what_the_client_holds() {
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
    let changed = summary(BOB, 2, 0, messages(2..=2), false);
    let request = conn.list(vec![changed], false).await;
    let known = pb::KnownConversation {
        conversation: Some(BOB.into()),
        seq: 1,
        read_seq: 0,
    };
    assert_eq!(request.known, [known]);
    assert_eq!(next_seq(&mut events).await, 2);
    expect_synced(&mut events).await;
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
    conn.list_nothing().await;
    expect_synced(&mut events).await;
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
        conn.login_as(1, 200).await;
        conn
    });
    let (_client, mut events) = connected.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Some(Event::Connected { .. })
    ));
    conn.list_nothing().await;
    expect_synced(&mut events).await;
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
