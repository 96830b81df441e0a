//! The Manager service over a real tonic server (ephemeral port) and a real
//! MongoDB-protocol server (`FISHCHAT_MONGO`), called through the generated client.

use std::net::SocketAddr;

use bytes::Bytes;
use fishchat_codec::{ErrorCode, pb};
use fishchat_conversations::{ConversationStore, NewMessage, Target};
use fishchat_e2e::unique_name;
use fishchat_manager::ManagerService;
use fishchat_rpc::manager::manager_client::ManagerClient;
use fishchat_rpc::manager::manager_server::ManagerServer;
use fishchat_rpc::manager::{
    HistoryRequest, MembershipRequest, ReadRequest, SyncConversationsRequest, SyncRequest,
};
use fishchat_rpc::status::error_code;
use pb::conversation_ref::Id;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

const USER: u64 = 1001;
const FRIEND: u64 = 1002;
const STRANGER: u64 = 1003;
const GROUP: u64 = 77;

/// Serves `store` on an ephemeral port until the returned sender is dropped or fired.
async fn start(store: ConversationStore) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ManagerServer::new(ManagerService::new(store)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server failed");
    });
    (addr, stop)
}

/// 250 messages: every third one from FRIEND to USER, the others in GROUP.
fn seed() -> Vec<NewMessage> {
    (1..=250u64)
        .map(|id| NewMessage {
            server_msg_id: id,
            from_user_id: FRIEND,
            target: if id % 3 == 0 {
                Target::ToUserId(USER)
            } else {
                Target::GroupId(GROUP)
            },
            body: Bytes::from(format!("m{id}")),
            timestamp_ms: 1_700_000_000_000,
            client_msg_id: format!("c{id}"),
        })
        .collect()
}

fn conv(id: Id) -> Option<pb::ConversationRef> {
    Some(pb::ConversationRef { id: Some(id) })
}

fn sync(user: u64, id: Id, after_seq: u64, limit: u32) -> SyncRequest {
    SyncRequest {
        user_id: user,
        request: Some(pb::SyncRequest {
            conversation: conv(id),
            after_seq,
            limit,
        }),
    }
}

#[tokio::test]
async fn conversations_sync_history_and_read_over_grpc() {
    let db = fishchat_e2e::mongo()
        .await
        .database(&unique_name("manager-test"));
    let store = ConversationStore::new(&db);
    store.prepare().await.expect("prepare");
    let (addr, _stop) = start(store.clone()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ManagerClient::new(channel);
    for user in [USER, FRIEND] {
        let joined = client
            .joined(MembershipRequest {
                user_id: user,
                group_id: GROUP,
                epoch: 1,
            })
            .await
            .expect("joined")
            .into_inner();
        assert_eq!(joined.seq, 0);
    }
    store.store(&seed()).await.expect("seed");

    // Two conversations changed for a client that holds nothing.
    let reply = client
        .sync_conversations(SyncConversationsRequest {
            user_id: USER,
            request: Some(pb::SyncConversationsRequest::default()),
        })
        .await
        .expect("sync conversations")
        .into_inner();
    let heads: Vec<(Option<pb::ConversationRef>, u64, u64)> = reply
        .conversations
        .iter()
        .map(|s| (s.conversation, s.head_seq, s.unread))
        .collect();
    assert_eq!(
        heads,
        [
            (conv(Id::UserId(FRIEND)), 83, 83),
            (conv(Id::GroupId(GROUP)), 167, 167)
        ]
    );
    assert_eq!(reply.conversations[0].messages.len(), 20);
    assert!(reply.conversations[0].has_gap);

    // Sync a conversation page by page: seqs 1..=83 exactly once.
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .sync(sync(USER, Id::UserId(FRIEND), after, 30))
            .await
            .expect("sync")
            .into_inner();
        seqs.extend(page.messages.iter().map(|m| m.seq));
        after = seqs.last().copied().unwrap_or(0);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs, (1..=83).collect::<Vec<_>>());

    let history = client
        .history(HistoryRequest {
            user_id: USER,
            request: Some(pb::HistoryRequest {
                conversation: conv(Id::GroupId(GROUP)),
                before_seq: 100,
                limit: 3,
            }),
        })
        .await
        .expect("history")
        .into_inner();
    let newest_first: Vec<u64> = history.messages.iter().map(|m| m.seq).collect();
    assert_eq!((newest_first, history.has_more), (vec![99, 98, 97], true));

    let read = |seq| ReadRequest {
        user_id: USER,
        request: Some(pb::ReadRequest {
            conversation: conv(Id::UserId(FRIEND)),
            seq,
        }),
    };
    let moved = client.read(read(80)).await.expect("read").into_inner();
    assert!(moved.moved);
    assert_eq!(
        moved.reply,
        Some(pb::ReadReply {
            read_seq: 80,
            unread: 3
        })
    );
    let back = client.read(read(10)).await.expect("read").into_inner();
    assert!(!back.moved);
    assert_eq!(back.reply.map(|r| r.read_seq), Some(80));

    // A stranger reads no group; bad requests say why.
    let refused = client
        .sync(sync(STRANGER, Id::GroupId(GROUP), 0, 10))
        .await
        .expect_err("a stranger synced a group");
    assert_eq!(error_code(&refused), ErrorCode::NotGroupMember);
    let refused = client
        .sync(SyncRequest {
            user_id: USER,
            request: Some(pb::SyncRequest::default()),
        })
        .await
        .expect_err("no conversation named");
    assert_eq!(error_code(&refused), ErrorCode::InvalidArgument);

    // Leaving keeps what was visible, and nothing after.
    let left = client
        .left(MembershipRequest {
            user_id: USER,
            group_id: GROUP,
            epoch: 2,
        })
        .await
        .expect("left")
        .into_inner();
    assert_eq!(left.seq, 167);
    db.drop().await.expect("drop");
}
