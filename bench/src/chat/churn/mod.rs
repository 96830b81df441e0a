//! The `churn` scenario: p2p traffic while the receivers' connections are
//! cut at a rate. A cut receiver reconnects after a short random pause,
//! logs in again and catches up as a client does: SYNC_CONVERSATIONS with
//! what it holds, then SYNC of each conversation with a gap after the last
//! seq it holds; everything it gets, PUSH or SYNC, is deduplicated by
//! server_msg_id. At the end every receiver reads its conversation with
//! its sender whole once more (SYNC_CONVERSATIONS for the head, SYNC from
//! the first seq), so a message acked but never seen is told apart from
//! one the reconnect path missed, and the stored conversation is checked:
//! every acked message in it once, seqs 1..head without a gap.

mod audit;
mod receiver;
mod tally;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, interval_at, sleep_until};

use super::Common;
use super::local::join;
use super::member::{self, Phase, Role, Setup, Shared, Target};
use super::run::stragglers;
use crate::procstat::Watched;
use crate::push::clock;
use crate::report::Report;
use crate::wait;
use receiver::{MIN_PAUSE_MS, Receiver, Seen};

/// Connects + logins in progress at once.
const LOGIN_CONCURRENCY: usize = 64;
/// How long after the sending starts the first send may go.
const START_DELAY: Duration = Duration::from_millis(200);
/// How long the connections have for the final audit and LOGOUT.
const FINISH: Duration = Duration::from_secs(60);

/// Parameters of the churn scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ChurnArgs {
    /// Pairs of users; in each, A sends to B and B's connection is churned.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Receiver disconnects per second, across all receivers, round-robin.
    #[arg(long, default_value_t = 2.0)]
    pub churn_rate: f64,
    /// Longest pause before a cut receiver reconnects, ms (the pause is random).
    #[arg(long, default_value_t = 200)]
    pub max_pause_ms: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// Runs the churn scenario: user `2k` sends to user `2k+1`, whose
/// connection is cut and restored while it does.
pub async fn churn(args: &ChurnArgs, out_dir: &std::path::Path) -> anyhow::Result<Report> {
    let common = &args.common;
    common.check()?;
    ensure!(args.pairs > 0, "--pairs must be positive");
    ensure!(
        args.churn_rate >= 0.0 && args.churn_rate.is_finite(),
        "--churn-rate must not be negative"
    );
    let watched = Watched::parse(&common.cpu)?;
    let accounts = super::accounts("churn", common, 2 * args.pairs, out_dir).await?;
    let setup = Arc::new(Setup {
        dial: common.endpoints.dial(Vec::new()),
        rate: common.rate,
        body_bytes: common.body_bytes,
        login_timeout: Duration::from_secs_f64(common.login_timeout),
        nonce: clock::now_us(),
        logins: Semaphore::new(LOGIN_CONCURRENCY),
        shared: Shared::default(),
    });
    let shared = &setup.shared;
    let (phase, phase_rx) = watch::channel(Phase::Login);
    let mut senders = Vec::with_capacity(args.pairs);
    let mut receivers = Vec::with_capacity(args.pairs);
    let mut cuts = Vec::with_capacity(args.pairs);
    for (k, pair) in accounts.chunks_exact(2).enumerate() {
        let role = Role {
            index: 2 * k,
            user_id: pair[0].user_id,
            target: Some(Target::User(pair[1].user_id)),
            fanout: 1,
        };
        senders.push(tokio::spawn(member::run(
            setup.clone(),
            role,
            pair[0].token.clone(),
            phase_rx.clone(),
        )));
        let cut = Arc::new(Notify::new());
        let receiver = Receiver {
            setup: setup.clone(),
            index: 2 * k + 1,
            token: pair[1].token.clone(),
            max_pause_ms: args.max_pause_ms.max(MIN_PAUSE_MS),
            tracks: HashMap::new(),
            next_request: 1,
            seen: Seen::new(pair[1].user_id, pair[0].user_id)?,
        };
        receivers.push(tokio::spawn(receiver.run(phase_rx.clone(), cut.clone())));
        cuts.push(cut);
    }
    drop(phase_rx);

    // 1. Logins.
    let total = 2 * args.pairs as u64;
    eprintln!("logging in {total} connections...");
    let rounds = accounts.len().div_ceil(LOGIN_CONCURRENCY) as u32;
    let login_bound = Instant::now() + setup.login_timeout * rounds + Duration::from_secs(5);
    wait::until(login_bound, || shared.counts().answered() >= total).await;
    let logged_in = shared.counts().logged_in;
    if logged_in < total {
        bail!("only {logged_in} of {total} connections logged in");
    }

    // 2. Sending, with the receivers cut round-robin at the churn rate.
    let start = Instant::now() + START_DELAY;
    let start_us = clock::now_us() + START_DELAY.as_micros() as u64;
    let end = start + Duration::from_secs_f64(common.seconds);
    eprintln!(
        "sending for {} s, cutting {} receivers/s...",
        common.seconds, args.churn_rate
    );
    let cpu_before = watched.sample();
    phase.send_replace(Phase::Send {
        start,
        end,
        start_us,
    });
    if args.churn_rate > 0.0 {
        let mut ticker = interval_at(start, Duration::from_secs_f64(1.0 / args.churn_rate));
        for next in 0.. {
            let at = ticker.tick().await;
            if at >= end {
                break;
            }
            cuts[next % cuts.len()].notify_one();
        }
    }
    sleep_until(end).await;

    // 3. Stragglers (the receivers still reconnect and catch up meanwhile).
    let (drained, drain_secs) = stragglers(end, common.drain, || shared.counts().drained()).await;
    let cpu_after = watched.sample();
    let acked = shared.counts().acked;

    // 4. Final audits, logouts.
    eprintln!("auditing conversations...");
    phase.send_replace(Phase::Sync);
    let finish_bound = Instant::now() + FINISH;
    let mut sent = Vec::with_capacity(senders.len());
    for task in senders {
        sent.push(join(finish_bound, task).await);
    }
    let mut seen = Vec::with_capacity(receivers.len());
    for task in receivers {
        seen.push(join(finish_bound, task).await);
    }
    let mut report = tally::tally(&sent, &seen, common.seconds)?;
    report.add("drain", drain_secs, "s");
    report.add(
        "drained (every ack and push in before --drain)",
        f64::from(u8::from(drained)),
        "",
    );
    watched.add_to(
        &mut report,
        &cpu_before,
        &cpu_after,
        common.seconds + drain_secs,
        (acked as f64, "acked message"),
    );
    report.config = serde_json::to_value(args)?;
    report.details["drained"] = drained.into();
    Ok(report)
}
