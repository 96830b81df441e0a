//! One run of a chat scenario: every connection logs in, then the senders
//! send for `--seconds`, the run waits up to `--drain` for the acks and
//! pushes still on their way, and every connection SYNCs its inbox and logs
//! out. Each phase is bounded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::Common;
use super::member::{self, Outcome, Phase, Role, Setup, Shared, Target};
use super::tally;
use crate::idle::provision::Account;
use crate::push::clock;
use crate::report::Report;

/// Connects + logins in progress at once (the access node's accept backlog
/// and logic's login path are the limits, not the bench).
const LOGIN_CONCURRENCY: usize = 256;
/// How often the run looks at the counters while it waits.
const POLL: Duration = Duration::from_millis(20);
/// How long after the sending starts the first send may go (every
/// connection hears of the start before it comes).
const START_DELAY: Duration = Duration::from_millis(200);
/// How long the connections have for SYNC and LOGOUT once told (each one's
/// SYNC is bounded by 30 s, its LOGOUT by 5 s).
const FINISH: Duration = Duration::from_secs(40);

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

/// Runs `plan` and returns its report.
pub async fn run(plan: Plan, common: &Common, config: serde_json::Value) -> anyhow::Result<Report> {
    let setup = Arc::new(Setup {
        access: common.access.clone(),
        gateway: common.gateway,
        rate: common.rate,
        body_bytes: common.body_bytes,
        login_timeout: Duration::from_secs_f64(common.login_timeout),
        nonce: clock::now_us(),
        logins: Semaphore::new(LOGIN_CONCURRENCY),
        shared: Shared::default(),
    });
    let shared = &setup.shared;
    let (phase, phase_rx) = watch::channel(Phase::Login);
    let mut tasks = Vec::with_capacity(plan.seats.len());
    for (index, seat) in plan.seats.iter().enumerate() {
        let role = Role {
            index,
            user_id: seat.account.user_id,
            target: seat.target,
            fanout: seat.receivers.len() as u64,
        };
        tasks.push(tokio::spawn(member::run(
            setup.clone(),
            role,
            seat.account.token.clone(),
            phase_rx.clone(),
            Outcome::new()?,
        )));
    }
    drop(phase_rx);

    // 1. Logins.
    let total = plan.seats.len() as u64;
    eprintln!("logging in {total} connections...");
    let rounds = plan.seats.len().div_ceil(LOGIN_CONCURRENCY) as u32;
    let login_bound = Instant::now() + setup.login_timeout * rounds + Duration::from_secs(5);
    wait(login_bound, || {
        shared.logged_in.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= total
    })
    .await;
    let logged_in = shared.logged_in.load(Ordering::Relaxed);
    if logged_in == 0 {
        bail!("no connection logged in");
    }

    // 2. Sending.
    let start = Instant::now() + START_DELAY;
    let start_us = clock::now_us() + START_DELAY.as_micros() as u64;
    let end = start + Duration::from_secs_f64(common.seconds);
    eprintln!("{logged_in} logged in; sending for {} s...", common.seconds);
    phase.send_replace(Phase::Send { start, end });
    sleep_until(end).await;

    // 3. Stragglers.
    let (drained, drain_secs) = stragglers(shared, end, common.drain).await;

    // 4. SYNC every inbox, log out, collect.
    eprintln!("syncing inboxes...");
    phase.send_replace(Phase::Sync);
    let finish_bound = Instant::now() + FINISH;
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        let abort = task.abort_handle();
        match timeout_at(finish_bound, task).await {
            Ok(Ok(outcome)) => outcomes.push(Some(outcome)),
            Ok(Err(_)) => outcomes.push(None),
            Err(_) => {
                abort.abort();
                outcomes.push(None);
            }
        }
    }
    let timing = Timing {
        start_us,
        seconds: common.seconds,
        drain_secs,
        drained,
    };
    tally::report(&plan, &outcomes, timing, common.rate, config)
}

/// Waits, up to `drain` seconds after `end`, for every send to be answered and
/// every expected delivery to arrive; returns whether they did, and the seconds
/// since `end`.
pub async fn stragglers(shared: &Shared, end: Instant, drain: f64) -> (bool, f64) {
    let drained = wait(end + Duration::from_secs_f64(drain), || {
        shared.in_flight.load(Ordering::Relaxed) == 0
            && shared.delivered.load(Ordering::Relaxed) >= shared.expected.load(Ordering::Relaxed)
    })
    .await;
    (drained, end.elapsed().as_secs_f64())
}

/// Waits until `done` holds (true) or `until` passes (false).
pub async fn wait(until: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        sleep(POLL).await;
    }
}
