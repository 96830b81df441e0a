//! The Manager service over a real tonic server (ephemeral port) and a real
//! MongoDB-protocol server (`FISHCHAT_MONGO`), called through the generated client.

use std::net::SocketAddr;

use bytes::Bytes;
use fishchat_codec::ErrorCode;
use fishchat_e2e::unique_name;
use fishchat_inbox::{Conversation, MongoInbox, NewMessage};
use fishchat_manager::ManagerService;
use fishchat_rpc::manager::history_request::Peer;
use fishchat_rpc::manager::manager_client::ManagerClient;
use fishchat_rpc::manager::manager_server::ManagerServer;
use fishchat_rpc::manager::{AckRequest, CursorRequest, HistoryRequest, SyncRequest};
use fishchat_rpc::status::error_code;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

const USER: u64 = 1001;
const FRIEND: u64 = 1002;
const GROUP: u64 = 77;

/// Serves `inbox` on an ephemeral port until the returned sender is dropped or fired.
async fn start(inbox: MongoInbox) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ManagerServer::new(ManagerService::new(inbox)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server failed");
    });
    (addr, stop)
}

/// 250 messages for USER: every third one exchanged with FRIEND, the others in GROUP.
fn seed() -> Vec<(u64, NewMessage)> {
    (1..=250u64)
        .map(|id| {
            let conversation = if id % 3 == 0 {
                Conversation::ToUserId(USER)
            } else {
                Conversation::GroupId(GROUP)
            };
            let message = NewMessage {
                server_msg_id: id,
                from_user_id: FRIEND,
                conversation,
                body: Bytes::from(format!("m{id}")),
                timestamp_ms: 1_700_000_000_000,
                client_msg_id: format!("c{id}"),
            };
            (USER, message)
        })
        .collect()
}

fn cursor_request(device: &str) -> CursorRequest {
    CursorRequest {
        user_id: USER,
        device_id: device.into(),
    }
}

async fn sync_all(client: &mut ManagerClient<Channel>, limit: u32) -> Vec<(usize, bool, u64)> {
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let reply = client
            .sync(SyncRequest {
                user_id: USER,
                after_seq: after,
                limit,
            })
            .await
            .expect("sync")
            .into_inner();
        let first = reply.messages.first().map_or(0, |m| m.seq);
        assert_eq!(first, after + 1, "no gap, no overlap");
        after = reply.messages.last().map_or(after, |m| m.seq);
        pages.push((reply.messages.len(), reply.has_more, after));
        if !reply.has_more {
            return pages;
        }
    }
}

#[tokio::test]
async fn manager_serves_sync_cursors_unread_and_history() {
    let db = fishchat_e2e::mongo()
        .await
        .database(&unique_name("manager-test"));
    let inbox = MongoInbox::new(&db);
    inbox.ensure_indexes().await.unwrap();
    let seqs = inbox.store(&seed()).await.unwrap();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());

    let (addr, stop) = start(inbox).await;
    let mut client = ManagerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // Sync: pages of 100, 100, 50; a limit above the cap is capped, not refused.
    assert_eq!(
        sync_all(&mut client, 100).await,
        vec![(100, true, 100), (100, true, 200), (50, false, 250)]
    );
    let capped = client
        .sync(SyncRequest {
            user_id: USER,
            after_seq: 0,
            limit: 100_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.messages.len(), 250);
    assert!(!capped.has_more);
    let first = &capped.messages[0];
    assert_eq!((first.server_msg_id, first.from_user_id), (1, FRIEND));
    assert_eq!(first.body, Bytes::from("m1"));

    // Cursor and unread, ack forward only.
    let before = client
        .cursor(cursor_request("phone"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((before.acked_seq, before.max_seq), (0, 250));
    assert_eq!(
        client
            .unread(cursor_request("phone"))
            .await
            .unwrap()
            .into_inner()
            .count,
        250
    );
    for (ack, expected) in [(50, 50), (40, 50)] {
        let reply = client
            .ack(AckRequest {
                user_id: USER,
                device_id: "phone".into(),
                up_to_seq: ack,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((reply.acked_seq, reply.max_seq), (expected, 250));
    }
    assert_eq!(
        client
            .cursor(cursor_request("phone"))
            .await
            .unwrap()
            .into_inner()
            .acked_seq,
        50
    );
    assert_eq!(
        client
            .unread(cursor_request("phone"))
            .await
            .unwrap()
            .into_inner()
            .count,
        200
    );
    assert_eq!(
        client
            .unread(cursor_request("laptop"))
            .await
            .unwrap()
            .into_inner()
            .count,
        250
    );

    // History with FRIEND (83 messages: seqs 3, 6, ..., 249), newest first, paged backwards.
    let mut before_seq = 0;
    let mut seen = Vec::new();
    loop {
        let reply = client
            .history(HistoryRequest {
                user_id: USER,
                peer: Some(Peer::PeerUserId(FRIEND)),
                before_seq,
                limit: 40,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(reply.messages.iter().map(|m| m.seq));
        before_seq = reply.messages.last().map_or(before_seq, |m| m.seq);
        if !reply.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=83).rev().map(|n| n * 3).collect::<Vec<_>>());
    let group = client
        .history(HistoryRequest {
            user_id: USER,
            peer: Some(Peer::GroupId(GROUP)),
            before_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.messages[0].seq, 250);
    assert!(group.has_more);

    // Invalid input: INVALID_ARGUMENT carrying the client error code.
    let refusals = [
        client
            .sync(SyncRequest {
                user_id: 0,
                after_seq: 0,
                limit: 10,
            })
            .await
            .map(drop),
        client.unread(CursorRequest::default()).await.map(drop),
        client
            .ack(AckRequest {
                user_id: USER,
                device_id: String::new(),
                up_to_seq: 1,
            })
            .await
            .map(drop),
        client
            .history(HistoryRequest {
                user_id: USER,
                peer: None,
                before_seq: 0,
                limit: 10,
            })
            .await
            .map(drop),
        client
            .sync(SyncRequest {
                user_id: u64::MAX,
                after_seq: 0,
                limit: 10,
            })
            .await
            .map(drop),
    ];
    for refusal in refusals {
        let status = refusal.expect_err("accepted invalid input");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(error_code(&status), ErrorCode::InvalidArgument);
    }

    let _ = stop.send(());
    db.drop().await.unwrap();
}
