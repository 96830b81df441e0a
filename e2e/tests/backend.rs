//! The backend's invariants, with every service a real process on the real
//! servers. These tests play the access node: they call logic directly and
//! receive pushes on a stand-in access push server.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::ErrorCode;
use fishchat_codec::pb::{SendAck, SendToGroup, SendToUser, StoredMessage};
use fishchat_e2e::cluster::Cluster;
use fishchat_e2e::wait_until;
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::logic::{
    AckRequest, HeartbeatRequest, LoginRequest, LogoutRequest, Origin, SendToGroupRequest,
    SendToUserRequest, SyncRequest,
};
use fishchat_rpc::register::{
    CreateGroupRequest, CreateUserRequest, GroupMemberRequest, ListSessionsRequest,
};
use tonic::transport::Channel;

/// A user logged in through logic, as an access node would log it in.
struct User {
    id: u64,
}

/// A new login token of the user called `name` (its full, cluster-unique name).
async fn fresh_token(cluster: &Cluster, name: &str) -> String {
    cluster
        .register()
        .await
        .login(fishchat_rpc::register::LoginRequest {
            name: name.into(),
            password: "pw-123456".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

async fn user(cluster: &Cluster, name: &str) -> User {
    let mut register = cluster.register().await;
    let name = format!("{name}-{}", cluster.name);
    register
        .create_user(CreateUserRequest {
            name: name.clone(),
            password: "pw-123456".into(),
        })
        .await
        .unwrap();
    let token = fresh_token(cluster, &name).await;
    let reply = cluster
        .logic()
        .await
        .login(LoginRequest {
            token,
            device_id: "dev-1".into(),
            origin: Some(Origin {
                access_node_id: "stand-in".into(),
                push_addr: format!("http://{}", cluster.push_addr),
                conn_id: 1,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    User { id: reply.user_id }
}

async fn send(
    logic: &mut LogicClient<Channel>,
    from: u64,
    to: u64,
    cmid: &str,
    body: &[u8],
) -> SendAck {
    logic
        .send_to_user(SendToUserRequest {
            from_user_id: from,
            message: Some(SendToUser {
                client_msg_id: cmid.into(),
                to_user_id: to,
                body: Bytes::copy_from_slice(body),
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every message of `user`'s inbox, paging with `limit`.
async fn inbox(logic: &mut LogicClient<Channel>, user: u64, limit: u32) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    loop {
        let after_seq = all.last().map_or(0, |m: &StoredMessage| m.seq);
        let page = logic
            .sync(SyncRequest {
                user_id: user,
                after_seq,
                limit,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.messages);
        if !page.has_more {
            return all;
        }
    }
}

/// Waits until `user`'s inbox holds a message with client id `cmid`, then returns the inbox.
async fn inbox_once_holding(
    logic: &mut LogicClient<Channel>,
    user: u64,
    cmid: &str,
) -> Vec<StoredMessage> {
    wait_until(
        Duration::from_secs(60),
        &format!("{cmid} stored for {user}"),
        async || {
            let messages = inbox(logic, user, 500).await;
            messages
                .iter()
                .any(|m| m.client_msg_id == cmid)
                .then_some(messages)
        },
    )
    .await
}

fn assert_strictly_increasing(messages: &[StoredMessage]) {
    assert!(
        messages.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs not strictly increasing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p_thousand_messages_arrive_once_each_in_order() {
    let cluster = Cluster::start("p2p").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let ack = send(
            &mut logic,
            a.id,
            b.id,
            &format!("m{i}"),
            format!("hello {i}").as_bytes(),
        )
        .await;
        assert_eq!(ack.error, None, "send {i}");
        ids.push(ack.server_msg_id);
    }
    let got = inbox_once_holding(&mut logic, b.id, "m999").await;
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let cmids: Vec<String> = got.iter().map(|m| m.client_msg_id.clone()).collect();
    assert_eq!(
        cmids, want,
        "B's inbox: exactly the 1,000, once each, in send order"
    );
    assert_eq!(got.iter().map(|m| m.server_msg_id).collect::<Vec<_>>(), ids);
    assert!(got.iter().all(|m| m.from_user_id == a.id));
    assert_strictly_increasing(&got);
    let own = inbox_once_holding(&mut logic, a.id, "m999").await;
    assert_eq!(
        own.iter()
            .map(|m| m.client_msg_id.clone())
            .collect::<Vec<_>>(),
        want
    );
    assert_strictly_increasing(&own);
    // Stored, then pushed: the stand-in access node saw B's copies with their seqs.
    wait_until(Duration::from_secs(30), "1,000 pushes for B", async || {
        let pushed = cluster.pushed.all().await;
        let seqs: HashSet<u64> = pushed
            .iter()
            .filter(|(u, _)| *u == b.id)
            .map(|(_, m)| m.seq)
            .collect();
        (seqs.len() == 1000).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resending_a_client_id_returns_the_first_id_and_stores_once() {
    let cluster = Cluster::start("dedup").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    let first = send(&mut logic, a.id, b.id, "same", b"once").await;
    for _ in 0..3 {
        let again = send(&mut logic, a.id, b.id, "same", b"once").await;
        assert_eq!(again.server_msg_id, first.server_msg_id);
        assert_eq!(again.timestamp_ms, first.timestamp_ms);
    }
    // Resends go to the same partition as the sentinel, before it: once the
    // sentinel is stored, every resend has been processed.
    send(&mut logic, a.id, b.id, "sentinel", b"last").await;
    let got = inbox_once_holding(&mut logic, b.id, "sentinel").await;
    let cmids: Vec<&str> = got.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(cmids, ["same", "sentinel"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_send_reaches_every_member_once_and_outsiders_are_refused() {
    let cluster = Cluster::start("group").await;
    let mut members = Vec::new();
    for i in 0..50 {
        members.push(user(&cluster, &format!("m{i}")).await.id);
    }
    let outsider = user(&cluster, "outsider").await.id;
    let mut register = cluster.register().await;
    let group = register
        .create_group(CreateGroupRequest {
            owner_id: members[0],
            name: "fifty".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .group_id;
    for &member in &members[1..] {
        register
            .join_group(GroupMemberRequest {
                group_id: group,
                user_id: member,
            })
            .await
            .unwrap();
    }
    let mut logic = cluster.logic().await;
    let group_send = |from: u64, cmid: &str| SendToGroupRequest {
        from_user_id: from,
        message: Some(SendToGroup {
            client_msg_id: cmid.into(),
            group_id: group,
            body: Bytes::from_static(b"hi all"),
        }),
    };
    let refused = logic
        .send_to_group(group_send(outsider, "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.error.unwrap().code,
        ErrorCode::NotGroupMember as i32
    );
    let ack = logic
        .send_to_group(group_send(members[7], "g1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.error, None);
    for &member in &members {
        let got = inbox_once_holding(&mut logic, member, "g1").await;
        assert_eq!(got.len(), 1, "member {member}");
        assert_eq!(got[0].server_msg_id, ack.server_msg_id);
        assert_eq!(got[0].from_user_id, members[7]);
    }
    assert!(inbox(&mut logic, outsider, 100).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pages_and_cursors_move_forward_only() {
    let cluster = Cluster::start("paging").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    for i in 0..250 {
        assert_eq!(
            send(&mut logic, a.id, b.id, &format!("p{i}"), b"x")
                .await
                .error,
            None
        );
    }
    inbox_once_holding(&mut logic, b.id, "p249").await;
    let mut pages = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = logic
            .sync(SyncRequest {
                user_id: b.id,
                after_seq,
                limit: 100,
            })
            .await
            .unwrap()
            .into_inner();
        after_seq = page.messages.last().map_or(after_seq, |m| m.seq);
        pages.push((page.messages.len(), page.has_more));
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, [(100, true), (100, true), (50, false)]);

    let ack = |seq| AckRequest {
        user_id: b.id,
        device_id: "dev-1".into(),
        up_to_seq: seq,
    };
    assert_eq!(logic.ack(ack(50)).await.unwrap().into_inner().acked_seq, 50);
    assert_eq!(logic.ack(ack(40)).await.unwrap().into_inner().acked_seq, 50);
}

/// Sends, retrying under the same client id: what an access node does when a
/// logic node dies under a call. Dedup makes the retries safe. Until the dead
/// node's lease expires the balanced channel still picks it half the time,
/// and such a call fails at once (connection refused), so a retry soon lands
/// on the live node; 30 attempts make a spurious failure a one-in-10^9 event.
async fn send_retrying(
    logic: &mut LogicClient<Channel>,
    from: u64,
    to: u64,
    cmid: &str,
) -> SendAck {
    for attempt in 1..=30 {
        let request = SendToUserRequest {
            from_user_id: from,
            message: Some(SendToUser {
                client_msg_id: cmid.into(),
                to_user_id: to,
                body: Bytes::from_static(b"x"),
            }),
        };
        let call = tokio::time::timeout(Duration::from_secs(5), logic.send_to_user(request));
        match call.await {
            Ok(Ok(ack)) if ack.get_ref().error.is_none() => return ack.into_inner(),
            other if attempt == 30 => panic!("send {cmid} failed 30 times: {other:?}"),
            _ => {}
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_codes_and_stores_nothing() {
    let cluster = Cluster::start_with("bad", &[("FISHCHAT_REGISTER_TOKEN_TTL_SECS", "3")]).await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    let code = |ack: SendAck| ack.error.map(|e| e.code);
    let big = vec![b'x'; 16 * 1024 + 1];
    assert_eq!(
        code(send(&mut logic, a.id, 1 << 40, "u", b"x").await),
        Some(ErrorCode::UnknownUser as i32)
    );
    assert_eq!(
        code(send(&mut logic, a.id, b.id, "e", b"").await),
        Some(ErrorCode::EmptyBody as i32)
    );
    assert_eq!(
        code(send(&mut logic, a.id, b.id, "o", &big).await),
        Some(ErrorCode::BodyTooLarge as i32)
    );

    let login = |token: String| LoginRequest {
        token,
        device_id: "d".into(),
        origin: Some(Origin::default()),
    };
    let status = logic.login(login("not-a-token".into())).await.unwrap_err();
    assert_eq!(
        fishchat_rpc::status::error_code(&status),
        ErrorCode::BadToken
    );
    let token = fresh_token(&cluster, &format!("a-{}", cluster.name)).await;
    wait_until(Duration::from_secs(20), "the token to expire", async || {
        let status = logic.login(login(token.clone())).await.err()?;
        (fishchat_rpc::status::error_code(&status) == ErrorCode::TokenExpired).then_some(())
    })
    .await;

    send(&mut logic, a.id, b.id, "sentinel", b"ok").await;
    let got = inbox_once_holding(&mut logic, b.id, "sentinel").await;
    assert_eq!(got.len(), 1, "only the sentinel was stored for B");
    assert_eq!(
        inbox(&mut logic, a.id, 100).await.len(),
        1,
        "only the sentinel for A"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_logic_node_leaves_etcd_and_calls_keep_succeeding() {
    let mut cluster = Cluster::start("discovery").await;
    cluster.add_logic().await;
    let prefix = format!("{}/logic/", cluster.namespace);
    let resolver =
        fishchat_discovery::Resolver::start_at(&[fishchat_e2e::etcd_endpoint()], &prefix, "logic")
            .await
            .unwrap();
    wait_until(
        Duration::from_secs(10),
        "two logic nodes in etcd",
        async || (resolver.nodes().len() == 2).then_some(()),
    )
    .await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = LogicClient::new(resolver.balanced_channel("grpc"));
    for i in 0..20 {
        send_retrying(&mut logic, a.id, b.id, &format!("before{i}")).await;
    }
    cluster.logic[0].0.kill9();
    let killed = std::time::Instant::now();
    for i in 0..50 {
        send_retrying(&mut logic, a.id, b.id, &format!("after{i}")).await;
    }
    wait_until(
        Duration::from_secs(20),
        "the killed node's key to vanish",
        async || (resolver.nodes().len() == 1).then_some(()),
    )
    .await;
    assert!(
        killed.elapsed() <= Duration::from_secs(16),
        "gone after {:?}",
        killed.elapsed()
    );
    let got = inbox_once_holding(&mut logic, b.id, "after49").await;
    assert_eq!(got.len(), 70, "every acknowledged message stored once");
}

/// How soon a restarted msg_job must be storing again. A static member restarted at once gets
/// its partitions back without a rebalance, and a member the broker has already expelled
/// rejoins an empty group, so either way the cost is the process's start (a debug build on a
/// loaded machine: a few seconds), well inside the 10 s the broker would otherwise wait for
/// the dead member's session.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// msg_job is killed with -9 in the middle of 10,000 messages and started again, at once or
/// only after the broker has expelled it from the group (`wait_for_expiry`): it resumes within
/// [`RESUME_WITHIN`], and every acknowledged message is stored exactly once, in order, in both
/// inboxes, and pushed to both users.
async fn msg_job_crash_loses_and_duplicates_nothing(test: &str, wait_for_expiry: bool) {
    let mut cluster = Cluster::start(test).await;
    const PAIRS: usize = 5;
    const EACH: usize = 2000;
    let mut pairs = Vec::new();
    for p in 0..PAIRS {
        pairs.push((
            user(&cluster, &format!("s{p}")).await.id,
            user(&cluster, &format!("r{p}")).await.id,
        ));
    }
    let senders: Vec<_> = pairs
        .iter()
        .map(|&(from, to)| {
            let addr = cluster.logic[0].1;
            tokio::spawn(async move {
                let mut logic = LogicClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap();
                for i in 0..EACH {
                    let ack = send(&mut logic, from, to, &format!("c{i}"), b"crash-test").await;
                    assert_eq!(ack.error, None);
                }
            })
        })
        .collect();
    let mut logic = cluster.logic().await;
    let first_recipient = pairs[0].1;
    wait_until(
        Duration::from_secs(60),
        "msg_job to be midway",
        async || (inbox(&mut logic, first_recipient, 500).await.len() >= 300).then_some(()),
    )
    .await;
    cluster.msg_job.kill9();
    if wait_for_expiry {
        let group = cluster.msg_job_group();
        wait_until(
            Duration::from_secs(60),
            "the broker to expel the killed member after its session timeout",
            async || (fishchat_e2e::kafka_group_members(&group).await == 0).then_some(()),
        )
        .await;
    }
    let stored_before = inbox(&mut logic, first_recipient, 500).await.len();
    cluster.msg_job.restart();
    let restarted = std::time::Instant::now();
    wait_until(
        RESUME_WITHIN,
        "the restarted msg_job to store again",
        async || {
            (inbox(&mut logic, first_recipient, 500).await.len() > stored_before).then_some(())
        },
    )
    .await;
    eprintln!(
        "msg_job resumed storing {:?} after its restart",
        restarted.elapsed()
    );

    for sender in senders {
        sender.await.unwrap();
    }
    let want: Vec<String> = (0..EACH).map(|i| format!("c{i}")).collect();
    let last = format!("c{}", EACH - 1);
    let mut stored = Vec::new();
    for &(from, to) in &pairs {
        for inbox_of in [to, from] {
            let got = inbox_once_holding(&mut logic, inbox_of, &last).await;
            let cmids: Vec<String> = got.iter().map(|m| m.client_msg_id.clone()).collect();
            assert_eq!(
                cmids, want,
                "inbox {inbox_of}: each message exactly once, in order"
            );
            assert_strictly_increasing(&got);
            stored.extend(got.iter().map(|m| (inbox_of, m.seq)));
        }
    }
    // Pushed after storing, so a push may repeat after the crash but none is missing.
    wait_until(
        Duration::from_secs(60),
        "every stored message to be pushed to its owner",
        async || {
            let pushed: HashSet<(u64, u64)> = cluster
                .pushed
                .all()
                .await
                .iter()
                .map(|(user, m)| (*user, m.seq))
                .collect();
            stored.iter().all(|s| pushed.contains(s)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn msg_job_killed_and_restarted_at_once_loses_and_duplicates_nothing() {
    msg_job_crash_loses_and_duplicates_nothing("crash", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn msg_job_restarted_after_its_session_expired_loses_and_duplicates_nothing() {
    msg_job_crash_loses_and_duplicates_nothing("crash-expired", true).await;
}

async fn sessions_of(cluster: &Cluster, user: u64) -> Vec<fishchat_rpc::register::Session> {
    cluster
        .register()
        .await
        .list_sessions(ListSessionsRequest {
            user_ids: vec![user],
        })
        .await
        .unwrap()
        .into_inner()
        .sessions
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_login_replaces_the_first_and_heartbeats_tell_which_is_current() {
    let cluster = Cluster::start("session").await;
    let a = user(&cluster, "a").await;
    let mut logic = cluster.logic().await;
    let origin = |conn_id| Origin {
        access_node_id: "stand-in".into(),
        push_addr: format!("http://{}", cluster.push_addr),
        conn_id,
    };
    let beat = |conn_id| HeartbeatRequest {
        user_id: a.id,
        device_id: "dev-1".into(),
        origin: Some(origin(conn_id)),
    };
    assert!(logic.heartbeat(beat(1)).await.unwrap().into_inner().current);

    let token = fresh_token(&cluster, &format!("a-{}", cluster.name)).await;
    let again = logic
        .login(LoginRequest {
            token,
            device_id: "dev-1".into(),
            origin: Some(origin(2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.user_id, a.id);
    assert_eq!(
        again.replaced,
        Some(origin(1)),
        "the first connection is to be kicked"
    );
    assert!(!logic.heartbeat(beat(1)).await.unwrap().into_inner().current);
    assert!(logic.heartbeat(beat(2)).await.unwrap().into_inner().current);

    // A late close of the replaced connection leaves the new session alone.
    let logout = |conn_id| LogoutRequest {
        user_id: a.id,
        device_id: "dev-1".into(),
        origin: Some(origin(conn_id)),
    };
    logic.logout(logout(1)).await.unwrap();
    let listed = sessions_of(&cluster, a.id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].conn_id, 2);
    logic.logout(logout(2)).await.unwrap();
    assert!(sessions_of(&cluster, a.id).await.is_empty());
}
