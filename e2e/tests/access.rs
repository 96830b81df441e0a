//! The access node as clients meet it, on a whole cluster of real processes:
//! bad input, deadlines, duplicate logins, slow consumers. The clients here
//! speak raw frames, so they can misbehave.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fishchat_client::Connection;
use fishchat_codec::pb;
use fishchat_codec::{Body, ErrorCode, KickReason};
use fishchat_e2e::cluster::Cluster;
use fishchat_e2e::wait_until;
use fishchat_rpc::logic::SyncRequest;
use fishchat_rpc::register::ListSessionsRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

use fishchat_e2e::login;

/// Every frame until the server closes the connection.
async fn until_closed(conn: &mut Connection) -> Vec<Body> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, conn.recv()).await {
            Ok(Ok((_, body))) => frames.push(body),
            Ok(Err(_)) => return frames,
            Err(_) => panic!("the server did not close the connection; got {frames:?}"),
        }
    }
}

fn error_codes(frames: &[Body]) -> Vec<ErrorCode> {
    frames
        .iter()
        .filter_map(|f| match f {
            Body::Error(e) => ErrorCode::try_from(e.code).ok(),
            _ => None,
        })
        .collect()
}

fn kick_reasons(frames: &[Body]) -> Vec<KickReason> {
    frames
        .iter()
        .filter_map(|f| match f {
            Body::Kick(k) => KickReason::try_from(k.reason).ok(),
            _ => None,
        })
        .collect()
}

async fn ping(conn: &mut Connection) {
    conn.send(77, &pb::Ping::default().into()).await.unwrap();
    match conn.recv().await.unwrap() {
        (77, Body::Pong(_)) => {}
        other => panic!("ping: {other:?}"),
    }
}

async fn send_to(conn: &mut Connection, request_id: u32, to: u64, body: Vec<u8>) {
    let send: Body = pb::SendToUser {
        client_msg_id: format!("m-{request_id}"),
        to_user_id: to,
        body: body.into(),
    }
    .into();
    conn.send(request_id, &send).await.unwrap();
}

async fn metrics(cluster: &Cluster, node: usize) -> String {
    let url = format!("http://{}/metrics", cluster.access[node].metrics);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_closed_and_other_connections_carry_on() {
    let mut cluster = Cluster::start("access-bad-input").await;
    cluster
        .add_access(&[("LOOPS", "1"), ("MAX_FRAME_LEN", "4096")])
        .await;
    let addr = cluster.access[0].client;
    let (sender, alice_token) = cluster.new_user("alice").await;
    let (bob, _) = cluster.new_user("bob").await;
    let mut bystander = login(addr, &alice_token, "laptop").await;

    // Garbage: a bad version byte.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 12, 9, 9, 9, 9, 0, 0, 0, 0, 1, 2, 3, 4])
        .await
        .unwrap();
    let frames = until_closed(&mut Connection::new(garbage)).await;
    assert_eq!(error_codes(&frames), [ErrorCode::BadFrame]);

    // Oversize: a claimed length far above the node's maximum.
    let mut oversize = TcpStream::connect(addr).await.unwrap();
    oversize
        .write_all(&[0x40, 0, 0, 0, 1, 0, 0, 5])
        .await
        .unwrap();
    let frames = until_closed(&mut Connection::new(oversize)).await;
    assert_eq!(error_codes(&frames), [ErrorCode::FrameTooLarge]);

    // Acting as another user: a SEND_TO_USER with an extra field 15 naming bob as the sender.
    let mut impostor = login(addr, &alice_token, "phone").await;
    let mut body = BytesMut::new();
    prost::Message::encode(
        &pb::SendToUser {
            client_msg_id: "forged".into(),
            to_user_id: bob,
            body: "from bob, honest".into(),
        },
        &mut body,
    )
    .unwrap();
    body.put_u8(15 << 3);
    body.put_u8(bob as u8);
    let mut frame = BytesMut::new();
    frame.put_u32(8 + body.len() as u32);
    frame.put_slice(&[1, 0, 0, 5, 0, 0, 0, 9]);
    frame.put_slice(&body);
    impostor.get_mut().write_all(&frame).await.unwrap();
    let frames = until_closed(&mut impostor).await;
    assert_eq!(error_codes(&frames), [ErrorCode::BadBody]);

    // The connection on the same loop is unaffected, and what it sends is stored.
    ping(&mut bystander).await;
    send_to(&mut bystander, 5, bob, b"hello".to_vec()).await;
    match bystander.recv().await.unwrap() {
        (5, Body::SendAck(ack)) => assert!(ack.error.is_none(), "{ack:?}"),
        other => panic!("{other:?}"),
    }
    let mut logic = cluster.logic().await;
    let inbox = wait_until(DEADLINE, "bob's message to be stored", async || {
        let reply = logic
            .sync(SyncRequest {
                user_id: bob,
                request: Some(pb::SyncRequest {
                    conversation: Some(pb::ConversationRef {
                        id: Some(pb::conversation_ref::Id::UserId(sender)),
                    }),
                    after_seq: 0,
                    limit: 100,
                }),
            })
            .await
            .ok()?
            .into_inner();
        (!reply.messages.is_empty()).then_some(reply.messages)
    })
    .await;
    let bodies: Vec<_> = inbox.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, ["hello"], "nothing forged reached bob's inbox");

    let text = metrics(&cluster, 0).await;
    assert!(text.contains("fishchat_access_connections 1"), "{text}");
    assert!(text.contains("fishchat_access_frames_in_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_are_closed_at_their_deadlines_and_sessions_removed() {
    let mut cluster = Cluster::start("access-deadlines").await;
    cluster
        .add_access(&[
            ("LOGIN_DEADLINE_MS", "500"),
            ("HEARTBEAT_INTERVAL_MS", "1000"),
        ])
        .await;
    let addr = cluster.access[0].client;
    let (carol, token) = cluster.new_user("carol").await;

    let mut anonymous = Connection::connect(addr).await.unwrap();
    let frames = until_closed(&mut anonymous).await;
    assert_eq!(kick_reasons(&frames), [KickReason::LoginTimeout]);

    let mut silent = login(addr, &token, "phone").await;
    let mut register = cluster.register().await;
    let sessions = register
        .list_sessions(ListSessionsRequest {
            user_ids: vec![carol],
        })
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "the login recorded a session");
    let frames = until_closed(&mut silent).await;
    assert_eq!(kick_reasons(&frames), [KickReason::HeartbeatTimeout]);
    wait_until(
        DEADLINE,
        "the closed connection's session to go",
        async || {
            let sessions = register
                .list_sessions(ListSessionsRequest {
                    user_ids: vec![carol],
                })
                .await
                .ok()?
                .into_inner()
                .sessions;
            sessions.is_empty().then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_sessions_go_once_its_etcd_key_does() {
    let mut cluster = Cluster::start_with(
        "access-dead-node",
        &[("FISHCHAT_REGISTER_DEAD_NODE_GRACE_MS", "500")],
    )
    .await;
    cluster.add_access(&[]).await;
    cluster.add_access(&[]).await;
    let (dana, dana_token) = cluster.new_user("dana").await;
    let (eve, eve_token) = cluster.new_user("eve").await;
    let _dana = login(cluster.access[0].client, &dana_token, "phone").await;
    let _eve = login(cluster.access[1].client, &eve_token, "phone").await;
    let mut register = cluster.register().await;
    let mut sessions_of = async |user: u64| {
        register
            .list_sessions(ListSessionsRequest {
                user_ids: vec![user],
            })
            .await
            .ok()
            .map(|reply| reply.into_inner().sessions.len())
    };
    assert_eq!(sessions_of(dana).await, Some(1));

    // Killed with -9, the node removes nothing itself; its etcd lease (10 s)
    // runs out, and register deletes its sessions after the grace.
    let killed = std::time::Instant::now();
    cluster.access[0].process.kill9();
    wait_until(DEADLINE, "the dead node's session to go", async || {
        (sessions_of(dana).await? == 0).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: the lease and the grace, no more"
    );
    assert_eq!(
        sessions_of(eve).await,
        Some(1),
        "the live node's session stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_login_of_a_device_kicks_the_first_on_any_node() {
    let mut cluster = Cluster::start("access-duplicate").await;
    cluster.add_access(&[]).await;
    cluster.add_access(&[]).await;
    let (a, b) = (cluster.access[0].client, cluster.access[1].client);
    let (_dave, token) = cluster.new_user("dave").await;

    let mut laptop = login(a, &token, "laptop").await;
    let mut first = login(a, &token, "phone").await;
    let mut second = login(a, &token, "phone").await;
    assert_eq!(
        kick_reasons(&until_closed(&mut first).await),
        [KickReason::DuplicateLogin],
        "replaced on the same node"
    );
    let _third = login(b, &token, "phone").await;
    assert_eq!(
        kick_reasons(&until_closed(&mut second).await),
        [KickReason::DuplicateLogin],
        "replaced from another node"
    );
    ping(&mut laptop).await;
}

/// Two logins of one device at the same moment, on one node and across two:
/// each time exactly one connection stays, and the other is kicked as a
/// duplicate, however their replies and kicks interleave.
#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_logins_of_a_device_leave_exactly_one_connection() {
    const TRIES: usize = 10;
    let mut cluster = Cluster::start("access-login-race").await;
    cluster.add_access(&[]).await;
    cluster.add_access(&[]).await;
    let (a, b) = (cluster.access[0].client, cluster.access[1].client);
    let (_erin, token) = cluster.new_user("erin").await;
    for attempt in 0..TRIES {
        let second_node = if attempt % 2 == 0 { a } else { b };
        let device = format!("phone-{attempt}");
        let (one, two) = tokio::join!(
            login(a, &token, &device),
            login(second_node, &token, &device)
        );
        // Whichever was replaced is kicked and closed; the other stays.
        let (mut one, mut two) = (one, two);
        let closed = tokio::select! {
            frames = until_closed(&mut one) => (0, frames),
            frames = until_closed(&mut two) => (1, frames),
        };
        assert_eq!(
            kick_reasons(&closed.1),
            [KickReason::DuplicateLogin],
            "try {attempt}: the replaced login is kicked as a duplicate"
        );
        let survivor = if closed.0 == 0 { &mut two } else { &mut one };
        ping(survivor).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_never_reads_is_kicked_and_memory_stays_bounded() {
    let mut cluster = Cluster::start("access-slow").await;
    // 640 sends as fast as the acks come: over the default send rate (200/s,
    // a burst of 400) whenever they take less than 1.2 s. That is not what
    // this test is about.
    cluster
        .add_access(&[
            ("MAX_SENDS_PER_SEC", "0"),
            ("MAX_SENDS_PER_USER_PER_SEC", "0"),
        ])
        .await;
    let addr = cluster.access[0].client;
    let (_erin, erin_token) = cluster.new_user("erin").await;
    let (frank, frank_token) = cluster.new_user("frank").await;
    let stalled = login(addr, &frank_token, "phone").await;
    let mut sender = login(addr, &erin_token, "phone").await;
    let rss_before = cluster.access[0].process.rss_bytes().unwrap();

    // 10 MB in 640 messages of 16,000 bytes, at most 16 unanswered at a time.
    let (total, size) = (640u32, 16_000usize);
    // The sender's own copies are pushed back to it too. It reads them as they come, and
    // sends only while at most 12 of them are unread, so that its own queue on the node
    // (at most 12 copies of 16 KB and some acks) stays under the 256 KiB cap: the sender is
    // a fast reader, only frank is the stalled one. It runs on its own, because the node
    // lingers only 2 s to write the kick to frank, and frank must read by then.
    let sending = tokio::spawn(async move {
        let (mut acked, mut sent, mut echoed) = (0u32, 0u32, 0u32);
        while acked < total {
            if sent < total && sent - acked < 16 && sent - echoed < 12 {
                sent += 1;
                send_to(&mut sender, sent, frank, vec![b'x'; size]).await;
                continue;
            }
            match sender.recv().await.unwrap() {
                (_, Body::SendAck(ack)) if ack.error.is_none() => acked += 1,
                (0, Body::Push(push)) => echoed += push.messages.len() as u32,
                other => panic!("{other:?}"),
            }
        }
    });
    wait_until(DEADLINE, "the stalled reader to be kicked", async || {
        let text = metrics(&cluster, 0).await;
        let kicked = text.lines().find_map(|line| {
            line.strip_prefix(r#"fishchat_access_kicks_total{reason="SLOW_CONSUMER"} "#)
        })?;
        (kicked.trim().parse::<u64>().ok()? > 0).then_some(())
    })
    .await;
    // What reached the stalled reader ends with the kick.
    let mut stalled = stalled;
    let frames = until_closed(&mut stalled).await;
    assert_eq!(kick_reasons(&frames), [KickReason::SlowConsumer]);
    sending.await.unwrap();
    let rss_after = cluster.access[0].process.rss_bytes().unwrap();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!("access RSS {rss_before} -> {rss_after} bytes while 10 MB went to a stalled reader");
    assert!(
        growth < 8 << 20,
        "the access node grew by {growth} bytes while 10 MB were pushed at a stalled reader"
    );
    ping(&mut login(addr, &frank_token, "phone").await).await;
}

/// The health status `addr` reports for `service` (by its full name).
async fn health_of(addr: SocketAddr, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(request)
        .await
        .unwrap_or_else(|status| panic!("health of {service} at {addr}: {status}"))
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_health_by_its_service_name() {
    let mut cluster = Cluster::start("health-names").await;
    cluster.add_access(&[]).await;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let services = [
        (cluster.register_addr, "fishchat.register.v1.Register"),
        (cluster.logic[0].1, "fishchat.logic.v1.Logic"),
        (cluster.access[0].push, "fishchat.access.v1.Access"),
    ];
    for (addr, service) in services {
        assert_eq!(health_of(addr, service).await, serving, "{service}");
    }
}
