//! The `chaos` scenario: p2p traffic through the whole deployed system while
//! each FishChat service in turn is killed -9 and started again, and each
//! server (Kafka, Redis, the MongoDB-protocol server, etcd) restarted; then
//! every message is audited by reading its conversation whole.
//!
//! Every user is a `fishchat_client::Client`, as an application would use:
//! it logs in again (through the gateway) after every loss, resends what was
//! not answered with its client_msg_id, and syncs gaps. Senders send at a
//! fixed rate and retry each message with the same id until acked. Faults
//! run one after the other (`--fault-every` apart, never overlapping) through
//! `bench/scripts/chaos.sh fault DIR NAME`; each message counts in the
//! window of the fault before it (see [`tally`]).

mod cpu;
mod pair;
mod tally;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fishchat_client::{Client, ClientOptions};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::Common;
use crate::procstat::{cpu_secs, fishchat_service};
use crate::push::clock;
use crate::report::Report;
use crate::wait;
use cpu::CpuBook;
use pair::{Clock, Schedule, Side};
use tally::{Fault, PairLog};

/// Clients connecting and logging in at once.
const LOGIN_CONCURRENCY: usize = 16;
/// Receivers read whole at once in the final audit.
const AUDIT_CONCURRENCY: usize = 8;
/// How long after the logins the first send goes.
const START_DELAY: Duration = Duration::from_millis(500);
/// Longest a fault command may take (Kafka's stop and start take seconds).
const FAULT_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the processes' CPU is read between faults.
const CPU_EVERY: Duration = Duration::from_secs(1);
/// How long a client waits for a request's answer before the bench tries again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff of the bench's clients: the first delay, and the
/// largest (the library's 10 s would hide how fast the system is back).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// Parameters of the chaos scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ChaosArgs {
    /// Pairs of users; in each, A sends to B.
    #[arg(long, default_value_t = 40)]
    pub pairs: usize,
    /// The faults in order, one every --fault-every seconds (the list repeats
    /// while the sending lasts): access, logic, msg_job, register, manager,
    /// gateway (kill -9, start again), kafka, redis, mongo, etcd (restart).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "access,logic,msg_job,register,manager,gateway,kafka,redis,mongo,etcd"
    )]
    pub faults: Vec<String>,
    /// Seconds from the start of the sending to the first fault, and between
    /// faults (a fault starts no earlier than the previous one's command ended,
    /// and only with this long left before the end of the sending).
    #[arg(long, default_value_t = 30.0)]
    pub fault_every: f64,
    /// The deployment (bench/scripts/deploy.sh's DIR) the faults act on.
    #[arg(long)]
    pub deploy_dir: PathBuf,
    /// The fault command, run as `COMMAND fault DEPLOY_DIR NAME`.
    #[arg(long, default_value = "bench/scripts/chaos.sh")]
    pub fault_command: PathBuf,
    /// A folder of `NAME.pid` files whose processes' CPU is reported
    /// (repeat it: deploy.sh's DIR, scripts/stack's run/); re-read at every
    /// sample, so restarted processes are followed.
    #[arg(long = "pid-dir")]
    pub pid_dirs: Vec<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

const KNOWN_FAULTS: [&str; 10] = [
    "access", "logic", "msg_job", "register", "manager", "gateway", "kafka", "redis", "mongo",
    "etcd",
];

/// Runs the campaign: user `2k` sends to user `2k+1` while the faults go on.
pub async fn chaos(args: &ChaosArgs, out_dir: &Path) -> anyhow::Result<Report> {
    let common = &args.common;
    common.check()?;
    ensure!(args.pairs > 0, "--pairs must be positive");
    ensure!(
        args.fault_every > 0.0 && args.fault_every.is_finite(),
        "--fault-every must be positive"
    );
    ensure!(!args.faults.is_empty(), "--faults names no fault");
    for fault in &args.faults {
        ensure!(
            KNOWN_FAULTS.contains(&fault.as_str()),
            "unknown fault {fault:?}: one of {KNOWN_FAULTS:?}"
        );
    }
    ensure!(
        common.cpu.is_empty(),
        "--cpu follows fixed pids, which the faults change: use --pid-dir"
    );
    let accounts = super::accounts("chaos", common, 2 * args.pairs, out_dir).await?;

    // 1. Logins, every client through the gateway (or an access node).
    eprintln!("logging in {} clients...", accounts.len());
    let options = |token: &str, catch_up: bool| {
        let mut options = ClientOptions::new(token, "chaos");
        options.gateway = common.endpoints.gateway.map(|a| a.to_string());
        options.access = common.endpoints.access.first().map(|a| a.to_string());
        options.request_timeout = REQUEST_TIMEOUT;
        (options.backoff_initial, options.backoff_max) = BACKOFF;
        // A sender reads nothing: no catching up after its logins.
        options.catch_up = catch_up;
        options
    };
    let clients: Vec<_> = futures::stream::iter(
        accounts
            .iter()
            .enumerate()
            .map(|(i, account)| Client::connect(options(&account.token, i % 2 == 1))),
    )
    .buffered(LOGIN_CONCURRENCY)
    .try_collect()
    .await
    .context("a client's first login")?;

    let start = Instant::now() + START_DELAY;
    let end = start + Duration::from_secs_f64(common.seconds);
    let give_up = end + Duration::from_secs_f64(common.drain);
    let clock = Clock(start);
    let (stop, stopped) = watch::channel(false);
    let mut pairs = Vec::with_capacity(args.pairs);
    let mut watchers = Vec::new();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let schedule = Arc::new(Schedule {
        clock,
        start,
        end,
        give_up,
        rate: common.rate,
    });
    let nonce = clock::now_us();
    let mut clients = clients.into_iter();
    for k in 0..args.pairs {
        let (Some((sender, sender_events)), Some((receiver, receiver_events))) =
            (clients.next(), clients.next())
        else {
            bail!("fewer clients than pairs");
        };
        let shared: pair::Shared = Arc::new(Mutex::new(PairLog::default()));
        let from = sender.user_id();
        watchers.push(tokio::spawn(pair::watch_events(
            sender_events,
            Side::Sender,
            clock,
            shared.clone(),
            stopped.clone(),
        )));
        watchers.push(tokio::spawn(pair::watch_events(
            receiver_events,
            Side::Receiver { from },
            clock,
            shared.clone(),
            stopped.clone(),
        )));
        senders.push(tokio::spawn(pair::send(
            sender.clone(),
            receiver.user_id(),
            format!("chaos-{nonce}-{k}"),
            schedule.clone(),
            shared.clone(),
        )));
        receivers.push((receiver, from));
        pairs.push((sender, shared));
    }

    // 2. Sending, with the faults one after the other.
    eprintln!(
        "sending {} msg/s for {} s, a fault every {} s...",
        common.rate * args.pairs as f64,
        common.seconds,
        args.fault_every
    );
    let book = Arc::new(Mutex::new(CpuBook::new(args.pid_dirs.clone())));
    let bench_cpu_before = cpu_secs("self");
    let sampler = tokio::spawn(sample_cpu(book.clone(), stopped.clone()));
    let every = Duration::from_secs_f64(args.fault_every);
    let mut faults = Vec::new();
    let mut next = start + every;
    for name in args.faults.iter().cycle() {
        // Every fault gets a whole window: one at the very end would have no
        // time to be recovered from.
        if next + every > end {
            break;
        }
        sleep_until(next).await;
        book.lock().unwrap_or_else(PoisonError::into_inner).sample();
        let fault = inject(args, name, clock).await;
        eprintln!(
            "{:>7.1} s  {name:<8} command {} in {:.2} s",
            fault.at_ms as f64 / 1000.0,
            if fault.ok { "ok" } else { "FAILED" },
            fault.command_ms as f64 / 1000.0
        );
        faults.push(fault);
        next = (next + every).max(Instant::now());
    }
    sleep_until(end).await;

    // 3. Every send acked or given up, then the deliveries still on their way.
    for task in senders {
        // Each send gives up by itself at `give_up`; the margin covers a request in flight then.
        if timeout_at_or_after(give_up, task).await.is_none() {
            eprintln!("a sender did not finish by the end of the drain");
        }
    }
    let all_delivered = || {
        pairs.iter().all(|(_, shared)| {
            let log = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let delivered: std::collections::HashSet<u64> = log.delivered.iter().copied().collect();
            log.sent
                .iter()
                .filter(|s| s.acked_ms.is_some())
                .all(|s| delivered.contains(&s.n))
        })
    };
    let drained = wait::until(
        give_up.max(Instant::now() + Duration::from_secs(1)),
        all_delivered,
    )
    .await;
    let end_ms = clock.ms();
    book.lock().unwrap_or_else(PoisonError::into_inner).sample();
    let bench_cpu = cpu_secs("self").zip(bench_cpu_before).map(|(a, b)| a - b);

    // 4. The final audit: every receiver's conversation read whole.
    eprintln!("auditing {} conversations...", receivers.len());
    let most_pages = (common.rate * common.seconds) as usize / pair::AUDIT_PAGE as usize + 10;
    let audits: Vec<Vec<u64>> = futures::stream::iter(
        receivers
            .iter()
            .map(|(receiver, from)| pair::audit(receiver, *from, most_pages)),
    )
    .buffered(AUDIT_CONCURRENCY)
    .try_collect()
    .await?;
    stop.send_replace(true);
    sampler.abort();
    for watcher in watchers {
        // The watchers stop at the signal; one stuck in a lock would be a bug, not worth a hang.
        let _ = timeout(Duration::from_secs(5), watcher).await;
    }
    let mut logs = Vec::with_capacity(pairs.len());
    for ((sender, shared), audited) in pairs.into_iter().zip(audits) {
        let mut log = shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        log.audited = audited;
        logs.push(log);
        sender.close().await;
    }
    for (receiver, _) in receivers {
        receiver.close().await;
    }

    let rows = tally::rows(&faults, &logs, end_ms);
    let table = tally::markdown(&rows);
    println!("\n{table}");
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(out_dir.join("chaos-table.md"), &table)?;
    let cpu = book.lock().unwrap_or_else(PoisonError::into_inner).totals();
    let mut report = Report {
        scenario: "chaos".to_owned(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::json!({ "rows": rows, "faults": faults, "drained": drained }),
        charts: Vec::new(),
    };
    let sum = |f: fn(&tally::Row) -> u64| rows.iter().map(f).sum::<u64>() as f64;
    let acked = sum(|r| r.acked);
    report.add("sent", sum(|r| r.sent), "msg");
    report.add("acked", acked, "msg");
    report.add("delivered", sum(|r| r.delivered), "msg");
    report.add(
        "found only by the final audit",
        sum(|r| r.found_by_audit),
        "msg",
    );
    report.add("lost", sum(|r| r.lost), "msg");
    report.add("duplicated", sum(|r| r.duplicated), "msg");
    report.add("stored twice", tally::stored_twice(&logs) as f64, "msg");
    report.add("faults", faults.len() as f64, "");
    report.add(
        "fault commands failed",
        faults.iter().filter(|f| !f.ok).count() as f64,
        "",
    );
    let never = rows[1..].iter().filter(|r| r.back_ms.is_none()).count();
    report.add("faults some client never came back from", never as f64, "");
    let worst = rows.iter().filter_map(|r| r.back_ms).max().unwrap_or(0);
    report.add(
        "longest time until every client was back",
        worst as f64 / 1000.0,
        "s",
    );
    report.add(
        "every ack and delivery in before the drain ended",
        f64::from(u8::from(drained)),
        "",
    );
    let secs = end_ms as f64 / 1000.0;
    let mut services = 0.0;
    let mut total = 0.0;
    for (name, used) in &cpu {
        report.add(&format!("CPU {name}"), *used, "s");
        report.add(
            &format!("CPU {name} per acked message"),
            used * 1e6 / acked.max(1.0),
            "µs",
        );
        total += used;
        if fishchat_service(name) {
            services += used;
        }
    }
    if !cpu.is_empty() {
        report.add("CPU watched total", total / secs.max(1e-9), "cores");
        report.add("CPU FishChat services", services, "s");
        report.add(
            "FishChat services CPU per acked message",
            services * 1e6 / acked.max(1.0),
            "µs",
        );
    }
    if let Some(bench) = bench_cpu {
        report.add("CPU bench (this process)", bench, "s");
    }
    Ok(report)
}

/// Runs one fault's command; `at_ms` is taken just before it starts.
async fn inject(args: &ChaosArgs, name: &str, clock: Clock) -> Fault {
    let at_ms = clock.ms();
    let began = Instant::now();
    let mut command = tokio::process::Command::new(&args.fault_command);
    command
        .arg("fault")
        .arg(&args.deploy_dir)
        .arg(name)
        .kill_on_drop(true);
    let ok = match timeout(FAULT_TIMEOUT, command.status()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(err)) => {
            eprintln!(
                "fault {name}: {} did not run: {err}",
                args.fault_command.display()
            );
            false
        }
        Err(_) => {
            eprintln!("fault {name}: not done within {FAULT_TIMEOUT:?}");
            false
        }
    };
    Fault {
        name: name.to_owned(),
        at_ms,
        command_ms: began.elapsed().as_millis() as u64,
        ok,
    }
}

/// Samples the CPU book until `stop`.
async fn sample_cpu(book: Arc<Mutex<CpuBook>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = sleep(CPU_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        book.lock().unwrap_or_else(PoisonError::into_inner).sample();
    }
}

/// Waits for `task` until `deadline` plus the request timeout (a request
/// started just before the deadline is still answered); `None` past it.
async fn timeout_at_or_after<T>(deadline: Instant, task: tokio::task::JoinHandle<T>) -> Option<T> {
    tokio::time::timeout_at(deadline + REQUEST_TIMEOUT, task)
        .await
        .ok()?
        .ok()
}
