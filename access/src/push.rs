//! The Access gRPC service: msg_job pushes stored messages here, and other
//! access nodes kick connections that a newer login replaced.
//!
//! A delivery's frames are encoded once and shared (`Bytes`) by every
//! connection they go to, whatever loop holds it.

use std::sync::Arc;
use std::time::Instant;

use fishchat_codec::KickReason;
use fishchat_rpc::access::access_server::Access;
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use tonic::{Request, Response, Status};

use crate::frames;
use crate::mailbox::{LoopHandle, PushBatch, ToLoop};
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
            if delivery.messages.is_empty() {
                continue;
            }
            let frames = frames::pushes(delivery.messages, self.max_frame_len);
            // Where this delivery's frames start in each loop's batch, once used there.
            let mut first: Vec<Option<u32>> = vec![None; batches.len()];
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
                        batch.targets.push((start + i, conn.slot, conn.conn_id));
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
                handle.send(ToLoop::Push(batch));
            }
        }
        reply
    }
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
