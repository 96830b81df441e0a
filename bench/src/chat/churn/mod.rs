//! The `churn` scenario: p2p traffic while the receivers' connections are
//! cut at a rate. A cut receiver reconnects after a short random pause,
//! logs in again and SYNCs from the last seq it saw; everything it gets,
//! PUSH or SYNC, is deduplicated by server_msg_id. At the end every
//! receiver SYNCs its whole inbox once more, so a message acked but never
//! seen is told apart from one the reconnect path missed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, ensure};
use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, interval_at, sleep, sleep_until, timeout};

use super::Common;
use super::local::join;
use super::member::{self, Outcome, Phase, Role, Setup, Shared, Target};
use super::run::stragglers;
use crate::idle::wire::{self, Failure, Wire};
use crate::push::clock;
use crate::report::Report;
use crate::wait;

/// Connects + logins in progress at once.
const LOGIN_CONCURRENCY: usize = 64;
/// Messages asked for per SYNC.
const SYNC_LIMIT: u32 = 500;
/// Longest one SYNC (all its pages) may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a LOGOUT may take to be written.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts in a row before a receiver gives up.
const RECONNECT_TRIES: u32 = 5;
/// Shortest pause before a reconnect.
const MIN_PAUSE_MS: u64 = 10;
/// How long after the sending starts the first send may go.
const START_DELAY: Duration = Duration::from_millis(200);
/// How long the connections have for the final SYNC and LOGOUT.
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

/// What one receiver saw.
#[derive(Debug)]
struct Seen {
    /// Whether the first login went through.
    logged_in: bool,
    /// Why it could not log in the first time, or gave up reconnecting.
    failure: Option<String>,
    /// Its inbox's top at the first login: older messages are earlier runs'.
    baseline: u64,
    /// Connections it closed on purpose.
    disconnects: u64,
    /// Connections the server or the network closed.
    dropped: BTreeMap<String, u64>,
    /// Reconnects that logged in and synced.
    reconnects: u64,
    /// Reconnect attempts that failed, by reason.
    reconnect_failures: BTreeMap<String, u64>,
    /// Messages from others handed in (PUSH or SYNC), duplicates included.
    raw: u64,
    /// Unique server_msg_ids among them.
    unique: HashSet<u64>,
    /// server_msg_ids the final SYNC from 0 found.
    audited: HashSet<u64>,
    /// Connect + login + SYNC time of each reconnect, µs.
    resync_us: Histogram<u64>,
}

impl Seen {
    /// Nothing seen yet.
    fn new() -> anyhow::Result<Seen> {
        Ok(Seen {
            logged_in: false,
            failure: None,
            baseline: 0,
            disconnects: 0,
            dropped: BTreeMap::new(),
            reconnects: 0,
            reconnect_failures: BTreeMap::new(),
            raw: 0,
            unique: HashSet::new(),
            audited: HashSet::new(),
            resync_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        })
    }
}

/// One receiver's task state.
struct Receiver {
    setup: Arc<Setup>,
    index: usize,
    user_id: u64,
    token: String,
    max_pause_ms: u64,
    last_seq: u64,
    next_request: u32,
    seen: Seen,
}

/// Why a connected session ended.
enum End {
    /// The run is over: audit and log out.
    Stop,
    /// The churn driver picked this receiver.
    Cut,
    /// The connection ended by itself.
    Lost(String),
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
            user_id: pair[1].user_id,
            token: pair[1].token.clone(),
            max_pause_ms: args.max_pause_ms.max(MIN_PAUSE_MS),
            last_seq: 0,
            next_request: 1,
            seen: Seen::new()?,
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

    // 3. Stragglers (the receivers still reconnect and sync meanwhile).
    let (drained, drain_secs) = stragglers(end, common.drain, || shared.counts().drained()).await;

    // 4. Final SYNCs, logouts.
    eprintln!("auditing inboxes...");
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
    let mut report = tally(&sent, &seen, common.seconds)?;
    report.add("drain", drain_secs, "s");
    report.add(
        "drained (every ack and push in before --drain)",
        f64::from(u8::from(drained)),
        "",
    );
    report.config = serde_json::to_value(args)?;
    report.details["drained"] = drained.into();
    Ok(report)
}

impl Receiver {
    /// Logs in, then follows the run: cut, pause, reconnect and SYNC when
    /// told, and at the end SYNC the whole inbox and log out.
    async fn run(mut self, mut phase: watch::Receiver<Phase>, cut: Arc<Notify>) -> Seen {
        let first = {
            let _permit = self.setup.logins.acquire().await;
            timeout(
                self.setup.login_timeout,
                member::login(&self.setup, self.index, self.token.clone()),
            )
            .await
        };
        let (mut wire, reply) = match first {
            Ok(Ok(logged_in)) => logged_in,
            Ok(Err(Failure(why))) => return self.failed(why),
            Err(_) => return self.failed("login timeout".into()),
        };
        self.setup.shared.logged_in.fetch_add(1, Ordering::Relaxed);
        self.seen.logged_in = true;
        self.seen.baseline = reply.max_seq;
        self.last_seq = reply.max_seq;
        let mut heartbeat = reply.heartbeat_interval_ms;
        loop {
            match self.session(&mut wire, &mut phase, &cut, heartbeat).await {
                End::Stop => break,
                End::Cut => {
                    self.seen.disconnects += 1;
                    // Half the cuts are a clean LOGOUT, half an abrupt close.
                    if self.seen.disconnects.is_multiple_of(2) {
                        let _ = timeout(LOGOUT_TIMEOUT, wire.logout()).await;
                    } else {
                        drop(wire);
                    }
                }
                End::Lost(why) => {
                    *self.seen.dropped.entry(why).or_default() += 1;
                    drop(wire);
                }
            }
            match self.reconnect().await {
                Some((again, beat)) => (wire, heartbeat) = (again, beat),
                None => return self.seen,
            }
        }
        let audit = timeout(SYNC_TIMEOUT, self.sync(&mut wire, 0, true)).await;
        self.seen.failure = match audit {
            Ok(Ok(())) => None,
            Ok(Err(Failure(why))) => Some(format!("final sync: {why}")),
            Err(_) => Some("final sync timeout".into()),
        };
        let _ = timeout(LOGOUT_TIMEOUT, wire.logout()).await;
        self.seen
    }

    fn failed(mut self, why: String) -> Seen {
        self.setup.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.seen.failure = Some(why);
        self.seen
    }

    /// Reads pushes until the run ends, the driver cuts, or the connection drops.
    async fn session(
        &mut self,
        wire: &mut Wire,
        phase: &mut watch::Receiver<Phase>,
        cut: &Notify,
        heartbeat_ms: u32,
    ) -> End {
        if *phase.borrow_and_update() == Phase::Sync {
            return End::Stop;
        }
        let heartbeat = Duration::from_millis(u64::from(heartbeat_ms).max(1000));
        let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow_and_update() == Phase::Sync {
                        return End::Stop;
                    }
                }
                () = cut.notified() => return End::Cut,
                _ = ping.tick() => {
                    let id = self.request_id();
                    if let Err(Failure(why)) = wire.send(Command::Ping, id, &pb::Ping::default()).await {
                        return End::Lost(why);
                    }
                }
                frame = wire.recv() => match frame {
                    Ok((_, body)) => {
                        if let Err(Failure(why)) = self.on_frame(body) {
                            return End::Lost(why);
                        }
                    }
                    Err(Failure(why)) => return End::Lost(why),
                },
            }
        }
    }

    /// Pauses a random while, then connects, logs in and SYNCs from the
    /// last seq seen; None when every try failed.
    async fn reconnect(&mut self) -> Option<(Wire, u32)> {
        for _ in 0..RECONNECT_TRIES {
            let pause = rand::random_range(MIN_PAUSE_MS..=self.max_pause_ms);
            sleep(Duration::from_millis(pause)).await;
            let began = Instant::now();
            let attempt = timeout(self.setup.login_timeout + SYNC_TIMEOUT, async {
                let (mut wire, reply) =
                    member::login(&self.setup, self.index, self.token.clone()).await?;
                self.sync(&mut wire, self.last_seq, false).await?;
                Ok::<_, Failure>((wire, reply.heartbeat_interval_ms))
            })
            .await;
            match attempt {
                Ok(Ok(connected)) => {
                    self.seen.reconnects += 1;
                    let _ = self
                        .seen
                        .resync_us
                        .record((began.elapsed().as_micros() as u64).max(1));
                    return Some(connected);
                }
                Ok(Err(Failure(why))) => {
                    *self.seen.reconnect_failures.entry(why).or_default() += 1;
                }
                Err(_) => {
                    *self
                        .seen
                        .reconnect_failures
                        .entry("reconnect timeout".into())
                        .or_default() += 1;
                }
            }
        }
        self.seen.failure = Some("gave up reconnecting".into());
        None
    }

    /// SYNCs from `after_seq` while has_more; `audit` puts what it finds
    /// aside for the final check instead of handing it in.
    async fn sync(
        &mut self,
        wire: &mut Wire,
        mut after_seq: u64,
        audit: bool,
    ) -> Result<(), Failure> {
        loop {
            let id = self.request_id();
            let request = pb::SyncRequest {
                after_seq,
                limit: SYNC_LIMIT,
            };
            wire.send(Command::Sync, id, &request).await?;
            let reply = loop {
                match wire.recv().await? {
                    (got, Body::SyncReply(reply)) if got == id => break reply,
                    (got, Body::Error(err)) if got == id => {
                        return Err(Failure(format!(
                            "sync refused: {}",
                            wire::code_name(err.code)
                        )));
                    }
                    (_, body) => self.on_frame(body)?,
                }
            };
            for message in &reply.messages {
                after_seq = after_seq.max(message.seq);
                if audit {
                    if message.from_user_id != self.user_id {
                        self.seen.audited.insert(message.server_msg_id);
                    }
                } else {
                    self.take(message);
                }
            }
            if !reply.has_more || reply.messages.is_empty() {
                return Ok(());
            }
        }
    }

    /// Takes one unsolicited frame; Err when the server is closing.
    fn on_frame(&mut self, body: Body) -> Result<(), Failure> {
        match body {
            Body::Push(push) => {
                for message in &push.messages {
                    self.take(message);
                }
                Ok(())
            }
            Body::Kick(kick) => Err(Failure(format!("kicked: {}", wire::kick_name(kick.reason)))),
            _ => Ok(()),
        }
    }

    /// Hands one message in: counted raw, then deduplicated by server_msg_id.
    fn take(&mut self, message: &pb::StoredMessage) {
        if message.seq <= self.seen.baseline || message.from_user_id == self.user_id {
            return;
        }
        self.last_seq = self.last_seq.max(message.seq);
        self.seen.raw += 1;
        if self.seen.unique.insert(message.server_msg_id) {
            self.setup.shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request_id(&mut self) -> u32 {
        // 0 is the server's own (PUSH, KICK), 1 is every LOGIN.
        self.next_request = self.next_request.wrapping_add(1).max(2);
        self.next_request
    }
}

/// Counts over the run.
#[derive(Debug, Default, Serialize)]
struct Totals {
    logged_in: u64,
    failures: BTreeMap<String, u64>,
    disconnects: u64,
    dropped: BTreeMap<String, u64>,
    reconnects: u64,
    reconnect_failures: BTreeMap<String, u64>,
    sent: u64,
    acked: u64,
    ack_errors: BTreeMap<String, u64>,
    unacked: u64,
    delivered: u64,
    found_by_final_sync: u64,
    lost: u64,
    unchecked: u64,
    received_raw: u64,
    received_unique: u64,
    duplicates_raw: u64,
}

/// Builds the report from the senders' and receivers' outcomes (pair by pair).
fn tally(sent: &[Option<Outcome>], seen: &[Option<Seen>], seconds: f64) -> anyhow::Result<Report> {
    let mut t = Totals::default();
    let mut resync = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (sender, receiver) in sent.iter().zip(seen) {
        let acked: &[u64] = match sender {
            Some(out) => {
                t.logged_in += u64::from(out.login_failure.is_none());
                if let Some(why) = out.login_failure.as_ref().or(out.dropped.as_ref()) {
                    *t.failures.entry(format!("sender: {why}")).or_default() += 1;
                }
                t.sent += out.sent;
                t.unacked += out.unacked;
                for (code, n) in &out.ack_errors {
                    *t.ack_errors.entry(code.clone()).or_default() += n;
                }
                &out.acked
            }
            None => {
                *t.failures.entry("sender unfinished".into()).or_default() += 1;
                &[]
            }
        };
        t.acked += acked.len() as u64;
        let Some(rx) = receiver else {
            *t.failures.entry("receiver unfinished".into()).or_default() += 1;
            t.unchecked += acked.len() as u64;
            continue;
        };
        t.logged_in += u64::from(rx.logged_in);
        t.disconnects += rx.disconnects;
        t.reconnects += rx.reconnects;
        for (why, n) in &rx.dropped {
            *t.dropped.entry(why.clone()).or_default() += n;
        }
        for (why, n) in &rx.reconnect_failures {
            *t.reconnect_failures.entry(why.clone()).or_default() += n;
        }
        t.received_raw += rx.raw;
        t.received_unique += rx.unique.len() as u64;
        resync.add(&rx.resync_us)?;
        if let Some(why) = &rx.failure {
            *t.failures.entry(format!("receiver: {why}")).or_default() += 1;
        }
        for id in acked {
            if rx.unique.contains(id) {
                t.delivered += 1;
            } else if rx.audited.contains(id) {
                t.found_by_final_sync += 1;
            } else if rx.failure.is_some() {
                t.unchecked += 1;
            } else {
                t.lost += 1;
            }
        }
    }
    t.duplicates_raw = t.received_raw.saturating_sub(t.received_unique);
    let mut report = Report {
        charts: Vec::new(),
        scenario: "churn".into(),
        config: serde_json::Value::Null,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    report.add("disconnects", t.disconnects as f64, "");
    report.add("reconnects", t.reconnects as f64, "");
    report.add(
        "reconnect failures",
        t.reconnect_failures.values().sum::<u64>() as f64,
        "",
    );
    report.add(
        "dropped by the server",
        t.dropped.values().sum::<u64>() as f64,
        "",
    );
    report.add("sent", t.sent as f64, "");
    report.add("acked", t.acked as f64, "");
    report.add(
        "achieved send rate (acked)",
        t.acked as f64 / seconds,
        "msgs/s",
    );
    report.add("delivered (PUSH or reconnect SYNC)", t.delivered as f64, "");
    report.add(
        "found only by the final SYNC",
        t.found_by_final_sync as f64,
        "",
    );
    report.add("lost", t.lost as f64, "");
    report.add("unchecked", t.unchecked as f64, "");
    report.add("received (raw)", t.received_raw as f64, "");
    report.add("received (unique)", t.received_unique as f64, "");
    report.add(
        "duplicates seen (dropped by dedupe)",
        t.duplicates_raw as f64,
        "",
    );
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        report.add(
            &format!("reconnect+sync latency {label}"),
            resync.value_at_quantile(q) as f64 / 1000.0,
            "ms",
        );
    }
    report.add(
        "reconnect+sync latency max",
        resync.max() as f64 / 1000.0,
        "ms",
    );
    report.details = serde_json::json!({ "totals": t });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            logged_in: true,
            ..Seen::new().unwrap()
        }
    }

    #[test]
    fn seen_found_late_missing_and_duplicated_messages_are_told_apart() {
        let sender = Outcome {
            sent: 4,
            acked: vec![1, 2, 3, 4],
            ..Outcome::default()
        };
        // 1 by PUSH, 2 by PUSH and again by the reconnect SYNC, 3 only by
        // the final SYNC, 4 nowhere.
        let mut receiver = seen();
        receiver.disconnects = 1;
        receiver.reconnects = 1;
        receiver.raw = 3;
        receiver.unique.extend([1, 2]);
        receiver.audited.extend([1, 2, 3]);
        let report = tally(&[Some(sender)], &[Some(receiver)], 1.0).unwrap();
        let totals = &report.details["totals"];
        let count = |name: &str| totals[name].as_u64().unwrap();
        assert_eq!(count("logged_in"), 2);
        assert_eq!((count("sent"), count("acked")), (4, 4));
        assert_eq!((count("disconnects"), count("reconnects")), (1, 1));
        assert_eq!(count("delivered"), 2);
        assert_eq!(count("found_by_final_sync"), 1);
        assert_eq!(count("lost"), 1);
        assert_eq!(count("unchecked"), 0);
        assert_eq!((count("received_raw"), count("received_unique")), (3, 2));
        assert_eq!(count("duplicates_raw"), 1);
    }

    #[test]
    fn a_receiver_that_gave_up_leaves_its_messages_unchecked() {
        let sender = Outcome {
            sent: 2,
            acked: vec![1, 2],
            ..Outcome::default()
        };
        let mut receiver = seen();
        receiver.raw = 1;
        receiver.unique.insert(1);
        receiver.failure = Some("gave up reconnecting".into());
        let report = tally(&[Some(sender)], &[Some(receiver)], 1.0).unwrap();
        let totals = &report.details["totals"];
        assert_eq!(totals["delivered"], 1);
        assert_eq!(totals["lost"], 0);
        assert_eq!(totals["unchecked"], 1);
        assert_eq!(totals["failures"]["receiver: gave up reconnecting"], 1);
    }
}
