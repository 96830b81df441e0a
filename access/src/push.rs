//! The Access gRPC service: msg_job pushes stored messages here (logic read
//! updates), and other access nodes kick connections that a newer login
//! replaced.
//!
//! A delivery's frame arrives encoded once, by its sender, and the same
//! bytes (`Bytes`, shared, not copied) go to every connection of every user
//! it names, whatever loop holds it: the node never decodes a push.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fishchat_codec::{HEADER_LEN, KickReason, LENGTH_LEN};
use fishchat_rpc::access::access_server::Access;
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use smallvec::{SmallVec, smallvec};
use tonic::{Request, Response, Status};

use crate::mailbox::{LoopHandle, PushBatch};
use crate::metrics::Metrics;
use crate::table::ConnTable;
use crate::upstream::Upstream;

/// Serves `fishchat.access.v1.Access` for one node.
#[derive(Debug, Clone)]
pub struct PushService {
    table: Arc<ConnTable>,
    loops: Vec<LoopHandle>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    max_frame_len: u32,
}

impl PushService {
    /// The service over a node's table and loops.
    pub fn new(
        table: Arc<ConnTable>,
        loops: Vec<LoopHandle>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        max_frame_len: u32,
    ) -> Self {
        Self {
            table,
            loops,
            upstream,
            metrics,
            max_frame_len,
        }
    }

    /// Queues every delivery on its users' connections; returns the absent users
    /// and the number of connections reached.
    ///
    /// Consecutive deliveries naming the same users (a group's messages in one
    /// batch) go as one run: their frames are joined once, and each user is
    /// looked up and each connection written once for all of them.
    pub fn deliver(&self, request: PushRequest) -> PushReply {
        let received = Instant::now();
        let mut batches: Vec<PushBatch> = self.loops.iter().map(|_| PushBatch::default()).collect();
        let mut reply = PushReply::default();
        let max_frame_len = self.max_frame_len;
        let mut deliveries = request
            .deliveries
            .into_iter()
            .filter(|delivery| {
                let fits = fits(&delivery.frame, max_frame_len);
                if !fits {
                    tracing::warn!(
                        len = delivery.frame.len(),
                        "dropping a pushed frame that is not one whole frame within the limit"
                    );
                }
                fits
            })
            .peekable();
        while let Some(first) = deliveries.next() {
            let mut run = vec![first.frame];
            while let Some(next) = deliveries.next_if(|next| next.user_ids == first.user_ids) {
                run.push(next.frame);
            }
            let frames = (join(&run), run.len() as u32);
            // Where this run's frames sit in each loop's batch, once used there.
            // (A node runs a few loops: inline, no allocation per run.)
            let mut index: SmallVec<[Option<u32>; 8]> = smallvec![None; batches.len()];
            for user_id in first.user_ids {
                let reached = self.table.for_each(user_id, |conn| {
                    let loop_index = usize::from(conn.loop_index);
                    let Some(batch) = batches.get_mut(loop_index) else {
                        return;
                    };
                    let at = *index[loop_index].get_or_insert_with(|| {
                        batch.frames.push(frames.clone());
                        batch.frames.len() as u32 - 1
                    });
                    batch.targets.push((at, conn.slot, conn.tag));
                });
                if reached == 0 {
                    reply.absent_user_ids.push(user_id);
                } else {
                    reply.delivered_connections += (reached as u32).saturating_mul(frames.1);
                }
            }
        }
        self.metrics
            .push_absent_users
            .inc_by(reply.absent_user_ids.len() as u64);
        for (handle, mut batch) in self.loops.iter().zip(batches) {
            if !batch.targets.is_empty() {
                batch.received = Some(received);
                let targets = batch.targets.len() as u64;
                if !handle.push(batch) {
                    self.metrics.pushes_dropped.inc_by(targets);
                }
            }
        }
        reply
    }
}

/// `frames` back to back: the one frame itself, or a copy of them all, made
/// once for every connection that gets them.
fn join(frames: &[Bytes]) -> Bytes {
    if let [one] = frames {
        return one.clone();
    }
    let mut joined = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in frames {
        joined.extend_from_slice(frame);
    }
    joined.freeze()
}

/// Whether `frame` is exactly one frame whose length prefix matches it and
/// which a client accepts: a caller's bug must not desynchronize a client's stream.
fn fits(frame: &[u8], max_frame_len: u32) -> bool {
    let Some(prefix) = frame.get(..LENGTH_LEN) else {
        return false;
    };
    let mut len = [0; LENGTH_LEN];
    len.copy_from_slice(prefix);
    let claimed = u32::from_be_bytes(len) as usize;
    claimed + LENGTH_LEN == frame.len()
        && claimed <= max_frame_len as usize
        && claimed >= HEADER_LEN
}

#[tonic::async_trait]
impl Access for PushService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        Ok(Response::new(self.deliver(request.into_inner())))
    }

    async fn kick(&self, request: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        let request = request.into_inner();
        let reason = KickReason::try_from(request.reason).unwrap_or(KickReason::Unspecified);
        let kicked = self
            .upstream
            .kick_local(request.user_id, request.conn_id, reason);
        Ok(Response::new(KickReply { kicked }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_codec::{Command, encode_frame_to_bytes, pb};

    #[test]
    fn a_run_of_frames_is_joined_once_and_a_single_frame_is_not_copied() {
        let frame = |seq| {
            let push = pb::Push {
                messages: vec![pb::StoredMessage {
                    seq,
                    ..pb::StoredMessage::default()
                }],
            };
            encode_frame_to_bytes(Command::Push, 0, &push, 1024).unwrap()
        };
        let one = frame(1);
        assert_eq!(join(std::slice::from_ref(&one)).as_ptr(), one.as_ptr());
        let run = [frame(1), frame(2), frame(3)];
        assert_eq!(join(&run), run.concat());
    }

    #[test]
    fn only_one_whole_frame_within_the_limit_is_pushed() {
        let frame = encode_frame_to_bytes(Command::Push, 0, &pb::Push::default(), 1024).unwrap();
        assert!(fits(&frame, 1024));
        assert!(!fits(&frame[..frame.len() - 1], 1024), "cut short");
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        assert!(!fits(&two, 1024), "two frames");
        let claimed = (frame.len() - LENGTH_LEN) as u32;
        assert!(fits(&frame, claimed));
        assert!(!fits(&frame, claimed - 1), "over the limit");
        assert!(!fits(&[0, 0], 1024));
    }
}
