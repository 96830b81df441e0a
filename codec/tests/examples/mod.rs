//! One realistic body per command, shared by the round-trip test and the
//! generator of docs/protocol.md.

use bytes::Bytes;
use fishchat_codec::Body;
use fishchat_codec::pb::{self, stored_message::Conversation};

/// Every command's example: (request id, body).
pub fn all() -> Vec<(u32, Body)> {
    let stored = pb::StoredMessage {
        seq: 42,
        server_msg_id: 7_000_001,
        from_user_id: 1001,
        conversation: Some(Conversation::ToUserId(1002)),
        body: Bytes::from_static(b"hi bob"),
        timestamp_ms: 1_764_000_000_000,
        client_msg_id: "a1".into(),
    };
    vec![
        (
            1,
            pb::LoginRequest {
                token: "tk-9f2c".into(),
                device_id: "phone".into(),
            }
            .into(),
        ),
        (
            1,
            pb::LoginReply {
                user_id: 1002,
                last_acked_seq: 41,
                max_seq: 42,
                heartbeat_interval_ms: 30_000,
                server_time_ms: 1_764_000_000_000,
            }
            .into(),
        ),
        (
            2,
            pb::Ping {
                client_time_ms: 1_764_000_000_000,
            }
            .into(),
        ),
        (
            2,
            pb::Pong {
                client_time_ms: 1_764_000_000_000,
                server_time_ms: 1_764_000_000_003,
            }
            .into(),
        ),
        (
            3,
            pb::SendToUser {
                client_msg_id: "a1".into(),
                to_user_id: 1002,
                body: Bytes::from_static(b"hi bob"),
            }
            .into(),
        ),
        (
            4,
            pb::SendToGroup {
                client_msg_id: "a2".into(),
                group_id: 7,
                body: Bytes::from_static(b"hi all"),
            }
            .into(),
        ),
        (
            3,
            pb::SendAck {
                client_msg_id: "a1".into(),
                server_msg_id: 7_000_001,
                seq: 0,
                timestamp_ms: 1_764_000_000_000,
                error: None,
            }
            .into(),
        ),
        (
            0,
            pb::Push {
                messages: vec![stored.clone()],
            }
            .into(),
        ),
        (5, pb::DeliveryAck { up_to_seq: 42 }.into()),
        (
            6,
            pb::SyncRequest {
                after_seq: 41,
                limit: 100,
            }
            .into(),
        ),
        (
            6,
            pb::SyncReply {
                messages: vec![stored],
                has_more: false,
            }
            .into(),
        ),
        (7, pb::Logout {}.into()),
        (
            0,
            pb::Kick {
                reason: pb::KickReason::DuplicateLogin as i32,
                text: "logged in elsewhere".into(),
            }
            .into(),
        ),
        (
            4,
            pb::Error {
                code: pb::ErrorCode::NotGroupMember as i32,
                message: "not a member of group 7".into(),
            }
            .into(),
        ),
        (1, pb::GatewayLookup {}.into()),
        (
            1,
            pb::GatewayReply {
                access_addr: "127.0.0.1:7100".into(),
                node_id: "access-1".into(),
            }
            .into(),
        ),
    ]
}
