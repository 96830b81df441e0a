//! `compare`: the access node and its baselines under the same load shape in
//! one run, reported side by side as ratios.
//!
//! Absolute figures drift between runs on a shared machine, so a claim such as
//! "a quarter of Mosquitto's memory" is only worth something when both numbers
//! come from the same run. This scenario runs, one after the other:
//!
//! 1. `idle` against the access node (start it fresh: its memory is measured),
//!    then against a freshly started `tokio-server`, then `mqtt-idle` against a
//!    freshly started Mosquitto and `centrifugo-idle` against a freshly started
//!    Centrifugo, all with the same connections, rate and hold;
//! 2. `push --target both` (the access node, then a fresh `tokio-server`),
//!    `mqtt-fanout` to as many subscribers of a fresh Mosquitto (one topic per
//!    user, as each user has an inbox) and `centrifugo-fanout` to as many
//!    subscribers of a fresh Centrifugo (one channel per user, `--push-batch`
//!    channels per broadcast call, as users per push request).
//!
//! Each part is the ordinary scenario, parsed from the same flags a user would
//! type, and saves its own report under `<out-dir>/compare/`; this report
//! gathers their headline figures, the ratios, and one chart per kind with a
//! line per server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use clap::{FromArgMatches, Parser};
use serde::Serialize;

use crate::baseline::spawn::Spawned;
use crate::report::{Chart, Report};
use crate::scripted::Scripted;
use crate::{centrifugo, idle, mqtt, push};

/// Parameters of the comparison.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    /// The access node's client address.
    #[arg(long)]
    pub access: SocketAddr,
    /// The access node's Push gRPC address.
    #[arg(long)]
    pub push_addr: String,
    /// The access node's process, for its memory and CPU.
    #[arg(long)]
    pub access_pid: u32,
    /// The register HTTP API, for accounts and tokens.
    #[arg(long, default_value = "http://127.0.0.1:8010")]
    pub register: String,
    /// Accounts are named `<prefix>-idle-<i>` and `<prefix>-push-<i>`.
    #[arg(long, default_value = "compare")]
    pub user_prefix: String,
    /// Idle connections per server.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Idle connections started per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds the idle connections are held.
    #[arg(long, default_value_t = 20.0)]
    pub hold: f64,
    /// Source addresses 127.0.0.2 .. 127.0.0.<K+1> for the idle connections.
    #[arg(long, default_value_t = 2)]
    pub source_ip_count: u8,
    /// Connections (subscribers) the push and fan-out parts deliver to.
    #[arg(long, default_value_t = 1000)]
    pub push_connections: usize,
    /// Seconds the push part is measured, per server.
    #[arg(long, default_value_t = 10.0)]
    pub push_seconds: f64,
    /// Users named per push request.
    #[arg(long, default_value_t = 500)]
    pub push_batch: usize,
    /// Messages the fan-out part publishes to Mosquitto.
    #[arg(long, default_value_t = 200_000)]
    pub fanout_messages: usize,
    /// Ports the started tokio baselines use: PORT for clients, PORT+1 for pushes.
    #[arg(long, default_value_t = 23600)]
    pub tokio_port: u16,
    /// Port the started Mosquitto listens on.
    #[arg(long, default_value_t = 18830)]
    pub mosquitto_port: u16,
    /// The script that starts and stops a private Mosquitto.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mosquitto.sh"))]
    pub mosquitto_script: PathBuf,
    /// Leave Mosquitto out (when it cannot be installed).
    #[arg(long)]
    pub without_mosquitto: bool,
    /// Port the started Centrifugo listens on (WebSocket and server API).
    #[arg(long, default_value_t = 18000)]
    pub centrifugo_port: u16,
    /// The script that installs, starts and stops a private Centrifugo.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/centrifugo.sh"))]
    pub centrifugo_script: PathBuf,
    /// Leave Centrifugo out (when it cannot be built).
    #[arg(long)]
    pub without_centrifugo: bool,
}

/// Parses one part's flags exactly as its own subcommand would.
#[derive(Debug, Parser)]
struct Part<A: clap::Args + FromArgMatches> {
    #[command(flatten)]
    args: A,
}

fn part_args<A: clap::Args + FromArgMatches>(
    scenario: &str,
    flags: &[String],
) -> anyhow::Result<A> {
    let argv = std::iter::once(scenario.to_string()).chain(flags.iter().cloned());
    Ok(Part::<A>::try_parse_from(argv)
        .with_context(|| format!("flags of the {scenario} part: {}", flags.join(" ")))?
        .args)
}

/// Runs every part and returns the comparison.
pub async fn run(args: &Args, out_dir: &Path) -> anyhow::Result<Report> {
    ensure!(
        args.connections > 0 && args.push_connections > 0,
        "connection counts must be positive"
    );
    let dir = out_dir.join("compare");
    // The idle load shape, the same for every server.
    let shape = [
        format!("--connections={}", args.connections),
        format!("--rate={}", args.rate),
        format!("--hold={}", args.hold),
        format!("--source-ip-count={}", args.source_ip_count),
    ];
    let idle_flags = |server: SocketAddr, pid: u32| -> Vec<String> {
        let mut flags = vec![
            format!("--access={server}"),
            format!("--access-pid={pid}"),
            format!("--register={}", args.register),
            format!("--user-prefix={}-idle", args.user_prefix),
        ];
        flags.extend(shape.iter().cloned());
        if server != args.access {
            flags.push("--baseline-tokens".into());
        }
        flags
    };

    let mut parts = Vec::new();
    eprintln!("== idle: access");
    let report = idle::run(
        &part_args("idle", &idle_flags(args.access, args.access_pid))?,
        &dir,
    )
    .await?;
    parts.push(save(report, "idle-access", &dir)?);

    eprintln!("== idle: tokio baseline");
    {
        let tokio = Spawned::start(args.tokio_port).await?;
        let report = idle::run(
            &part_args("idle", &idle_flags(tokio.client, tokio.pid()))?,
            &dir,
        )
        .await?;
        parts.push(save(report, "idle-tokio", &dir)?);
    }

    if !args.without_mosquitto {
        eprintln!("== idle: mosquitto");
        let broker = Scripted::start(
            &args.mosquitto_script,
            args.mosquitto_port,
            dir.join("mosquitto-idle"),
        )?;
        let mut flags = vec![
            format!("--broker=127.0.0.1:{}", args.mosquitto_port),
            format!("--broker-pid={}", broker.pid),
        ];
        flags.extend(shape.iter().cloned());
        let report = mqtt::run_idle(&part_args("mqtt-idle", &flags)?).await?;
        parts.push(save(report, "idle-mosquitto", &dir)?);
    }

    if !args.without_centrifugo {
        eprintln!("== idle: centrifugo");
        let server = Scripted::start(
            &args.centrifugo_script,
            args.centrifugo_port,
            dir.join("centrifugo-idle"),
        )?;
        let mut flags = vec![
            format!("--server=127.0.0.1:{}", args.centrifugo_port),
            format!("--broker-pid={}", server.pid),
        ];
        flags.extend(shape.iter().cloned());
        let report = centrifugo::run_idle(&part_args("centrifugo-idle", &flags)?).await?;
        parts.push(save(report, "idle-centrifugo", &dir)?);
    }

    eprintln!("== push: access, then the tokio baseline");
    let flags = [
        "--target=both".to_string(),
        format!("--access={}", args.access),
        format!("--push-addr={}", args.push_addr),
        format!("--server-pid={}", args.access_pid),
        format!("--register={}", args.register),
        format!("--user-prefix={}-push", args.user_prefix),
        format!("--connections={}", args.push_connections),
        format!("--seconds={}", args.push_seconds),
        format!("--batch={}", args.push_batch),
        format!("--tokio-port={}", args.tokio_port),
    ];
    let report = push::run(&part_args("push", &flags)?, &dir).await?;
    parts.push(save(report, "push", &dir)?);

    if !args.without_mosquitto {
        eprintln!("== fan-out: mosquitto");
        let broker = Scripted::start(
            &args.mosquitto_script,
            args.mosquitto_port,
            dir.join("mosquitto-fanout"),
        )?;
        let flags = [
            format!("--broker=127.0.0.1:{}", args.mosquitto_port),
            format!("--connections={}", args.push_connections),
            format!("--messages={}", args.fanout_messages),
        ];
        let report = mqtt::run_fanout(&part_args("mqtt-fanout", &flags)?).await?;
        drop(broker);
        parts.push(save(report, "fanout-mosquitto", &dir)?);
    }

    if !args.without_centrifugo {
        eprintln!("== fan-out: centrifugo");
        let server = Scripted::start(
            &args.centrifugo_script,
            args.centrifugo_port,
            dir.join("centrifugo-fanout"),
        )?;
        let flags = [
            format!("--server=127.0.0.1:{}", args.centrifugo_port),
            format!("--server-pid={}", server.pid),
            format!("--connections={}", args.push_connections),
            format!("--messages={}", args.fanout_messages),
            format!("--batch={}", args.push_batch),
        ];
        let report = centrifugo::run_fanout(&part_args("centrifugo-fanout", &flags)?).await?;
        drop(server);
        parts.push(save(report, "fanout-centrifugo", &dir)?);
    }

    gather(args, &parts)
}

/// Renames a part's report (so parts of one scenario do not overwrite each
/// other), saves it, and hands it back.
fn save(mut report: Report, name: &str, dir: &Path) -> anyhow::Result<Report> {
    report.scenario = name.into();
    report.print();
    let path = report.save(dir)?;
    eprintln!("saved {}", path.display());
    Ok(report)
}

/// A figure of one part, by its exact name.
fn figure(parts: &[Report], part: &str, name: &str) -> Option<f64> {
    parts
        .iter()
        .find(|r| r.scenario == part)?
        .figures
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.value)
}

/// Where each headline figure sits in the parts: (row, part, figure, unit).
const ROWS: &[(&str, &str, &str, &str)] = &[
    (
        "idle access: bytes per connection",
        "idle-access",
        "access VmRSS per connection",
        "bytes",
    ),
    (
        "idle tokio: bytes per connection",
        "idle-tokio",
        "access VmRSS per connection",
        "bytes",
    ),
    (
        "idle mosquitto: bytes per connection",
        "idle-mosquitto",
        "broker VmRSS per connection",
        "bytes",
    ),
    (
        "idle centrifugo: bytes per connection",
        "idle-centrifugo",
        "broker VmRSS per connection",
        "bytes",
    ),
    (
        "idle access: connections held",
        "idle-access",
        "connections held at measurement",
        "",
    ),
    (
        "idle tokio: connections held",
        "idle-tokio",
        "connections held at measurement",
        "",
    ),
    (
        "idle mosquitto: connections held",
        "idle-mosquitto",
        "connections held at measurement",
        "",
    ),
    (
        "idle centrifugo: connections held",
        "idle-centrifugo",
        "connections held at measurement",
        "",
    ),
    (
        "idle access: login p99",
        "idle-access",
        "login latency p99",
        "ms",
    ),
    (
        "idle tokio: login p99",
        "idle-tokio",
        "login latency p99",
        "ms",
    ),
    (
        "idle mosquitto: connect+subscribe p99",
        "idle-mosquitto",
        "connect+subscribe latency p99",
        "ms",
    ),
    (
        "push access: frames delivered",
        "push",
        "access: frames delivered",
        "frames/s",
    ),
    (
        "push tokio: frames delivered",
        "push",
        "tokio: frames delivered",
        "frames/s",
    ),
    (
        "fan-out mosquitto: deliveries",
        "fanout-mosquitto",
        "deliveries per second",
        "msgs/s",
    ),
    (
        "fan-out centrifugo: deliveries",
        "fanout-centrifugo",
        "deliveries per second",
        "msgs/s",
    ),
    (
        "push access: latency p99",
        "push",
        "access: latency p99",
        "ms",
    ),
    (
        "push tokio: latency p99",
        "push",
        "tokio: latency p99",
        "ms",
    ),
    (
        "fan-out mosquitto: latency p99",
        "fanout-mosquitto",
        "delivery latency p99",
        "ms",
    ),
    (
        "fan-out centrifugo: latency p99",
        "fanout-centrifugo",
        "delivery latency p99",
        "ms",
    ),
    (
        "push access: server CPU per frame",
        "push",
        "access: server CPU per frame",
        "µs",
    ),
    (
        "push tokio: server CPU per frame",
        "push",
        "tokio: server CPU per frame",
        "µs",
    ),
    (
        "push access: server kernel CPU per frame",
        "push",
        "access: server kernel CPU per frame",
        "µs",
    ),
    (
        "push tokio: server kernel CPU per frame",
        "push",
        "tokio: server kernel CPU per frame",
        "µs",
    ),
    (
        "fan-out centrifugo: server CPU per delivery",
        "fanout-centrifugo",
        "server CPU per delivery",
        "µs",
    ),
];

/// Ratios between rows: (name, numerator row, denominator row).
const RATIOS: &[(&str, &str, &str)] = &[
    (
        "idle bytes per connection: access / tokio",
        "idle access: bytes per connection",
        "idle tokio: bytes per connection",
    ),
    (
        "idle bytes per connection: access / mosquitto",
        "idle access: bytes per connection",
        "idle mosquitto: bytes per connection",
    ),
    (
        "idle bytes per connection: access / centrifugo",
        "idle access: bytes per connection",
        "idle centrifugo: bytes per connection",
    ),
    (
        "push frames/s: access / tokio",
        "push access: frames delivered",
        "push tokio: frames delivered",
    ),
    (
        "push frames/s: access / mosquitto fan-out",
        "push access: frames delivered",
        "fan-out mosquitto: deliveries",
    ),
    (
        "push frames/s: access / centrifugo fan-out",
        "push access: frames delivered",
        "fan-out centrifugo: deliveries",
    ),
    (
        "push latency p99: access / tokio",
        "push access: latency p99",
        "push tokio: latency p99",
    ),
    (
        "push latency p99: access / centrifugo fan-out",
        "push access: latency p99",
        "fan-out centrifugo: latency p99",
    ),
    (
        "push CPU per frame: access / tokio",
        "push access: server CPU per frame",
        "push tokio: server CPU per frame",
    ),
    (
        "push kernel CPU per frame, access / all CPU per frame, tokio",
        "push access: server kernel CPU per frame",
        "push tokio: server CPU per frame",
    ),
    (
        "push CPU per delivery: access / centrifugo",
        "push access: server CPU per frame",
        "fan-out centrifugo: server CPU per delivery",
    ),
];

/// The comparison's own report: headline rows, ratios, merged charts.
fn gather(args: &Args, parts: &[Report]) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: "compare".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::json!({ "parts": parts.iter().map(|r| &r.scenario).collect::<Vec<_>>() }),
        charts: Vec::new(),
    };
    let mut rows = Vec::new();
    for &(row, part, name, unit) in ROWS {
        if let Some(value) = figure(parts, part, name) {
            report.add(row, value, unit);
            rows.push((row, value));
        }
    }
    let row = |name: &str| rows.iter().find(|(r, _)| *r == name).map(|&(_, v)| v);
    for &(name, over, under) in RATIOS {
        if let (Some(a), Some(b)) = (row(over), row(under))
            && b > 0.0
        {
            report.add(name, a / b, "x");
        }
    }
    report.charts = merge_charts(
        parts,
        "idle",
        &[
            "idle-access",
            "idle-tokio",
            "idle-mosquitto",
            "idle-centrifugo",
        ],
    );
    report.charts.extend(merge_charts(
        parts,
        "push",
        &["push", "fanout-mosquitto", "fanout-centrifugo"],
    ));
    Ok(report)
}

/// One chart per chart name found in `family`'s parts, holding every part's
/// series of that name, named `<prefix>-<chart name>`.
fn merge_charts(parts: &[Report], prefix: &str, family: &[&str]) -> Vec<Chart> {
    let mut merged: Vec<Chart> = Vec::new();
    for part in parts
        .iter()
        .filter(|r| family.contains(&r.scenario.as_str()))
    {
        for chart in &part.charts {
            let name = format!("{prefix}-{}", chart.name);
            match merged.iter_mut().find(|c| c.name == name) {
                Some(into) => into.series.extend(chart.series.iter().cloned()),
                None => merged.push(Chart {
                    name,
                    ..chart.clone()
                }),
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ChartKind, Series};

    fn part(scenario: &str, figures: &[(&str, f64)], charts: Vec<Chart>) -> Report {
        let mut report = Report {
            scenario: scenario.into(),
            config: serde_json::Value::Null,
            figures: Vec::new(),
            details: serde_json::Value::Null,
            charts,
        };
        for &(name, value) in figures {
            report.add(name, value, "");
        }
        report
    }

    fn cdf(label: &str) -> Chart {
        Chart {
            name: "latency-cdf".into(),
            title: "latency".into(),
            kind: ChartKind::LatencyCdf,
            x_label: "ms".into(),
            y_label: "fraction".into(),
            series: vec![Series {
                label: label.into(),
                points: vec![(1.0, 1.0)],
            }],
        }
    }

    fn args() -> Args {
        part_args::<Args>(
            "compare",
            &[
                "--access=127.0.0.1:1".into(),
                "--push-addr=127.0.0.1:2".into(),
                "--access-pid=3".into(),
            ],
        )
        .expect("flags parse")
    }

    #[test]
    fn ratios_come_from_the_parts_of_one_run() {
        let parts = [
            part(
                "idle-access",
                &[("access VmRSS per connection", 250.0)],
                vec![cdf("access")],
            ),
            part(
                "idle-tokio",
                &[("access VmRSS per connection", 10_000.0)],
                vec![cdf("tokio")],
            ),
            part(
                "idle-mosquitto",
                &[("broker VmRSS per connection", 1000.0)],
                vec![cdf("mosquitto")],
            ),
            part(
                "idle-centrifugo",
                &[("broker VmRSS per connection", 5000.0)],
                vec![cdf("centrifugo")],
            ),
        ];
        let report = gather(&args(), &parts).expect("gathered");
        let value = |name: &str| {
            report
                .figures
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value)
        };
        assert_eq!(
            value("idle bytes per connection: access / tokio"),
            Some(0.025)
        );
        assert_eq!(
            value("idle bytes per connection: access / mosquitto"),
            Some(0.25)
        );
        assert_eq!(
            value("idle bytes per connection: access / centrifugo"),
            Some(0.05)
        );
        // No push part ran: no push rows, no push ratio.
        assert_eq!(value("push frames/s: access / tokio"), None);
        assert_eq!(report.charts.len(), 1);
        assert_eq!(report.charts[0].name, "idle-latency-cdf");
        let labels: Vec<_> = report.charts[0]
            .series
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["access", "tokio", "mosquitto", "centrifugo"]);
    }

    #[test]
    fn a_zero_denominator_gives_no_ratio() {
        let parts = [
            part(
                "idle-access",
                &[("access VmRSS per connection", 250.0)],
                Vec::new(),
            ),
            part(
                "idle-tokio",
                &[("access VmRSS per connection", 0.0)],
                Vec::new(),
            ),
        ];
        let report = gather(&args(), &parts).expect("gathered");
        assert!(report.figures.iter().all(|f| !f.name.contains(" / ")));
    }

    #[test]
    fn parts_are_parsed_by_their_own_scenario_rules() {
        let idle: idle::Args = part_args(
            "idle",
            &["--access=127.0.0.1:1".into(), "--connections=5".into()],
        )
        .expect("idle flags");
        assert_eq!(idle.connections, 5);
        let bad = part_args::<idle::Args>("idle", &["--connections=many".into()]);
        assert!(bad.is_err());
    }
}
