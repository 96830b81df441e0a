//! How the tokio side talks to an event loop: a channel plus a `mio::Waker`.
//!
//! Replies to upstream calls and pushes from the gRPC server are queued on the
//! loop's channel; the loop is woken only when it is not already due to look,
//! so a burst of messages costs one wake-up, and the loop drains them in one
//! batch.
//!
//! Replies and kicks need no bound here: each connection has at most
//! `max_in_flight` requests upstream, so their number is bounded by the
//! connections. Pushes are not: if a loop stalls while msg_job keeps pushing,
//! they would pile up. So pushes queued towards a loop count against a byte
//! budget, and a push over it is dropped and counted. Nothing is lost by
//! that: every pushed message is already stored, and a client sees the gap in
//! its conversation's seqs at its next push, or syncs when it reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use fishchat_codec::KickReason;
use mio::Waker;

use crate::session::Then;

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

/// Frames shared between connections of one loop.
#[derive(Debug, Default)]
pub struct PushBatch {
    /// Encoded frames, each possibly queued on many connections: whole frames
    /// back to back, and how many.
    pub frames: Vec<(Bytes, u32)>,
    /// (index into `frames`, slot, the connection id's `table::tag`).
    pub targets: Vec<(u32, u32, u32)>,
    /// When the push request arrived, for the push latency metric.
    pub received: Option<Instant>,
}

impl PushBatch {
    /// What the batch holds in memory while queued, about: its frames (as
    /// if not shared with other loops) and its targets.
    fn cost(&self) -> usize {
        let frames: usize = self.frames.iter().map(|(bytes, _)| bytes.len()).sum();
        frames + self.targets.len() * std::mem::size_of::<(u32, u32, u32)>()
    }
}

/// Bytes of pushes queued towards one loop, against its budget.
#[derive(Debug)]
struct PushBudget {
    queued: AtomicUsize,
    max: usize,
}

/// The sending side of a loop's mailbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct LoopHandle {
    tx: Sender<ToLoop>,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
    pushes: Arc<PushBudget>,
}

/// The receiving side, owned by the loop.
#[derive(Debug)]
pub struct Mailbox {
    rx: Receiver<ToLoop>,
    pending: Arc<AtomicBool>,
    pushes: Arc<PushBudget>,
}

/// A connected handle and mailbox, holding at most `max_push_bytes` of
/// pushes (0: no limit); the waker must be registered with the loop's poll.
pub fn mailbox(waker: Waker, max_push_bytes: usize) -> (LoopHandle, Mailbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let pending = Arc::new(AtomicBool::new(false));
    let pushes = Arc::new(PushBudget {
        queued: AtomicUsize::new(0),
        max: if max_push_bytes == 0 {
            usize::MAX
        } else {
            max_push_bytes
        },
    });
    (
        LoopHandle {
            tx,
            waker: Arc::new(waker),
            pending: pending.clone(),
            pushes: pushes.clone(),
        },
        Mailbox {
            rx,
            pending,
            pushes,
        },
    )
}

impl LoopHandle {
    /// Queues `batch` unless the pushes already queued and it would pass the
    /// budget; false when it was dropped (or the loop has stopped).
    pub fn push(&self, batch: PushBatch) -> bool {
        let cost = batch.cost();
        let admitted =
            self.pushes
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    let total = queued.saturating_add(cost);
                    (total <= self.pushes.max).then_some(total)
                });
        if admitted.is_err() {
            return false;
        }
        if self.send(ToLoop::Push(batch)) {
            true
        } else {
            self.pushes.queued.fetch_sub(cost, Ordering::AcqRel);
            false
        }
    }

    /// Queues `message`; false when the loop has stopped. Pushes go through
    /// [`push`](Self::push), which keeps their budget.
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
        self.rx.try_iter().inspect(|message| {
            if let ToLoop::Push(batch) = message {
                self.pushes.queued.fetch_sub(batch.cost(), Ordering::AcqRel);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(frame_len: usize) -> PushBatch {
        PushBatch {
            frames: vec![(Bytes::from(vec![0u8; frame_len]), 1)],
            targets: vec![(0, 1, 1)],
            received: None,
        }
    }

    #[test]
    fn pushes_over_the_budget_are_dropped_until_the_loop_drains() -> std::io::Result<()> {
        let poll = mio::Poll::new()?;
        let waker = Waker::new(poll.registry(), mio::Token(0))?;
        let (handle, mailbox) = mailbox(waker, 200);
        assert!(handle.push(batch(84)), "100 of 200 bytes");
        assert!(handle.push(batch(84)), "200 of 200 bytes");
        assert!(!handle.push(batch(84)), "over the budget: dropped");
        let kick = ToLoop::Kick {
            slot: 0,
            conn_id: 1,
            reason: KickReason::Unspecified,
        };
        assert!(handle.send(kick), "other messages are never refused");
        assert_eq!(mailbox.drain().count(), 3);
        assert!(handle.push(batch(84)), "drained: room again");
        Ok(())
    }
}
