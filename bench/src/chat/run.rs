//! One run of a chat scenario: every connection logs in, then the senders
//! send for `--seconds` from one agreed time, the run waits up to `--drain`
//! for the acks and pushes still on their way, and every connection audits
//! its conversations and logs out. Each phase is bounded. The same steps drive a
//! fleet in this process or one of worker processes ([`Fleet`]).

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::time::Instant;

use super::fleet::{Config, Fleet, Gathered, LOGIN_CONCURRENCY, Spec, Window};
use super::local::Local;
use super::member::{Counts, Role, Target};
use super::workers::{self, Workers};
use super::{Common, Scale, tally};
use crate::idle::probe;
use crate::idle::provision::Account;
use crate::procstat::Watched;
use crate::progress::Progress;
use crate::push::clock;
use crate::report::Report;
use crate::wait;

/// How long after the sending is decided the first send may go (every
/// connection, in every process, hears of the start before it comes).
const START_DELAY: Duration = Duration::from_millis(300);
/// How long the connections have for the audit and LOGOUT once told (each
/// one's audit is bounded by 30 s, its LOGOUT by 5 s).
pub const FINISH: Duration = Duration::from_secs(40);
/// Added to the login bound (for worker processes, their start too).
const LOGIN_SLACK: Duration = Duration::from_secs(10);
/// Added to every phase's bound for a worker's own deadline.
const WORKER_SLACK: Duration = Duration::from_secs(30);

/// One user's part: its account, where it sends, and who receives its messages.
#[derive(Debug, Clone)]
pub struct Seat {
    /// The account it logs in with.
    pub account: Account,
    /// Where it sends, if it is a sender.
    pub target: Option<Target>,
    /// Indexes (in the plan) of the seats each of its messages should reach.
    pub receivers: Vec<usize>,
}

/// Who is in a run.
#[derive(Debug)]
pub struct Plan {
    /// The scenario's name (the report's, and the JSON file's).
    pub scenario: &'static str,
    /// Every connection, in order.
    pub seats: Vec<Seat>,
}

impl Plan {
    /// What each seat's connection needs to run, in seat order.
    fn specs(&self) -> Vec<Spec> {
        self.seats
            .iter()
            .enumerate()
            .map(|(index, seat)| Spec {
                role: Role {
                    index,
                    user_id: seat.account.user_id,
                    target: seat.target,
                    fanout: seat.receivers.len() as u64,
                },
                token: seat.account.token.clone(),
            })
            .collect()
    }
}

/// What [`tally`] needs to know of the run's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The first send, µs since the epoch.
    pub start_us: u64,
    /// Seconds of sending.
    pub seconds: f64,
    /// Seconds from the end of the sending until every ack and push was in
    /// (or the drain bound).
    pub drain_secs: f64,
    /// Whether every ack and expected push was in before the drain bound.
    pub drained: bool,
}

/// Runs `plan` in one fleet (this process, or `--workers` processes) and
/// returns its report.
pub async fn run(
    plan: Plan,
    common: &Common,
    scale: &Scale,
    out_dir: &Path,
    config: &impl Serialize,
) -> anyhow::Result<Report> {
    let watched = Watched::parse(&common.cpu)?;
    let seats = plan.seats.len();
    let workers = scale.workers(seats);
    let per_fleet = seats.div_ceil(workers);
    if let Some(limit) = probe::open_files_limit()
        && limit < per_fleet as u64 + 64
    {
        eprintln!(
            "warning: the open-files limit is {limit}, below {per_fleet} connections per process: \
             run `ulimit -n 20000` first"
        );
    }
    let fleet_config = Config {
        dial: common.endpoints.dial(scale.sources.list()),
        rate: common.rate,
        body_bytes: common.body_bytes,
        login_timeout: common.login_timeout,
        nonce: clock::now_us(),
    };
    let bounds = Bounds::new(common, per_fleet);
    let progress = Progress::new();
    let specs = plan.specs();
    let driven = if workers == 1 {
        let fleet = Local::start(specs, fleet_config.setup());
        drive(fleet, &plan, common, &bounds, &progress, &watched).await
    } else {
        let shares = workers::split(specs, workers);
        let dir = out_dir.join("chat-workers");
        let fleet = Workers::start(shares, &fleet_config, bounds.worker_deadline(), &dir)?;
        drive(fleet, &plan, common, &bounds, &progress, &watched).await
    };
    progress.finish();
    let (gathered, timing, cpu) = driven?;
    let (outcomes, measures) = gathered.place(seats);
    let config = serde_json::to_value(config)?;
    let mut report = tally::report(&plan, &outcomes, &measures, timing, common.rate, config)?;
    let secs = timing.seconds + timing.drain_secs;
    watched.add_to(
        &mut report,
        &cpu.before,
        &cpu.after,
        secs,
        (cpu.acked as f64, "acked message"),
    );
    report.details["workers"] = workers.into();
    report.details["source_ips"] = serde_json::to_value(&fleet_config.dial.source_ips)?;
    Ok(report)
}

/// How long each phase may take.
struct Bounds {
    /// From the start until every login is answered.
    login: Duration,
    /// Seconds of sending.
    seconds: f64,
    /// Longest wait for stragglers after the sending, seconds.
    drain: f64,
}

impl Bounds {
    /// The bounds of a run with `per_fleet` connections in its largest
    /// fleet (each fleet logs its connections in on its own).
    fn new(common: &Common, per_fleet: usize) -> Bounds {
        let rounds = u32::try_from(per_fleet.div_ceil(LOGIN_CONCURRENCY)).unwrap_or(u32::MAX);
        Bounds {
            login: Duration::from_secs_f64(common.login_timeout).saturating_mul(rounds)
                + LOGIN_SLACK,
            seconds: common.seconds,
            drain: common.drain,
        }
    }

    /// When a worker process gives up by itself: every phase's bound and then some.
    fn worker_deadline(&self) -> Duration {
        self.login
            + START_DELAY
            + Duration::from_secs_f64(self.seconds + self.drain)
            + FINISH
            + WORKER_SLACK
    }
}

/// The watched processes' CPU over the sending and the drain, and the acks in that time.
struct CpuSpent {
    before: Vec<Option<f64>>,
    after: Vec<Option<f64>>,
    acked: u64,
}

/// Drives `fleet` through the phases: every connection logged in, the
/// sending from one agreed time, the stragglers, then the audit and logout.
async fn drive(
    mut fleet: impl Fleet,
    plan: &Plan,
    common: &Common,
    bounds: &Bounds,
    progress: &Progress,
    watched: &Watched,
) -> anyhow::Result<(Gathered, Timing, CpuSpent)> {
    // 1. Logins.
    let total = plan.seats.len() as u64;
    progress.phase("logging in", total);
    wait::until(Instant::now() + bounds.login, || {
        let c = fleet.counts();
        let message = format!("logged in {} failed {}", c.logged_in, c.failed);
        progress.show(c.answered(), total, message);
        c.answered() >= total
    })
    .await;
    if fleet.counts().logged_in == 0 {
        bail!("no connection logged in");
    }

    // 2. Sending, from a time every connection hears of before it comes.
    let window = Window::from_now(START_DELAY, common.seconds);
    let cpu_before = watched.sample();
    fleet.send(window).await;
    let (start, end) = window.instants();
    let tenths = (common.seconds * 10.0).ceil() as u64;
    progress.phase("sending", tenths);
    wait::until(end, || {
        let tenth = (start.elapsed().as_secs_f64() * 10.0) as u64;
        progress.show(tenth, tenths, traffic(&fleet.counts()));
        false
    })
    .await;

    // 3. Stragglers.
    progress.phase("draining", 0);
    let (drained, drain_secs) = stragglers(end, common.drain, || {
        let c = fleet.counts();
        progress.show(c.delivered, c.expected, traffic(&c));
        c.drained()
    })
    .await;
    let cpu = CpuSpent {
        before: cpu_before,
        after: watched.sample(),
        acked: fleet.counts().acked,
    };

    // 4. Audit every connection's conversations, log out, collect.
    progress.phase("auditing", total);
    fleet.sync().await;
    let gathered = fleet.collect(Instant::now() + FINISH).await?;
    let timing = Timing {
        start_us: window.start_us,
        seconds: common.seconds,
        drain_secs,
        drained,
    };
    Ok((gathered, timing, cpu))
}

/// The traffic counts, for the progress line.
fn traffic(c: &Counts) -> String {
    format!(
        "sent {} acked {} in flight {} delivered {}/{}",
        c.sent, c.acked, c.in_flight, c.delivered, c.expected
    )
}

/// Waits, up to `drain` seconds after `end`, until `drained` holds (every
/// send answered and every expected delivery in); returns whether it did,
/// and the seconds since `end`.
pub async fn stragglers(end: Instant, drain: f64, drained: impl FnMut() -> bool) -> (bool, f64) {
    let drained = wait::until(end + Duration::from_secs_f64(drain), drained).await;
    (drained, end.elapsed().as_secs_f64())
}
