//! The frames an access node sends, encoded once into shareable `Bytes`.
//!
//! Every outbound frame must fit the client's maximum frame size, so replies
//! that carry a variable number of messages are cut to fit, with `has_more`
//! set so the client asks again: a SYNC_REPLY or HISTORY_REPLY loses trailing
//! messages, a SYNC_CONVERSATIONS_REPLY trailing conversations. PUSH frames
//! arrive encoded (msg_job cuts them to fit).

use bytes::Bytes;
use fishchat_codec::pb;
use fishchat_codec::{Command, ErrorCode, HEADER_LEN, KickReason, encode_frame_to_bytes};
use prost::Message;

/// Encodes one frame; a message too large for `max` (which the callers rule
/// out by construction) degrades to an INTERNAL error frame rather than a panic.
pub fn frame(command: Command, request_id: u32, body: &impl Message, max: u32) -> Bytes {
    encode_frame_to_bytes(command, request_id, body, max).unwrap_or_else(|err| {
        tracing::error!(%err, ?command, "an outbound frame is too large");
        error(request_id, ErrorCode::Internal, "reply too large", max)
    })
}

/// An ERROR frame answering `request_id`.
pub fn error(request_id: u32, code: ErrorCode, message: &str, max: u32) -> Bytes {
    let body = pb::Error {
        code: code as i32,
        // The message is ours and short; cap it anyway so the frame always fits.
        message: message.chars().take(200).collect(),
    };
    encode_frame_to_bytes(Command::Error, request_id, &body, max).unwrap_or_default()
}

/// A KICK frame.
pub fn kick(reason: KickReason, max: u32) -> Bytes {
    let body = pb::Kick {
        reason: reason as i32,
        text: kick_text(reason).to_owned(),
    };
    frame(Command::Kick, 0, &body, max)
}

/// What a kicked client is told, in words.
pub fn kick_text(reason: KickReason) -> &'static str {
    match reason {
        KickReason::DuplicateLogin => "the same device logged in elsewhere",
        KickReason::SlowConsumer => "outbound queue full: read faster",
        KickReason::Reconnect => "this node is draining: reconnect through the gateway",
        KickReason::LoginTimeout => "no login within the deadline",
        KickReason::HeartbeatTimeout => "no frame within the heartbeat deadline",
        KickReason::ProtocolError => "protocol error",
        KickReason::SessionRevoked => "the session was revoked",
        KickReason::NodeFull => "this node is full: reconnect through the gateway",
        KickReason::Unspecified => "closed by the server",
    }
}

/// The room a body has inside a frame of at most `max` bytes.
fn body_budget(max: u32) -> usize {
    (max as usize).saturating_sub(HEADER_LEN)
}

/// A SYNC_REPLY that fits: trailing messages that do not fit are left for the
/// next sync (`has_more`), but at least one message is always kept.
pub fn sync_reply(request_id: u32, mut reply: pb::SyncReply, max: u32) -> Bytes {
    while reply.messages.len() > 1 && reply.encoded_len() > body_budget(max) {
        reply.messages.pop();
        reply.has_more = true;
    }
    frame(Command::SyncReply, request_id, &reply, max)
}

/// A HISTORY_REPLY that fits: the oldest messages of the page (its tail)
/// are left for the next request, but at least one message is always kept.
pub fn history_reply(request_id: u32, mut reply: pb::HistoryReply, max: u32) -> Bytes {
    while reply.messages.len() > 1 && reply.encoded_len() > body_budget(max) {
        reply.messages.pop();
        reply.has_more = true;
    }
    frame(Command::HistoryReply, request_id, &reply, max)
}

/// A SYNC_CONVERSATIONS_REPLY that fits: trailing conversations are left for
/// the next page (`has_more`); a single conversation too large alone keeps
/// only its newest messages that fit and says `has_gap`, so the client syncs
/// the rest.
pub fn conversations_reply(
    request_id: u32,
    mut reply: pb::SyncConversationsReply,
    max: u32,
) -> Bytes {
    while reply.conversations.len() > 1 && reply.encoded_len() > body_budget(max) {
        reply.conversations.pop();
        reply.has_more = true;
    }
    if let Some(only) = reply.conversations.first_mut() {
        while !only.messages.is_empty()
            && prost::Message::encoded_len(&reply_of(only)) > body_budget(max)
        {
            only.messages.remove(0);
            only.has_gap = true;
        }
    }
    frame(Command::SyncConversationsReply, request_id, &reply, max)
}

/// A reply holding just `summary`, to measure it.
fn reply_of(summary: &pb::ConversationSummary) -> pb::SyncConversationsReply {
    pb::SyncConversationsReply {
        conversations: vec![summary.clone()],
        has_more: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use fishchat_codec::{Body, FrameDecoder};

    fn message(seq: u64, size: usize) -> pb::StoredMessage {
        pb::StoredMessage {
            seq,
            body: vec![b'x'; size].into(),
            ..pb::StoredMessage::default()
        }
    }

    fn decode_all(frames: &[Bytes], max: u32) -> Vec<Body> {
        let decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        frames.iter().for_each(|f| buf.extend_from_slice(f));
        let mut out = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            out.push(frame.body().unwrap());
        }
        out
    }

    #[test]
    fn a_sync_reply_too_large_is_trimmed_and_says_more_follow() {
        let max = 4096;
        let reply = pb::SyncReply {
            messages: (1..=10).map(|seq| message(seq, 1000)).collect(),
            has_more: false,
        };
        match &decode_all(&[sync_reply(7, reply, max)], max)[..] {
            [Body::SyncReply(r)] => {
                assert!(r.has_more);
                assert!(!r.messages.is_empty() && r.messages.len() < 10);
                assert_eq!(r.messages[0].seq, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_conversations_reply_too_large_is_cut_by_conversation_then_by_message() {
        let max = 4096;
        let summary = |id, count| pb::ConversationSummary {
            conversation: Some(pb::ConversationRef {
                id: Some(pb::conversation_ref::Id::GroupId(id)),
            }),
            head_seq: count,
            messages: (1..=count).map(|seq| message(seq, 500)).collect(),
            ..Default::default()
        };
        let reply = pb::SyncConversationsReply {
            conversations: (1..=5).map(|id| summary(id, 3)).collect(),
            has_more: false,
        };
        match &decode_all(&[conversations_reply(1, reply, max)], max)[..] {
            [Body::SyncConversationsReply(r)] => {
                assert!(r.has_more);
                assert!(!r.conversations.is_empty() && r.conversations.len() < 5);
            }
            other => panic!("{other:?}"),
        }
        let alone = pb::SyncConversationsReply {
            conversations: vec![summary(9, 20)],
            has_more: false,
        };
        match &decode_all(&[conversations_reply(1, alone, max)], max)[..] {
            [Body::SyncConversationsReply(r)] => {
                let only = &r.conversations[0];
                assert!(only.has_gap);
                assert_eq!(
                    only.messages.last().map(|m| m.seq),
                    Some(20),
                    "the newest kept"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
