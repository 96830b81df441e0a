//! How the tokio side talks to an event loop: a channel plus a `mio::Waker`.
//!
//! Replies to upstream calls and pushes from the gRPC server are queued on the
//! loop's channel; the loop is woken only when it is not already due to look,
//! so a burst of messages costs one wake-up, and the loop drains them in one
//! batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use fishchat_codec::KickReason;
use mio::Waker;

/// What an event loop is asked to do.
#[derive(Debug)]
pub enum ToLoop {
    /// The answer to a request a connection sent upstream.
    Reply(Reply),
    /// Frames to queue on connections of this loop.
    Push(PushBatch),
    /// Cut one connection off.
    Kick {
        /// Slab slot.
        slot: u32,
        /// The connection id, checked against the slot's current occupant.
        conn_id: u64,
        /// Told to the client in the KICK frame.
        reason: KickReason,
    },
    /// Stop accepting, tell every client to reconnect elsewhere, then stop.
    Drain,
}

/// The answer to one upstream request.
#[derive(Debug)]
pub struct Reply {
    /// Slab slot of the requesting connection.
    pub slot: u32,
    /// Its connection id.
    pub conn_id: u64,
    /// The frame to send back, if any.
    pub frame: Option<Bytes>,
    /// What changes on the connection.
    pub then: Then,
}

/// The state change that comes with a reply.
#[derive(Debug)]
pub enum Then {
    /// Nothing beyond the frame.
    Nothing,
    /// The login succeeded: the connection now acts as `user_id`.
    LoggedIn {
        /// The authenticated user.
        user_id: u64,
        /// The device id the session was recorded under.
        device_id: Box<str>,
    },
    /// The login was refused; the connection may try again until its deadline.
    LoginRefused {
        /// Refused for an unknown token (not, say, an outage): a failure
        /// its address is counted for (see `login_guard`).
        bad_token: bool,
    },
}

/// Frames shared between connections of one loop.
#[derive(Debug, Default)]
pub struct PushBatch {
    /// Encoded frames, each possibly queued on many connections.
    pub frames: Vec<Bytes>,
    /// (index into `frames`, slot, connection id).
    pub targets: Vec<(u32, u32, u64)>,
    /// When the push request arrived, for the push latency metric.
    pub received: Option<Instant>,
}

/// The sending side of a loop's mailbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct LoopHandle {
    tx: Sender<ToLoop>,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
}

/// The receiving side, owned by the loop.
#[derive(Debug)]
pub struct Mailbox {
    rx: Receiver<ToLoop>,
    pending: Arc<AtomicBool>,
}

/// A connected handle and mailbox; the waker must be registered with the loop's poll.
pub fn mailbox(waker: Waker) -> (LoopHandle, Mailbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let pending = Arc::new(AtomicBool::new(false));
    (
        LoopHandle {
            tx,
            waker: Arc::new(waker),
            pending: pending.clone(),
        },
        Mailbox { rx, pending },
    )
}

impl LoopHandle {
    /// Queues `message`; false when the loop has stopped.
    pub fn send(&self, message: ToLoop) -> bool {
        if self.tx.send(message).is_err() {
            return false;
        }
        // Only the first sender since the loop last looked pays for a wake-up.
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Err(err) = self.waker.wake()
        {
            tracing::error!(%err, "waking an event loop failed");
        }
        true
    }
}

impl Mailbox {
    /// Everything queued so far. The flag is cleared first, so a message sent
    /// while the loop drains either is drained now or wakes the loop again.
    pub fn drain(&self) -> impl Iterator<Item = ToLoop> + '_ {
        self.pending.store(false, Ordering::Release);
        self.rx.try_iter()
    }
}
