//! One run of the push scenario: per server, log the connections in, drive
//! the pushes for warm-up + measured seconds, let what is on its way arrive,
//! close; then the figures of each server and, with both, their ratios.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

use super::driver::{self, Sent, Shape};
use super::receiver::{self, Logins, Received, Shared};
use super::{Args, Target};
use crate::baseline::spawn::Spawned;
use crate::idle::provision;
use crate::idle::track::Readings;
use crate::procstat;
use crate::report::{Chart, Report, Series};
use crate::wait;

/// How long what was sent may take to arrive after the drive ends.
const DRAIN: Duration = Duration::from_secs(5);

/// A server under test.
struct Server {
    name: &'static str,
    client: SocketAddr,
    push: String,
    pid: Option<u32>,
    tokens: Vec<String>,
}

/// What one server did under the load.
#[derive(Debug, Serialize)]
struct Measured {
    logged_in: usize,
    login_failures: BTreeMap<String, u64>,
    secs: f64,
    frames_per_sec: f64,
    messages_per_sec: f64,
    latency_ms: Percentiles,
    rpcs_per_sec: f64,
    rpc_latency_ms: Percentiles,
    rpc_errors: u64,
    absent_users: u64,
    /// Frames the servers said they queued but that never arrived.
    frames_lost: u64,
    lost_connections: u64,
    unexpected_frames: BTreeMap<String, u64>,
    server_cpu_secs: Option<f64>,
    /// The kernel's part of `server_cpu_secs`.
    server_kernel_cpu_secs: Option<f64>,
    server_threads_cpu_secs: BTreeMap<String, f64>,
    bench_cpu_secs: Option<f64>,
    /// The latency CDF, for the report's chart (its data is in `charts`).
    #[serde(skip)]
    latency_cdf: Series,
    /// Frames per second over the measured window, likewise.
    #[serde(skip)]
    throughput: Series,
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of_us(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// Runs the scenario against the chosen target(s) and returns the report.
pub async fn run(args: &Args, out_dir: &Path) -> anyhow::Result<Report> {
    ensure!(args.connections > 0, "--connections must be positive");
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    let mut measured = Vec::new();
    if matches!(args.target, Target::Access | Target::Both) {
        let server = access(args, out_dir).await?;
        measured.push((server.name, measure(&server, args).await?));
    }
    if matches!(args.target, Target::Tokio | Target::Both) {
        let tokens = (1..=args.connections).map(|i| format!("tok-{i}")).collect();
        let (server, _child) = match args.tokio_addr {
            Some(client) => (
                Server {
                    name: "tokio",
                    client,
                    push: args
                        .tokio_push_addr
                        .clone()
                        .context("--tokio-push-addr goes with --tokio-addr")?,
                    pid: args.tokio_pid,
                    tokens,
                },
                None,
            ),
            None => {
                let child = Spawned::start(args.tokio_port).await?;
                (
                    Server {
                        name: "tokio",
                        client: child.client,
                        push: child.push.to_string(),
                        pid: Some(child.pid()),
                        tokens,
                    },
                    Some(child),
                )
            }
        };
        measured.push((server.name, measure(&server, args).await?));
    }
    Ok(report(args, &measured))
}

/// The access node under test, with accounts from register.
async fn access(args: &Args, out_dir: &Path) -> anyhow::Result<Server> {
    let cache = out_dir.join(format!("push-tokens-{}.json", args.user_prefix));
    let bar = ProgressBar::hidden();
    let (accounts, _) = provision::accounts(
        &provision::Plan {
            register: &args.register,
            prefix: &args.user_prefix,
            count: args.connections,
            concurrency: args.provision_concurrency,
            valid_for: Duration::from_secs(3600),
            fresh: false,
        },
        &cache,
        &bar,
    )
    .await?;
    Ok(Server {
        name: "access",
        client: args.access,
        push: args.push_addr.clone(),
        pid: args.server_pid,
        tokens: accounts.into_iter().map(|a| a.token).collect(),
    })
}

/// Logs the connections in, drives, drains, closes.
async fn measure(server: &Server, args: &Args) -> anyhow::Result<Measured> {
    eprintln!(
        "{}: logging in {} connections to {}",
        server.name,
        server.tokens.len(),
        server.client
    );
    let sources = args.sources();
    let threads = args.receivers.clamp(1, server.tokens.len().max(1));
    let login_timeout = Duration::from_secs_f64(args.login_timeout);
    let chunks = server.tokens.len().div_ceil(256) as f64;
    let bound = Duration::from_secs_f64(
        args.login_timeout * (chunks + 1.0) + args.warmup + args.seconds + 60.0,
    );
    let deadline = std::time::Instant::now() + bound;
    let shared = Arc::new(Shared::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for k in 0..threads {
        let targets: Vec<receiver::Target> = server
            .tokens
            .iter()
            .enumerate()
            .skip(k)
            .step_by(threads)
            .map(|(i, token)| receiver::Target {
                server: server.client,
                source: (!sources.is_empty()).then(|| sources[i % sources.len()]),
                token: token.clone(),
            })
            .collect();
        let shared = shared.clone();
        let ready = ready_tx.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("push-recv-{k}"))
                .spawn(move || receiver::run(&targets, login_timeout, deadline, shared, ready))
                .context("receiver thread")?,
        );
    }
    drop(ready_tx);
    let logins = tokio::task::spawn_blocking(move || {
        let mut all = Logins::default();
        for _ in 0..threads {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(part) = ready_rx.recv_timeout(left) else {
                break;
            };
            all.user_ids.extend(part.user_ids);
            for (kind, n) in part.failures {
                *all.failures.entry(kind).or_default() += n;
            }
        }
        all
    })
    .await?;
    eprintln!(
        "{}: {} logged in, failures {:?}",
        server.name,
        logins.user_ids.len(),
        logins.failures
    );
    let outcome = if logins.user_ids.is_empty() {
        Err(anyhow::anyhow!("{}: no connection logged in", server.name))
    } else {
        drive(server, args, &logins, &shared).await
    };
    shared.stop.store(true, Ordering::Relaxed);
    let received = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a receiver thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<Received>>>()
    })
    .await??;
    let (mut measured, sent) = outcome?;
    let mut frames = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for r in received {
        frames += r.frames;
        latency.add(&r.latency_us)?;
        measured.lost_connections += r.lost_connections;
        for (kind, n) in r.unexpected {
            *measured.unexpected_frames.entry(kind).or_default() += n;
        }
    }
    measured.frames_lost = sent
        .delivered
        .load(Ordering::Relaxed)
        .saturating_sub(frames);
    measured.login_failures = logins.failures;
    // Only messages received while measuring were recorded.
    measured.latency_ms = Percentiles::of_us(&latency);
    measured.latency_cdf = Series::latency_cdf(server.name, &latency);
    Ok(measured)
}

/// Drives the push RPC for warm-up + measured seconds; returns the figures
/// (receiver totals filled in by the caller) once what was sent has arrived.
async fn drive(
    server: &Server,
    args: &Args,
    logins: &Logins,
    shared: &Arc<Shared>,
) -> anyhow::Result<(Measured, Arc<Sent>)> {
    let users = Arc::new(logins.user_ids.clone());
    let clients = driver::connect(&server.push, args.streams).await?;
    let shape = Shape {
        batch: args.batch,
        messages: args.messages,
        body_bytes: args.body_bytes,
        shared_delivery: args.shared_delivery,
        frames_per_user: args.frames_per_user,
        window: args.window,
    };
    let sent = Arc::new(Sent::default());
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.warmup + args.seconds);
    let streams: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(driver::stream(
                client,
                users.clone(),
                shape.clone(),
                sent.clone(),
                shared.clone(),
                end,
            ))
        })
        .collect();
    let pid = server.pid.map(|p| p.to_string());
    sleep_until(started + Duration::from_secs_f64(args.warmup)).await;
    let before = Snapshot::take(pid.as_deref(), shared, &sent);
    shared.measuring.store(true, Ordering::Relaxed);
    let mut readings = Readings::start();
    while readings.due() < end {
        sleep_until(readings.due()).await;
        readings.poll(Instant::now(), shared.frames.load(Ordering::Relaxed));
    }
    sleep_until(end).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let after = Snapshot::take(pid.as_deref(), shared, &sent);
    let throughput = Series::rates(server.name, &readings.finish(after.at, after.frames));
    let mut rpc_latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for stream in streams {
        rpc_latency.add(stream.await??)?;
    }
    wait::until(Instant::now() + DRAIN, || {
        shared.frames.load(Ordering::Relaxed) >= sent.delivered.load(Ordering::Relaxed)
    })
    .await;
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let frames = (after.frames - before.frames) as f64;
    Ok((
        Measured {
            logged_in: logins.user_ids.len(),
            login_failures: BTreeMap::new(),
            secs,
            frames_per_sec: frames / secs,
            messages_per_sec: frames * args.messages.max(1) as f64 / secs,
            latency_ms: Percentiles::default(),
            rpcs_per_sec: (after.rpcs - before.rpcs) as f64 / secs,
            rpc_latency_ms: Percentiles::of_us(&rpc_latency),
            rpc_errors: sent.errors.load(Ordering::Relaxed),
            absent_users: sent.absent.load(Ordering::Relaxed),
            frames_lost: 0,
            lost_connections: 0,
            unexpected_frames: BTreeMap::new(),
            server_cpu_secs: after.cpu.zip(before.cpu).map(|(a, b)| a - b),
            server_kernel_cpu_secs: after.kernel.zip(before.kernel).map(|(a, b)| a - b),
            server_threads_cpu_secs: procstat::delta(&before.threads, &after.threads),
            bench_cpu_secs: after.bench_cpu.zip(before.bench_cpu).map(|(a, b)| a - b),
            latency_cdf: Series::default(),
            throughput,
        },
        sent,
    ))
}

/// Counters at one instant of the drive.
struct Snapshot {
    at: Instant,
    frames: u64,
    rpcs: u64,
    cpu: Option<f64>,
    kernel: Option<f64>,
    threads: BTreeMap<String, f64>,
    bench_cpu: Option<f64>,
}

impl Snapshot {
    fn take(pid: Option<&str>, shared: &Shared, sent: &Sent) -> Self {
        let times = pid.and_then(procstat::user_and_system_secs);
        Self {
            at: Instant::now(),
            frames: shared.frames.load(Ordering::Relaxed),
            rpcs: sent.rpcs.load(Ordering::Relaxed),
            cpu: times.map(|(user, system)| user + system),
            kernel: times.map(|(_, system)| system),
            threads: pid.map(procstat::threads).unwrap_or_default(),
            bench_cpu: procstat::cpu_secs("self"),
        }
    }
}

/// The table and JSON of the run.
fn report(args: &Args, measured: &[(&str, Measured)]) -> Report {
    let mut report = Report {
        charts: vec![
            Chart::latency_cdf(
                "push: delivery latency",
                measured
                    .iter()
                    .map(|(_, m)| m.latency_cdf.clone())
                    .collect(),
            ),
            Chart::throughput(
                "push: frames delivered per second",
                "frames/s",
                measured.iter().map(|(_, m)| m.throughput.clone()).collect(),
            ),
        ],
        scenario: "push".into(),
        config: serde_json::to_value(args).unwrap_or_default(),
        figures: Vec::new(),
        details: serde_json::to_value(
            measured
                .iter()
                .map(|(name, m)| (name.to_string(), m))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap_or_default(),
    };
    for (name, m) in measured {
        let us_per_frame = |cpu: f64| cpu * 1e6 / (m.frames_per_sec * m.secs).max(1.0);
        let cpu_us_per_frame = m.server_cpu_secs.map(us_per_frame);
        report.add(
            &format!("{name}: connections logged in"),
            m.logged_in as f64,
            "",
        );
        report.add(
            &format!("{name}: frames delivered"),
            m.frames_per_sec,
            "frames/s",
        );
        report.add(
            &format!("{name}: messages delivered"),
            m.messages_per_sec,
            "msgs/s",
        );
        report.add(&format!("{name}: latency p50"), m.latency_ms.p50, "ms");
        report.add(&format!("{name}: latency p99"), m.latency_ms.p99, "ms");
        report.add(&format!("{name}: latency p999"), m.latency_ms.p999, "ms");
        report.add(&format!("{name}: latency max"), m.latency_ms.max, "ms");
        report.add(&format!("{name}: push RPCs"), m.rpcs_per_sec, "RPC/s");
        report.add(&format!("{name}: push RPC p99"), m.rpc_latency_ms.p99, "ms");
        if let Some(cpu) = m.server_cpu_secs {
            report.add(&format!("{name}: server CPU"), cpu / m.secs, "cores");
        }
        if let Some(per_frame) = cpu_us_per_frame {
            report.add(&format!("{name}: server CPU per frame"), per_frame, "µs");
        }
        if let Some(kernel) = m.server_kernel_cpu_secs {
            report.add(
                &format!("{name}: server kernel CPU per frame"),
                us_per_frame(kernel),
                "µs",
            );
        }
        if let Some(cpu) = m.bench_cpu_secs {
            report.add(&format!("{name}: bench CPU"), cpu / m.secs, "cores");
        }
        report.add(&format!("{name}: frames lost"), m.frames_lost as f64, "");
        report.add(&format!("{name}: absent users"), m.absent_users as f64, "");
        report.add(&format!("{name}: RPC errors"), m.rpc_errors as f64, "");
        report.add(
            &format!("{name}: connections lost"),
            m.lost_connections as f64,
            "",
        );
    }
    if let [("access", a), ("tokio", t)] = measured {
        report.add(
            "access / tokio: frames delivered",
            a.frames_per_sec / t.frames_per_sec.max(f64::MIN_POSITIVE),
            "x",
        );
        report.add(
            "access / tokio: latency p99",
            a.latency_ms.p99 / t.latency_ms.p99.max(f64::MIN_POSITIVE),
            "x",
        );
        if let (Some(ac), Some(tc)) = (a.server_cpu_secs, t.server_cpu_secs) {
            let per_frame = |cpu: f64, m: &Measured| cpu / (m.frames_per_sec * m.secs).max(1.0);
            report.add(
                "access / tokio: server CPU per frame",
                per_frame(ac, a) / per_frame(tc, t).max(f64::MIN_POSITIVE),
                "x",
            );
        }
    }
    report
}
