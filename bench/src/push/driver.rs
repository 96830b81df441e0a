//! The sending side: several concurrent Push RPC streams, each on its own
//! HTTP/2 connection, every request naming `batch` users.
//!
//! A stream sends its next request when the last one is answered and the
//! frames still on their way (sent minus counted by the receivers) are under
//! the window: the access node answers a push once the frames are queued, not
//! written, so without the window a driver faster than the node would only
//! grow the node's queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use fishchat_codec::pb::{self, Command, StoredMessage};
use fishchat_codec::{DEFAULT_MAX_FRAME_LEN, EncodeError, encode_frame_to_bytes};
use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::access::{Delivery, PushRequest};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::clock;
use super::receiver::Shared;

/// Longest one push RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream waits before looking at the window again.
const WINDOW_WAIT: Duration = Duration::from_micros(500);

/// How requests are made.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Users named per request.
    pub batch: usize,
    /// Messages per delivery.
    pub messages: usize,
    /// Bytes of each message body.
    pub body_bytes: usize,
    /// One delivery naming all the batch's users (a group fan-out: one frame
    /// shared by all) instead of one delivery per user.
    pub shared_delivery: bool,
    /// Deliveries (so frames) per user in one request: several frames queued on
    /// a connection at once leave in one write.
    pub frames_per_user: usize,
    /// Frames sent and not yet received beyond which streams wait.
    pub window: u64,
}

/// Counters of the streams.
#[derive(Debug, Default)]
pub struct Sent {
    /// RPCs answered.
    pub rpcs: AtomicU64,
    /// RPCs that failed.
    pub errors: AtomicU64,
    /// Frames asked for (users named × frames per delivery), before the reply.
    pub issued: AtomicU64,
    /// Connections the replies said a frame was queued on.
    pub delivered: AtomicU64,
    /// Users the replies said were absent.
    pub absent: AtomicU64,
    cursor: AtomicUsize,
}

/// Connects one Push client per stream.
pub async fn connect(
    push_addr: &str,
    streams: usize,
) -> anyhow::Result<Vec<AccessClient<Channel>>> {
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams.max(1) {
        let channel = Channel::from_shared(format!("http://{push_addr}"))
            .context("push address")?
            .connect_timeout(Duration::from_secs(5))
            .timeout(RPC_TIMEOUT)
            .connect()
            .await
            .with_context(|| format!("connect to the push gRPC at {push_addr}"))?;
        clients.push(AccessClient::new(channel).max_decoding_message_size(16 << 20));
    }
    Ok(clients)
}

/// Runs one stream until `until`; returns its RPC latencies in µs.
pub async fn stream(
    mut client: AccessClient<Channel>,
    users: Arc<Vec<u64>>,
    shape: Shape,
    sent: Arc<Sent>,
    receivers: Arc<Shared>,
    until: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let per_request = shape.batch.min(users.len()).max(1);
    let frames = (per_request * shape.frames_per_user.max(1)) as u64;
    let mut seq = 0u64;
    while Instant::now() < until {
        let issued = sent.issued.load(Ordering::Relaxed);
        if issued.saturating_sub(receivers.frames.load(Ordering::Relaxed)) > shape.window {
            tokio::time::sleep(WINDOW_WAIT).await;
            continue;
        }
        let start = sent.cursor.fetch_add(per_request, Ordering::Relaxed);
        let named: Vec<u64> = (0..per_request)
            .map(|i| users[(start + i) % users.len()])
            .collect();
        seq += 1;
        let request = request(&named, &shape, seq)?;
        sent.issued.fetch_add(frames, Ordering::Relaxed);
        let began = std::time::Instant::now();
        match client.push(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let _ = latency.record(began.elapsed().as_micros().max(1) as u64);
                sent.rpcs.fetch_add(1, Ordering::Relaxed);
                sent.delivered
                    .fetch_add(u64::from(reply.delivered_connections), Ordering::Relaxed);
                sent.absent
                    .fetch_add(reply.absent_user_ids.len() as u64, Ordering::Relaxed);
                // Absent users get no frame: take them out of what is on its way.
                let missing = frames - u64::from(reply.delivered_connections).min(frames);
                sent.issued.fetch_sub(missing, Ordering::Relaxed);
            }
            Err(status) => {
                sent.errors.fetch_add(1, Ordering::Relaxed);
                sent.issued.fetch_sub(frames, Ordering::Relaxed);
                if sent.errors.load(Ordering::Relaxed) == 1 {
                    eprintln!("push RPC failed: {status}");
                }
            }
        }
    }
    Ok(latency)
}

/// One push request to `users`, stamped now: its PUSH frame encoded once
/// here, as msg_job does, and named by every delivery.
fn request(users: &[u64], shape: &Shape, seq: u64) -> Result<PushRequest, EncodeError> {
    let body = clock::stamped(clock::now_us(), shape.body_bytes);
    let messages: Vec<StoredMessage> = (0..shape.messages.max(1) as u64)
        .map(|i| StoredMessage {
            seq: seq * shape.messages.max(1) as u64 + i,
            server_msg_id: seq,
            from_user_id: 1,
            body: body.clone(),
            timestamp_ms: i64::try_from(clock::now_us() / 1000).unwrap_or(0),
            ..StoredMessage::default()
        })
        .collect();
    let frame = encode_frame_to_bytes(
        Command::Push,
        0,
        &pb::Push { messages },
        DEFAULT_MAX_FRAME_LEN,
    )?;
    let repeat = shape.frames_per_user.max(1);
    let deliveries = if shape.shared_delivery {
        vec![
            Delivery {
                user_ids: users.to_vec(),
                frame,
            };
            repeat
        ]
    } else {
        users
            .iter()
            .flat_map(|&user| {
                std::iter::repeat_n(
                    Delivery {
                        user_ids: vec![user],
                        frame: frame.clone(),
                    },
                    repeat,
                )
            })
            .collect()
    };
    Ok(PushRequest { deliveries })
}
