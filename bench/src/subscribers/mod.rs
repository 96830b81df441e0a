//! N subscribers of a pub/sub server (Mosquitto, Centrifugo), one tokio task
//! each: connect at a steady rate, log in and subscribe to the client's own
//! channel, then hold, keeping the connection alive and timing every stamped
//! message that arrives, until told to stop. What differs between servers is
//! a [`Protocol`]; the pacing, the counting and the closing are here once.

pub mod fanout;
pub mod idle;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::idle::track::Track;
pub use crate::idle::wire::Failure;
use crate::progress::Progress;
use crate::push::clock;
use crate::report::Report;

/// The largest latency recorded, in microseconds (10 minutes).
const MAX_LATENCY_US: u64 = 600_000_000;
/// How often the progress bar is updated while connecting.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Time the subscribers get to send DISCONNECT and finish once told to stop.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// What a server says to a holding subscriber.
#[derive(Debug)]
pub enum Event {
    /// The answer to a keepalive.
    Pong,
    /// A message, with the send time stamped in it when it had one.
    Delivery {
        /// When it was sent, µs since the epoch.
        sent_us: Option<u64>,
    },
    /// Something the subscriber answered or ignored (a server's ping).
    Other,
}

/// One server's subscriber protocol.
pub trait Protocol: Send + Sync + 'static {
    /// An open, subscribed connection.
    type Conn: Send + 'static;

    /// Connects from `source` (when given), logs in and subscribes
    /// subscriber `index` to its own channel.
    fn setup(
        &self,
        index: usize,
        source: Option<IpAddr>,
    ) -> impl Future<Output = Result<Self::Conn, Failure>> + Send;

    /// How often the client sends a keepalive; `None` when the server pings
    /// and [`Protocol::next`] answers.
    fn ping_every(&self) -> Option<Duration>;

    /// Sends one keepalive.
    fn ping(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The next thing the server says; cancel-safe.
    fn next(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<Event, Failure>> + Send;

    /// Says goodbye.
    fn close(&self, conn: &mut Self::Conn) -> impl Future<Output = ()> + Send;
}

/// What every subscriber shares.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Source addresses; subscriber `i` binds number `i mod count`.
    pub source_ips: Vec<IpAddr>,
    /// Time one subscriber may take to connect, log in and subscribe.
    pub setup_timeout: Duration,
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
    /// Messages received over all subscribers.
    pub delivered: AtomicU64,
}

/// The subscribers, once every one has answered or timed out.
#[derive(Debug)]
pub struct Fleet {
    handles: Vec<JoinHandle<Outcome>>,
    stop: watch::Sender<bool>,
    /// Shared live counters.
    pub counters: Arc<Counters>,
    /// Indices of the subscribers that subscribed.
    pub subscribed: Vec<usize>,
    /// Connect → subscribed latency, µs.
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
    /// Keepalives sent.
    pub pings: u64,
    /// Keepalives answered.
    pub pongs: u64,
    /// Publish → delivery latency, µs.
    pub latency: Histogram<u64>,
    /// When the last message arrived, µs since the epoch (0 for none).
    pub last_delivery_us: u64,
    /// Failures while holding, by kind.
    pub failures: BTreeMap<String, u64>,
}

/// Starts `count` subscribers at `rate` per second and waits until each has
/// subscribed or has failed (bounded by count / rate + setup timeout + 30 s),
/// sampling the subscribers set up on `track` meanwhile.
pub async fn open<P: Protocol>(
    protocol: P,
    plan: Plan,
    count: usize,
    rate: f64,
    mut track: Option<&mut Track>,
) -> Fleet {
    let plan = Arc::new(plan);
    let protocol = Arc::new(protocol);
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
                    protocol.clone(),
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
    /// Tells every subscriber to say goodbye and sums what they did.
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
async fn subscriber<P: Protocol>(
    protocol: Arc<P>,
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
    let setup = timeout(plan.setup_timeout, protocol.setup(index, source))
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
    let interval = protocol.ping_every();
    let mut next_ping = interval.map(|every| Instant::now() + every);
    let failure = loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                outcome.held = true;
                protocol.close(&mut conn).await;
                break None;
            }
            () = sleep_until(next_ping.unwrap_or_else(Instant::now)), if next_ping.is_some() => {
                if let Err(Failure(kind)) = protocol.ping(&mut conn).await {
                    break Some(kind);
                }
                outcome.pings += 1;
                next_ping = next_ping.zip(interval).map(|(at, every)| at + every);
            }
            event = protocol.next(&mut conn) => match event {
                Ok(Event::Pong) => outcome.pongs += 1,
                Ok(Event::Delivery { sent_us }) => {
                    let now = clock::now_us();
                    if let Some(sent) = sent_us {
                        let _ = outcome.latency.get_or_insert_with(latency_histogram).record(now.saturating_sub(sent).clamp(1, MAX_LATENCY_US));
                    }
                    outcome.last_delivery_us = now;
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Other) => {}
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

/// How the subscribers connect, whatever the server.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ConnectArgs {
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Subscribers started per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Use source addresses 127.0.0.2 .. 127.0.0.<K+1>, round-robin (each
    /// gives ~28k ephemeral ports).
    #[arg(long)]
    pub source_ip_count: Option<u8>,
    /// Seconds one subscriber may take to connect, log in and subscribe.
    #[arg(long, default_value_t = 30.0)]
    pub setup_timeout: f64,
    /// Client ids are `<prefix>-<i>`.
    #[arg(long, default_value = "bench")]
    pub client_prefix: String,
}

impl ConnectArgs {
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        ensure!(self.connections > 0, "--connections must be positive");
        ensure!(self.rate > 0.0, "--rate must be positive");
        ensure!(self.setup_timeout > 0.0, "--setup-timeout must be positive");
        ensure!(
            self.source_ip_count.is_none_or(|k| (1..=253).contains(&k)),
            "--source-ip-count must be 1..=253"
        );
        if let Some(limit) = crate::idle::probe::open_files_limit()
            && limit < self.connections as u64 + 64
        {
            eprintln!(
                "warning: the open-files limit is {limit}, below {} sockets: run `ulimit -n 20000` first",
                self.connections
            );
        }
        Ok(())
    }

    pub(crate) fn plan(&self) -> Plan {
        Plan {
            source_ips: (0..self.source_ip_count.unwrap_or(0))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
                .collect(),
            setup_timeout: Duration::from_secs_f64(self.setup_timeout),
        }
    }
}

/// Adds the setup figures every subscriber scenario reports.
pub(crate) fn add_setup(report: &mut Report, fleet: &Fleet) {
    let subscribed = fleet.subscribed.len() as f64;
    report.add("subscribers connected+subscribed", subscribed, "");
    report.add(
        "subscribers failed",
        fleet.failures.values().sum::<u64>() as f64,
        "",
    );
    report.add("connect+subscribe time", fleet.ramp_secs, "s");
    report.add(
        "connect+subscribe rate",
        subscribed / fleet.ramp_secs.max(f64::EPSILON),
        "clients/s",
    );
    add_percentiles(report, "connect+subscribe latency", &fleet.setup);
}

/// Adds p50 .. p999 and max of a µs histogram, in ms.
pub(crate) fn add_percentiles(report: &mut Report, what: &str, histogram: &Histogram<u64>) {
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("{what} {label}"),
            ms(histogram.value_at_quantile(q)),
            "ms",
        );
    }
    report.add(&format!("{what} max"), ms(histogram.max()), "ms");
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// What the live tests of every subscriber scenario share.
#[cfg(all(test, any(feature = "mosquitto", feature = "centrifugo")))]
pub mod testing {
    use super::ConnectArgs;
    use crate::report::Report;

    /// `connections` subscribers, quickly, from two source addresses.
    pub fn connect(connections: usize, prefix: &str) -> ConnectArgs {
        ConnectArgs {
            connections,
            rate: 2000.0,
            source_ip_count: Some(2),
            setup_timeout: 10.0,
            client_prefix: prefix.into(),
        }
    }

    /// The figure called `name`.
    pub fn figure(report: &Report, name: &str) -> f64 {
        report
            .figures
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {report:?}"))
            .value
    }

    /// An idle report whose `subscribers` all subscribed and held, with the
    /// server's memory read.
    pub fn assert_all_held(idle: &Report, subscribers: f64) {
        assert_eq!(
            figure(idle, "subscribers connected+subscribed"),
            subscribers
        );
        assert_eq!(figure(idle, "connections held at measurement"), subscribers);
        assert_eq!(figure(idle, "held until close"), subscribers);
        assert!(figure(idle, "broker VmRSS idle (median)") > 0.0);
    }
}
