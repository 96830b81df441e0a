//! N subscribers, one tokio task each: connect at a steady rate, CONNECT,
//! SUBSCRIBE to the client's own topic `u/<i>`, then hold, sending PINGREQ
//! every keepalive and timing every PUBLISH that arrives, until told to stop.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use super::client::{Conn, Failure, unexpected};
use super::codec::{self, Packet};
use crate::idle::track::Track;
use crate::progress::Progress;
use crate::push::clock;

/// The largest latency recorded, in microseconds (10 minutes).
const MAX_LATENCY_US: u64 = 600_000_000;
/// How often the progress bar is updated while connecting.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Time the subscribers get to send DISCONNECT and finish once told to stop.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// What every subscriber shares.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The broker's address.
    pub broker: SocketAddr,
    /// Source addresses; subscriber `i` binds number `i mod count`.
    pub source_ips: Vec<IpAddr>,
    /// The CONNECT keepalive, and the PINGREQ interval.
    pub keepalive_secs: u16,
    /// Time one subscriber may take to connect, CONNECT and SUBSCRIBE.
    pub setup_timeout: Duration,
    /// Client ids are `<prefix>-<i>`.
    pub client_prefix: String,
}

/// A latency histogram, 1 µs to 10 minutes at three significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("1 µs .. 10 min at three figures are valid constant bounds")
}

/// What one subscriber did after its setup.
#[derive(Debug)]
struct Outcome {
    held: bool,
    pings: u64,
    pongs: u64,
    /// Made at the first delivery: a histogram is ~160 KB, too much for an idle connection.
    latency: Option<Histogram<u64>>,
    last_delivery_us: u64,
    failure: Option<String>,
}

/// Live counters the scenarios read while the subscribers hold.
#[derive(Debug, Default)]
pub struct Counters {
    /// Subscribers set up and not failed since.
    pub live: AtomicU64,
    /// PUBLISH packets received over all subscribers.
    pub delivered: AtomicU64,
}

/// The subscribers, once every one has answered or timed out.
#[derive(Debug)]
pub struct Fleet {
    handles: Vec<JoinHandle<Outcome>>,
    stop: watch::Sender<bool>,
    /// Shared live counters.
    pub counters: Arc<Counters>,
    /// Indices of the subscribers whose SUBACK came.
    pub subscribed: Vec<usize>,
    /// Connect → SUBACK latency, µs.
    pub setup: Histogram<u64>,
    /// Seconds from the first connect to the last setup answer.
    pub ramp_secs: f64,
    /// Setup failures by kind.
    pub failures: BTreeMap<String, u64>,
}

/// What the subscribers did, summed, after they were stopped.
#[derive(Debug)]
pub struct Closed {
    /// Subscribers still holding when told to stop.
    pub held: u64,
    /// PINGREQs sent.
    pub pings: u64,
    /// PINGRESPs received.
    pub pongs: u64,
    /// Publish → delivery latency, µs.
    pub latency: Histogram<u64>,
    /// When the last PUBLISH arrived, µs since the epoch (0 for none).
    pub last_delivery_us: u64,
    /// Failures while holding, by kind.
    pub failures: BTreeMap<String, u64>,
}

/// Starts `count` subscribers at `rate` per second and waits until each has
/// its SUBACK or has failed (bounded by count / rate + setup timeout + 30 s),
/// sampling the subscribers set up on `track` meanwhile.
pub async fn open(plan: Plan, count: usize, rate: f64, mut track: Option<&mut Track>) -> Fleet {
    let plan = Arc::new(plan);
    let counters = Arc::new(Counters::default());
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let started = Instant::now();
    let bound = started
        + Duration::from_secs_f64(count as f64 / rate)
        + plan.setup_timeout
        + Duration::from_secs(30);
    let spawner = {
        let (plan, counters) = (plan.clone(), counters.clone());
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(count);
            for index in 0..count {
                sleep_until(started + Duration::from_secs_f64(index as f64 / rate)).await;
                handles.push(tokio::spawn(subscriber(
                    plan.clone(),
                    index,
                    ready_tx.clone(),
                    stop_rx.clone(),
                    counters.clone(),
                )));
            }
            handles
        })
    };
    let mut setup = latency_histogram();
    let mut subscribed = Vec::with_capacity(count);
    let mut failures = BTreeMap::new();
    let mut answered = 0;
    let progress = Progress::new();
    progress.phase("subscribing", count as u64);
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    while answered < count {
        let due = track.as_ref().and_then(|t| t.due());
        tokio::select! {
            heard = ready.recv() => match heard {
                Some((index, Ok(us))) => {
                    let _ = setup.record(u64::max(us, 1).min(MAX_LATENCY_US));
                    subscribed.push(index);
                    answered += 1;
                }
                Some((_, Err(Failure(kind)))) => {
                    *failures.entry(kind).or_insert(0) += 1;
                    answered += 1;
                }
                None => break,
            },
            () = sleep_until(next_progress) => {
                let failed = answered - subscribed.len();
                progress.show(answered as u64, count as u64, format!("failed {failed}"));
                next_progress += PROGRESS_EVERY;
            }
            () = sleep_until(due.unwrap_or(bound)), if due.is_some() => {
                if let Some(track) = track.as_deref_mut() {
                    track.sample(Instant::now(), counters.live.load(Ordering::Relaxed));
                }
            }
            () = sleep_until(bound) => {
                eprintln!("warning: {} subscribers gave no answer in time", count - answered);
                break;
            }
        }
    }
    progress.finish();
    let ramp_secs = started.elapsed().as_secs_f64();
    let handles = spawner.await.unwrap_or_default();
    subscribed.sort_unstable();
    Fleet {
        handles,
        stop,
        counters,
        subscribed,
        setup,
        ramp_secs,
        failures,
    }
}

impl Fleet {
    /// Tells every subscriber to DISCONNECT and sums what they did.
    pub async fn close(self) -> Closed {
        let _ = self.stop.send(true);
        let mut closed = Closed {
            held: 0,
            pings: 0,
            pongs: 0,
            latency: latency_histogram(),
            last_delivery_us: 0,
            failures: BTreeMap::new(),
        };
        let bound = Instant::now() + CLOSE_GRACE;
        for handle in self.handles {
            let abort = handle.abort_handle();
            match tokio::time::timeout_at(bound, handle).await {
                Ok(Ok(outcome)) => {
                    closed.held += u64::from(outcome.held);
                    closed.pings += outcome.pings;
                    closed.pongs += outcome.pongs;
                    if let Some(latency) = &outcome.latency {
                        let _ = closed.latency.add(latency);
                    }
                    closed.last_delivery_us = closed.last_delivery_us.max(outcome.last_delivery_us);
                    if let Some(kind) = outcome.failure {
                        *closed.failures.entry(kind).or_insert(0) += 1;
                    }
                }
                Ok(Err(_)) => *closed.failures.entry("task panicked".into()).or_insert(0) += 1,
                Err(_) => {
                    abort.abort();
                    *closed.failures.entry("close timeout".into()).or_insert(0) += 1;
                }
            }
        }
        closed
    }
}

/// Subscriber `index`: set up, report, hold until `stop`.
async fn subscriber(
    plan: Arc<Plan>,
    index: usize,
    ready: mpsc::UnboundedSender<(usize, Result<u64, Failure>)>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Outcome {
    let mut outcome = Outcome {
        held: false,
        pings: 0,
        pongs: 0,
        latency: None,
        last_delivery_us: 0,
        failure: None,
    };
    let source = match plan.source_ips.len() {
        0 => None,
        n => plan.source_ips.get(index % n).copied(),
    };
    let started = Instant::now();
    let setup = timeout(plan.setup_timeout, async {
        let mut conn = Conn::connect(plan.broker, source).await?;
        conn.handshake(
            &format!("{}-{index}", plan.client_prefix),
            plan.keepalive_secs,
        )
        .await?;
        conn.subscribe(&format!("u/{index}")).await?;
        Ok::<_, Failure>(conn)
    })
    .await
    .unwrap_or_else(|_| Err(Failure("setup timeout".into())));
    let mut conn = match setup {
        Ok(conn) => {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            counters.live.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send((index, Ok(us)));
            conn
        }
        Err(failure) => {
            let _ = ready.send((index, Err(failure)));
            return outcome;
        }
    };
    drop(ready);
    let interval = Duration::from_secs(u64::from(plan.keepalive_secs.max(1)));
    let mut next_ping = Instant::now() + interval;
    let failure = loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                outcome.held = true;
                let _ = conn.send(codec::disconnect).await;
                break None;
            }
            () = sleep_until(next_ping) => {
                if let Err(Failure(kind)) = conn.send(codec::pingreq).await {
                    break Some(kind);
                }
                outcome.pings += 1;
                next_ping += interval;
            }
            packet = conn.recv() => match packet {
                Ok(Packet::PingResp) => outcome.pongs += 1,
                Ok(Packet::Publish { payload, .. }) => {
                    let now = clock::now_us();
                    if let Some(sent) = clock::sent_us(&payload) {
                        let _ = outcome.latency.get_or_insert_with(latency_histogram).record(now.saturating_sub(sent).clamp(1, MAX_LATENCY_US));
                    }
                    outcome.last_delivery_us = now;
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => break Some(unexpected("PUBLISH or PINGRESP", &other).0),
                Err(Failure(kind)) => break Some(kind),
            },
        }
    };
    if let Some(kind) = failure {
        counters.live.fetch_sub(1, Ordering::Relaxed);
        outcome.failure = Some(format!("while holding: {kind}"));
    }
    outcome
}

/// Encodes a QoS 0 PUBLISH of a stamped payload to subscriber `index`'s topic.
pub fn stamped_publish(index: usize, payload_bytes: usize, out: &mut BytesMut) {
    let payload = clock::stamped(clock::now_us(), payload_bytes);
    codec::publish(&format!("u/{index}"), &payload, out);
}
