//! `centrifugo-fanout`: N subscribers, one channel each, and a publisher that
//! calls the server API's `broadcast` with `--batch` channels per call (round
//! robin over the subscribers) until `--messages` deliveries were asked for,
//! each message stamped with its send time. It answers "how many deliveries a
//! second does Centrifugo sustain to many connections, how late do they
//! arrive, and what CPU does each cost the server".

use anyhow::{Context, ensure};
use serde::Serialize;

use super::ServerArgs;
use super::client::channel;
use crate::procstat;
use crate::push::clock;
use crate::report::Report;
use crate::subscribers::fanout::{self, Pace};
use crate::subscribers::{self as fleet, ConnectArgs};

/// Parameters of `centrifugo-fanout`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) server: ServerArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) connect: ConnectArgs,
    /// Messages to publish in all, one channel each, round-robin over the subscribers.
    #[arg(long, default_value_t = 100_000)]
    pub(super) messages: usize,
    /// Channels per broadcast call, as users per push request.
    #[arg(long, default_value_t = 500)]
    pub(super) batch: usize,
    /// Most deliveries asked for and not yet arrived: the publisher waits
    /// above it, so the rate measured is what the server sustains.
    #[arg(long, default_value_t = 10_000)]
    pub(super) window: u64,
    /// The server's pid, for its CPU per delivery.
    #[arg(long)]
    pub(super) server_pid: Option<u32>,
}

/// Runs `centrifugo-fanout` and returns its report.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Report> {
    args.connect.check()?;
    ensure!(args.messages > 0, "--messages must be positive");
    ensure!(args.batch > 0, "--batch must be positive");
    ensure!(args.window > 0, "--window must be positive");
    let fleet = fleet::open(
        args.server.protocol(),
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
    let api = reqwest::Client::new();
    let url = format!("http://{}/api/broadcast", args.server.server);
    let pace = Pace {
        messages: args.messages,
        batch: args.batch,
        rate: 0.0,
        window: args.window,
    };
    let targets = &fleet.subscribed;
    let cpu_before = args.server_pid.and_then(procstat::tree_cpu_secs);
    let published = fanout::publish(&fleet, pace, async |first, count| {
        let channels: Vec<String> = (first..first + count)
            .map(|k| channel(targets[k % targets.len()]))
            .collect();
        let answer = api
            .post(&url)
            .header("X-API-Key", &args.server.api_key)
            .json(&serde_json::json!({
                "channels": channels,
                "data": { "t": clock::now_us() },
            }))
            .send()
            .await
            .context("broadcast")?;
        ensure!(
            answer.status().is_success(),
            "broadcast answered {}",
            answer.status()
        );
        let reply: serde_json::Value = answer.json().await.context("broadcast reply")?;
        ensure!(reply.get("error").is_none(), "broadcast refused: {reply}");
        Ok(())
    })
    .await?;
    let cpu = args
        .server_pid
        .and_then(procstat::tree_cpu_secs)
        .zip(cpu_before)
        .map(|(after, before)| after - before);

    let mut report = Report {
        charts: Vec::new(),
        scenario: "centrifugo-fanout".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    fanout::report(&mut report, fleet, published, "centrifugo").await;
    if let Some(cpu) = cpu {
        let delivered = report
            .figures
            .iter()
            .find(|f| f.name == "messages delivered")
            .map_or(0.0, |f| f.value);
        report.add("server CPU", cpu, "s");
        report.add(
            "server CPU per delivery",
            cpu * 1e6 / delivered.max(1.0),
            "µs",
        );
    }
    Ok(report)
}
