//! Realistic frames, at least one per command in command order, shared by the
//! round-trip test and the generator of docs/protocol.md. They follow one
//! story: Alice (user 1001) and Bob (user 1002) chat directly; Alice and Carol
//! (user 1003) are in group 7, Bob is not.

use bytes::Bytes;
use fishchat_codec::Body;
use fishchat_codec::pb::{self, conversation_ref::Id, stored_message::Conversation};

/// One example frame and what it shows.
pub struct Example {
    /// What the frame is, in the story, for the doc.
    pub note: &'static str,
    pub request_id: u32,
    pub body: Body,
}

const ALICE: u64 = 1001;
const BOB: u64 = 1002;
const CAROL: u64 = 1003;
const GROUP: u64 = 7;
const NOW_MS: i64 = 1_764_000_000_000;

fn peer(user_id: u64) -> Option<pb::ConversationRef> {
    Some(pb::ConversationRef {
        id: Some(Id::UserId(user_id)),
    })
}

fn group(group_id: u64) -> Option<pb::ConversationRef> {
    Some(pb::ConversationRef {
        id: Some(Id::GroupId(group_id)),
    })
}

/// Alice's message to bob, the 5th of their chat.
fn hi_bob() -> pb::StoredMessage {
    pb::StoredMessage {
        seq: 5,
        server_msg_id: 7_000_001,
        from_user_id: ALICE,
        conversation: Some(Conversation::ToUserId(BOB)),
        body: Bytes::from_static(b"hi bob"),
        timestamp_ms: NOW_MS,
        client_msg_id: "a1".into(),
    }
}

/// A message of group 7, sent `ago_ms` before now.
fn in_group(
    seq: u64,
    from_user_id: u64,
    client_msg_id: &str,
    body: &'static [u8],
    ago_ms: i64,
) -> pb::StoredMessage {
    pb::StoredMessage {
        seq,
        server_msg_id: 6_999_990 + seq,
        from_user_id,
        conversation: Some(Conversation::GroupId(GROUP)),
        body: Bytes::from_static(body),
        timestamp_ms: NOW_MS - ago_ms,
        client_msg_id: client_msg_id.into(),
    }
}

fn example(note: &'static str, request_id: u32, body: impl Into<Body>) -> Example {
    Example {
        note,
        request_id,
        body: body.into(),
    }
}

/// Every example, in command order.
pub fn all() -> Vec<Example> {
    vec![
        example(
            "Bob's phone logs in",
            1,
            pb::LoginRequest {
                token: "tk-9f2c".into(),
                device_id: "phone".into(),
            },
        ),
        example(
            "The connection now acts as Bob (1002)",
            1,
            pb::LoginReply {
                user_id: BOB,
                heartbeat_interval_ms: 30_000,
                server_time_ms: NOW_MS,
            },
        ),
        example(
            "A heartbeat",
            2,
            pb::Ping {
                client_time_ms: NOW_MS,
            },
        ),
        example(
            "Its answer",
            2,
            pb::Pong {
                client_time_ms: NOW_MS,
                server_time_ms: NOW_MS + 3,
            },
        ),
        example(
            "Alice (1001) sends Bob (1002) a message",
            3,
            pb::SendToUser {
                client_msg_id: "a1".into(),
                to_user_id: BOB,
                body: Bytes::from_static(b"hi bob"),
            },
        ),
        example(
            "Alice sends group 7 a message",
            4,
            pb::SendToGroup {
                client_msg_id: "a2".into(),
                group_id: GROUP,
                body: Bytes::from_static(b"hi all"),
            },
        ),
        example(
            "Alice's message to Bob is accepted; its seq arrives with the PUSH",
            3,
            pb::SendAck {
                client_msg_id: "a1".into(),
                server_msg_id: 7_000_001,
                seq: 0,
                timestamp_ms: NOW_MS,
                error: None,
            },
        ),
        example(
            "Alice sent client_msg_id a1 again with another body: refused, nothing was sent",
            5,
            pb::SendAck {
                client_msg_id: "a1".into(),
                error: Some(pb::Error {
                    code: pb::ErrorCode::ResendMismatch as i32,
                    message: "client_msg_id a1 was sent with another target or body".into(),
                }),
                ..pb::SendAck::default()
            },
        ),
        example(
            "The 5th message of Alice and Bob's chat. These same bytes go to both: \
             Bob files it under 1001 (from_user_id), Alice under 1002 (to_user_id)",
            0,
            pb::Push {
                messages: vec![hi_bob()],
            },
        ),
        example(
            "Bob holds his chat with Alice up to seq 4 and asks for what follows",
            6,
            pb::SyncRequest {
                conversation: peer(ALICE),
                after_seq: 4,
                limit: 100,
            },
        ),
        example(
            "Seq 5, and nothing after it",
            6,
            pb::SyncReply {
                messages: vec![hi_bob()],
                has_more: false,
            },
        ),
        example("Bob logs out", 7, pb::Logout {}),
        example(
            "Bob's phone logged in on another connection; this one is closed next",
            0,
            pb::Kick {
                reason: pb::KickReason::DuplicateLogin as i32,
                text: "the same device logged in elsewhere".into(),
            },
        ),
        example(
            "Bob asked for the history of group 7, which he never joined",
            8,
            pb::Error {
                code: pb::ErrorCode::NotGroupMember as i32,
                message: "user 1002 is not a member of group 7".into(),
            },
        ),
        example("Where to connect", 1, pb::GatewayLookup {}),
        example(
            "The access node to use",
            1,
            pb::GatewayReply {
                access_addr: "127.0.0.1:7100".into(),
                node_id: "access-1".into(),
            },
        ),
        example(
            "After login Bob says what he holds: his chat with Alice up to seq 4, read up to 4",
            9,
            pb::SyncConversationsRequest {
                known: vec![pb::KnownConversation {
                    conversation: peer(ALICE),
                    seq: 4,
                    read_seq: 4,
                }],
                newest: 20,
                limit: 100,
                after: None,
            },
        ),
        example(
            "Only that chat changed: head 5, one unread, and the message Bob lacks \
             (no gap: seq 5 follows his 4)",
            9,
            pb::SyncConversationsReply {
                conversations: vec![pb::ConversationSummary {
                    conversation: peer(ALICE),
                    head_seq: 5,
                    read_seq: 4,
                    unread: 1,
                    messages: vec![hi_bob()],
                    has_gap: false,
                    first_seq: 1,
                }],
                has_more: false,
            },
        ),
        example(
            "Alice scrolls group 7 back: the newest two messages",
            10,
            pb::HistoryRequest {
                conversation: group(GROUP),
                before_seq: 0,
                limit: 2,
            },
        ),
        example(
            "Newest first; older ones remain (ask again before seq 8)",
            10,
            pb::HistoryReply {
                messages: vec![
                    in_group(9, CAROL, "c7", b"hi alice", 20_000),
                    in_group(8, ALICE, "a2", b"hi all", 60_000),
                ],
                has_more: true,
            },
        ),
        example(
            "Bob has read his chat with Alice up to seq 5",
            11,
            pb::ReadRequest {
                conversation: peer(ALICE),
                seq: 5,
            },
        ),
        example(
            "Bob's read position is now 5: nothing unread",
            11,
            pb::ReadReply {
                read_seq: 5,
                unread: 0,
            },
        ),
        example(
            "A read receipt to Alice's devices: Bob (1002) read their chat, which Alice sees \
             as 1002, up to seq 5 (Bob's other devices get it with conversation 1001)",
            0,
            pb::ReadUpdate {
                conversation: peer(BOB),
                reader_user_id: BOB,
                read_seq: 5,
            },
        ),
    ]
}
