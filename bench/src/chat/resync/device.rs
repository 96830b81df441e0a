//! The user's measuring device: what it holds of every conversation, and the
//! reconnect it is timed on (connect, LOGIN, SYNC_CONVERSATIONS with all it
//! holds, every page), between which it is offline.

use std::collections::HashMap;
use std::time::Duration;

use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use tokio::time::{Instant, timeout};

use crate::chat::conversation::Conversation;
use crate::chat::exchange::{self, Side};
use crate::chat::member::{LOOK_NEWEST, login_device};
use crate::idle::wire::{self, Dial, Failure, Wire};

/// The measuring device's id (the watching device has another).
const DEVICE_ID: &str = "bench-resync";
/// Newest messages per changed conversation a reconnecting client asks
/// for: the server's default.
const CATCH_UP_NEWEST: u32 = 0;
/// Conversations per SYNC_CONVERSATIONS page on a reconnect: the server's default.
const DEFAULT_PAGE: u32 = 0;
/// Longest the server may take to close the connection after LOGOUT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the device holds of one conversation, as SYNC_CONVERSATIONS' `known` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The highest seq it holds.
    pub seq: u64,
    /// The read position it last heard of.
    pub read_seq: u64,
}

/// One timed reconnect.
#[derive(Debug)]
pub struct Timed {
    /// From the start of the TCP connect to the last SYNC_CONVERSATIONS_REPLY page, µs.
    pub total_us: u64,
    /// From the first SYNC_CONVERSATIONS to its last reply page, µs.
    pub sync_us: u64,
    /// The conversations the reply listed, every page.
    pub summaries: Vec<pb::ConversationSummary>,
}

/// The measuring device of the user.
#[derive(Debug)]
pub struct Device {
    /// How it connects.
    pub dial: Dial,
    /// Its connection index in `dial` (which access node, which source address).
    pub index: usize,
    /// The user's login token.
    pub token: String,
    /// What it holds, per conversation.
    pub holds: HashMap<Conversation, Held>,
}

/// The device's side of an exchange: nothing is expected besides the
/// replies, so other frames are only counted; a KICK ends it.
#[derive(Debug, Default)]
struct Quiet {
    next_request: u32,
}

impl Side for Quiet {
    fn request_id(&mut self) -> u32 {
        // 0 is the server's own (PUSH, KICK), 1 is the LOGIN.
        self.next_request = self.next_request.wrapping_add(1).max(2);
        self.next_request
    }

    fn unsolicited(&mut self, _request_id: u32, body: Body) -> Result<(), Failure> {
        match body {
            Body::Kick(kick) => Err(Failure(format!("kicked: {}", wire::kick_name(kick.reason)))),
            _ => Ok(()),
        }
    }
}

impl Device {
    /// Connects and learns every conversation of the user with its head
    /// (SYNC_CONVERSATIONS knowing none, every page), then goes offline.
    pub async fn look(&mut self) -> Result<(), Failure> {
        let (mut wire, _) =
            login_device(&self.dial, self.index, self.token.clone(), DEVICE_ID).await?;
        let summaries =
            exchange::conversations(&mut wire, &mut Quiet::default(), Vec::new(), LOOK_NEWEST)
                .await?;
        self.holds.clear();
        self.take(&summaries);
        close(wire).await;
        Ok(())
    }

    /// The timed reconnect: connect, LOGIN, SYNC_CONVERSATIONS with what it
    /// holds until a page says no more follow; then it goes offline again.
    /// What it holds is not changed (see [`Device::take`]).
    pub async fn resync(&mut self) -> Result<Timed, Failure> {
        // A client has its `known` at hand when it reconnects: built before the clock starts.
        let known = self.known();
        let began = Instant::now();
        let (mut wire, _) =
            login_device(&self.dial, self.index, self.token.clone(), DEVICE_ID).await?;
        let syncing = Instant::now();
        let summaries = exchange::conversations_paged(
            &mut wire,
            &mut Quiet::default(),
            known,
            CATCH_UP_NEWEST,
            DEFAULT_PAGE,
        )
        .await?;
        let done = Instant::now();
        close(wire).await;
        Ok(Timed {
            total_us: micros(done - began),
            sync_us: micros(done - syncing),
            summaries,
        })
    }

    /// Takes a reply in: each listed conversation is held up to its head,
    /// at its read position. A conversation with `has_gap` would need a SYNC
    /// to be held that far; the scenario's checks count that apart.
    pub fn take(&mut self, summaries: &[pb::ConversationSummary]) {
        for summary in summaries {
            if let Some(conversation) = Conversation::from_ref(summary.conversation.as_ref()) {
                self.holds.insert(
                    conversation,
                    Held {
                        seq: summary.head_seq,
                        read_seq: summary.read_seq,
                    },
                );
            }
        }
    }

    /// What it holds, as SYNC_CONVERSATIONS' `known`.
    fn known(&self) -> Vec<pb::KnownConversation> {
        self.holds
            .iter()
            .map(|(conversation, held)| pb::KnownConversation {
                conversation: Some(conversation.to_ref()),
                seq: held.seq,
                read_seq: held.read_seq,
            })
            .collect()
    }
}

/// LOGOUT, then reads until the server closes the connection, so the device
/// is offline before anything is sent to the user; bounded, never an error
/// (the measurement is over).
pub async fn close(mut wire: Wire) {
    if wire.send(Command::Logout, 0, &pb::Logout {}).await.is_ok() {
        let _ = timeout(CLOSE_TIMEOUT, async { while wire.recv().await.is_ok() {} }).await;
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
