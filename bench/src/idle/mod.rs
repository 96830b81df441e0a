//! The `idle` scenario: many logged-in connections doing nothing but PING,
//! and what they cost the access node in resident memory.
//!
//! The parent process provisions accounts and tokens through the register
//! API (cached between runs), reads the access processes' resident memory,
//! then starts worker processes of itself (`idle-worker`, at most
//! [`PER_WORKER`] sockets each, because one process may hold only so many
//! files) that connect at their share of the rate, LOGIN, and hold. Once
//! every connection is in and has been idle for `--settle` seconds, it reads
//! the memory again a few times and takes the median:
//! bytes per connection = (after − before) / connections logged in.

mod events;
pub(crate) mod probe;
pub(crate) mod provision;
pub(crate) mod track;
pub(crate) mod wire;
pub mod worker;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::chat::children::{self, Heard};
use crate::procstat::Watched;
use crate::progress::Progress;
use crate::report::{Chart, Report, Series};
use events::{Counts, Event, Summary};
use track::Track;
use wire::{Endpoints, Sources, TlsFlags};

/// Most connections one worker process holds (the open-files limit here is 20,000).
pub const PER_WORKER: usize = 19_000;
/// Time between two memory readings after the flood.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Extra time a worker is given to close everything before it is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// Parameters of the idle scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    /// Access nodes (or a gateway) and register.
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Connections to open and log in.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections started per second, over all workers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds to hold the connections once all are logged in (at least
    /// `--settle` plus `--samples` seconds when memory is measured).
    #[arg(long, default_value_t = 20.0)]
    pub hold: f64,
    /// Seconds between PINGs on each held connection (the access node cuts a
    /// connection silent for 3 heartbeat intervals, 90 s by default).
    #[arg(long, default_value_t = 30.0)]
    pub ping_interval: f64,
    /// Worker processes [default: connections / 19,000, rounded up].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where client sockets come from.
    #[command(flatten)]
    #[serde(flatten)]
    pub sources: Sources,
    /// TLS to the access nodes (to measure what a TLS connection costs).
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsFlags,
    /// An access process to read VmRSS of (repeatable; summed).
    #[arg(long = "access-pid")]
    pub access_pid: Vec<u32>,
    /// An access node's metrics address HOST:PORT, to read its connection gauge (repeatable).
    #[arg(long = "access-metrics")]
    pub access_metrics: Vec<String>,
    /// Accounts are named `<prefix>-<i>`.
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// The device id of every login.
    #[arg(long, default_value = "bench")]
    pub device_id: String,
    /// Seconds one connection may take to connect and log in.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// Seconds of idleness after the last login before memory is read.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Memory readings after the flood, one a second; the median is used.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Register requests in flight at once while provisioning.
    #[arg(long, default_value_t = 64)]
    pub provision_concurrency: usize,
    /// A process to report CPU time of (repeatable, NAME=PID: each server and
    /// service): CPU-seconds from the first login to the end of the hold, with
    /// its child processes, and microseconds per connection logged in.
    #[arg(long = "cpu", value_name = "NAME=PID")]
    pub cpu: Vec<String>,
    /// Ignore cached tokens and log every account in again.
    #[arg(long)]
    pub fresh_tokens: bool,
    /// Skip register: connection `i` logs in with the token `tok-<i+1>`, which
    /// only the tokio baseline (`tokio-server`) accepts.
    #[arg(long, conflicts_with = "fresh_tokens")]
    pub baseline_tokens: bool,
}

impl Args {
    fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| self.connections.div_ceil(PER_WORKER))
            .max(1)
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.connections > 0, "--connections must be positive");
        ensure!(self.rate > 0.0, "--rate must be positive");
        ensure!(self.ping_interval > 0.0, "--ping-interval must be positive");
        ensure!(self.login_timeout > 0.0, "--login-timeout must be positive");
        ensure!(
            self.hold >= 0.0 && self.settle >= 0.0,
            "--hold and --settle must not be negative"
        );
        self.sources.check()?;
        let workers = self.workers();
        ensure!(workers <= self.connections, "more workers than connections");
        ensure!(
            self.connections.div_ceil(workers) <= PER_WORKER,
            "at most {PER_WORKER} connections per worker: use --workers {} or more",
            self.connections.div_ceil(PER_WORKER)
        );
        Ok(())
    }
}

/// Runs the scenario and returns its report.
pub async fn run(args: &Args, out_dir: &Path) -> anyhow::Result<Report> {
    args.check()?;
    let watched = Watched::parse(&args.cpu)?;
    let workers = args.workers();
    let per_worker = args.connections.div_ceil(workers);
    if let Some(limit) = probe::open_files_limit()
        && limit < per_worker as u64 + 64
    {
        eprintln!(
            "warning: the open-files limit is {limit}, below {per_worker} sockets per worker: run `ulimit -n 20000` first"
        );
    }
    let progress = Progress::new();

    // 1. Accounts and tokens.
    progress.phase("provisioning", args.connections as u64);
    let flood_secs = args.connections as f64 / args.rate + args.login_timeout;
    let cache = out_dir.join(format!("idle-tokens-{}.json", args.user_prefix));
    let (accounts, provisioned) = if args.baseline_tokens {
        (
            provision::baseline_accounts(args.connections),
            provision::Provisioned::default(),
        )
    } else {
        provision::accounts(
            &provision::Plan {
                register: &args.endpoints.register,
                prefix: &args.user_prefix,
                count: args.connections,
                concurrency: args.provision_concurrency,
                valid_for: Duration::from_secs_f64(flood_secs + args.hold + 3600.0),
                fresh: args.fresh_tokens,
            },
            &cache,
            progress.bar(),
        )
        .await?
    };
    progress.finish();
    if args.baseline_tokens {
        eprintln!(
            "accounts: baseline tokens tok-1 .. tok-{}",
            args.connections
        );
    }

    // 2. The access processes before.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let pids = &args.access_pid;
    let rss_before = if pids.is_empty() {
        None
    } else {
        Some(probe::rss_median(pids, 3, Duration::from_millis(500)).await?)
    };
    let gauge_before = gauge(&http, &args.access_metrics).await?;

    // 3. The flood.
    let tokens_dir = out_dir.join("idle-workers");
    std::fs::create_dir_all(&tokens_dir)
        .with_context(|| format!("create {}", tokens_dir.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut children = Vec::with_capacity(workers);
    let mut stdins = Vec::with_capacity(workers);
    let sampling = if pids.is_empty() {
        0.0
    } else {
        args.settle + args.samples as f64
    };
    for k in 0..workers {
        let tokens = write_tokens(&tokens_dir, k, workers, &accounts)?;
        let share = accounts.len().saturating_sub(k).div_ceil(workers);
        let rate = args.rate * share as f64 / args.connections as f64;
        let deadline = share as f64 / rate + args.login_timeout + args.hold.max(sampling) + 120.0;
        let (child, stdin) = spawn_worker(args, &tokens, rate, deadline, k, tx.clone())?;
        children.push(child);
        stdins.push(stdin);
    }
    drop(tx);
    let mut flood = Flood::new(workers, Track::start(pids));
    let cpu_before = watched.sample();
    let started = Instant::now();
    progress.phase("logging in", args.connections as u64);
    let ramp_bound = started + Duration::from_secs_f64(flood_secs + 30.0);
    flood
        .pump(&mut rx, &progress, ramp_bound, Flood::ramped)
        .await;
    let ramp_wall = started.elapsed().as_secs_f64();
    let ramped_at = Instant::now();
    if !flood.ramped() {
        eprintln!(
            "warning: not every worker finished logging in within {:.0} s",
            ramp_wall
        );
    }
    let at_ramp = flood.totals();
    progress.phase("holding", args.connections as u64);

    // 4. The access processes after, idle.
    let mut rss_after = None;
    if !pids.is_empty() {
        let mut readings = Vec::with_capacity(args.samples.max(1));
        for i in 0..args.samples.max(1) {
            let at =
                ramped_at + Duration::from_secs_f64(args.settle) + SAMPLE_EVERY.mul_f64(i as f64);
            flood.pump(&mut rx, &progress, at, |_| false).await;
            readings.push(probe::rss_sum(pids)?);
        }
        rss_after = Some((probe::median(&readings), readings));
    } else {
        let at = ramped_at + Duration::from_secs_f64(args.settle);
        flood.pump(&mut rx, &progress, at, |_| false).await;
    }
    let measured = flood.totals();
    let gauge_after = gauge(&http, &args.access_metrics).await?;
    flood
        .pump(
            &mut rx,
            &progress,
            ramped_at + Duration::from_secs_f64(args.hold),
            |_| false,
        )
        .await;
    let cpu_after = watched.sample();
    let cpu_secs = started.elapsed().as_secs_f64();

    // 5. Close, collect, and read the memory once the connections are gone.
    flood.track.stop();
    progress.phase("closing", args.connections as u64);
    for mut stdin in stdins {
        let _ = stdin.write_all(b"close\n").await;
    }
    let close_bound = Instant::now() + Duration::from_secs_f64(args.login_timeout) + CLOSE_GRACE;
    flood
        .pump(&mut rx, &progress, close_bound, Flood::exited)
        .await;
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            eprintln!("warning: a worker did not exit; killing it");
            let _ = child.kill().await;
        }
    }
    progress.finish();
    let rss_closed = if pids.is_empty() {
        None
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(probe::rss_sum(pids)?)
    };

    let summary = flood.summary()?;
    let server = if args.baseline_tokens {
        "tokio"
    } else {
        "access"
    };
    let mut charts = vec![Chart::latency_cdf(
        "idle: connect+login latency",
        vec![Series::latency_cdf(server, &summary.latency)],
    )];
    charts.extend(flood.track.charts("idle", server, "logged-in connections"));
    let mut report = Report {
        charts,
        scenario: "idle".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    let ramp_secs = flood.ramp_secs();
    report.add("connections logged in", at_ramp.logged_in as f64, "");
    report.add("connections failed", at_ramp.failed as f64, "");
    report.add("connect+login time", ramp_secs, "s");
    report.add(
        "connect+login rate",
        at_ramp.logged_in as f64 / ramp_secs.max(f64::EPSILON),
        "logins/s",
    );
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("login latency {label}"),
            ms(summary.latency.value_at_quantile(q)),
            "ms",
        );
    }
    report.add("login latency max", ms(summary.latency.max()), "ms");
    report.add(
        "connections held at measurement",
        measured.logged_in as f64,
        "",
    );
    if let (Some(before), Some(after)) = (gauge_before, gauge_after) {
        report.add("access connections gauge before", before, "");
        report.add("access connections gauge at measurement", after, "");
    }
    if let (Some((before, _)), Some((idle, _))) = (&rss_before, &rss_after) {
        probe::Memory {
            before: *before,
            idle: *idle,
            held: measured.logged_in,
        }
        .add_to(&mut report, "access");
    }
    if let Some(closed) = rss_closed {
        report.add("access VmRSS after close", closed as f64, "bytes");
    }
    report.add("pings sent", summary.pings as f64, "");
    report.add("pongs received", summary.pongs as f64, "");
    report.add("held until close", summary.held as f64, "");
    for (kind, count) in &summary.failures {
        report.add(&format!("failed: {kind}"), *count as f64, "");
    }
    report.details = serde_json::json!({
        "workers": workers,
        "source_ips": args.sources.list(),
        "provisioning": provisioned,
        "ramp_secs_by_worker": flood.ramp,
        "ramp_wall_secs": ramp_wall,
        "rss_before_samples": rss_before.map(|(_, s)| s),
        "rss_idle_samples": rss_after.map(|(_, s)| s),
        "failures": summary.failures,
        "open_files_limit": probe::open_files_limit(),
    });
    watched.add_to(
        &mut report,
        &cpu_before,
        &cpu_after,
        cpu_secs,
        (at_ramp.logged_in as f64, "connection"),
    );
    Ok(report)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The access nodes' connection gauge, when their metrics addresses are given.
async fn gauge(http: &reqwest::Client, addrs: &[String]) -> anyhow::Result<Option<f64>> {
    if addrs.is_empty() {
        return Ok(None);
    }
    probe::connections(http, addrs).await.map(Some)
}

/// Writes worker `k`'s share (every `workers`-th account from `k`) as `<index> <token>` lines.
fn write_tokens(
    dir: &Path,
    k: usize,
    workers: usize,
    accounts: &[provision::Account],
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("worker-{k}.tokens"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?,
    );
    for (index, account) in accounts.iter().enumerate().skip(k).step_by(workers) {
        writeln!(file, "{index} {}", account.token)?;
    }
    file.flush()?;
    Ok(path)
}

/// Starts worker `k` as `<this program> idle-worker ...`; what it prints
/// arrives on `heard`.
fn spawn_worker(
    args: &Args,
    tokens: &Path,
    rate: f64,
    deadline: f64,
    k: usize,
    heard: mpsc::UnboundedSender<Heard<Event>>,
) -> anyhow::Result<(Child, ChildStdin)> {
    children::spawn(k, worker_argv(args, tokens, rate, deadline), heard)
}

/// The command line of a worker: its share of the tokens and of the rate,
/// and where its connections go and come from.
fn worker_argv(args: &Args, tokens: &Path, rate: f64, deadline: f64) -> Vec<OsString> {
    let dial = args.endpoints.dial(args.sources.list());
    let mut argv: Vec<OsString> = vec!["idle-worker".into(), "--tokens".into(), tokens.into()];
    argv.extend(
        [
            format!("--rate={rate}"),
            format!("--ping-interval={}", args.ping_interval),
            format!("--login-timeout={}", args.login_timeout),
            format!("--device-id={}", args.device_id),
            format!("--deadline={deadline}"),
        ]
        .into_iter()
        .chain(dial.to_args())
        .chain(args.tls.to_args())
        .map(OsString::from),
    );
    argv
}

/// What the workers have said so far.
#[derive(Debug)]
struct Flood {
    /// Connections and memory over time, sampled while pumping.
    track: Track,
    counts: Vec<Counts>,
    ramp: Vec<Option<f64>>,
    summaries: Vec<Option<Summary>>,
    exited: Vec<bool>,
}

/// The workers' summaries merged.
struct Merged {
    latency: Histogram<u64>,
    failures: std::collections::BTreeMap<String, u64>,
    pings: u64,
    pongs: u64,
    held: u64,
}

impl Flood {
    fn new(workers: usize, track: Track) -> Self {
        Self {
            track,
            counts: vec![Counts::default(); workers],
            ramp: vec![None; workers],
            summaries: vec![None; workers],
            exited: vec![false; workers],
        }
    }

    fn hear(&mut self, heard: Heard<Event>) {
        match heard {
            Heard::Event(k, Event::Progress(counts)) => self.counts[k] = counts,
            Heard::Event(k, Event::Ramped { counts, ramp_secs }) => {
                self.counts[k] = counts;
                self.ramp[k] = Some(ramp_secs);
            }
            Heard::Event(k, Event::Done(summary)) => {
                self.counts[k].logged_in = 0;
                self.summaries[k] = Some(summary);
            }
            Heard::Exited(k) => self.exited[k] = true,
        }
    }

    /// Every worker has logged all its connections in (or failed them), or is gone.
    fn ramped(&self) -> bool {
        self.ramp
            .iter()
            .zip(&self.exited)
            .all(|(r, e)| r.is_some() || *e)
    }

    fn exited(&self) -> bool {
        self.exited.iter().all(|e| *e)
    }

    fn totals(&self) -> Counts {
        self.counts.iter().fold(Counts::default(), |a, c| Counts {
            started: a.started + c.started,
            logged_in: a.logged_in + c.logged_in,
            failed: a.failed + c.failed,
        })
    }

    /// The longest worker ramp: the workers start together, so this is the flood's length.
    fn ramp_secs(&self) -> f64 {
        self.ramp.iter().flatten().copied().fold(0.0, f64::max)
    }

    /// Takes in what the workers say until `until` or until `done` holds,
    /// sampling the track whenever it is due.
    async fn pump(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Heard<Event>>,
        progress: &Progress,
        until: Instant,
        done: impl Fn(&Flood) -> bool,
    ) {
        while !done(self) {
            let due = self.track.due();
            tokio::select! {
                heard = rx.recv() => match heard {
                    Some(heard) => self.hear(heard),
                    None => {
                        // Every worker's stdout is closed: nothing more will come.
                        self.exited.iter_mut().for_each(|e| *e = true);
                        if !done(self) {
                            sleep_until(until).await;
                        }
                        return;
                    }
                },
                () = sleep_until(until) => return,
                () = sleep_until(due.unwrap_or(until)), if due.is_some() => {
                    self.track.sample(Instant::now(), self.totals().logged_in);
                }
            }
            let counts = self.totals();
            progress.update(
                counts.logged_in + counts.failed,
                format!(
                    "started {} logged in {} failed {}",
                    counts.started, counts.logged_in, counts.failed
                ),
            );
        }
    }

    fn summary(&self) -> anyhow::Result<Merged> {
        let mut merged = Merged {
            latency: events::latency_histogram()?,
            failures: Default::default(),
            pings: 0,
            pongs: 0,
            held: 0,
        };
        for (k, summary) in self.summaries.iter().enumerate() {
            let Some(summary) = summary else {
                eprintln!("warning: worker {k} sent no summary");
                continue;
            };
            events::merge(&mut merged.latency, &summary.latency_us);
            for (kind, count) in &summary.failures {
                *merged.failures.entry(kind.clone()).or_default() += count;
            }
            merged.pings += summary.pings;
            merged.pongs += summary.pongs;
            merged.held += summary.held;
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::idle::wire::Dial;

    #[derive(Parser)]
    struct Idle {
        #[command(flatten)]
        args: Args,
    }

    #[derive(Parser)]
    struct IdleWorker {
        #[command(flatten)]
        args: worker::Args,
    }

    #[test]
    fn a_worker_reads_back_what_the_parent_passes() {
        let parent = Idle::try_parse_from([
            "idle",
            "--access=127.0.0.1:1",
            "--access=127.0.0.1:2",
            "--source-ip-count=2",
            "--device-id=dev",
            "--tls-ca=/tmp/ca.pem",
            "--tls-server-name=localhost",
        ])
        .expect("idle flags")
        .args;
        let argv = worker_argv(&parent, Path::new("/tmp/w.tokens"), 12.5, 60.0);
        let worker = IdleWorker::try_parse_from(argv).expect("worker flags").args;
        assert_eq!(
            worker.dial,
            Dial {
                access: parent.endpoints.access.clone(),
                gateway: None,
                source_ips: wire::loopback_sources(2),
            }
        );
        assert_eq!(worker.tls, parent.tls);
        assert_eq!(worker.tokens, Path::new("/tmp/w.tokens"));
        assert_eq!(worker.rate, 12.5);
        assert_eq!(worker.deadline, 60.0);
        assert_eq!(worker.device_id, "dev");
        assert_eq!(worker.ping_interval, parent.ping_interval);
        assert_eq!(worker.login_timeout, parent.login_timeout);
    }

    #[test]
    fn source_flags_are_checked() {
        let parse = |flags: &[&str]| {
            Idle::try_parse_from(["idle", "--access=127.0.0.1:1"].iter().chain(flags))
                .map(|idle| idle.args)
        };
        let too_many = parse(&["--source-ip-count=254"]).expect("parses");
        assert!(too_many.check().is_err());
        assert!(parse(&["--source-ip-count=2", "--source-ips=127.0.0.9"]).is_err());
        let listed = parse(&["--source-ips=127.0.0.9,127.0.0.10"]).expect("parses");
        assert_eq!(listed.sources.list().len(), 2);
    }
}
