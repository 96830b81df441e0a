//! `fishchat-bench`: load scenarios against a FishChat deployment, and
//! micro-benchmarks of its parts. Every run prints a table and saves its
//! figures, with its configuration, as JSON.

mod baseline;
mod centrifugo;
mod chat;
mod codec;
mod compare;
mod idle;
mod layout;
mod mqtt;
mod plot;
mod procstat;
mod progress;
mod push;
mod report;
mod scripted;
mod subscribers;
mod wait;
mod wakeup;

use std::path::{Path, PathBuf};

use anyhow::ensure;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-bench",
    version,
    about = "FishChat load generator and benchmarks"
)]
struct Cli {
    /// Where to write the JSON report (and the idle scenario's token cache).
    #[arg(long, global = true, alias = "out", default_value = "target/bench")]
    out_dir: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// The wire codec alone: decode rate, and encode-once-and-share against
    /// encode-per-connection for a fan-out.
    Codec(codec::Args),
    /// Many idle logged-in connections: login rate and latency, and the access
    /// node's resident memory per connection.
    Idle(idle::Args),
    /// One worker process of the idle scenario (started by `idle`).
    #[command(hide = true)]
    IdleWorker(idle::worker::Args),
    /// N logged-in connections on one server, its Push RPC driven directly:
    /// frames delivered per second and latency, against the tokio baseline.
    Push(push::Args),
    /// The baseline server of the push scenario: plain tokio, one task per
    /// connection, the same client protocol and Push gRPC.
    TokioServer(baseline::Args),
    /// The Mosquitto baseline of `idle`: N MQTT subscribers, one topic each,
    /// only PINGREQ; connect+subscribe latency and the broker's memory per connection.
    MqttIdle(mqtt::IdleArgs),
    /// The Mosquitto baseline of fan-out: N MQTT subscribers, one topic each,
    /// one publisher round-robin over them; deliveries per second and latency.
    MqttFanout(mqtt::FanoutArgs),
    /// The Centrifugo baseline of `idle`: N WebSocket subscribers, one channel
    /// each, only answering pings; connect+subscribe latency and the server's
    /// memory per connection.
    CentrifugoIdle(centrifugo::IdleArgs),
    /// The Centrifugo baseline of fan-out: N subscribers, one channel each,
    /// broadcast calls naming many channels; deliveries per second, latency
    /// and the server's CPU per delivery.
    CentrifugoFanout(centrifugo::FanoutArgs),
    /// The access node, the tokio baseline and Mosquitto under the same idle
    /// and push/fan-out load in one run, reported side by side as ratios.
    Compare(compare::Args),
    /// Pairs of users, A sending to B at a rate through the whole system:
    /// sent, acked, delivered, lost, duplicated, delivery latency.
    P2p(chat::P2pArgs),
    /// Groups with one sender each, every member receiving: fan-out
    /// deliveries per second, latency, lost, duplicated.
    Group(chat::GroupArgs),
    /// One worker process of the p2p and group scenarios (started by them).
    #[command(hide = true)]
    ChatWorker(chat::worker::Args),
    /// Pairs as in p2p while the receivers are disconnected at a rate and
    /// reconnect + SYNC: disconnects, reconnects, lost, duplicates, resync latency.
    Churn(chat::ChurnArgs),
    /// p2p traffic through the deployed system while each service in turn is
    /// killed -9 and each server restarted: per fault sent, acked, delivered,
    /// lost, duplicated and the time until every client was back.
    Chaos(chat::ChaosArgs),
    /// A user with many conversations, a few of which change while it is
    /// offline: reconnect + SYNC_CONVERSATIONS latency, and whether the reply
    /// lists exactly the changed ones.
    Resync(chat::ResyncArgs),
    /// The message store's layout on the MongoDB server: one document per
    /// message against packed segments, writes and reads, server CPU from /proc.
    Layout(layout::Args),
    /// Two threads waking each other in turn: the CPU one wake-up costs here.
    Wakeup(wakeup::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Codec(args) => codec::run(&args)?,
        Scenario::Wakeup(args) => wakeup::run(&args)?,
        Scenario::Idle(args) => {
            tokio::runtime::Runtime::new()?.block_on(idle::run(&args, &cli.out_dir))?
        }
        Scenario::IdleWorker(args) => {
            return tokio::runtime::Runtime::new()?.block_on(idle::worker::run(args));
        }
        Scenario::Compare(args) => {
            tokio::runtime::Runtime::new()?.block_on(compare::run(&args, &cli.out_dir))?
        }
        Scenario::Push(args) => {
            tokio::runtime::Runtime::new()?.block_on(push::run(&args, &cli.out_dir))?
        }
        Scenario::P2p(args) => {
            tokio::runtime::Runtime::new()?.block_on(chat::p2p(&args, &cli.out_dir))?
        }
        Scenario::Group(args) => {
            tokio::runtime::Runtime::new()?.block_on(chat::group(&args, &cli.out_dir))?
        }
        Scenario::ChatWorker(args) => {
            return tokio::runtime::Runtime::new()?.block_on(chat::worker::run(args));
        }
        Scenario::Churn(args) => {
            tokio::runtime::Runtime::new()?.block_on(chat::churn(&args, &cli.out_dir))?
        }
        Scenario::Chaos(args) => {
            tokio::runtime::Runtime::new()?.block_on(chat::chaos(&args, &cli.out_dir))?
        }
        Scenario::Resync(args) => {
            let run =
                tokio::runtime::Runtime::new()?.block_on(chat::resync(&args, &cli.out_dir))?;
            publish(&run.report, &cli.out_dir)?;
            // Saved first, so the rounds that went wrong can be read.
            ensure!(
                run.mismatched_rounds == 0,
                "{} rounds: SYNC_CONVERSATIONS did not list exactly the changed conversations",
                run.mismatched_rounds
            );
            return Ok(());
        }
        Scenario::Layout(args) => tokio::runtime::Runtime::new()?.block_on(layout::run(&args))?,
        Scenario::TokioServer(args) => {
            return tokio::runtime::Runtime::new()?.block_on(baseline::run(&args));
        }
        Scenario::MqttIdle(args) => {
            tokio::runtime::Runtime::new()?.block_on(mqtt::run_idle(&args))?
        }
        Scenario::MqttFanout(args) => {
            tokio::runtime::Runtime::new()?.block_on(mqtt::run_fanout(&args))?
        }
        Scenario::CentrifugoIdle(args) => {
            tokio::runtime::Runtime::new()?.block_on(centrifugo::run_idle(&args))?
        }
        Scenario::CentrifugoFanout(args) => {
            tokio::runtime::Runtime::new()?.block_on(centrifugo::run_fanout(&args))?
        }
    };
    publish(&report, &cli.out_dir)
}

/// Prints the report's table and saves it (JSON and charts) in `out_dir`.
fn publish(report: &report::Report, out_dir: &Path) -> anyhow::Result<()> {
    report.print();
    let path = report.save(out_dir)?;
    println!("saved {}", path.display());
    Ok(())
}
