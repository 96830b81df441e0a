//! `mqtt-fanout`: N subscribers, one topic each, and one publisher that
//! publishes `--messages` QoS 0 messages round-robin over their topics, each
//! payload stamped with its send time. It answers "how many deliveries a second
//! does the broker sustain to many connections, and how late do they arrive".

use anyhow::{Context, ensure};
use serde::Serialize;

use super::MqttArgs;
use super::client::{Conn, stamped_publish};
use crate::report::Report;
use crate::subscribers::fanout::{self, Pace};
use crate::subscribers::{self as fleet, ConnectArgs};

/// PUBLISH packets encoded and written at once.
const BATCH: usize = 64;

/// Parameters of `mqtt-fanout`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) mqtt: MqttArgs,
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
        args.mqtt.protocol(&args.connect)?,
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

    let mut publisher = Conn::connect(args.mqtt.broker, None)
        .await
        .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))?;
    publisher
        .handshake(&format!("{}-publisher", args.connect.client_prefix), 0)
        .await
        .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))?;
    let pace = Pace {
        messages: args.messages,
        batch: BATCH,
        rate: args.publish_rate,
        window: args.window,
    };
    let targets = &fleet.subscribed;
    let published = fanout::publish(&fleet, pace, async |first, count| {
        publisher
            .send(|out| {
                for k in first..first + count {
                    stamped_publish(targets[k % targets.len()], args.payload_bytes, out);
                }
            })
            .await
            .map_err(|f| anyhow::anyhow!("publisher: {}", f.0))
            .context("publishing")
    })
    .await?;
    let _ = publisher.send(super::codec::disconnect).await;

    let mut report = Report {
        charts: Vec::new(),
        scenario: "mqtt-fanout".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    fanout::report(&mut report, fleet, published, "mosquitto").await;
    Ok(report)
}
