//! The backend's invariants, with every service a real process on the real
//! servers. These tests play the access node: they call logic directly and
//! receive pushes on a stand-in access push server.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::ErrorCode;
use fishchat_codec::pb::{
    self, ConversationRef, ConversationSummary, KnownConversation, SendAck, SendToGroup,
    SendToUser, StoredMessage, conversation_ref::Id,
};
use fishchat_e2e::cluster::Cluster;
use fishchat_e2e::wait_until;
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::logic::{
    Heartbeat, HeartbeatBatch, LoginRequest, LogoutRequest, Origin, Outgoing, ReadRequest,
    SendBatch, SyncConversationsRequest, SyncRequest, outgoing,
};
use fishchat_rpc::register::{
    CreateGroupRequest, CreateUserRequest, GroupMemberRequest, ListSessionsRequest,
};
use fishchat_rpc::status::error_code;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use tonic::transport::Channel;

/// How long a message may take from its ack to its conversation on a busy
/// machine (debug builds, several clusters at once).
const STORED_WITHIN: Duration = Duration::from_secs(60);

/// Register calls in flight when a test creates many users or groups.
const IN_FLIGHT: usize = 8;

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

/// The connection `conn_id` of the stand-in access node.
fn origin(cluster: &Cluster, conn_id: u64) -> Origin {
    Origin {
        access_node_id: fishchat_e2e::cluster::STAND_IN.into(),
        push_addr: format!("http://{}", cluster.push_addr),
        conn_id,
    }
}

/// Logs the user called `name` (full name) in on `device` through logic, at
/// the stand-in access node, so that pushes to it reach [`Cluster::pushed`].
async fn log_in(cluster: &Cluster, name: &str, device: &str, conn_id: u64) -> u64 {
    let token = fresh_token(cluster, name).await;
    cluster
        .logic()
        .await
        .login(LoginRequest {
            token,
            device_id: device.into(),
            origin: Some(origin(cluster, conn_id)),
        })
        .await
        .unwrap()
        .into_inner()
        .user_id
}

/// Creates the user `name` (made unique to the cluster) and logs it in on `dev-1`.
async fn user(cluster: &Cluster, name: &str) -> User {
    let name = format!("{name}-{}", cluster.name);
    create_account(cluster, &name).await;
    User {
        id: log_in(cluster, &name, "dev-1", 1).await,
    }
}

/// Creates an account (full name) without logging it in; returns its id.
async fn create_account(cluster: &Cluster, name: &str) -> u64 {
    cluster
        .register()
        .await
        .create_user(CreateUserRequest {
            name: name.into(),
            password: "pw-123456".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user_id
}

/// A group created by `owner` through register.
async fn create_group(cluster: &Cluster, owner: u64, name: &str, open: bool) -> u64 {
    let group = cluster
        .register()
        .await
        .create_group(CreateGroupRequest {
            owner_id: owner,
            name: name.into(),
            open,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((group.owner_id, group.open), (owner, open));
    group.group_id
}

/// `user` joins the open `group`, and is a member at once.
async fn join(cluster: &Cluster, group: u64, user: u64) {
    let reply = cluster
        .register()
        .await
        .join_group(GroupMemberRequest {
            group_id: group,
            user_id: user,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.pending, "{user} joining the open group {group}");
}

/// The direct chat with `peer`, as the other party names it.
fn peer(peer: u64) -> ConversationRef {
    ConversationRef {
        id: Some(Id::UserId(peer)),
    }
}

/// A group conversation.
fn group_conv(group: u64) -> ConversationRef {
    ConversationRef {
        id: Some(Id::GroupId(group)),
    }
}

async fn send(
    logic: &mut LogicClient<Channel>,
    from: u64,
    to: u64,
    cmid: &str,
    body: &[u8],
) -> SendAck {
    let message = outgoing::Message::ToUser(SendToUser {
        client_msg_id: cmid.into(),
        to_user_id: to,
        body: Bytes::copy_from_slice(body),
    });
    send_one(logic, from, message).await.unwrap()
}

async fn send_group(
    logic: &mut LogicClient<Channel>,
    from: u64,
    group: u64,
    cmid: &str,
    body: &[u8],
) -> SendAck {
    let message = outgoing::Message::ToGroup(SendToGroup {
        client_msg_id: cmid.into(),
        group_id: group,
        body: Bytes::copy_from_slice(body),
    });
    send_one(logic, from, message).await.unwrap()
}

/// A batch of one send, as an access node makes it.
async fn send_one(
    logic: &mut LogicClient<Channel>,
    from: u64,
    message: outgoing::Message,
) -> Result<SendAck, tonic::Status> {
    let batch = SendBatch {
        sends: vec![Outgoing {
            from_user_id: from,
            message: Some(message),
        }],
    };
    let mut acks = logic.send(batch).await?.into_inner().acks;
    assert_eq!(acks.len(), 1, "one ack per send");
    Ok(acks.remove(0))
}

/// One SYNC page of `conversation` as `user` names it.
async fn sync_page(
    logic: &mut LogicClient<Channel>,
    user: u64,
    conversation: ConversationRef,
    after_seq: u64,
    limit: u32,
) -> Result<pb::SyncReply, tonic::Status> {
    logic
        .sync(SyncRequest {
            user_id: user,
            request: Some(pb::SyncRequest {
                conversation: Some(conversation),
                after_seq,
                limit,
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every message of `conversation` that `user` sees, paging with `limit`.
async fn conversation(
    logic: &mut LogicClient<Channel>,
    user: u64,
    conversation: ConversationRef,
    limit: u32,
) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    loop {
        let after_seq = all.last().map_or(0, |m: &StoredMessage| m.seq);
        let page = sync_page(logic, user, conversation, after_seq, limit)
            .await
            .unwrap();
        all.extend(page.messages);
        if !page.has_more {
            return all;
        }
    }
}

/// Waits until `user` sees a message with client id `cmid` in
/// `conversation`, then returns every message it sees there.
async fn conversation_holding(
    logic: &mut LogicClient<Channel>,
    user: u64,
    conv: ConversationRef,
    cmid: &str,
) -> Vec<StoredMessage> {
    wait_until(
        STORED_WITHIN,
        &format!("{cmid} stored in {conv:?} for {user}"),
        async || {
            let messages = conversation(logic, user, conv, 500).await;
            messages
                .iter()
                .any(|m| m.client_msg_id == cmid)
                .then_some(messages)
        },
    )
    .await
}

fn cmids(messages: &[StoredMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.client_msg_id.as_str()).collect()
}

/// A conversation's seqs are exactly 1, 2, 3, ...: no gap, no repeat, in order.
fn assert_seqs_from_one(messages: &[StoredMessage], what: &str) {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = (1..=messages.len() as u64).collect();
    assert_eq!(seqs, want, "{what}: seqs 1..=n without a gap");
}

/// Every conversation of `user` that differs from `known`, paging with `limit`.
async fn summaries(
    logic: &mut LogicClient<Channel>,
    user: u64,
    known: &[KnownConversation],
    limit: u32,
) -> Vec<ConversationSummary> {
    let mut all: Vec<ConversationSummary> = Vec::new();
    loop {
        let page = logic
            .sync_conversations(SyncConversationsRequest {
                user_id: user,
                request: Some(pb::SyncConversationsRequest {
                    known: known.to_vec(),
                    newest: 0,
                    limit,
                    after: all.last().and_then(|s| s.conversation),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.conversations.len() <= limit as usize,
            "a page of {} is above the limit {limit}",
            page.conversations.len()
        );
        all.extend(page.conversations);
        if !page.has_more {
            return all;
        }
    }
}

/// `user`'s summary of `conv` once its head has reached `head`.
async fn summary_at_head(
    logic: &mut LogicClient<Channel>,
    user: u64,
    conv: ConversationRef,
    head: u64,
) -> ConversationSummary {
    wait_until(
        STORED_WITHIN,
        &format!("{user}'s summary of {conv:?} at head {head}"),
        async || {
            summaries(logic, user, &[], 500)
                .await
                .into_iter()
                .find(|s| s.conversation == Some(conv) && s.head_seq >= head)
        },
    )
    .await
}

async fn read(
    logic: &mut LogicClient<Channel>,
    user: u64,
    conversation: ConversationRef,
    seq: u64,
) -> Result<pb::ReadReply, tonic::Status> {
    logic
        .read(ReadRequest {
            user_id: user,
            request: Some(pb::ReadRequest {
                conversation: Some(conversation),
                seq,
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// What the stand-in access node was pushed for `user`.
async fn pushed_to(cluster: &Cluster, user: u64) -> Vec<StoredMessage> {
    cluster
        .pushed
        .all()
        .await
        .into_iter()
        .filter(|(u, _)| *u == user)
        .map(|(_, m)| m)
        .collect()
}

/// Waits until a message with client id `cmid` was pushed to `user`; returns
/// everything pushed to `user` so far.
async fn pushed_holding(cluster: &Cluster, user: u64, cmid: &str) -> Vec<StoredMessage> {
    wait_until(
        STORED_WITHIN,
        &format!("{cmid} pushed to {user}"),
        async || {
            let pushed = pushed_to(cluster, user).await;
            pushed
                .iter()
                .any(|m| m.client_msg_id == cmid)
                .then_some(pushed)
        },
    )
    .await
}

/// The documents of the cluster's message collection that match `filter`.
async fn stored_documents(cluster: &Cluster, filter: Document) -> u64 {
    fishchat_e2e::mongo()
        .await
        .database(&cluster.database)
        .collection::<Document>("chat_messages")
        .count_documents(filter)
        .await
        .unwrap()
}

/// The stored key of the direct chat between `a` and `b`.
fn direct_key(a: u64, b: u64) -> String {
    format!("d:{}:{}", a.min(b), a.max(b))
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
    let got = conversation_holding(&mut logic, b.id, peer(a.id), "m999").await;
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(
        cmids(&got),
        want,
        "B's chat with A: exactly the 1,000, once each, in send order"
    );
    assert_eq!(got.iter().map(|m| m.server_msg_id).collect::<Vec<_>>(), ids);
    assert!(got.iter().all(|m| m.from_user_id == a.id
        && m.conversation == Some(pb::stored_message::Conversation::ToUserId(b.id))));
    assert_seqs_from_one(&got, "B's view");
    // One conversation: A reads the very same messages at the very same seqs.
    let own = conversation(&mut logic, a.id, peer(b.id), 500).await;
    assert_eq!(own, got, "A's view of the chat is B's");
    assert_eq!(
        stored_documents(&cluster, doc! {}).await,
        1000,
        "each message stored once, not once per side"
    );
    // Stored, then pushed: the stand-in access node saw B's copies with their seqs.
    wait_until(STORED_WITHIN, "1,000 pushes for B", async || {
        let seqs: BTreeSet<u64> = pushed_to(&cluster, b.id)
            .await
            .iter()
            .map(|m| m.seq)
            .collect();
        (seqs == (1..=1000).collect()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resending_a_client_id_returns_the_first_id_and_stores_once() {
    let cluster = Cluster::start("dedup").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    let first = send(&mut logic, a.id, b.id, "same", b"once").await;
    assert_eq!(first.error, None);
    for _ in 0..3 {
        let again = send(&mut logic, a.id, b.id, "same", b"once").await;
        assert_eq!(again.error, None);
        assert_eq!(again.server_msg_id, first.server_msg_id);
        assert_eq!(again.timestamp_ms, first.timestamp_ms);
    }
    // Resends go to the same partition as the sentinel, before it: once the
    // sentinel is stored, every resend has been processed.
    send(&mut logic, a.id, b.id, "sentinel", b"last").await;
    let got = conversation_holding(&mut logic, b.id, peer(a.id), "sentinel").await;
    assert_eq!(cmids(&got), ["same", "sentinel"]);
    assert_eq!(got[0].server_msg_id, first.server_msg_id);
    assert_seqs_from_one(&got, "the chat");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_with_another_body_is_refused_and_neither_stored_nor_pushed() {
    let cluster = Cluster::start("mismatch-body").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    let first = send(&mut logic, a.id, b.id, "same", b"the first").await;
    assert_eq!(first.error, None);
    let refused = send(&mut logic, a.id, b.id, "same", b"another body").await;
    assert_eq!(
        refused.error.map(|e| e.code),
        Some(ErrorCode::ResendMismatch as i32)
    );
    assert_eq!(refused.server_msg_id, 0, "a refusal names no message");
    // The same partition as anything the refusal might have published, after it.
    let sentinel = send(&mut logic, a.id, b.id, "sentinel", b"last").await;
    let got = conversation_holding(&mut logic, b.id, peer(a.id), "sentinel").await;
    assert_eq!(cmids(&got), ["same", "sentinel"]);
    assert_eq!(got[0].body, Bytes::from_static(b"the first"));
    assert_eq!(
        stored_documents(&cluster, doc! { "conv": direct_key(a.id, b.id) }).await,
        2
    );
    let expected: HashSet<u64> = [first.server_msg_id, sentinel.server_msg_id].into();
    for side in [b.id, a.id] {
        let pushed = pushed_holding(&cluster, side, "sentinel").await;
        assert!(
            pushed
                .iter()
                .all(|m| expected.contains(&m.server_msg_id) && m.body != b"another body"[..]),
            "{side} was pushed something the refused resend made: {pushed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_to_another_recipient_is_refused_and_never_reaches_it() {
    let cluster = Cluster::start("mismatch-to").await;
    let a = user(&cluster, "a").await;
    let b = user(&cluster, "b").await;
    let c = user(&cluster, "c").await;
    let mut logic = cluster.logic().await;
    let first = send(&mut logic, a.id, b.id, "same", b"for b").await;
    assert_eq!(first.error, None);
    let refused = send(&mut logic, a.id, c.id, "same", b"for b").await;
    assert_eq!(
        refused.error.map(|e| e.code),
        Some(ErrorCode::ResendMismatch as i32)
    );
    // A sentinel in A's chat with C: anything the refusal had published to
    // that conversation would be stored and pushed before it.
    send(&mut logic, a.id, c.id, "sentinel", b"hi c").await;
    let got = conversation_holding(&mut logic, c.id, peer(a.id), "sentinel").await;
    assert_eq!(
        cmids(&got),
        ["sentinel"],
        "nothing stored for C but the sentinel"
    );
    assert_seqs_from_one(&got, "A's chat with C");
    let pushed = pushed_holding(&cluster, c.id, "sentinel").await;
    assert_eq!(
        cmids(&pushed),
        ["sentinel"],
        "C was pushed only the sentinel"
    );
    let to_b = conversation_holding(&mut logic, b.id, peer(a.id), "same").await;
    assert_eq!(cmids(&to_b), ["same"]);
    assert_eq!(to_b[0].server_msg_id, first.server_msg_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_resend_after_a_join_stores_nothing_and_the_newcomer_never_sees_it() {
    let cluster = Cluster::start("group-resend").await;
    let owner = user(&cluster, "owner").await;
    let member = user(&cluster, "member").await;
    let newcomer = user(&cluster, "newcomer").await;
    let group = create_group(&cluster, owner.id, "resend", true).await;
    join(&cluster, group, member.id).await;
    let mut logic = cluster.logic().await;
    let first = send_group(&mut logic, owner.id, group, "g-first", b"before").await;
    assert_eq!(first.error, None);
    conversation_holding(&mut logic, member.id, group_conv(group), "g-first").await;

    join(&cluster, group, newcomer.id).await;
    // logic learns of the join from register's announcement: once the
    // newcomer may send, logic's member list (the push's recipients) has it.
    let hello = wait_until(
        STORED_WITHIN,
        "logic to count the newcomer as a member",
        async || {
            let ack = send_group(&mut logic, newcomer.id, group, "n-hello", b"hi").await;
            match ack.error {
                None => Some(ack),
                Some(e) if e.code == ErrorCode::NotGroupMember as i32 => None,
                Some(e) => panic!("the newcomer's send failed: {e:?}"),
            }
        },
    )
    .await;

    let again = send_group(&mut logic, owner.id, group, "g-first", b"before").await;
    assert_eq!(again.error, None);
    assert_eq!(again.server_msg_id, first.server_msg_id);
    assert_eq!(again.timestamp_ms, first.timestamp_ms);
    // Same conversation, same partition, after the resend.
    send_group(&mut logic, owner.id, group, "g-sentinel", b"after").await;

    let all = conversation_holding(&mut logic, owner.id, group_conv(group), "g-sentinel").await;
    assert_eq!(cmids(&all), ["g-first", "n-hello", "g-sentinel"]);
    assert_seqs_from_one(&all, "the group");
    assert_eq!(all[1].server_msg_id, hello.server_msg_id);
    assert_eq!(
        stored_documents(&cluster, doc! { "conv": format!("g:{group}") }).await,
        3,
        "the resend stored nothing new"
    );
    let seen = conversation_holding(&mut logic, newcomer.id, group_conv(group), "g-sentinel").await;
    assert_eq!(
        cmids(&seen),
        ["n-hello", "g-sentinel"],
        "the newcomer sees from its join on"
    );
    let pushed = pushed_holding(&cluster, newcomer.id, "g-sentinel").await;
    assert!(
        pushed
            .iter()
            .all(|m| m.server_msg_id != first.server_msg_id),
        "the newcomer was pushed a message sent before it joined: {pushed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_send_reaches_every_member_once_and_outsiders_are_refused() {
    let cluster = Cluster::start("group").await;
    let mut members = Vec::new();
    for i in 0..50 {
        members.push(user(&cluster, &format!("m{i}")).await.id);
    }
    let outsider = user(&cluster, "outsider").await.id;
    let group = create_group(&cluster, members[0], "fifty", true).await;
    for &member in &members[1..] {
        join(&cluster, group, member).await;
    }
    let mut logic = cluster.logic().await;
    let refused = send_group(&mut logic, outsider, group, "x", b"hi all").await;
    assert_eq!(
        refused.error.unwrap().code,
        ErrorCode::NotGroupMember as i32
    );
    let ack = send_group(&mut logic, members[7], group, "g1", b"hi all").await;
    assert_eq!(ack.error, None);
    for &member in &members {
        let got = conversation_holding(&mut logic, member, group_conv(group), "g1").await;
        assert_eq!(got.len(), 1, "member {member}");
        assert_eq!(got[0].seq, 1);
        assert_eq!(got[0].server_msg_id, ack.server_msg_id);
        assert_eq!(got[0].from_user_id, members[7]);
    }
    wait_until(STORED_WITHIN, "g1 pushed to every member", async || {
        let pushed = cluster.pushed.all().await;
        let got: Vec<u64> = pushed
            .iter()
            .filter(|(_, m)| m.server_msg_id == ack.server_msg_id)
            .map(|(user, _)| *user)
            .collect();
        (got.len() >= members.len()).then_some(got)
    })
    .await;
    let mut pushed: Vec<u64> = cluster
        .pushed
        .all()
        .await
        .iter()
        .filter(|(_, m)| m.server_msg_id == ack.server_msg_id)
        .map(|(user, _)| *user)
        .collect();
    pushed.sort_unstable();
    let mut want = members.clone();
    want.sort_unstable();
    assert_eq!(
        pushed, want,
        "pushed once to each member, never to the outsider"
    );
    let status = sync_page(&mut logic, outsider, group_conv(group), 0, 100)
        .await
        .unwrap_err();
    assert_eq!(error_code(&status), ErrorCode::NotGroupMember);
    assert!(summaries(&mut logic, outsider, &[], 100).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pages_a_conversation_in_order() {
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
    conversation_holding(&mut logic, b.id, peer(a.id), "p249").await;
    for (side, conv) in [(b.id, peer(a.id)), (a.id, peer(b.id))] {
        let mut pages = Vec::new();
        let mut all = Vec::new();
        loop {
            let after_seq = all.last().map_or(0, |m: &StoredMessage| m.seq);
            let page = sync_page(&mut logic, side, conv, after_seq, 100)
                .await
                .unwrap();
            pages.push((page.messages.len(), page.has_more));
            all.extend(page.messages);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(pages, [(100, true), (100, true), (50, false)], "{side}");
        assert_seqs_from_one(&all, "paged");
        let want: Vec<String> = (0..250).map(|i| format!("p{i}")).collect();
        assert_eq!(cmids(&all), want);
        // From the middle: exactly what follows, nothing before.
        let tail = sync_page(&mut logic, side, conv, 237, 100).await.unwrap();
        assert_eq!(
            tail.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (238..=250).collect::<Vec<_>>()
        );
        assert!(!tail.has_more);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_moves_forward_only_is_capped_at_the_head_and_unread_is_exact() {
    let cluster = Cluster::start("read").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let mut logic = cluster.logic().await;
    for i in 0..10 {
        send(&mut logic, a.id, b.id, &format!("r{i}"), b"x").await;
    }
    let fresh = summary_at_head(&mut logic, b.id, peer(a.id), 10).await;
    assert_eq!((fresh.head_seq, fresh.read_seq, fresh.unread), (10, 0, 10));
    let forward = read(&mut logic, b.id, peer(a.id), 5).await.unwrap();
    assert_eq!((forward.read_seq, forward.unread), (5, 5));
    let back = read(&mut logic, b.id, peer(a.id), 3).await.unwrap();
    assert_eq!(
        (back.read_seq, back.unread),
        (5, 5),
        "a read never moves back"
    );
    let past = read(&mut logic, b.id, peer(a.id), 1000).await.unwrap();
    assert_eq!((past.read_seq, past.unread), (10, 0), "capped at the head");
    // The sender's own messages count as unread for it until it reads.
    let sender = summary_at_head(&mut logic, a.id, peer(b.id), 10).await;
    assert_eq!((sender.read_seq, sender.unread), (0, 10));

    for i in 10..12 {
        send(&mut logic, a.id, b.id, &format!("r{i}"), b"x").await;
    }
    let later = summary_at_head(&mut logic, b.id, peer(a.id), 12).await;
    assert_eq!(
        (later.head_seq, later.read_seq, later.unread),
        (12, 10, 2),
        "the read position stayed at the old head"
    );
    assert_eq!(
        cmids(&later.messages),
        cmids(&conversation(&mut logic, b.id, peer(a.id), 100).await)
    );
    // A client that holds everything up to 12 and knows the position hears nothing new.
    let known = [KnownConversation {
        conversation: Some(peer(a.id)),
        seq: 12,
        read_seq: 10,
    }];
    assert!(summaries(&mut logic, b.id, &known, 100).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unread_is_head_minus_read_under_concurrent_sends_and_reads() {
    const SENDERS: u64 = 3;
    const EACH: u64 = 100;
    const OWN: u64 = 50;
    const TOTAL: u64 = SENDERS * EACH + OWN;
    let cluster = Cluster::start("unread").await;
    let (a, b) = (user(&cluster, "a").await, user(&cluster, "b").await);
    let addr = cluster.logic[0].1;
    let connect = move || async move {
        LogicClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    };
    // A sends from three tasks, B from one: B's own messages count too.
    let mut sends = Vec::new();
    for t in 0..SENDERS {
        let (from, to) = (a.id, b.id);
        sends.push(tokio::spawn(async move {
            let mut logic = connect().await;
            for i in 0..EACH {
                let ack = send(&mut logic, from, to, &format!("a{t}-{i}"), b"x").await;
                assert_eq!(ack.error, None);
            }
        }));
    }
    let (from, to) = (b.id, a.id);
    sends.push(tokio::spawn(async move {
        let mut logic = connect().await;
        for i in 0..OWN {
            let ack = send(&mut logic, from, to, &format!("b{i}"), b"x").await;
            assert_eq!(ack.error, None);
        }
    }));
    // Two of B's devices read while the messages arrive, each a little
    // behind what it has seen (a different distance each), so the position
    // keeps moving and ends below the head.
    // They run on this task, beside the spawned senders.
    let reader = async |reader: u64, behind: u64| {
        let (me, other) = (b.id, a.id);
        let mut logic = connect().await;
        let mut seen = 0;
        let mut replies = Vec::new();
        wait_until(
            STORED_WITHIN,
            &format!("reader {reader} to see all {TOTAL}"),
            async || {
                let page = sync_page(&mut logic, me, peer(other), seen, 37)
                    .await
                    .unwrap();
                if let Some(last) = page.messages.last() {
                    assert_eq!(page.messages[0].seq, seen + 1, "a gap after {seen}");
                    seen = last.seq;
                    let reply = read(&mut logic, me, peer(other), seen.saturating_sub(behind))
                        .await
                        .unwrap();
                    replies.push(reply);
                }
                (seen == TOTAL).then_some(())
            },
        )
        .await;
        replies
    };
    let (near, far) = tokio::join!(reader(0, 7), reader(1, 40));
    for send in sends {
        send.await.unwrap();
    }
    let mut furthest = 0;
    for replies in [near, far] {
        assert!(
            replies.windows(2).all(|w| w[0].read_seq <= w[1].read_seq),
            "one device's reads went back: {replies:?}"
        );
        furthest = furthest.max(replies.last().unwrap().read_seq);
    }
    // Every read asked for at most 7 below the head, and a lagging head may
    // have capped some: the position is wherever the furthest read left it.
    assert!(
        furthest > 0 && furthest <= TOTAL - 7,
        "the reads ended at {furthest}"
    );

    let mut logic = cluster.logic().await;
    let reader = summary_at_head(&mut logic, b.id, peer(a.id), TOTAL).await;
    assert_eq!(
        (reader.head_seq, reader.read_seq, reader.unread),
        (TOTAL, furthest, TOTAL - furthest),
        "the reader's unread is head - read"
    );
    let unmoved = read(&mut logic, b.id, peer(a.id), 0).await.unwrap();
    assert_eq!(
        (unmoved.read_seq, unmoved.unread),
        (furthest, TOTAL - furthest)
    );
    let writer = summary_at_head(&mut logic, a.id, peer(b.id), TOTAL).await;
    assert_eq!(
        (writer.head_seq, writer.read_seq, writer.unread),
        (TOTAL, 0, TOTAL),
        "A never read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_in_a_direct_chat_reaches_the_peer_and_the_readers_devices() {
    let cluster = Cluster::start("receipts").await;
    let a = user(&cluster, "a").await;
    let b = user(&cluster, "b").await;
    // B's second device.
    log_in(&cluster, &format!("b-{}", cluster.name), "dev-2", 2).await;
    let mut logic = cluster.logic().await;
    for i in 0..3 {
        send(&mut logic, a.id, b.id, &format!("m{i}"), b"x").await;
    }
    summary_at_head(&mut logic, b.id, peer(a.id), 3).await;

    let updates_for = async |user: u64| -> Vec<pb::ReadUpdate> {
        cluster
            .pushed
            .read_updates()
            .await
            .into_iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, update)| update)
            .collect()
    };
    let receipt = |conversation_of: u64, read_seq| pb::ReadUpdate {
        conversation: Some(peer(conversation_of)),
        reader_user_id: b.id,
        read_seq,
    };

    assert_eq!(
        read(&mut logic, b.id, peer(a.id), 2)
            .await
            .unwrap()
            .read_seq,
        2
    );
    wait_until(STORED_WITHIN, "the receipt and B's update", async || {
        let to_a = updates_for(a.id).await;
        let to_b = updates_for(b.id).await;
        (to_a.contains(&receipt(b.id, 2)) && to_b.contains(&receipt(a.id, 2))).then_some(())
    })
    .await;
    // A read that moves nothing tells no one; the next one that moves does.
    assert_eq!(
        read(&mut logic, b.id, peer(a.id), 1)
            .await
            .unwrap()
            .read_seq,
        2
    );
    assert_eq!(
        read(&mut logic, b.id, peer(a.id), 3)
            .await
            .unwrap()
            .read_seq,
        3
    );
    wait_until(STORED_WITHIN, "the second receipt", async || {
        let to_a = updates_for(a.id).await;
        let to_b = updates_for(b.id).await;
        (to_a.contains(&receipt(b.id, 3)) && to_b.contains(&receipt(a.id, 3))).then_some(())
    })
    .await;
    let mut to_a = updates_for(a.id).await;
    to_a.sort_by_key(|u| u.read_seq);
    assert_eq!(
        to_a,
        [receipt(b.id, 2), receipt(b.id, 3)],
        "the peer's receipts"
    );
    let mut to_b = updates_for(b.id).await;
    to_b.sort_by_key(|u| u.read_seq);
    assert_eq!(
        to_b,
        [receipt(a.id, 2), receipt(a.id, 3)],
        "the reader's devices"
    );
    // The read position is shared by B's devices.
    let seen = summary_at_head(&mut logic, b.id, peer(a.id), 3).await;
    assert_eq!((seen.read_seq, seen.unread), (3, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_own_message_reaches_its_other_devices_and_its_conversations() {
    let cluster = Cluster::start("own").await;
    let a = user(&cluster, "a").await;
    log_in(&cluster, &format!("a-{}", cluster.name), "dev-2", 2).await;
    let b = user(&cluster, "b").await;
    let mut logic = cluster.logic().await;
    let ack = send(&mut logic, a.id, b.id, "mine", b"from a").await;
    assert_eq!(ack.error, None);
    let pushed = pushed_holding(&cluster, a.id, "mine").await;
    let own = pushed.iter().find(|m| m.client_msg_id == "mine").unwrap();
    assert_eq!(own.server_msg_id, ack.server_msg_id);
    assert_eq!(own.from_user_id, a.id);
    assert_eq!(
        own.conversation,
        Some(pb::stored_message::Conversation::ToUserId(b.id)),
        "filed under the peer by the sender"
    );
    let listed = summary_at_head(&mut logic, a.id, peer(b.id), 1).await;
    assert_eq!(
        (
            listed.head_seq,
            listed.read_seq,
            listed.unread,
            listed.first_seq
        ),
        (1, 0, 1, 1)
    );
    assert_eq!(listed.messages, std::slice::from_ref(own));
    assert!(!listed.has_gap);
    let theirs = summary_at_head(&mut logic, b.id, peer(a.id), 1).await;
    assert_eq!(
        theirs.messages,
        std::slice::from_ref(own),
        "the same message, the same seq"
    );
    assert_eq!(pushed_holding(&cluster, b.id, "mine").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_of_a_thousand_stores_each_message_once() {
    const MEMBERS: usize = 1000;
    const MESSAGES: usize = 20;
    let cluster = Cluster::start("big-group").await;
    let owner = user(&cluster, "owner").await.id;
    let group = create_group(&cluster, owner, "thousand", true).await;
    let cluster_ref = &cluster;
    let members: Vec<u64> = futures::stream::iter(1..MEMBERS)
        .map(|i| async move {
            let id = create_account(cluster_ref, &format!("u{i}-{}", cluster_ref.name)).await;
            join(cluster_ref, group, id).await;
            id
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let listed = cluster
        .register()
        .await
        .group_members(fishchat_rpc::register::GroupMembersRequest { group_id: group })
        .await
        .unwrap()
        .into_inner()
        .user_ids;
    assert_eq!(listed.len(), MEMBERS);

    let mut logic = cluster.logic().await;
    for i in 0..MESSAGES {
        let ack = send_group(&mut logic, owner, group, &format!("g{i}"), b"to all").await;
        assert_eq!(ack.error, None);
    }
    let last = format!("g{}", MESSAGES - 1);
    for reader in [owner, members[0], *members.last().unwrap()] {
        let got = conversation_holding(&mut logic, reader, group_conv(group), &last).await;
        assert_eq!(got.len(), MESSAGES, "{reader}");
        assert_seqs_from_one(&got, "the group");
    }
    assert_eq!(
        stored_documents(&cluster, doc! { "conv": format!("g:{group}") }).await,
        MESSAGES as u64,
        "one document per message, not per member"
    );
    assert_eq!(
        stored_documents(&cluster, doc! {}).await,
        MESSAGES as u64,
        "nothing else stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_conversations_returns_exactly_the_changed_ones_of_a_thousand() {
    const GROUPS: usize = 1000;
    const WITH_MESSAGES: usize = 50;
    let cluster = Cluster::start("many-convs").await;
    let me = user(&cluster, "me").await.id;
    let cluster_ref = &cluster;
    let mut groups: Vec<u64> = futures::stream::iter(0..GROUPS)
        .map(|i| async move { create_group(cluster_ref, me, &format!("c{i}"), false).await })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    groups.sort_unstable();
    let mut logic = cluster.logic().await;
    for &group in &groups[..WITH_MESSAGES] {
        let ack = send_group(&mut logic, me, group, &format!("first-{group}"), b"x").await;
        assert_eq!(ack.error, None);
    }

    // What a client holds after a full sync: every conversation, paged.
    let full = wait_until(STORED_WITHIN, "the first messages' heads", async || {
        let all = summaries(&mut logic, me, &[], 500).await;
        let with_head = all.iter().filter(|s| s.head_seq == 1).count();
        (with_head == WITH_MESSAGES).then_some(all)
    })
    .await;
    let listed: BTreeSet<u64> = full
        .iter()
        .map(|s| match s.conversation.and_then(|c| c.id) {
            Some(Id::GroupId(g)) => g,
            other => panic!("not one of the groups: {other:?}"),
        })
        .collect();
    assert_eq!(listed, groups.iter().copied().collect(), "each group once");
    let known: Vec<KnownConversation> = full
        .iter()
        .map(|s| KnownConversation {
            conversation: s.conversation,
            seq: s.head_seq,
            read_seq: s.read_seq,
        })
        .collect();
    assert!(
        summaries(&mut logic, me, &known, 500).await.is_empty(),
        "nothing changed yet"
    );

    // Ten change: four with messages get another, four without get their
    // first, two are read.
    let sent_to: Vec<u64> = groups[..4]
        .iter()
        .chain(&groups[WITH_MESSAGES..WITH_MESSAGES + 4])
        .copied()
        .collect();
    let read_in: Vec<u64> = groups[10..12].to_vec();
    for &group in &sent_to {
        let ack = send_group(&mut logic, me, group, &format!("new-{group}"), b"y").await;
        assert_eq!(ack.error, None);
    }
    for &group in &read_in {
        assert_eq!(
            read(&mut logic, me, group_conv(group), 1)
                .await
                .unwrap()
                .read_seq,
            1
        );
    }
    let changed: BTreeSet<u64> = sent_to.iter().chain(&read_in).copied().collect();
    let found = wait_until(STORED_WITHIN, "the ten changes", async || {
        let got = summaries(&mut logic, me, &known, 4).await;
        let ids: BTreeSet<u64> = got
            .iter()
            .filter_map(|s| match s.conversation.and_then(|c| c.id) {
                Some(Id::GroupId(g)) => Some(g),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), got.len(), "a conversation listed twice: {got:?}");
        assert!(
            ids.is_subset(&changed),
            "unchanged conversations listed: {ids:?}"
        );
        (ids == changed).then_some(got)
    })
    .await;
    let by_group: BTreeMap<u64, &ConversationSummary> = found
        .iter()
        .map(|s| match s.conversation.and_then(|c| c.id) {
            Some(Id::GroupId(g)) => (g, s),
            other => panic!("{other:?}"),
        })
        .collect();
    for (i, group) in sent_to.iter().enumerate() {
        let s = by_group[group];
        let head = if i < 4 { 2 } else { 1 };
        assert_eq!(
            (s.head_seq, s.read_seq, s.unread),
            (head, 0, head),
            "{group}"
        );
        assert_eq!(
            cmids(&s.messages),
            [format!("new-{group}")],
            "only what is new"
        );
        assert_eq!(s.messages[0].seq, head);
        assert!(!s.has_gap);
    }
    for group in &read_in {
        let s = by_group[group];
        assert_eq!((s.head_seq, s.read_seq, s.unread), (1, 1, 0), "{group}");
        assert!(s.messages.is_empty(), "nothing new to read in {group}");
    }
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
        let message = outgoing::Message::ToUser(SendToUser {
            client_msg_id: cmid.into(),
            to_user_id: to,
            body: Bytes::from_static(b"x"),
        });
        let call = tokio::time::timeout(Duration::from_secs(5), send_one(logic, from, message));
        match call.await {
            Ok(Ok(ack)) if ack.error.is_none() => return ack,
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
    assert_eq!(
        code(send(&mut logic, a.id, b.id, "", b"x").await),
        Some(ErrorCode::InvalidArgument as i32)
    );
    assert_eq!(
        code(send_group(&mut logic, a.id, 1 << 40, "g", b"x").await),
        Some(ErrorCode::UnknownGroup as i32)
    );

    // Reads that name no conversation, or one the user is not in.
    let nameless = logic
        .sync(SyncRequest {
            user_id: a.id,
            request: Some(pb::SyncRequest::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&nameless), ErrorCode::InvalidArgument);
    let nameless = logic
        .read(ReadRequest {
            user_id: a.id,
            request: Some(pb::ReadRequest::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&nameless), ErrorCode::InvalidArgument);
    let stranger = read(&mut logic, a.id, group_conv(1 << 40), 1)
        .await
        .unwrap_err();
    assert_eq!(error_code(&stranger), ErrorCode::NotGroupMember);

    let login = |token: String| LoginRequest {
        token,
        device_id: "d".into(),
        origin: Some(Origin::default()),
    };
    let status = logic.login(login("not-a-token".into())).await.unwrap_err();
    assert_eq!(error_code(&status), ErrorCode::BadToken);
    let token = fresh_token(&cluster, &format!("a-{}", cluster.name)).await;
    wait_until(Duration::from_secs(20), "the token to expire", async || {
        let status = logic.login(login(token.clone())).await.err()?;
        (error_code(&status) == ErrorCode::TokenExpired).then_some(())
    })
    .await;

    send(&mut logic, a.id, b.id, "sentinel", b"ok").await;
    let got = conversation_holding(&mut logic, b.id, peer(a.id), "sentinel").await;
    assert_eq!(cmids(&got), ["sentinel"], "only the sentinel was stored");
    assert_eq!(got[0].seq, 1);
    for (user, other) in [(a.id, b.id), (b.id, a.id)] {
        let listed = summary_at_head(&mut logic, user, peer(other), 1).await;
        assert_eq!(listed.head_seq, 1);
        assert_eq!(
            summaries(&mut logic, user, &[], 100).await.len(),
            1,
            "{user} has no conversation but the sentinel's"
        );
    }
    assert_eq!(stored_documents(&cluster, doc! {}).await, 1);
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
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(send_retrying(&mut logic, a.id, b.id, &format!("before{i}")).await);
    }
    cluster.logic[0].0.kill9();
    let killed = std::time::Instant::now();
    for i in 0..50 {
        acked.push(send_retrying(&mut logic, a.id, b.id, &format!("after{i}")).await);
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
    let got = conversation_holding(&mut logic, b.id, peer(a.id), "after49").await;
    let want: Vec<String> = (0..20)
        .map(|i| format!("before{i}"))
        .chain((0..50).map(|i| format!("after{i}")))
        .collect();
    assert_eq!(
        cmids(&got),
        want,
        "every acknowledged message stored once, in order"
    );
    assert_seqs_from_one(&got, "the chat");
    assert_eq!(
        got.iter().map(|m| m.server_msg_id).collect::<Vec<_>>(),
        acked
            .iter()
            .map(|ack| ack.server_msg_id)
            .collect::<Vec<_>>()
    );
}

/// How soon a restarted msg_job must be storing again. A static member restarted at once gets
/// its partitions back without a rebalance, and a member the broker has already expelled
/// rejoins an empty group, so either way the cost is the process's start (a debug build on a
/// loaded machine: a few seconds), well inside the 10 s the broker would otherwise wait for
/// the dead member's session.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// msg_job is killed with -9 in the middle of 10,000 messages and started again, at once or
/// only after the broker has expelled it from the group (`wait_for_expiry`): it resumes within
/// [`RESUME_WITHIN`], and every acknowledged message is stored exactly once in its
/// conversation, at seqs 1..n in send order, and pushed to both sides.
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
                let mut acked = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let ack = send(&mut logic, from, to, &format!("c{i}"), b"crash-test").await;
                    assert_eq!(ack.error, None);
                    acked.push(ack.server_msg_id);
                }
                acked
            })
        })
        .collect();
    let mut logic = cluster.logic().await;
    let (first_sender, first_recipient) = pairs[0];
    // How far the first pair's conversation is stored: its messages are 1..=n.
    let stored_after = async |logic: &mut LogicClient<Channel>, seq: u64| -> bool {
        !sync_page(logic, first_recipient, peer(first_sender), seq, 1)
            .await
            .unwrap()
            .messages
            .is_empty()
    };
    wait_until(STORED_WITHIN, "msg_job to be midway", async || {
        stored_after(&mut logic, 300).await.then_some(())
    })
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
    let stored_before = conversation(&mut logic, first_recipient, peer(first_sender), 500)
        .await
        .len() as u64;
    cluster.msg_job.restart();
    let restarted = std::time::Instant::now();
    wait_until(
        RESUME_WITHIN,
        "the restarted msg_job to store again",
        async || stored_after(&mut logic, stored_before).await.then_some(()),
    )
    .await;
    eprintln!(
        "msg_job resumed storing {:?} after its restart",
        restarted.elapsed()
    );

    let mut acked = Vec::new();
    for sender in senders {
        acked.push(sender.await.unwrap());
    }
    let want: Vec<String> = (0..EACH).map(|i| format!("c{i}")).collect();
    let last = format!("c{}", EACH - 1);
    let mut stored = Vec::new();
    for (&(from, to), acked) in pairs.iter().zip(&acked) {
        let got = conversation_holding(&mut logic, to, peer(from), &last).await;
        assert_eq!(
            cmids(&got),
            want,
            "chat {from}-{to}: each message exactly once, in order"
        );
        assert_seqs_from_one(&got, "after the crash");
        assert_eq!(
            &got.iter().map(|m| m.server_msg_id).collect::<Vec<_>>(),
            acked,
            "exactly the acknowledged messages"
        );
        assert_eq!(
            conversation(&mut logic, from, peer(to), 500).await,
            got,
            "the sender reads the same conversation"
        );
        assert_eq!(
            stored_documents(&cluster, doc! { "conv": direct_key(from, to) }).await,
            EACH as u64
        );
        for user in [to, from] {
            stored.extend(got.iter().map(|m| (user, m.server_msg_id, m.seq)));
        }
    }
    // Pushed after storing, so a push may repeat after the crash but none is missing.
    wait_until(
        STORED_WITHIN,
        "every stored message to be pushed to both sides",
        async || {
            let pushed: HashSet<(u64, u64, u64)> = cluster
                .pushed
                .all()
                .await
                .iter()
                .map(|(user, m)| (*user, m.server_msg_id, m.seq))
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
    let node = origin(&cluster, 0);
    let beats = |conn_ids: &[u64]| HeartbeatBatch {
        access_node_id: node.access_node_id.clone(),
        push_addr: node.push_addr.clone(),
        beats: conn_ids
            .iter()
            .map(|&conn_id| Heartbeat {
                user_id: a.id,
                device_id: "dev-1".into(),
                conn_id,
            })
            .collect(),
    };
    let current = logic.heartbeats(beats(&[1])).await.unwrap().into_inner();
    assert_eq!(current.current, [true]);

    let token = fresh_token(&cluster, &format!("a-{}", cluster.name)).await;
    let again = logic
        .login(LoginRequest {
            token,
            device_id: "dev-1".into(),
            origin: Some(origin(&cluster, 2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.user_id, a.id);
    assert_eq!(
        again.replaced,
        Some(origin(&cluster, 1)),
        "the first connection is to be kicked"
    );
    let current = logic.heartbeats(beats(&[1, 2])).await.unwrap().into_inner();
    assert_eq!(current.current, [false, true]);

    // A late close of the replaced connection leaves the new session alone.
    let logout = |conn_id| LogoutRequest {
        user_id: a.id,
        device_id: "dev-1".into(),
        origin: Some(origin(&cluster, conn_id)),
    };
    logic.logout(logout(1)).await.unwrap();
    let listed = sessions_of(&cluster, a.id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].conn_id, 2);
    logic.logout(logout(2)).await.unwrap();
    assert!(sessions_of(&cluster, a.id).await.is_empty());
}
