//! A scripted stand-in for an access node (and a gateway), for unit tests of
//! the client's logic: each test drives the server side frame by frame.

use std::time::Duration;

use fishchat_codec::pb::{self, StoredMessage};
use fishchat_codec::{Body, ErrorCode, KickReason};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::connection::{Connection, ConnectionError};
use crate::conversation::Conversation;
use crate::event::{Event, Events};

/// How long a test waits for anything before failing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// Awaits `fut` or panics naming `what` after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// The next event, or a panic after the deadline.
pub(crate) async fn next_event(events: &mut Events) -> Option<Event> {
    within("an event", events.recv()).await
}

/// The next event, which must be a message: (its conversation, its seq).
pub(crate) async fn next_message(events: &mut Events) -> (Conversation, u64) {
    match next_event(events).await {
        Some(Event::Message {
            conversation,
            message,
        }) => (conversation, message.seq),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event, which must be a message of bob's: its seq.
pub(crate) async fn next_seq(events: &mut Events) -> u64 {
    let (conversation, seq) = next_message(events).await;
    assert_eq!(conversation, BOB, "seq {seq}");
    seq
}

/// Bob, the other user of the direct chat most tests use (the client is user 1).
pub(crate) const BOB: Conversation = Conversation::User(9);

/// A stored direct message with `seq` from user 9 (bob) to user 1.
pub(crate) fn message(seq: u64) -> StoredMessage {
    StoredMessage {
        seq,
        server_msg_id: 1000 + seq,
        from_user_id: 9,
        conversation: Some(pb::stored_message::Conversation::ToUserId(1)),
        body: format!("m{seq}").into_bytes().into(),
        timestamp_ms: 1,
        client_msg_id: format!("c{seq}"),
    }
}

/// Messages with seqs in `range` from bob to user 1.
pub(crate) fn messages(range: std::ops::RangeInclusive<u64>) -> Vec<StoredMessage> {
    range.map(message).collect()
}

/// Messages with seqs in `range` from user 9 to `group`.
pub(crate) fn group_messages(
    group: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Vec<StoredMessage> {
    range
        .map(|seq| StoredMessage {
            conversation: Some(pb::stored_message::Conversation::GroupId(group)),
            server_msg_id: group * 10_000 + seq,
            ..message(seq)
        })
        .collect()
}

/// A summary of `conversation` with its head, read position and newest messages.
pub(crate) fn summary(
    conversation: Conversation,
    head_seq: u64,
    read_seq: u64,
    messages: Vec<StoredMessage>,
    has_gap: bool,
) -> pb::ConversationSummary {
    pb::ConversationSummary {
        conversation: Some(conversation.into()),
        head_seq,
        read_seq,
        unread: head_seq - read_seq,
        messages,
        has_gap,
        first_seq: 1,
    }
}

/// A listening fake server; connections arrive in order.
pub(crate) struct FakeServer {
    pub(crate) addr: String,
    accepted: mpsc::UnboundedReceiver<FakeConn>,
}

impl FakeServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = FakeConn {
                    conn: Connection::new(stream),
                };
                if tx.send(conn).is_err() {
                    return;
                }
            }
        });
        Self { addr, accepted }
    }

    /// The next client connection.
    pub(crate) async fn accept(&mut self) -> FakeConn {
        within("a client connection", self.accepted.recv())
            .await
            .unwrap()
    }

    /// True when no connection arrived yet.
    pub(crate) fn nothing_accepted(&mut self) -> bool {
        self.accepted.try_recv().is_err()
    }
}

/// The server side of one client connection.
pub(crate) struct FakeConn {
    pub(crate) conn: Connection,
}

impl FakeConn {
    /// The next frame, whatever it is.
    pub(crate) async fn recv_any(&mut self) -> Result<(u32, Body), ConnectionError> {
        within("a frame from the client", self.conn.recv()).await
    }

    /// The next request, skipping PINGs.
    pub(crate) async fn recv(&mut self) -> (u32, Body) {
        loop {
            match self.recv_any().await.unwrap() {
                (_, Body::Ping(_)) => {}
                (id, body) => {
                    assert_ne!(id, 0, "request id 0 used for {body:?}");
                    return (id, body);
                }
            }
        }
    }

    pub(crate) async fn send(&mut self, id: u32, body: impl Into<Body>) {
        self.conn.send(id, &body.into()).await.unwrap();
    }

    /// Reads LOGIN and accepts it as `user_id`, heartbeat `heartbeat_ms`.
    pub(crate) async fn login_as(&mut self, user_id: u64, heartbeat_ms: u32) {
        let (id, body) = self.recv().await;
        assert!(
            matches!(body, Body::Login(_)),
            "expected LOGIN, got {body:?}"
        );
        let reply = pb::LoginReply {
            user_id,
            heartbeat_interval_ms: heartbeat_ms,
            server_time_ms: 0,
        };
        self.send(id, reply).await;
    }

    /// Reads LOGIN and accepts it as user 1.
    pub(crate) async fn login(&mut self) {
        self.login_as(1, 0).await;
    }

    /// Reads LOGIN and refuses it with `code`.
    pub(crate) async fn refuse_login(&mut self, code: ErrorCode) {
        let (id, body) = self.recv().await;
        assert!(
            matches!(body, Body::Login(_)),
            "expected LOGIN, got {body:?}"
        );
        self.send(
            id,
            pb::Error {
                code: code as i32,
                message: "no".into(),
            },
        )
        .await;
    }

    /// Reads a SYNC_CONVERSATIONS: (request id, request).
    pub(crate) async fn expect_listing(&mut self) -> (u32, pb::SyncConversationsRequest) {
        match self.recv().await {
            (id, Body::SyncConversations(request)) => (id, request),
            other => panic!("expected SYNC_CONVERSATIONS, got {other:?}"),
        }
    }

    /// Answers one SYNC_CONVERSATIONS page with `summaries`; returns the request.
    pub(crate) async fn list(
        &mut self,
        summaries: Vec<pb::ConversationSummary>,
        has_more: bool,
    ) -> pb::SyncConversationsRequest {
        let (id, request) = self.expect_listing().await;
        let reply = pb::SyncConversationsReply {
            conversations: summaries,
            has_more,
        };
        self.send(id, reply).await;
        request
    }

    /// Answers the listing of a connection with nothing changed.
    pub(crate) async fn list_nothing(&mut self) {
        self.list(Vec::new(), false).await;
    }

    /// Reads a SYNC: (request id, conversation, after_seq).
    pub(crate) async fn expect_sync(&mut self) -> (u32, Conversation, u64) {
        match self.recv().await {
            (id, Body::Sync(sync)) => {
                let conversation = sync.conversation.as_ref().map(Conversation::try_from);
                let Some(Ok(conversation)) = conversation else {
                    panic!("SYNC without a conversation: {sync:?}");
                };
                (id, conversation, sync.after_seq)
            }
            other => panic!("expected SYNC, got {other:?}"),
        }
    }

    /// Answers one SYNC of `conversation` after `after_seq` with `messages`.
    pub(crate) async fn sync(
        &mut self,
        conversation: Conversation,
        after_seq: u64,
        messages: Vec<StoredMessage>,
        has_more: bool,
    ) {
        let (id, asked, after) = self.expect_sync().await;
        assert_eq!((asked, after), (conversation, after_seq), "SYNC");
        self.send(id, pb::SyncReply { messages, has_more }).await;
    }

    pub(crate) async fn push(&mut self, messages: Vec<StoredMessage>) {
        self.send(0, pb::Push { messages }).await;
    }

    pub(crate) async fn kick(&mut self, reason: KickReason) {
        self.send(
            0,
            pb::Kick {
                reason: reason as i32,
                text: "bye".into(),
            },
        )
        .await;
    }

    /// Writes raw bytes, for frames no codec would produce.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.get_mut().write_all(bytes).await.unwrap();
    }
}
