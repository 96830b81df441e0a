//! N idle subscribers of a pub/sub server (`mqtt-idle`, `centrifugo-idle`)
//! and the server's resident memory per connection, measured as the `idle`
//! scenario measures the access node: VmRSS median before, median after
//! `--settle` seconds of idleness, divided by the subscribers held.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{ConnectArgs, Protocol, add_setup};
use crate::idle::probe;
use crate::idle::track::Track;
use crate::report::{Chart, Report, Series};

/// Time between two memory readings after the flood.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Parameters of an idle subscribers scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) connect: ConnectArgs,
    /// Seconds to hold the subscribers once all are in.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) hold: f64,
    /// The broker's pid, to read its VmRSS.
    #[arg(long)]
    pub(crate) broker_pid: Option<u32>,
    /// Seconds of idleness after the last SUBACK before memory is read.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) settle: f64,
    /// Memory readings after the flood, one a second; the median is used.
    #[arg(long, default_value_t = 5)]
    pub(crate) samples: usize,
}

/// Runs `scenario` with `protocol`'s subscribers and returns its report;
/// `server` labels the charts' series.
pub async fn run<P: Protocol>(
    protocol: P,
    args: &IdleArgs,
    scenario: &str,
    server: &str,
) -> anyhow::Result<Report> {
    args.connect.check()?;
    anyhow::ensure!(
        args.hold >= 0.0 && args.settle >= 0.0,
        "--hold and --settle must not be negative"
    );
    let pids: Vec<u32> = args.broker_pid.into_iter().collect();
    let rss_before = if pids.is_empty() {
        None
    } else {
        Some(probe::rss_median(&pids, 3, Duration::from_millis(500)).await?)
    };

    let mut track = Track::start(&pids);
    let fleet = super::open(
        protocol,
        args.connect.plan(),
        args.connect.connections,
        args.connect.rate,
        Some(&mut track),
    )
    .await;
    let live = || fleet.counters.live.load(Ordering::Relaxed);
    let ramped_at = Instant::now();
    let settled = ramped_at + Duration::from_secs_f64(args.settle);
    track.wait_until(settled, live).await;
    let rss_idle = if pids.is_empty() {
        None
    } else {
        let mut readings = Vec::with_capacity(args.samples.max(1));
        for i in 0..args.samples.max(1) {
            track
                .wait_until(settled + SAMPLE_EVERY.mul_f64(i as f64), live)
                .await;
            readings.push(probe::rss_sum(&pids)?);
        }
        Some((probe::median(&readings), readings))
    };
    let held_at_measurement = live();
    track
        .wait_until(ramped_at + Duration::from_secs_f64(args.hold), live)
        .await;
    track.stop();
    let mut charts = vec![Chart::latency_cdf(
        &format!("{scenario}: connect+subscribe latency"),
        vec![Series::latency_cdf(server, &fleet.setup)],
    )];
    charts.extend(track.charts(scenario, server, "subscribers"));
    let mut report = Report {
        charts,
        scenario: scenario.into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    add_setup(&mut report, &fleet);
    let setup_failures = fleet.failures.clone();
    let closed = fleet.close().await;
    let rss_closed = if pids.is_empty() {
        None
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(probe::rss_sum(&pids)?)
    };

    report.add(
        "connections held at measurement",
        held_at_measurement as f64,
        "",
    );
    if let (Some((before, _)), Some((idle, _))) = (&rss_before, &rss_idle) {
        probe::Memory {
            before: *before,
            idle: *idle,
            held: held_at_measurement,
        }
        .add_to(&mut report, "broker");
    }
    if let Some(closed) = rss_closed {
        report.add("broker VmRSS after close", closed as f64, "bytes");
    }
    report.add("keepalives sent", closed.pings as f64, "");
    report.add("keepalives answered", closed.pongs as f64, "");
    report.add("held until close", closed.held as f64, "");
    for (kind, count) in setup_failures.iter().chain(&closed.failures) {
        report.add(&format!("failed: {kind}"), *count as f64, "");
    }
    report.details = serde_json::json!({
        "rss_before_samples": rss_before.map(|(_, s)| s),
        "rss_idle_samples": rss_idle.map(|(_, s)| s),
        "open_files_limit": probe::open_files_limit(),
    });
    Ok(report)
}
