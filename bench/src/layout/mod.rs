//! The storage layout, measured on the MongoDB server the system runs on:
//! one document per message (what msg_job and manager use) against packed
//! segments (one document per partition per stored batch, [`segments`]).
//!
//! Both sides write what msg_job writes, batch by batch and in the same
//! shape: the messages, then the batch's heads raised in one command. The
//! message layout goes through `fishchat-conversations` itself
//! (`insert` + `raise_heads`); the segment layout through the prototype,
//! raising heads with the same call. Reads are what manager does for SYNC and
//! HISTORY: the reader's membership, then a page of 20, at random points of
//! random conversations, and the newest 20 (what SYNC_CONVERSATIONS returns
//! per changed conversation). Every page read is checked against the seqs
//! written. Each (layout, batch size) gets a fresh database, dropped after.
//!
//! CPU is read from /proc for the server (`--mongo-pid`) and for this process,
//! per phase, so a run says where the cores went for writes and for reads.

mod segments;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use fishchat_conversations::{ConvKey, ConversationStore, NewMessage, Target};
use hdrhistogram::Histogram;
use mongodb::Client;
use mongodb::bson::doc;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::procstat::tree_cpu_secs;
use crate::report::{Chart, Report, Series};
use segments::{Range, Segments};

/// Messages per page, as the client protocol's default.
const PAGE: usize = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The MongoDB server measured.
    #[arg(
        long,
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    mongo: String,
    /// The server's pid, for its CPU from /proc (without it no server CPU is reported).
    #[arg(long)]
    mongo_pid: Option<u32>,
    /// Direct conversations the messages are spread over, at random.
    #[arg(long, default_value_t = 100)]
    conversations: u64,
    /// Messages per stored batch, as msg_job's batches (about 10 at 1,000
    /// msg/s and 50 at 5,000 msg/s); each value is one run of each layout.
    #[arg(long = "batch", default_values_t = [10, 50])]
    batches: Vec<usize>,
    /// Kafka partitions the segment layout splits a batch by.
    #[arg(long, default_value_t = 8)]
    partitions: u64,
    /// Messages written per layout and batch size.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Reads of each kind per layout and batch size.
    #[arg(long, default_value_t = 1_000)]
    reads: usize,
    /// Body bytes per message.
    #[arg(long, default_value_t = 64)]
    body: usize,
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    Messages,
    Segments,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Messages => "messages",
            Layout::Segments => "segments",
        }
    }
}

/// The read kinds, in the order they run.
const READS: [&str; 3] = ["sync", "history", "newest"];

/// What one (layout, batch size) run measured.
struct Run {
    label: String,
    write_batches: Histogram<u64>,
    reads: Vec<Histogram<u64>>,
}

pub async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.conversations > 0, "--conversations must be above 0");
    ensure!(
        args.messages >= args.conversations as usize,
        "--messages must be at least --conversations"
    );
    if let Some(pid) = args.mongo_pid {
        ensure!(
            tree_cpu_secs(pid).is_some(),
            "--mongo-pid {pid}: no such process"
        );
    }
    let client = Client::with_uri_str(&args.mongo)
        .await
        .context("connect to MongoDB")?;
    let mut report = Report {
        scenario: "layout".into(),
        config: json!({
            "conversations": args.conversations,
            "batches": args.batches,
            "partitions": args.partitions,
            "messages": args.messages,
            "reads": args.reads,
            "body": args.body,
        }),
        figures: Vec::new(),
        details: serde_json::Value::Null,
        charts: Vec::new(),
    };
    let mut runs = Vec::new();
    for &batch in &args.batches {
        ensure!(batch > 0, "--batch must be above 0");
        let mut server_us = Vec::new();
        for layout in [Layout::Messages, Layout::Segments] {
            let database = client.database(&format!(
                "fishchat_layout_{}_{batch}_{}",
                layout.name(),
                std::process::id()
            ));
            database
                .drop()
                .await
                .context("drop an old bench database")?;
            let outcome = measure(args, &database, layout, batch, &mut report).await;
            database.drop().await.context("drop the bench database")?;
            let (run, us) = outcome?;
            server_us.push(us);
            runs.push(run);
        }
        if let (Some(_), [messages, segments]) = (args.mongo_pid, &server_us[..]) {
            report.add(
                &format!("batch {batch}: server CPU per message written, segments / messages"),
                segments / messages.max(f64::MIN_POSITIVE),
                "x",
            );
        }
    }
    report.charts.push(
        Chart::latency_cdf(
            "Store one batch (messages and heads)",
            runs.iter()
                .map(|r| Series::latency_cdf(&r.label, &r.write_batches))
                .collect(),
        )
        .named("write-cdf"),
    );
    report.charts.push(
        Chart::latency_cdf(
            "Read a page of 20 at a random seq (SYNC)",
            runs.iter()
                .map(|r| Series::latency_cdf(&r.label, &r.reads[0]))
                .collect(),
        )
        .named("sync-cdf"),
    );
    Ok(report)
}

/// Writes then reads one layout in `database`; adds its figures to `report`
/// and returns its histograms and the server's CPU per message written.
async fn measure(
    args: &Args,
    database: &mongodb::Database,
    layout: Layout,
    batch: usize,
    report: &mut Report,
) -> anyhow::Result<(Run, f64)> {
    let label = format!("{} batch {batch}", layout.name());
    let store = ConversationStore::new(database);
    store
        .prepare()
        .await
        .context("prepare the conversation store")?;
    let mut segments = match layout {
        Layout::Messages => None,
        Layout::Segments => Some(Segments::prepare(database, args.partitions).await?),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(batch as u64);
    let mut messages = Messages::new(args.body);
    // One message per conversation first, outside the measurement: each
    // layout then starts with every member record and head in place.
    let warm: Vec<NewMessage> = (0..args.conversations)
        .map(|pair| messages.next(pair))
        .collect();
    for chunk in warm.chunks(batch) {
        write(&store, segments.as_mut(), chunk).await?;
    }

    let mut write_batches = histogram()?;
    let before = cpu(args.mongo_pid);
    let started = Instant::now();
    let mut written = warm.len();
    while written < args.messages {
        let count = batch.min(args.messages - written);
        let chunk: Vec<NewMessage> = (0..count)
            .map(|_| messages.next(rng.random_range(0..args.conversations)))
            .collect();
        let t = Instant::now();
        write(&store, segments.as_mut(), &chunk).await?;
        record(&mut write_batches, t.elapsed());
        written += count;
    }
    let secs = started.elapsed().as_secs_f64();
    let measured = (written - warm.len()) as f64;
    let (server, bench) = used_since(before, args.mongo_pid);
    let server_us = server * 1e6 / measured;
    report.add(&format!("{label}: messages written"), measured, "");
    report.add(&format!("{label}: write rate"), measured / secs, "msg/s");
    report.add(
        &format!("{label}: batch store p50"),
        ms(&write_batches, 50.0),
        "ms",
    );
    report.add(
        &format!("{label}: batch store p99"),
        ms(&write_batches, 99.0),
        "ms",
    );
    if args.mongo_pid.is_some() {
        report.add(
            &format!("{label}: server CPU per message written"),
            server_us,
            "µs",
        );
    }
    report.add(
        &format!("{label}: bench CPU per message written"),
        bench * 1e6 / measured,
        "µs",
    );
    let stats = database
        .run_command(doc! { "dbStats": 1 })
        .await
        .context("dbStats")?;
    let bytes = number(&stats, "dataSize") + number(&stats, "indexSize");
    report.add(
        &format!("{label}: data and index bytes per message"),
        bytes / written as f64,
        "B",
    );

    let mut reads = Vec::new();
    for kind in READS {
        let mut latencies = histogram()?;
        let before = cpu(args.mongo_pid);
        for _ in 0..args.reads {
            let pair = rng.random_range(0..args.conversations);
            let head = messages.head(pair);
            let range = match kind {
                "sync" => Range::After(rng.random_range(0..head)),
                "history" => Range::Before(rng.random_range(1..=head + 1)),
                _ => Range::Before(head + 1),
            };
            let t = Instant::now();
            let seqs = read(&store, segments.as_ref(), &messages, pair, range).await?;
            record(&mut latencies, t.elapsed());
            let expected = expected_page(range, head);
            ensure!(
                seqs == expected,
                "{label}: {kind} of pair {pair} at {range:?} read seqs {seqs:?}, expected {expected:?}"
            );
        }
        let (server, _) = used_since(before, args.mongo_pid);
        report.add(&format!("{label}: {kind} p50"), ms(&latencies, 50.0), "ms");
        report.add(&format!("{label}: {kind} p99"), ms(&latencies, 99.0), "ms");
        if args.mongo_pid.is_some() {
            report.add(
                &format!("{label}: server CPU per {kind}"),
                server * 1e6 / args.reads as f64,
                "µs",
            );
        }
        reads.push(latencies);
    }
    Ok((
        Run {
            label,
            write_batches,
            reads,
        },
        server_us,
    ))
}

/// Stores one batch the way msg_job does: the messages, then their heads.
async fn write(
    store: &ConversationStore,
    segments: Option<&mut Segments>,
    batch: &[NewMessage],
) -> anyhow::Result<()> {
    let seqs = match segments {
        None => store.insert(batch).await.context("insert messages")?,
        Some(segments) => segments.insert(batch).await?,
    };
    store
        .raise_heads(batch.iter().map(NewMessage::key).zip(seqs))
        .await
        .context("raise heads")?;
    Ok(())
}

/// One page as manager reads it for the pair's first user; returns its seqs.
async fn read(
    store: &ConversationStore,
    segments: Option<&Segments>,
    messages: &Messages,
    pair: u64,
    range: Range,
) -> anyhow::Result<Vec<u64>> {
    let (user, peer) = messages.users(pair);
    let key = ConvKey::direct(user, peer);
    let limit = PAGE as u32;
    let page = match segments {
        None => match range {
            Range::After(after) => store.sync(user, key, after, limit).await?.messages,
            Range::Before(before) => store.history(user, key, before, limit).await?.messages,
        },
        Some(segments) => {
            store.membership(user, key).await?;
            segments.page(key, range, PAGE).await?.0
        }
    };
    Ok(page.iter().map(|m| m.seq).collect())
}

/// The seqs a page at `range` must hold in a conversation whose head is `head`.
fn expected_page(range: Range, head: u64) -> Vec<u64> {
    match range {
        Range::After(after) => (after + 1..=head).take(PAGE).collect(),
        Range::Before(before) => (1..before).rev().take(PAGE).collect(),
    }
}

/// The messages written: pair `p` is users `2p + 1` and `2p + 2`, taking
/// turns to send; ids count up; each pair's head is tracked to check reads.
struct Messages {
    next_id: u64,
    heads: HashMap<u64, u64>,
    body: Bytes,
}

impl Messages {
    fn new(body: usize) -> Self {
        Self {
            next_id: 1,
            heads: HashMap::new(),
            body: Bytes::from(vec![b'x'; body]),
        }
    }

    fn users(&self, pair: u64) -> (u64, u64) {
        (2 * pair + 1, 2 * pair + 2)
    }

    fn head(&self, pair: u64) -> u64 {
        self.heads.get(&pair).copied().unwrap_or(0)
    }

    fn next(&mut self, pair: u64) -> NewMessage {
        let (a, b) = self.users(pair);
        let head = self.heads.entry(pair).or_default();
        *head += 1;
        let (from, to) = if *head % 2 == 1 { (a, b) } else { (b, a) };
        let id = self.next_id;
        self.next_id += 1;
        NewMessage {
            server_msg_id: id,
            from_user_id: from,
            target: Target::ToUserId(to),
            body: self.body.clone(),
            timestamp_ms: 1_700_000_000_000 + id as i64,
            client_msg_id: format!("c{id}"),
        }
    }
}

/// Microseconds, up to ten minutes.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_micros().try_into().unwrap_or(u64::MAX));
}

fn ms(histogram: &Histogram<u64>, percentile: f64) -> f64 {
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

/// CPU seconds so far of the server (when its pid is known) and of this process.
fn cpu(server: Option<u32>) -> (Option<f64>, Option<f64>) {
    (
        server.and_then(tree_cpu_secs),
        tree_cpu_secs(std::process::id()),
    )
}

/// CPU seconds of the server and of this process since `before`; NaN where unknown.
fn used_since(before: (Option<f64>, Option<f64>), server: Option<u32>) -> (f64, f64) {
    let after = cpu(server);
    let used = |a: Option<f64>, b: Option<f64>| a.zip(b).map_or(f64::NAN, |(a, b)| a - b);
    (used(after.0, before.0), used(after.1, before.1))
}

fn number(stats: &mongodb::bson::Document, name: &str) -> f64 {
    match stats.get(name) {
        Some(mongodb::bson::Bson::Double(v)) => *v,
        Some(mongodb::bson::Bson::Int32(v)) => f64::from(*v),
        Some(mongodb::bson::Bson::Int64(v)) => *v as f64,
        _ => f64::NAN,
    }
}
