//! The state of one logged-in connection: its requests on the wire, how far
//! it has caught up, and its heartbeat.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fishchat_codec::Body;
use tokio::time::Instant;

use super::{End, InFlight};
use crate::connection::Connection;
use crate::conversation::Conversation;
use crate::tls::Stream;

/// The heartbeat when the server asks for none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Heartbeat intervals without any frame after which the connection is dead.
const DEAD_AFTER_INTERVALS: u32 = 3;

/// The state of one logged-in connection.
pub(super) struct Session {
    conn: Connection<Stream>,
    pub(super) pending: HashMap<u32, InFlight>,
    last_id: u32,
    /// A page of SYNC_CONVERSATIONS is on the wire.
    pub(super) listing: bool,
    /// Conversations with a SYNC page on the wire.
    pub(super) syncing: BTreeSet<Conversation>,
    /// Conversations to SYNC once there is room (and the listing is done).
    pub(super) wanted: BTreeSet<Conversation>,
    /// [`Event::Synced`](crate::Event::Synced) was emitted on this connection.
    pub(super) caught_up: bool,
    /// How often to PING.
    pub(super) heartbeat: Duration,
    /// When the last frame arrived.
    pub(super) last_rx: Instant,
}

impl Session {
    pub(super) fn new(conn: Connection<Stream>, heartbeat_ms: u32) -> Self {
        let heartbeat = match heartbeat_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        Self {
            conn,
            pending: HashMap::new(),
            last_id: 0,
            listing: false,
            syncing: BTreeSet::new(),
            wanted: BTreeSet::new(),
            caught_up: false,
            heartbeat,
            last_rx: Instant::now(),
        }
    }

    /// A request id that is not 0 and not waiting for a reply.
    pub(super) fn next_id(&mut self) -> u32 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id != 0 && !self.pending.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// How long the server may stay silent (or refuse to read) before the connection counts as dead.
    pub(super) fn dead_after(&self) -> Duration {
        self.heartbeat * DEAD_AFTER_INTERVALS
    }

    /// Writes one frame. A server that stops reading would block the write
    /// forever (the heartbeat check cannot run meanwhile), so it has the same deadline.
    pub(super) async fn write(&mut self, id: u32, body: &Body) -> Result<(), End> {
        let dead_after = self.dead_after();
        match tokio::time::timeout(dead_after, self.conn.send(id, body)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Lost(error.to_string())),
            Err(_) => Err(End::Lost(format!(
                "the server read nothing for {dead_after:?}"
            ))),
        }
    }

    /// Waits for the next frame: (request id, body).
    pub(super) async fn recv(&mut self) -> Result<(u32, Body), End> {
        let frame = self
            .conn
            .recv()
            .await
            .map_err(|error| End::Lost(error.to_string()))?;
        self.last_rx = Instant::now();
        Ok(frame)
    }

    /// Sends a request that expects no tracked reply.
    pub(super) async fn send(&mut self, body: Body) -> Result<(), End> {
        let id = self.next_id();
        self.write(id, &body).await
    }

    pub(super) fn sends_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, InFlight::Send(_)))
            .count()
    }

    pub(super) fn requests_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, InFlight::App(_)))
            .count()
    }

    /// Sync pages on the wire, the listing's included.
    pub(super) fn syncs_in_flight(&self) -> usize {
        self.syncing.len() + usize::from(self.listing)
    }
}
