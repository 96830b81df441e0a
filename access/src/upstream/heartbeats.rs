//! Session heartbeats go to logic in batches, paced.
//!
//! Each logged-in connection re-asserts its session about once per heartbeat
//! interval. A call per heartbeat cost, at 50,000 idle connections over three
//! nodes, some 830 calls a second through access, logic, register and Redis,
//! each a task, HTTP/2 frames and a script run, for work that can wait: a
//! session lives minutes past its last heartbeat. Here heartbeats wait in one
//! queue per node. A heartbeat that finds the queue idle goes at once; after
//! each call the next one waits until [`PACE`] has passed since the last
//! began, and then takes everything queued meanwhile (up to [`MAX_BEATS`]).
//! So a node makes at most a few heartbeat calls a second whatever its
//! connection count, and register touches each batch in a few Redis script
//! runs.
//!
//! A connection that closed while its heartbeat waited is left out: its
//! logout may already have removed the session, which the heartbeat would
//! otherwise record again for minutes.

use std::sync::Arc;
use std::time::Duration;

use fishchat_codec::KickReason;
use fishchat_rpc::logic::{Heartbeat, HeartbeatBatch};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use super::Upstream;
use crate::device_id::DeviceId;

/// Least time from the start of one heartbeat call to the start of the next,
/// unless the queue holds more than a batch.
const PACE: Duration = Duration::from_millis(250);
/// Most heartbeats in one call.
const MAX_BEATS: usize = 1024;

/// A heartbeat waiting for its batch.
#[derive(Debug)]
pub(super) struct Beat {
    pub(super) user_id: u64,
    pub(super) device_id: DeviceId,
    pub(super) conn_id: u64,
}

impl Upstream {
    /// Takes queued heartbeats in paced batches until the queue closes.
    pub(super) async fn batch_heartbeats(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Beat>,
    ) {
        let mut beats = Vec::new();
        while let Some(first) = queue.recv().await {
            let next = Instant::now() + PACE;
            beats.push(first);
            while beats.len() < MAX_BEATS {
                let Ok(beat) = queue.try_recv() else { break };
                beats.push(beat);
            }
            let full = beats.len() == MAX_BEATS;
            self.send_heartbeats(&mut beats).await;
            if !full {
                tokio::time::sleep_until(next).await;
            }
        }
    }

    /// Sends the heartbeats of the connections still open, then kicks those
    /// another login replaced; leaves `beats` empty.
    async fn send_heartbeats(&self, beats: &mut Vec<Beat>) {
        beats.retain(|beat| self.table.find(beat.user_id, beat.conn_id).is_some());
        if beats.is_empty() {
            return;
        }
        self.metrics
            .heartbeat_batch_size
            .observe(beats.len() as f64);
        let request = HeartbeatBatch {
            access_node_id: self.node_id.clone(),
            push_addr: self.push_addr.clone(),
            beats: beats
                .iter()
                .map(|beat| Heartbeat {
                    user_id: beat.user_id,
                    device_id: beat.device_id.to_string(),
                    conn_id: beat.conn_id,
                })
                .collect(),
        };
        let result = self
            .retrying(&request, |mut logic, request| async move {
                logic.heartbeats(request).await
            })
            .await
            .and_then(|reply| {
                if reply.current.len() == beats.len() {
                    Ok(reply.current)
                } else {
                    Err(Status::internal(format!(
                        "logic answered {} heartbeats of {}",
                        reply.current.len(),
                        beats.len()
                    )))
                }
            });
        match result {
            Ok(current) => {
                for (beat, _) in beats.iter().zip(current).filter(|(_, current)| !current) {
                    self.kick_local(beat.user_id, beat.conn_id, KickReason::DuplicateLogin);
                }
            }
            Err(status) => {
                tracing::warn!(%status, heartbeats = beats.len(), "a batch of session heartbeats failed");
            }
        }
        beats.clear();
    }
}
