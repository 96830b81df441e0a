//! SEND_TO_USER and SEND_TO_GROUP go to logic in batches.
//!
//! A gRPC call per send cost access and logic each more CPU than the rest of
//! the send path: a task, HTTP/2 headers and frames, and a wake-up of each
//! end's threads per message. Here sends wait in one queue per node, and
//! whenever no batch call is running, everything queued (up to
//! [`MAX_SENDS`] sends or about [`MAX_BYTES`]) goes to logic in one call.
//! There is no timer: at a low rate a batch holds one send and costs what a
//! call did; under load a batch holds whatever arrived while the previous one
//! was in logic, so the cost per send falls as the rate rises.
//!
//! One batch at a time also keeps order: logic publishes a batch's sends in
//! order, so a node's sends reach the broker in the order its connections
//! made them, and a client's pipelined sends to one conversation get seqs in
//! the order it sent them.

use std::sync::Arc;
use std::time::Instant;

use fishchat_codec::Command;
use fishchat_codec::pb::{self, SendAck};
use fishchat_rpc::logic::{Outgoing, SendBatch, outgoing};
use fishchat_rpc::status::error_code;
use tokio::sync::mpsc;
use tonic::Status;

use super::{Caller, Upstream};
use crate::frames;
use crate::session::Then;

/// Most sends in one batch call.
const MAX_SENDS: usize = 512;
/// A batch stops growing past this many encoded bytes, far below the 4 MiB
/// a gRPC message may have (a send's body is at most 16 KiB).
const MAX_BYTES: usize = 1 << 20;

/// A send waiting for its batch.
#[derive(Debug)]
pub(super) struct Queued {
    caller: Caller,
    send: outgoing::Message,
}

impl Queued {
    pub(super) fn new(caller: Caller, send: outgoing::Message) -> Self {
        Self { caller, send }
    }
}

/// The client's id of a send.
fn client_msg_id(send: &Outgoing) -> &str {
    match &send.message {
        Some(outgoing::Message::ToUser(m)) => &m.client_msg_id,
        Some(outgoing::Message::ToGroup(m)) => &m.client_msg_id,
        None => "",
    }
}

impl Upstream {
    /// Takes queued sends in batches, one batch call at a time, until the queue closes.
    pub(super) async fn batch_sends(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut callers = Vec::new();
        let mut sends = Vec::new();
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            let mut bytes = 0;
            while let Some(Queued { caller, send }) = next.take() {
                bytes += send.encoded_len();
                sends.push(Outgoing {
                    from_user_id: caller.user_id,
                    message: Some(send),
                });
                callers.push(caller);
                if sends.len() < MAX_SENDS && bytes < MAX_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            self.metrics.send_batch_size.observe(sends.len() as f64);
            let request = SendBatch {
                sends: std::mem::take(&mut sends),
            };
            self.send_batch(&mut callers, request).await;
        }
    }

    /// Sends `request` to logic and answers each of `callers` (one per send,
    /// in order); leaves `callers` empty.
    async fn send_batch(&self, callers: &mut Vec<Caller>, request: SendBatch) {
        let started = Instant::now();
        let result = self
            .retrying(&request, |mut logic, request| async move {
                logic.send(request).await
            })
            .await
            .and_then(|reply| {
                if reply.acks.len() == callers.len() {
                    Ok(reply.acks)
                } else {
                    Err(Status::internal(format!(
                        "logic answered {} acks for {} sends",
                        reply.acks.len(),
                        callers.len()
                    )))
                }
            });
        self.metrics
            .send_batch_latency
            .observe(started.elapsed().as_secs_f64());
        let acks = match result {
            Ok(acks) => acks,
            Err(status) => {
                tracing::warn!(%status, sends = callers.len(), "a batch of sends failed");
                request
                    .sends
                    .iter()
                    .map(|send| failed(client_msg_id(send).to_owned(), &status))
                    .collect()
            }
        };
        for (caller, ack) in callers.drain(..).zip(acks) {
            let frame = frames::frame(
                Command::SendAck,
                caller.request_id,
                &ack,
                self.max_frame_len,
            );
            self.answer(&caller, frame, Then::Nothing);
            self.finished();
        }
    }
}

/// The ack of a send the batch call failed for.
fn failed(client_msg_id: String, status: &Status) -> SendAck {
    SendAck {
        client_msg_id,
        error: Some(pb::Error {
            code: error_code(status) as i32,
            message: status.message().to_owned(),
        }),
        ..SendAck::default()
    }
}
