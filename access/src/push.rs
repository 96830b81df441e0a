//! The Access gRPC service: msg_job pushes stored messages here (logic read
//! updates), and other access nodes kick connections that a newer login
//! replaced.
//!
//! A delivery's frame arrives encoded once, by its sender, and the same
//! bytes (`Bytes`, shared, not copied) go to every connection of every user
//! it names, whatever loop holds it: the node never decodes a push.

use std::sync::Arc;
use std::time::Instant;

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
    pub fn deliver(&self, request: PushRequest) -> PushReply {
        let received = Instant::now();
        let mut batches: Vec<PushBatch> = self.loops.iter().map(|_| PushBatch::default()).collect();
        let mut reply = PushReply::default();
        for delivery in request.deliveries {
            if !fits(&delivery.frame, self.max_frame_len) {
                tracing::warn!(
                    len = delivery.frame.len(),
                    "dropping a pushed frame that is not one whole frame within the limit"
                );
                continue;
            }
            let frames = [delivery.frame];
            // Where this delivery's frames start in each loop's batch, once used there.
            // (A node runs a few loops: inline, no allocation per delivery.)
            let mut first: SmallVec<[Option<u32>; 8]> = smallvec![None; batches.len()];
            for user_id in delivery.user_ids {
                let reached = self.table.for_each(user_id, |conn| {
                    let index = usize::from(conn.loop_index);
                    let Some(batch) = batches.get_mut(index) else {
                        return;
                    };
                    let start = *first[index].get_or_insert_with(|| {
                        let start = batch.frames.len() as u32;
                        batch.frames.extend(frames.iter().cloned());
                        start
                    });
                    for i in 0..frames.len() as u32 {
                        batch.targets.push((start + i, conn.slot, conn.tag));
                    }
                });
                if reached == 0 {
                    reply.absent_user_ids.push(user_id);
                } else {
                    reply.delivered_connections += reached as u32;
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
