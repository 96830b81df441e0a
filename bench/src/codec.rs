//! Codec micro-benchmark.
//!
//! The access tier pushes one group message to many connections. The design
//! encodes the frame once and queues the same `Bytes` on every connection;
//! this measures what that saves against encoding per connection, and how
//! fast the stream decoder cuts frames, side by side in one run.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fishchat_codec::pb::{self, stored_message::Conversation};
use fishchat_codec::{
    Command, DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame, encode_frame_to_bytes,
};
use serde::Serialize;

use crate::report::Report;

/// Parameters of the codec benchmark.
#[derive(Debug, clap::Args, Serialize)]
pub struct Args {
    /// Connections one push fans out to.
    #[arg(long, default_value_t = 10_000)]
    pub fanout: usize,
    /// Pushes to fan out (each to every connection).
    #[arg(long, default_value_t = 100)]
    pub pushes: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub body: usize,
}

/// Runs the benchmark and returns its report.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    let push = pb::Push {
        messages: vec![pb::StoredMessage {
            seq: 1,
            server_msg_id: 1,
            from_user_id: 1,
            conversation: Some(Conversation::GroupId(7)),
            body: Bytes::from(vec![b'x'; args.body]),
            timestamp_ms: 1,
            client_msg_id: "c".into(),
        }],
    };
    let frames = (args.fanout * args.pushes) as f64;

    // Encode once per push, share the bytes with every connection's queue.
    let mut queues: Vec<Vec<Bytes>> = (0..args.fanout)
        .map(|_| Vec::with_capacity(args.pushes))
        .collect();
    let started = Instant::now();
    for _ in 0..args.pushes {
        let frame = encode_frame_to_bytes(Command::Push, 0, &push, DEFAULT_MAX_FRAME_LEN)?;
        for queue in &mut queues {
            queue.push(frame.clone());
        }
    }
    let shared = frames / started.elapsed().as_secs_f64();
    black_box(&queues);
    drop(queues);

    // Encode separately into each connection's own write buffer.
    let mut buffers: Vec<BytesMut> = (0..args.fanout).map(|_| BytesMut::new()).collect();
    let started = Instant::now();
    for _ in 0..args.pushes {
        for buf in &mut buffers {
            encode_frame(Command::Push, 0, &push, DEFAULT_MAX_FRAME_LEN, buf)?;
        }
    }
    let per_connection = frames / started.elapsed().as_secs_f64();
    let frame_len = buffers.first().map_or(0, |b| b.len() / args.pushes.max(1));

    // Decode one long stream of those frames, as a client's reads would.
    let mut stream = buffers.into_iter().fold(BytesMut::new(), |mut acc, b| {
        acc.extend_from_slice(&b);
        acc
    });
    let decoder = FrameDecoder::default();
    let started = Instant::now();
    let mut decoded = 0usize;
    while let Some(frame) = decoder.decode(&mut stream)? {
        black_box(frame);
        decoded += 1;
    }
    let decode = decoded as f64 / started.elapsed().as_secs_f64();

    let mut report = Report {
        charts: Vec::new(),
        scenario: "codec".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    report.add("frame size", frame_len as f64, "bytes");
    report.add("fan-out, encode once + share", shared, "frames/s");
    report.add("fan-out, encode per connection", per_connection, "frames/s");
    report.add("share / per-connection", shared / per_connection, "ratio");
    report.add("decode", decode, "frames/s");
    Ok(report)
}
