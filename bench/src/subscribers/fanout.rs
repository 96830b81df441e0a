//! The fan-out half every subscriber scenario shares (`mqtt-fanout`,
//! `centrifugo-fanout`): publish in batches while at most a window of
//! messages is on its way, wait for the tail, and report deliveries per
//! second, latency, losses and the charts. How one batch is published is the
//! server's own.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::{Fleet, add_percentiles, add_setup};
use crate::idle::track::Readings;
use crate::push::clock;
use crate::report::{Chart, Report, Series};
use crate::wait;

/// How long the deliveries still on their way may take once all is published.
const DRAIN: Duration = Duration::from_secs(10);

/// How to publish.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Messages to publish in all.
    pub messages: usize,
    /// Messages per publish call.
    pub batch: usize,
    /// Messages per second at most (0: as fast as the window allows).
    pub rate: f64,
    /// Most messages published and not yet delivered.
    pub window: u64,
}

/// What publishing did.
#[derive(Debug)]
pub struct Published {
    sent: usize,
    secs: f64,
    first_publish_us: u64,
    readings: Vec<(f64, u64)>,
    window_wait: Duration,
}

/// Publishes `pace.messages` in batches through `publish(first, count)`
/// (messages `first..first + count`, to be spread over `fleet.subscribed`),
/// waiting whenever more than `pace.window` are on their way, then waits
/// up to 10 s for the tail.
pub async fn publish(
    fleet: &Fleet,
    pace: Pace,
    mut publish: impl AsyncFnMut(usize, usize) -> anyhow::Result<()>,
) -> anyhow::Result<Published> {
    let delivered = &fleet.counters.delivered;
    let started = Instant::now();
    let first_publish_us = clock::now_us();
    let mut readings = Readings::start();
    let mut sent = 0usize;
    let mut window_wait = Duration::ZERO;
    while sent < pace.messages {
        readings.poll(Instant::now(), delivered.load(Ordering::Relaxed));
        if pace.rate > 0.0 {
            sleep_until(started + Duration::from_secs_f64(sent as f64 / pace.rate)).await;
        }
        if sent as u64 > delivered.load(Ordering::Relaxed) + pace.window {
            // A server may drop messages (MQTT QoS 0), so the window may never open again.
            let waited = Instant::now();
            let opened = wait::until(waited + DRAIN, || {
                let now = delivered.load(Ordering::Relaxed);
                readings.poll(Instant::now(), now);
                sent as u64 <= now + pace.window
            })
            .await;
            window_wait += waited.elapsed();
            if !opened {
                eprintln!("warning: the window stayed full for {DRAIN:?}; publishing stops");
                break;
            }
        }
        let batch = pace.batch.max(1).min(pace.messages - sent);
        publish(sent, batch).await?;
        sent += batch;
    }
    let secs = started.elapsed().as_secs_f64();
    wait::until(Instant::now() + DRAIN, || {
        let now = delivered.load(Ordering::Relaxed);
        readings.poll(Instant::now(), now);
        now >= sent as u64
    })
    .await;
    Ok(Published {
        sent,
        secs,
        first_publish_us,
        readings: readings.finish(Instant::now(), delivered.load(Ordering::Relaxed)),
        window_wait,
    })
}

/// Closes the subscribers and adds what they received to `report`: messages
/// delivered and lost, deliveries per second, latency percentiles, the
/// charts (series `server`), failures.
pub async fn report(report: &mut Report, fleet: Fleet, published: Published, server: &str) {
    add_setup(report, &fleet);
    let setup_failures = fleet.failures.clone();
    let closed = fleet.close().await;
    let received = closed.latency.len();
    let span_secs = closed
        .last_delivery_us
        .saturating_sub(published.first_publish_us) as f64
        / 1e6;
    report.add("messages published", published.sent as f64, "");
    report.add("publish time", published.secs, "s");
    report.add("messages delivered", received as f64, "");
    report.add("messages lost", published.sent as f64 - received as f64, "");
    report.add(
        "deliveries per second",
        received as f64 / span_secs.max(f64::EPSILON),
        "msgs/s",
    );
    add_percentiles(report, "delivery latency", &closed.latency);
    let scenario = report.scenario.clone();
    report.charts = vec![
        Chart::latency_cdf(
            &format!("{scenario}: delivery latency"),
            vec![Series::latency_cdf(server, &closed.latency)],
        ),
        Chart::throughput(
            &format!("{scenario}: deliveries per second"),
            "deliveries/s",
            vec![Series::rates(server, &published.readings)],
        ),
    ];
    report.add("held until close", closed.held as f64, "");
    for (kind, count) in setup_failures.iter().chain(&closed.failures) {
        report.add(&format!("failed: {kind}"), *count as f64, "");
    }
    report.details = serde_json::json!({
        "first_publish_us": published.first_publish_us,
        "last_delivery_us": closed.last_delivery_us,
        "window_wait_ms": published.window_wait.as_millis(),
    });
}
