//! One user's connection for the whole run: log in, send at the rate while
//! the run says so, count every PUSH from others, and at the end SYNC the
//! inbox to find what was stored but never pushed.
//!
//! A connection is a single tokio task that selects over its socket, its
//! send timer, its ping timer and the run's phase, so it reads pushes while
//! it sends and never needs a lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, timeout};

use super::measures::{Samples, count_second};
use crate::idle::wire::{self, Dial, Failure, Wire};
use crate::push::clock;

/// Requests a connection may have in flight (the access node's `max_in_flight`).
const MAX_IN_FLIGHT: usize = 32;
/// Messages asked for per SYNC (the server may cap it lower).
const SYNC_LIMIT: u32 = 500;
/// Longest the final SYNC of one inbox may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the LOGOUT may take to be written.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// The device id of every connection.
const DEVICE_ID: &str = "bench-chat";

/// Where a sender's messages go.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Target {
    /// SEND_TO_USER to this user.
    User(u64),
    /// SEND_TO_GROUP to this group.
    Group(u64),
}

/// Where the run is; every connection follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Logging in; nobody sends yet.
    Login,
    /// Senders send from `start` until `end`.
    Send {
        /// First send.
        start: Instant,
        /// No send at or after this.
        end: Instant,
        /// `start` in µs since the epoch: second 0 of the per-second counts.
        start_us: u64,
    },
    /// Stop sending, SYNC the inbox, log out.
    Sync,
}

/// Counters every connection adds to, read by the run to know when to move on.
#[derive(Debug, Default)]
pub struct Shared {
    /// Connections logged in.
    pub logged_in: AtomicU64,
    /// Connections that failed to log in.
    pub failed: AtomicU64,
    /// Sends written.
    pub sent: AtomicU64,
    /// Sends acked without error.
    pub acked: AtomicU64,
    /// Sends not yet answered.
    pub in_flight: AtomicU64,
    /// Deliveries the acked sends call for (acked × receivers).
    pub expected: AtomicU64,
    /// Unique messages from others received by PUSH.
    pub delivered: AtomicU64,
}

/// The counters read at one moment; what a worker process reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connections logged in.
    pub logged_in: u64,
    /// Connections that failed to log in.
    pub failed: u64,
    /// Sends written.
    pub sent: u64,
    /// Sends acked without error.
    pub acked: u64,
    /// Sends not yet answered.
    pub in_flight: u64,
    /// Deliveries the acked sends call for.
    pub expected: u64,
    /// Unique messages from others received by PUSH.
    pub delivered: u64,
}

impl Counts {
    /// Connections whose login was answered either way.
    pub fn answered(&self) -> u64 {
        self.logged_in + self.failed
    }

    /// Every send answered and every delivery its ack called for arrived.
    pub fn drained(&self) -> bool {
        self.in_flight == 0 && self.delivered >= self.expected
    }

    /// Adds another fleet's counts.
    pub fn add(&mut self, other: &Counts) {
        self.logged_in += other.logged_in;
        self.failed += other.failed;
        self.sent += other.sent;
        self.acked += other.acked;
        self.in_flight += other.in_flight;
        self.expected += other.expected;
        self.delivered += other.delivered;
    }
}

impl Shared {
    /// The counters now.
    pub fn counts(&self) -> Counts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            logged_in: read(&self.logged_in),
            failed: read(&self.failed),
            sent: read(&self.sent),
            acked: read(&self.acked),
            in_flight: read(&self.in_flight),
            expected: read(&self.expected),
            delivered: read(&self.delivered),
        }
    }
}

/// What is the same for every connection of a run.
#[derive(Debug)]
pub struct Setup {
    /// Where connection `i` goes and comes from.
    pub dial: Dial,
    /// Messages per second per sender.
    pub rate: f64,
    /// Bytes of each body.
    pub body_bytes: usize,
    /// Longest a connect + login may take.
    pub login_timeout: Duration,
    /// Makes this run's client_msg_ids unique across runs of the same accounts.
    pub nonce: u64,
    /// Connect + logins in progress at once.
    pub logins: Semaphore,
    /// The counters.
    pub shared: Shared,
}

/// One connection's part of the run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Role {
    /// Its position in the run (picks the access node and the send offset).
    pub index: usize,
    /// The user it logs in as.
    pub user_id: u64,
    /// Where it sends, if it is a sender.
    pub target: Option<Target>,
    /// Receivers of each of its messages.
    pub fanout: u64,
}

/// What one connection saw (all of it but the raw samples crosses from a
/// worker process to the parent).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Why it could not log in.
    pub login_failure: Option<String>,
    /// Why it ended before the run did.
    pub dropped: Option<String>,
    /// Sends written.
    pub sent: u64,
    /// server_msg_ids of the sends acked without error.
    pub acked: Vec<u64>,
    /// Sends refused, by error code.
    pub ack_errors: BTreeMap<String, u64>,
    /// Sends never answered.
    pub unacked: u64,
    /// Send times skipped because 32 requests were in flight.
    pub throttled: u64,
    /// server_msg_ids of messages from others received by PUSH.
    pub pushed: HashSet<u64>,
    /// PUSHed messages received again.
    pub duplicates: u64,
    /// When the last new message arrived, µs since the epoch.
    pub last_push_us: u64,
    /// server_msg_ids from others found in the inbox by the final SYNC.
    pub synced: HashSet<u64>,
    /// Why the final SYNC did not finish.
    pub sync_failure: Option<String>,
    /// Frames nobody asked for, by name.
    pub unexpected: BTreeMap<String, u64>,
    /// Latencies and per-second counts, folded into the fleet's measures.
    #[serde(skip)]
    pub samples: Samples,
}

/// One connection's state after login.
struct Member<'a> {
    setup: &'a Setup,
    role: Role,
    wire: Wire,
    next_request: u32,
    pending: HashMap<u32, Instant>,
    /// The first send of the run, µs since the epoch, once the sending started.
    epoch_us: Option<u64>,
    out: Outcome,
}

/// Runs one connection through the whole run.
pub async fn run(
    setup: Arc<Setup>,
    role: Role,
    token: String,
    phase: watch::Receiver<Phase>,
) -> Outcome {
    let out = Outcome::default();
    let login = {
        let _permit = setup.logins.acquire().await;
        timeout(setup.login_timeout, login(&setup, role.index, token)).await
    };
    let (wire, reply) = match login {
        Ok(Ok(logged_in)) => logged_in,
        Ok(Err(Failure(why))) => return failed(&setup, out, why),
        Err(_) => return failed(&setup, out, "login timeout".into()),
    };
    setup.shared.logged_in.fetch_add(1, Ordering::Relaxed);
    let mut member = Member {
        setup: &setup,
        role,
        wire,
        next_request: 1,
        pending: HashMap::new(),
        epoch_us: None,
        out,
    };
    if let Err(Failure(why)) = member.chat(phase, &reply).await {
        member.out.dropped = Some(why);
        // Its sends will never be answered: the run must not wait for them.
        let pending = member.pending.len() as u64;
        setup.shared.in_flight.fetch_sub(pending, Ordering::Relaxed);
    } else {
        member.sync(reply.max_seq).await;
        let _ = timeout(LOGOUT_TIMEOUT, member.wire.logout()).await;
    }
    member.out.unacked = member.pending.len() as u64;
    member.out
}

fn failed(setup: &Setup, mut out: Outcome, why: String) -> Outcome {
    setup.shared.failed.fetch_add(1, Ordering::Relaxed);
    out.login_failure = Some(why);
    out
}

/// Connects (through the gateway when there is one) and logs in.
pub async fn login(
    setup: &Setup,
    index: usize,
    token: String,
) -> Result<(Wire, pb::LoginReply), Failure> {
    let mut wire = setup.dial.connect(index).await?;
    let request = pb::LoginRequest {
        token,
        device_id: DEVICE_ID.into(),
    };
    wire.send(Command::Login, 1, &request).await?;
    match wire.recv().await? {
        (_, Body::LoginReply(reply)) => Ok((wire, reply)),
        (_, Body::Error(err)) => Err(Failure(format!("refused: {}", wire::code_name(err.code)))),
        (_, other) => Err(Failure(format!("login answered {:?}", other.command()))),
    }
}

/// The next tick of the send timer, or never when there is none.
async fn next_tick(ticker: &mut Option<(Interval, Instant)>) -> Instant {
    match ticker {
        Some((interval, _)) => interval.tick().await,
        None => std::future::pending().await,
    }
}

impl Member<'_> {
    /// Sends and receives until the run says SYNC (Ok) or the connection ends (Err).
    async fn chat(
        &mut self,
        mut phase: watch::Receiver<Phase>,
        reply: &pb::LoginReply,
    ) -> Result<(), Failure> {
        let heartbeat = Duration::from_millis(u64::from(reply.heartbeat_interval_ms).max(1000));
        let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
        let mut ticker = None;
        let now = *phase.borrow_and_update();
        if self.follow(now, &mut ticker) {
            return Ok(());
        }
        loop {
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Err(Failure("the run ended".into()));
                    }
                    let now = *phase.borrow_and_update();
                    if self.follow(now, &mut ticker) {
                        return Ok(());
                    }
                }
                at = next_tick(&mut ticker) => {
                    if ticker.as_ref().is_some_and(|(_, end)| at >= *end) {
                        ticker = None;
                    } else if self.pending.len() >= MAX_IN_FLIGHT {
                        self.out.throttled += 1;
                    } else {
                        self.send().await?;
                    }
                }
                _ = ping.tick() => {
                    let id = self.request_id();
                    self.wire.send(Command::Ping, id, &pb::Ping::default()).await?;
                }
                frame = self.wire.recv() => {
                    let (request_id, body) = frame?;
                    self.on_frame(request_id, body)?;
                }
            }
        }
    }

    /// Applies a phase change; true when it is time to SYNC.
    fn follow(&mut self, phase: Phase, ticker: &mut Option<(Interval, Instant)>) -> bool {
        match phase {
            Phase::Login => false,
            Phase::Send {
                start,
                end,
                start_us,
            } => {
                self.epoch_us.get_or_insert(start_us);
                if self.role.target.is_some() && ticker.is_none() {
                    let period = Duration::from_secs_f64(1.0 / self.setup.rate);
                    // Spread the senders over the period instead of all at once.
                    let offset = period.mul_f64((self.role.index as f64 * 0.618_034).fract());
                    let mut interval = interval_at(start + offset, period);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    *ticker = Some((interval, end));
                }
                false
            }
            Phase::Sync => true,
        }
    }

    fn request_id(&mut self) -> u32 {
        // 0 is the server's own (PUSH, KICK), 1 was the LOGIN.
        self.next_request = self.next_request.wrapping_add(1).max(2);
        self.next_request
    }

    /// Sends one stamped message to the target.
    async fn send(&mut self) -> Result<(), Failure> {
        let Some(target) = self.role.target else {
            return Ok(());
        };
        self.out.sent += 1;
        self.setup.shared.sent.fetch_add(1, Ordering::Relaxed);
        let client_msg_id = format!("{}-{}-{}", self.setup.nonce, self.role.index, self.out.sent);
        let body = clock::stamped(clock::now_us(), self.setup.body_bytes);
        let id = self.request_id();
        self.pending.insert(id, Instant::now());
        self.setup.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        match target {
            Target::User(to_user_id) => {
                let request = pb::SendToUser {
                    client_msg_id,
                    to_user_id,
                    body,
                };
                self.wire.send(Command::SendToUser, id, &request).await
            }
            Target::Group(group_id) => {
                let request = pb::SendToGroup {
                    client_msg_id,
                    group_id,
                    body,
                };
                self.wire.send(Command::SendToGroup, id, &request).await
            }
        }
    }

    /// Takes one frame in; Err when the server is closing the connection.
    fn on_frame(&mut self, request_id: u32, body: Body) -> Result<(), Failure> {
        match body {
            Body::Push(push) => self.on_push(push.messages),
            Body::SendAck(ack) => match ack.error {
                Some(err) => {
                    self.answered(request_id, Some(err.code));
                }
                None => {
                    if self.answered(request_id, None) {
                        self.out.acked.push(ack.server_msg_id);
                        self.setup.shared.acked.fetch_add(1, Ordering::Relaxed);
                        self.count(|s| &mut s.acked_per_sec, clock::now_us());
                        self.setup
                            .shared
                            .expected
                            .fetch_add(self.role.fanout, Ordering::Relaxed);
                    }
                }
            },
            Body::Error(err) if self.pending.contains_key(&request_id) => {
                self.answered(request_id, Some(err.code));
            }
            Body::Kick(kick) => {
                return Err(Failure(format!("kicked: {}", wire::kick_name(kick.reason))));
            }
            Body::Pong(_) => {}
            Body::Error(err) => self.unexpected(format!("ERROR {}", wire::code_name(err.code))),
            other => self.unexpected(other.command().as_str_name().to_owned()),
        }
        Ok(())
    }

    /// Settles the send `request_id`; true when it was waiting (and succeeded when `error` is None).
    fn answered(&mut self, request_id: u32, error: Option<i32>) -> bool {
        let Some(sent_at) = self.pending.remove(&request_id) else {
            self.unexpected("answer to nothing".into());
            return false;
        };
        self.setup.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let took = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.out.samples.ack_us.push(took);
        if let Some(code) = error {
            *self
                .out
                .ack_errors
                .entry(wire::code_name(code))
                .or_default() += 1;
            return false;
        }
        true
    }

    fn on_push(&mut self, messages: Vec<pb::StoredMessage>) {
        let now_us = clock::now_us();
        for message in messages {
            // Every send lands in the sender's inbox too: only others' count.
            if message.from_user_id == self.role.user_id {
                continue;
            }
            if !self.out.pushed.insert(message.server_msg_id) {
                self.out.duplicates += 1;
                continue;
            }
            self.setup.shared.delivered.fetch_add(1, Ordering::Relaxed);
            self.out.last_push_us = now_us;
            self.count(|s| &mut s.delivered_per_sec, now_us);
            if let Some(sent) = clock::sent_us(&message.body) {
                self.out
                    .samples
                    .latency_us
                    .push(now_us.saturating_sub(sent));
            }
        }
    }

    /// Counts one event at `now_us` in the per-second counts `which` picks
    /// (once the sending has started: nothing of this run comes before).
    fn count(&mut self, which: impl Fn(&mut Samples) -> &mut Vec<u64>, now_us: u64) {
        if let Some(epoch_us) = self.epoch_us {
            count_second(which(&mut self.out.samples), epoch_us, now_us);
        }
    }

    fn unexpected(&mut self, what: String) {
        *self.out.unexpected.entry(what).or_default() += 1;
    }

    /// Reads the inbox after `after_seq` (its top at login) to its end,
    /// noting every message from others; PUSH frames meanwhile still count.
    async fn sync(&mut self, after_seq: u64) {
        let result = timeout(SYNC_TIMEOUT, self.sync_all(after_seq)).await;
        self.out.sync_failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(Failure(why))) => Some(why),
            Err(_) => Some("sync timeout".into()),
        };
    }

    async fn sync_all(&mut self, mut after_seq: u64) -> Result<(), Failure> {
        loop {
            let id = self.request_id();
            let request = pb::SyncRequest {
                after_seq,
                limit: SYNC_LIMIT,
            };
            self.wire.send(Command::Sync, id, &request).await?;
            let reply = loop {
                match self.wire.recv().await? {
                    (got, Body::SyncReply(reply)) if got == id => break reply,
                    (got, Body::Error(err)) if got == id => {
                        return Err(Failure(format!(
                            "sync refused: {}",
                            wire::code_name(err.code)
                        )));
                    }
                    (got, body) => self.on_frame(got, body)?,
                }
            };
            for message in &reply.messages {
                after_seq = after_seq.max(message.seq);
                if message.from_user_id != self.role.user_id {
                    self.out.synced.insert(message.server_msg_id);
                }
            }
            if !reply.has_more || reply.messages.is_empty() {
                return Ok(());
            }
        }
    }
}
