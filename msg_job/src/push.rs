//! The push side of the pipeline: each stored message's PUSH frame, encoded
//! once, for whoever is online.
//!
//! A batch's messages of one conversation go in one PUSH frame (several if
//! they would pass the client's frame limit), in seq order, and that frame's
//! bytes go unchanged to every recipient's connections on every access node:
//! a group message to 1,000 members is encoded once.
//!
//! Pushing is best effort by design: the message is already stored, and a
//! client that missed a push sees the gap at the next one, or syncs its
//! conversations when it reconnects. So a [`Pusher`] reports what happened
//! and never returns an error to retry.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use fishchat_codec::pb::{self, StoredMessage};
use fishchat_codec::{Command, HEADER_LEN, encode_frame_to_bytes};

use crate::event::Accepted;
use crate::store::ConvKey;

/// One encoded frame and the users it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// A whole client-protocol frame.
    pub frame: Bytes,
    /// Its recipients, ascending, each once.
    pub recipients: Vec<u64>,
}

/// What one push round did, for logs and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Access nodes that took every push request sent to them.
    pub nodes_pushed: u64,
    /// Connections the nodes queued a frame on.
    pub delivered_connections: u64,
    /// Session lookups or node pushes that failed (logged; the users will sync).
    pub failures: u64,
}

/// Finds the nodes holding some users and writes frames to them there.
pub trait Pusher: Send + Sync {
    /// Pushes every frame to the nodes holding its recipients; offline users are skipped.
    fn push(&self, frames: Vec<Outgoing>) -> impl Future<Output = PushOutcome> + Send;
}

/// Pushing nowhere, for a pipeline that only stores (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPush;

impl Pusher for NoPush {
    async fn push(&self, _frames: Vec<Outgoing>) -> PushOutcome {
        PushOutcome::default()
    }
}

/// The PUSH frames of a stored batch: per conversation, its messages in seq
/// order (a redelivered duplicate once), consecutive messages with the same
/// recipients sharing a frame of at most `max_frame_len` bytes. A recipient
/// set that changes within a batch (a member joined or left between two
/// messages) starts a new frame, so nobody gets a message not addressed to it.
pub fn frames(stored: &[(Accepted, u64)], max_frame_len: u32) -> Vec<Outgoing> {
    let mut by_conversation: BTreeMap<ConvKey, Vec<(StoredMessage, Vec<u64>)>> = BTreeMap::new();
    for (accepted, seq) in stored {
        let mut recipients = accepted.recipients.clone();
        recipients.sort_unstable();
        recipients.dedup();
        by_conversation
            .entry(accepted.message.key())
            .or_default()
            .push((accepted.message.stored(*seq), recipients));
    }
    let budget = (max_frame_len as usize).saturating_sub(HEADER_LEN);
    let mut out = Vec::new();
    for (key, mut messages) in by_conversation {
        messages.sort_by_key(|(m, _)| m.seq);
        messages.dedup_by_key(|(m, _)| m.seq);
        let mut batch = pb::Push::default();
        let mut batch_len = 0;
        let mut batch_recipients: Vec<u64> = Vec::new();
        for (message, recipients) in messages {
            let len = prost::encoding::message::encoded_len(1, &message);
            let full = batch_len + len > budget;
            if !batch.messages.is_empty() && (full || recipients != batch_recipients) {
                out.extend(encode(key, &batch, &batch_recipients, max_frame_len));
                batch.messages.clear();
                batch_len = 0;
            }
            batch_len += len;
            batch.messages.push(message);
            batch_recipients = recipients;
        }
        if !batch.messages.is_empty() {
            out.extend(encode(key, &batch, &batch_recipients, max_frame_len));
        }
    }
    out
}

/// One PUSH frame for `recipients`.
fn encode(key: ConvKey, push: &pb::Push, recipients: &[u64], max: u32) -> Option<Outgoing> {
    match encode_frame_to_bytes(Command::Push, 0, push, max) {
        Ok(frame) => Some(Outgoing {
            frame,
            recipients: recipients.to_vec(),
        }),
        // Bodies are capped far below the frame limit, so only a misconfigured
        // limit gets here; the message stays stored and is synced.
        Err(err) => {
            tracing::error!(conversation = %key, %err, "a PUSH frame cannot be encoded");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewMessage, Target};
    use bytes::BytesMut;
    use fishchat_codec::{Body, FrameDecoder};

    fn accepted(id: u64, from: u64, target: Target, recipients: &[u64], size: usize) -> Accepted {
        Accepted {
            message: NewMessage {
                server_msg_id: id,
                from_user_id: from,
                target,
                body: vec![b'x'; size].into(),
                timestamp_ms: 0,
                client_msg_id: format!("c{id}"),
            },
            recipients: recipients.to_vec(),
        }
    }

    fn seqs(frame: &Bytes, max: u32) -> Vec<u64> {
        let mut buf = BytesMut::from(&frame[..]);
        match FrameDecoder::new(max)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
            .body()
        {
            Ok(Body::Push(push)) => push.messages.iter().map(|m| m.seq).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_frame_per_conversation_in_seq_order_for_all_its_recipients() {
        let max = 64 * 1024;
        let stored = [
            (accepted(1, 1, Target::ToUserId(2), &[2, 1], 5), 2),
            (accepted(2, 2, Target::ToUserId(1), &[1, 2], 5), 1),
            (accepted(3, 1, Target::GroupId(9), &[1, 2, 3], 5), 7),
            (accepted(1, 1, Target::ToUserId(2), &[2, 1], 5), 2),
        ];
        let frames = frames(&stored, max);
        assert_eq!(frames.len(), 2);
        assert_eq!(seqs(&frames[0].frame, max), [1, 2]);
        assert_eq!(frames[0].recipients, [1, 2]);
        assert_eq!(seqs(&frames[1].frame, max), [7]);
        assert_eq!(frames[1].recipients, [1, 2, 3]);
    }

    #[test]
    fn a_change_of_recipients_within_a_batch_starts_a_new_frame() {
        let max = 64 * 1024;
        let stored = [
            (accepted(25, 1, Target::GroupId(7), &[1, 2], 5), 1),
            (accepted(26, 2, Target::GroupId(7), &[2, 4], 5), 2),
            (accepted(27, 2, Target::GroupId(7), &[4, 2], 5), 3),
        ];
        let frames = frames(&stored, max);
        let got: Vec<(Vec<u64>, Vec<u64>)> = frames
            .iter()
            .map(|f| (seqs(&f.frame, max), f.recipients.clone()))
            .collect();
        assert_eq!(got, [(vec![1], vec![1, 2]), (vec![2, 3], vec![2, 4])]);
    }

    #[test]
    fn a_conversation_too_large_for_one_frame_is_split_in_order() {
        let max = 4096;
        let stored: Vec<_> = (1..=10)
            .map(|seq| (accepted(seq, 1, Target::GroupId(1), &[1], 1000), seq))
            .collect();
        let frames = frames(&stored, max);
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let all: Vec<u64> = frames.iter().flat_map(|f| seqs(&f.frame, max)).collect();
        assert_eq!(all, (1..=10).collect::<Vec<_>>());
    }
}
