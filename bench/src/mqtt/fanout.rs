//! `mqtt-fanout`: N subscribers, one topic each, and one publisher that
//! publishes `--messages` QoS 0 messages round-robin over their topics, each
//! payload stamped with its send time. It answers "how many deliveries a second
//! does the broker sustain to many connections, and how late do they arrive".

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

use super::client::Conn;
use super::{ConnectArgs, add_percentiles, add_setup, fleet};
use crate::idle::track::Readings;
use crate::push::clock;
use crate::report::{Chart, Report, Series};
use crate::wait;

/// PUBLISH packets encoded and written at once.
const BATCH: usize = 64;
/// How long the deliveries still on their way may take once all is published.
const DRAIN: Duration = Duration::from_secs(10);
/// The series label of every chart: the server measured.
const SERVER: &str = "mosquitto";

/// Parameters of `mqtt-fanout`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) connect: ConnectArgs,
    /// Messages to publish in all, round-robin over the subscribers' topics.
    #[arg(long, default_value_t = 100_000)]
    pub(super) messages: usize,
    /// Messages published per second [default: 0 = as fast as the window allows].
    #[arg(long, default_value_t = 0.0)]
    pub(super) publish_rate: f64,
    /// Most messages published and not yet delivered: the publisher waits
    /// above it, so the rate measured is what the broker sustains, not how
    /// fast its queues grow.
    #[arg(long, default_value_t = 10_000)]
    pub(super) window: u64,
    /// Payload bytes per message (at least the 8-byte send stamp).
    #[arg(long, default_value_t = 32)]
    pub(super) payload_bytes: usize,
}

/// Runs `mqtt-fanout` and returns its report.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Report> {
    args.connect.check()?;
    ensure!(args.messages > 0, "--messages must be positive");
    ensure!(args.window > 0, "--window must be positive");
    ensure!(
        args.publish_rate >= 0.0,
        "--publish-rate must not be negative"
    );
    let fleet = fleet::open(
        args.connect.plan(),
        args.connect.connections,
        args.connect.rate,
        None,
    )
    .await;
    ensure!(
        !fleet.subscribed.is_empty(),
        "no subscriber could subscribe: {:?}",
        fleet.failures
    );

    let mut publisher = Conn::connect(args.connect.broker, None)
        .await
        .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))?;
    publisher
        .handshake(&format!("{}-publisher", args.connect.client_prefix), 0)
        .await
        .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))?;

    let delivered = &fleet.counters.delivered;
    let started = Instant::now();
    let first_publish_us = clock::now_us();
    let mut readings = Readings::start();
    let mut sent = 0usize;
    let mut window_wait = Duration::ZERO;
    while sent < args.messages {
        readings.poll(Instant::now(), delivered.load(Ordering::Relaxed));
        if args.publish_rate > 0.0 {
            sleep_until(started + Duration::from_secs_f64(sent as f64 / args.publish_rate)).await;
        }
        if sent as u64 > delivered.load(Ordering::Relaxed) + args.window {
            // QoS 0 may lose messages, so the window may never open again.
            let waited = Instant::now();
            let opened = wait::until(waited + DRAIN, || {
                let now = delivered.load(Ordering::Relaxed);
                readings.poll(Instant::now(), now);
                sent as u64 <= now + args.window
            })
            .await;
            window_wait += waited.elapsed();
            if !opened {
                eprintln!("warning: the window stayed full for {DRAIN:?}; publishing stops");
                break;
            }
        }
        let batch = BATCH.min(args.messages - sent);
        let targets = &fleet.subscribed;
        publisher
            .send(|out| {
                for k in sent..sent + batch {
                    fleet::stamped_publish(targets[k % targets.len()], args.payload_bytes, out);
                }
            })
            .await
            .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))
            .context("publishing")?;
        sent += batch;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    wait::until(Instant::now() + DRAIN, || {
        let now = delivered.load(Ordering::Relaxed);
        readings.poll(Instant::now(), now);
        now >= sent as u64
    })
    .await;
    let readings = readings.finish(Instant::now(), delivered.load(Ordering::Relaxed));
    let _ = publisher.send(super::codec::disconnect).await;

    let mut report = Report {
        charts: Vec::new(),
        scenario: "mqtt-fanout".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    add_setup(&mut report, &fleet);
    let setup_failures = fleet.failures.clone();
    let closed = fleet.close().await;
    let received = closed.latency.len();
    let span_secs = closed.last_delivery_us.saturating_sub(first_publish_us) as f64 / 1e6;
    report.add("messages published", sent as f64, "");
    report.add("publish time", publish_secs, "s");
    report.add("messages delivered", received as f64, "");
    report.add("messages lost", sent as f64 - received as f64, "");
    report.add(
        "deliveries per second",
        received as f64 / span_secs.max(f64::EPSILON),
        "msgs/s",
    );
    add_percentiles(&mut report, "delivery latency", &closed.latency);
    report.charts = vec![
        Chart::latency_cdf(
            "mqtt-fanout: delivery latency",
            vec![Series::latency_cdf(SERVER, &closed.latency)],
        ),
        Chart::throughput(
            "mqtt-fanout: deliveries per second",
            "deliveries/s",
            vec![Series::rates(SERVER, &readings)],
        ),
    ];
    report.add("held until close", closed.held as f64, "");
    for (kind, count) in setup_failures.iter().chain(&closed.failures) {
        report.add(&format!("failed: {kind}"), *count as f64, "");
    }
    report.details = serde_json::json!({
        "first_publish_us": first_publish_us,
        "last_delivery_us": closed.last_delivery_us,
        "window_wait_ms": window_wait.as_millis(),
    });
    Ok(report)
}
