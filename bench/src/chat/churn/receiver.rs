//! One churned receiver: it logs in and looks at its conversations, reads
//! pushes until the driver cuts it, reconnects and catches up as a client
//! does, and at the end reads its conversation with its sender whole for
//! the audit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use hdrhistogram::Histogram;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, interval_at, sleep, timeout};

use super::audit::Audit;
use crate::chat::conversation::Conversation;
use crate::chat::exchange::{self, Side};
use crate::chat::member::{self, LOOK_NEWEST, Phase, Setup};
use crate::chat::track::{Taken, Track};
use crate::idle::wire::{self, Failure, Wire};

/// Longest one catch-up or the final audit (all its pages) may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a LOGOUT may take to be written.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts in a row before a receiver gives up.
const RECONNECT_TRIES: u32 = 5;
/// Shortest pause before a reconnect.
pub const MIN_PAUSE_MS: u64 = 10;
/// Newest messages per conversation a catch-up asks for: a client's
/// choice; 0 is the server's default.
const CATCH_UP_NEWEST: u32 = 0;

/// What one receiver saw.
#[derive(Debug)]
pub struct Seen {
    /// The receiver.
    pub user_id: u64,
    /// The user who sends to it.
    pub sender: u64,
    /// Whether the first login went through.
    pub logged_in: bool,
    /// Why it could not log in the first time, gave up reconnecting, or could
    /// not finish the audit.
    pub failure: Option<String>,
    /// Connections it closed on purpose.
    pub disconnects: u64,
    /// Connections the server or the network closed.
    pub dropped: BTreeMap<String, u64>,
    /// Reconnects that logged in and caught up.
    pub reconnects: u64,
    /// Reconnect attempts that failed, by reason.
    pub reconnect_failures: BTreeMap<String, u64>,
    /// Messages from others handed in (PUSH or SYNC), duplicates included.
    pub raw: u64,
    /// Unique server_msg_ids among them.
    pub unique: HashSet<u64>,
    /// The conversation with its sender as the final audit read it.
    pub audit: Option<Audit>,
    /// Connect + login + catch-up time of each reconnect, µs.
    pub resync_us: Histogram<u64>,
}

impl Seen {
    /// Nothing seen yet by `user_id`, whose messages come from `sender`.
    pub fn new(user_id: u64, sender: u64) -> anyhow::Result<Seen> {
        Ok(Seen {
            user_id,
            sender,
            logged_in: false,
            failure: None,
            disconnects: 0,
            dropped: BTreeMap::new(),
            reconnects: 0,
            reconnect_failures: BTreeMap::new(),
            raw: 0,
            unique: HashSet::new(),
            audit: None,
            resync_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        })
    }
}

/// One receiver's task state.
pub struct Receiver {
    /// What every connection shares.
    pub setup: Arc<Setup>,
    /// Its position in the run.
    pub index: usize,
    /// Its login token.
    pub token: String,
    /// Longest pause before a reconnect, ms.
    pub max_pause_ms: u64,
    /// Its conversations, by seq.
    pub tracks: HashMap<Conversation, Track>,
    /// The last request id used.
    pub next_request: u32,
    /// What it saw.
    pub seen: Seen,
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

impl Side for Receiver {
    fn request_id(&mut self) -> u32 {
        // 0 is the server's own (PUSH, KICK), 1 is every LOGIN.
        self.next_request = self.next_request.wrapping_add(1).max(2);
        self.next_request
    }

    fn unsolicited(&mut self, _request_id: u32, body: Body) -> Result<(), Failure> {
        self.on_frame(body)
    }
}

impl Receiver {
    /// Logs in, then follows the run: cut, pause, reconnect and catch up
    /// when told, and at the end audit and log out.
    pub async fn run(mut self, mut phase: watch::Receiver<Phase>, cut: Arc<Notify>) -> Seen {
        let first = {
            let setup = self.setup.clone();
            let _permit = setup.logins.acquire().await;
            timeout(setup.login_timeout, async {
                let (mut wire, reply) =
                    member::login(&setup, self.index, self.token.clone()).await?;
                self.tracks = member::look(&mut wire, &mut self).await?;
                Ok::<_, Failure>((wire, reply))
            })
            .await
        };
        let (mut wire, reply) = match first {
            Ok(Ok(logged_in)) => logged_in,
            Ok(Err(Failure(why))) => return self.failed(why),
            Err(_) => return self.failed("login timeout".into()),
        };
        self.setup.shared.logged_in.fetch_add(1, Ordering::Relaxed);
        self.seen.logged_in = true;
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
        let audit = timeout(SYNC_TIMEOUT, self.audit(&mut wire)).await;
        self.seen.failure = match audit {
            Ok(Ok(())) => None,
            Ok(Err(Failure(why))) => Some(format!("audit: {why}")),
            Err(_) => Some("audit timeout".into()),
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

    /// Pauses a random while, then connects, logs in and catches up; None
    /// when every try failed.
    async fn reconnect(&mut self) -> Option<(Wire, u32)> {
        for _ in 0..RECONNECT_TRIES {
            let pause = rand::random_range(MIN_PAUSE_MS..=self.max_pause_ms);
            sleep(Duration::from_millis(pause)).await;
            let began = Instant::now();
            let setup = self.setup.clone();
            let attempt = timeout(setup.login_timeout + SYNC_TIMEOUT, async {
                let (mut wire, reply) =
                    member::login(&setup, self.index, self.token.clone()).await?;
                self.catch_up(&mut wire).await?;
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

    /// What a client does after login: SYNC_CONVERSATIONS with what it holds,
    /// takes the newest messages of each changed conversation, and SYNCs
    /// the ones it still lacks after the last seq it holds gapless.
    async fn catch_up(&mut self, wire: &mut Wire) -> Result<(), Failure> {
        let known = member::known(&self.tracks);
        let summaries = exchange::conversations(wire, self, known, CATCH_UP_NEWEST).await?;
        for summary in summaries {
            let Some(conversation) = Conversation::from_ref(summary.conversation.as_ref()) else {
                continue;
            };
            // One it did not have is new since the first login: all of it counts.
            let track = self.tracks.entry(conversation).or_insert_with(|| {
                Track::after(summary.first_seq.saturating_sub(1), summary.read_seq)
            });
            track.read_seq = summary.read_seq;
            for message in &summary.messages {
                self.take(message);
            }
            let after = self.tracks.entry(conversation).or_default().gapless;
            if after < summary.head_seq {
                for message in exchange::sync(wire, self, conversation, after).await? {
                    self.take(&message);
                }
            }
        }
        Ok(())
    }

    /// Reads the conversation with the sender whole: its head and first seq
    /// from SYNC_CONVERSATIONS (knowing nothing, so every conversation is
    /// listed), then every message from the first by SYNC. A conversation
    /// not listed holds nothing.
    async fn audit(&mut self, wire: &mut Wire) -> Result<(), Failure> {
        let peer = Conversation::User(self.seen.sender);
        let summaries = exchange::conversations(wire, self, Vec::new(), LOOK_NEWEST).await?;
        let listed = summaries
            .iter()
            .find(|s| Conversation::from_ref(s.conversation.as_ref()) == Some(peer))
            .map(|s| (s.first_seq.max(1), s.head_seq));
        let audit = match listed {
            Some((first_seq, head_seq)) => {
                let messages = exchange::sync(wire, self, peer, first_seq - 1).await?;
                Audit::of(first_seq, head_seq, &messages)
            }
            None => Audit::default(),
        };
        self.seen.audit = Some(audit);
        Ok(())
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

    /// Hands one message in: placed in its conversation by seq, then, when
    /// it is this run's and from someone else, counted raw and once by
    /// server_msg_id.
    fn take(&mut self, message: &pb::StoredMessage) {
        let Some(conversation) = Conversation::of(message, self.seen.user_id) else {
            return;
        };
        let taken = self
            .tracks
            .entry(conversation)
            .or_default()
            .take(message.seq);
        if taken == Taken::Old || message.from_user_id == self.seen.user_id {
            return;
        }
        self.seen.raw += 1;
        if self.seen.unique.insert(message.server_msg_id) {
            self.setup.shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
