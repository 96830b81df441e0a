//! One user's connection for the whole run: log in and look at its
//! conversations (SYNC_CONVERSATIONS: their heads before this run), send at
//! the rate while the run says so, count every PUSH from others, and at the
//! end audit: SYNC_CONVERSATIONS against what it holds, then SYNC each
//! changed conversation after what it saw, to find what was stored but
//! never pushed.
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

use super::conversation::Conversation;
use super::exchange::{self, Side};
use super::measures::{Samples, count_second};
use super::track::{Taken, Track};
use crate::idle::wire::{self, Dial, Failure, Wire};
use crate::push::clock;

/// Requests a connection may have in flight (the access node's `max_in_flight`).
const MAX_IN_FLIGHT: usize = 32;
/// Newest messages asked for per conversation in SYNC_CONVERSATIONS: its
/// heads are what the bench wants, and 0 would mean the server's default.
pub const LOOK_NEWEST: u32 = 1;
/// Longest the final audit (SYNC_CONVERSATIONS and every SYNC) may take.
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
    /// Stop sending, audit the conversations, log out.
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
    /// Its own messages PUSHed back to it (every member of a conversation
    /// gets the same frame), once each; not deliveries.
    pub own_pushed: u64,
    /// When the last new message arrived, µs since the epoch.
    pub last_push_us: u64,
    /// server_msg_ids from others the final audit found (in the conversations
    /// SYNC_CONVERSATIONS reported changed, after the seq it held).
    pub synced: HashSet<u64>,
    /// Why the final audit did not finish.
    pub sync_failure: Option<String>,
    /// What was off, per conversation (only those this run touched).
    pub conversations: BTreeMap<Conversation, Anomalies>,
    /// Frames nobody asked for, by name.
    pub unexpected: BTreeMap<String, u64>,
    /// Latencies and per-second counts, folded into the fleet's measures.
    #[serde(skip)]
    pub samples: Samples,
}

/// What was off in one conversation, as one connection saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomalies {
    /// PUSHed messages from others received again (same server_msg_id).
    pub duplicates: u64,
    /// Messages PUSHed with a seq past the next one the connection lacked.
    pub out_of_order: u64,
    /// Seqs of this run, up to the head, that neither a PUSH nor the audit brought.
    pub seq_gaps: u64,
}

/// One connection's state after login (its socket is apart, so a request can
/// wait on it while this takes the frames that come meanwhile).
struct Member<'a> {
    setup: &'a Setup,
    role: Role,
    next_request: u32,
    pending: HashMap<u32, Instant>,
    /// The first send of the run, µs since the epoch, once the sending started.
    epoch_us: Option<u64>,
    /// Its conversations, by seq.
    tracks: HashMap<Conversation, Track>,
    /// server_msg_ids of its own messages PUSHed back.
    own: HashSet<u64>,
    out: Outcome,
}

/// Runs one connection through the whole run.
pub async fn run(
    setup: Arc<Setup>,
    role: Role,
    token: String,
    phase: watch::Receiver<Phase>,
) -> Outcome {
    let mut member = Member {
        setup: &setup,
        role,
        next_request: 1,
        pending: HashMap::new(),
        epoch_us: None,
        tracks: HashMap::new(),
        own: HashSet::new(),
        out: Outcome::default(),
    };
    let login = {
        let _permit = setup.logins.acquire().await;
        timeout(setup.login_timeout, async {
            let (mut wire, reply) = login(&setup, role.index, token).await?;
            member.tracks = look(&mut wire, &mut member).await?;
            Ok::<_, Failure>((wire, reply))
        })
        .await
    };
    let (mut wire, reply) = match login {
        Ok(Ok(logged_in)) => logged_in,
        Ok(Err(Failure(why))) => return failed(&setup, member.out, why),
        Err(_) => return failed(&setup, member.out, "login timeout".into()),
    };
    setup.shared.logged_in.fetch_add(1, Ordering::Relaxed);
    if let Err(Failure(why)) = member.chat(&mut wire, phase, &reply).await {
        member.out.dropped = Some(why);
        // Its sends will never be answered: the run must not wait for them.
        let pending = member.pending.len() as u64;
        setup.shared.in_flight.fetch_sub(pending, Ordering::Relaxed);
    } else {
        member.audit(&mut wire).await;
        let _ = timeout(LOGOUT_TIMEOUT, wire.logout()).await;
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
    login_device(&setup.dial, index, token, DEVICE_ID).await
}

/// Opens connection `index` of `dial` and logs in as the device `device_id`
/// (one connection per user and device: a second login of it kicks the first).
pub async fn login_device(
    dial: &Dial,
    index: usize,
    token: String,
    device_id: &str,
) -> Result<(Wire, pb::LoginReply), Failure> {
    let mut wire = dial.connect(index).await?;
    let request = pb::LoginRequest {
        token,
        device_id: device_id.into(),
    };
    wire.send(Command::Login, 1, &request).await?;
    match wire.recv().await? {
        (_, Body::LoginReply(reply)) => Ok((wire, reply)),
        (_, Body::Error(err)) => Err(Failure(format!("refused: {}", wire::code_name(err.code)))),
        (_, other) => Err(Failure(format!("login answered {:?}", other.command()))),
    }
}

/// Every conversation of the user as it stands after login (SYNC_CONVERSATIONS
/// knowing nothing): its head is where this run's messages will start.
pub async fn look(
    wire: &mut Wire,
    side: &mut impl Side,
) -> Result<HashMap<Conversation, Track>, Failure> {
    let summaries = exchange::conversations(wire, side, Vec::new(), LOOK_NEWEST).await?;
    Ok(summaries
        .iter()
        .filter_map(|summary| {
            let conversation = Conversation::from_ref(summary.conversation.as_ref())?;
            Some((
                conversation,
                Track::after(summary.head_seq, summary.read_seq),
            ))
        })
        .collect())
}

/// What a connection holds, as SYNC_CONVERSATIONS' `known`.
pub fn known(tracks: &HashMap<Conversation, Track>) -> Vec<pb::KnownConversation> {
    tracks
        .iter()
        .map(|(conversation, track)| pb::KnownConversation {
            conversation: Some(conversation.to_ref()),
            seq: track.gapless,
            read_seq: track.read_seq,
        })
        .collect()
}

/// The next tick of the send timer, or never when there is none.
async fn next_tick(ticker: &mut Option<(Interval, Instant)>) -> Instant {
    match ticker {
        Some((interval, _)) => interval.tick().await,
        None => std::future::pending().await,
    }
}

impl Side for Member<'_> {
    fn request_id(&mut self) -> u32 {
        // 0 is the server's own (PUSH, KICK), 1 was the LOGIN.
        self.next_request = self.next_request.wrapping_add(1).max(2);
        self.next_request
    }

    fn unsolicited(&mut self, request_id: u32, body: Body) -> Result<(), Failure> {
        self.on_frame(request_id, body)
    }
}

impl Member<'_> {
    /// Sends and receives until the run says to audit (Ok) or the connection ends (Err).
    async fn chat(
        &mut self,
        wire: &mut Wire,
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
                        self.send(wire).await?;
                    }
                }
                _ = ping.tick() => {
                    let id = self.request_id();
                    wire.send(Command::Ping, id, &pb::Ping::default()).await?;
                }
                frame = wire.recv() => {
                    let (request_id, body) = frame?;
                    self.on_frame(request_id, body)?;
                }
            }
        }
    }

    /// Applies a phase change; true when it is time to audit.
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

    /// Sends one stamped message to the target.
    async fn send(&mut self, wire: &mut Wire) -> Result<(), Failure> {
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
                wire.send(Command::SendToUser, id, &request).await
            }
            Target::Group(group_id) => {
                let request = pb::SendToGroup {
                    client_msg_id,
                    group_id,
                    body,
                };
                wire.send(Command::SendToGroup, id, &request).await
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

    /// Takes the messages of one PUSH: each is placed in its conversation by
    /// seq, and counted once by server_msg_id, others' as deliveries and its
    /// own (every member of a conversation gets the same frame) apart.
    fn on_push(&mut self, messages: Vec<pb::StoredMessage>) {
        let now_us = clock::now_us();
        let me = self.role.user_id;
        for message in messages {
            let Some(conversation) = Conversation::of(&message, me) else {
                self.unexpected("PUSH of a message without a conversation".into());
                continue;
            };
            let taken = self
                .tracks
                .entry(conversation)
                .or_default()
                .take(message.seq);
            if taken == Taken::Old {
                continue;
            }
            let anomalies = self.out.conversations.entry(conversation).or_default();
            if taken == Taken::Ahead {
                anomalies.out_of_order += 1;
            }
            if message.from_user_id == me {
                if self.own.insert(message.server_msg_id) {
                    self.out.own_pushed += 1;
                }
                continue;
            }
            if !self.out.pushed.insert(message.server_msg_id) {
                anomalies.duplicates += 1;
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

    /// The final audit, bounded; PUSH frames meanwhile still count.
    async fn audit(&mut self, wire: &mut Wire) {
        let result = timeout(SYNC_TIMEOUT, self.audit_all(wire)).await;
        self.out.sync_failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(Failure(why))) => Some(why),
            Err(_) => Some("audit timeout".into()),
        };
    }

    /// Asks which conversations moved past what it holds, SYNCs each after
    /// its gapless seq, noting every message from others it finds, then
    /// counts the seqs up to the head still missing.
    async fn audit_all(&mut self, wire: &mut Wire) -> Result<(), Failure> {
        let known = known(&self.tracks);
        let summaries = exchange::conversations(wire, self, known, LOOK_NEWEST).await?;
        let me = self.role.user_id;
        for summary in summaries {
            let Some(conversation) = Conversation::from_ref(summary.conversation.as_ref()) else {
                continue;
            };
            // One it did not have at login is all this run's, from its first visible seq.
            let track = self.tracks.entry(conversation).or_insert_with(|| {
                Track::after(summary.first_seq.saturating_sub(1), summary.read_seq)
            });
            let after = track.gapless;
            if summary.head_seq > after {
                let messages = exchange::sync(wire, self, conversation, after).await?;
                let track = self.tracks.entry(conversation).or_default();
                for message in &messages {
                    if track.take(message.seq) != Taken::Old && message.from_user_id != me {
                        self.out.synced.insert(message.server_msg_id);
                    }
                }
            }
            let track = self.tracks.entry(conversation).or_default();
            let gaps = track.missing(summary.head_seq.max(track.top()));
            if gaps > 0 {
                self.out
                    .conversations
                    .entry(conversation)
                    .or_default()
                    .seq_gaps += gaps;
            }
        }
        Ok(())
    }
}
