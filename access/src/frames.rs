//! The frames an access node sends, encoded once into shareable `Bytes`.
//!
//! Every outbound frame must fit the client's maximum frame size, so replies
//! that carry a variable number of messages are cut to fit: a SYNC_REPLY is
//! trimmed (with `has_more` set, so the client asks again) and a PUSH is split
//! into several frames.

use bytes::Bytes;
use fishchat_codec::pb::{self, StoredMessage};
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

/// PUSH frames carrying `messages` in order, as few as fit.
pub fn pushes(messages: Vec<StoredMessage>, max: u32) -> Vec<Bytes> {
    let budget = body_budget(max);
    let mut frames = Vec::new();
    let mut batch = pb::Push::default();
    let mut batch_len = 0;
    for message in messages {
        let len = prost::encoding::message::encoded_len(1, &message);
        if !batch.messages.is_empty() && batch_len + len > budget {
            frames.push(frame(Command::Push, 0, &batch, max));
            batch.messages.clear();
            batch_len = 0;
        }
        batch_len += len;
        batch.messages.push(message);
    }
    if !batch.messages.is_empty() {
        frames.push(frame(Command::Push, 0, &batch, max));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use fishchat_codec::{Body, FrameDecoder};

    fn message(seq: u64, size: usize) -> StoredMessage {
        StoredMessage {
            seq,
            body: vec![b'x'; size].into(),
            ..StoredMessage::default()
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
    fn a_push_too_large_for_one_frame_is_split_in_order() {
        let max = 4096;
        let messages: Vec<_> = (1..=10).map(|seq| message(seq, 1000)).collect();
        let frames = pushes(messages, max);
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let seqs: Vec<u64> = decode_all(&frames, max)
            .into_iter()
            .flat_map(|body| match body {
                Body::Push(p) => p.messages.into_iter().map(|m| m.seq).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
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
}
