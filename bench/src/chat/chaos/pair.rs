//! One pair of the campaign: a sender at a fixed rate that resends each
//! message with its client_msg_id until it is acked, a receiver whose
//! application takes what its client hands over, both through
//! `fishchat_client::Client` (which logs in again after every loss, resends
//! unanswered sends and syncs gaps), and the final audit: the conversation
//! read whole.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use fishchat_client::{Client, Conversation, Event, Events};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};

use super::tally::{Activity, PairLog, Sent};

/// Sends of one sender waiting for their ack at once; past it the sender
/// waits for one (a stalled system then slows the sending down rather than
/// piling up tasks).
const MAX_IN_FLIGHT: usize = 2_000;
/// Pause before a send is tried again after an error other than a timeout.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Messages per page of the final audit.
pub const AUDIT_PAGE: u32 = 100;
/// Tries of each page of the final audit (the system is whole again by
/// then; this only rides out a reconnect).
const AUDIT_TRIES: usize = 5;

/// Milliseconds since the sending started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    /// Milliseconds since the clock's start (0 before it).
    pub fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// What a pair's tasks record as it happens.
pub type Shared = Arc<Mutex<PairLog>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, PairLog> {
    // A panicked task left plain data behind: still worth counting.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sender's schedule.
pub struct Schedule {
    pub clock: Clock,
    pub start: Instant,
    pub end: Instant,
    /// No send is tried, nor retried, after this.
    pub give_up: Instant,
    pub rate: f64,
}

/// Sends `0, 1, 2, ...` to `to` at the rate until the end; each message
/// (client_msg_id `<nonce>-<pair>-<n>`) is tried again with the same id
/// until acked or `give_up`. Returns when every send has finished.
pub async fn send(client: Client, to: u64, id_prefix: String, plan: Arc<Schedule>, shared: Shared) {
    let mut ticker = interval_at(plan.start, Duration::from_secs_f64(1.0 / plan.rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    for n in 0u64.. {
        let at = ticker.tick().await;
        if at >= plan.end {
            break;
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.join_next().await;
        }
        let index = {
            let mut log = lock(&shared);
            log.sent.push(Sent {
                n,
                sent_ms: plan.clock.ms(),
                acked_ms: None,
            });
            log.sent.len() - 1
        };
        let (client, shared, plan) = (client.clone(), shared.clone(), plan.clone());
        let client_msg_id = format!("{id_prefix}-{n}");
        in_flight.spawn(async move {
            while Instant::now() < plan.give_up {
                match client
                    .send_to_user_with_id(client_msg_id.clone(), to, n.to_string())
                    .await
                {
                    Ok(_) => {
                        let mut log = lock(&shared);
                        let ms = plan.clock.ms();
                        log.sent[index].acked_ms = Some(ms);
                        log.sender.progress.push(ms);
                        return;
                    }
                    // The client already waited out its request timeout.
                    Err(fishchat_client::ClientError::Timeout(_)) => {}
                    Err(_) => sleep(RETRY_PAUSE).await,
                }
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
}

/// Which side of the pair a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sender,
    /// The receiver, taking messages from this user.
    Receiver {
        from: u64,
    },
}

/// Takes the client's events until `stop`: losses of the connection and,
/// on the receiver, every message handed over (its number from the body).
pub async fn watch_events(
    mut events: Events,
    side: Side,
    clock: Clock,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(event) = event else { return };
        let ms = clock.ms();
        let mut log = lock(&shared);
        let activity: &mut Activity = match side {
            Side::Sender => &mut log.sender,
            Side::Receiver { .. } => &mut log.receiver,
        };
        match (event, side) {
            (Event::Disconnected { .. } | Event::Kicked { .. }, _) => activity.downs.push(ms),
            (Event::Message { message, .. }, Side::Receiver { from })
                if message.from_user_id == from =>
            {
                activity.progress.push(ms);
                // A body that is not a number is no message of this run.
                if let Ok(n) = std::str::from_utf8(&message.body).unwrap_or("").parse() {
                    log.delivered.push(n);
                }
            }
            _ => {}
        }
    }
}

/// Reads the receiver's conversation with `from` whole, newest first, and
/// returns the number of every message of `from` in it (with repeats).
pub async fn audit(client: &Client, from: u64, most_pages: usize) -> anyhow::Result<Vec<u64>> {
    let mut found = Vec::new();
    let mut before = 0;
    for _ in 0..most_pages {
        let mut page = None;
        let mut last_error = None;
        for _ in 0..AUDIT_TRIES {
            match client
                .history(Conversation::User(from), before, AUDIT_PAGE)
                .await
            {
                Ok(reply) => {
                    page = Some(reply);
                    break;
                }
                Err(err) => {
                    last_error = Some(err);
                    sleep(RETRY_PAUSE).await;
                }
            }
        }
        let page = match (page, last_error) {
            (Some(page), _) => page,
            (None, err) => {
                return Err(anyhow::anyhow!("{err:?}")).context("HISTORY of the final audit");
            }
        };
        for message in &page.messages {
            if message.from_user_id == from
                && let Ok(n) = std::str::from_utf8(&message.body).unwrap_or("").parse()
            {
                found.push(n);
            }
        }
        match page.messages.last() {
            Some(oldest) if page.has_more => before = oldest.seq,
            _ => return Ok(found),
        }
    }
    bail!("the conversation with {from} has more than {most_pages} pages")
}
