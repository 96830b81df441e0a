//! A fleet: the connections of a run, wherever they are. The run drives
//! every fleet through the same phases ([`super::run`]); a fleet runs its
//! connections in this process ([`super::local::Local`]) or spread over
//! worker processes ([`super::workers::Workers`]), so a run can pass one
//! process's open-files limit without its phase logic written twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::measures::Measures;
use super::member::{Counts, Outcome, Role, Setup, Shared};
use crate::idle::wire::Dial;
use crate::push::clock;

/// Connects + logins in progress at once per fleet (the access node's accept
/// backlog and logic's login path are the limits, not the bench).
pub const LOGIN_CONCURRENCY: usize = 256;

/// Connections driven through a run's phases.
pub trait Fleet {
    /// The fleet's counters summed, as last heard; never waits.
    fn counts(&mut self) -> Counts;
    /// Tells every connection to send in `window`.
    async fn send(&mut self, window: Window);
    /// Tells every connection to stop sending, audit its conversations and log out.
    async fn sync(&mut self);
    /// The outcome of every connection that finished by `until`, and the
    /// fleet's measures; the fleet is gone afterwards.
    async fn collect(self, until: Instant) -> anyhow::Result<Gathered>;
}

/// The sending window, in µs since the epoch (one clock for every process
/// on the machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The first send.
    pub start_us: u64,
    /// No send at or after this.
    pub end_us: u64,
}

impl Window {
    /// A window of `seconds` starting `delay` from now.
    pub fn from_now(delay: Duration, seconds: f64) -> Window {
        let start_us = clock::now_us() + duration_us(delay);
        Window {
            start_us,
            end_us: start_us + duration_us(Duration::from_secs_f64(seconds)),
        }
    }

    /// The window on this process's monotonic clock.
    pub fn instants(&self) -> (Instant, Instant) {
        let (now, now_us) = (Instant::now(), clock::now_us());
        let at = |us: u64| now + Duration::from_micros(us.saturating_sub(now_us));
        (at(self.start_us), at(self.end_us))
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One connection to run: its role and its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Who it is and what it sends.
    pub role: Role,
    /// The token it logs in with.
    pub token: String,
}

/// What every connection of a fleet shares; a worker process gets it as flags.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Config {
    /// Where connection `i` goes and comes from.
    #[command(flatten)]
    pub dial: Dial,
    /// Messages per second per sender.
    #[arg(long)]
    pub rate: f64,
    /// Bytes of each message body.
    #[arg(long)]
    pub body_bytes: usize,
    /// Seconds a connection may take to connect and log in.
    #[arg(long)]
    pub login_timeout: f64,
    /// Makes this run's client_msg_ids unique across runs of the same accounts.
    #[arg(long)]
    pub nonce: u64,
}

impl Config {
    /// The shared state of a fleet's connections.
    pub fn setup(&self) -> Setup {
        Setup {
            dial: self.dial.clone(),
            rate: self.rate,
            body_bytes: self.body_bytes,
            login_timeout: Duration::from_secs_f64(self.login_timeout),
            nonce: self.nonce,
            logins: Semaphore::new(LOGIN_CONCURRENCY),
            shared: Shared::default(),
        }
    }

    /// The flags that give a worker process this configuration.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--rate={}", self.rate),
            format!("--body-bytes={}", self.body_bytes),
            format!("--login-timeout={}", self.login_timeout),
            format!("--nonce={}", self.nonce),
        ];
        args.extend(self.dial.to_args());
        args
    }
}

/// The outcomes of (part of) a run, by seat index, and their measures.
#[derive(Debug, Serialize, Deserialize)]
pub struct Gathered {
    /// (seat index, outcome) of every connection that finished.
    pub outcomes: Vec<(usize, Outcome)>,
    /// Latencies and per-second counts of those connections.
    pub measures: Measures,
}

impl Gathered {
    /// Puts several fleets' parts together.
    pub fn merge(parts: impl IntoIterator<Item = Gathered>) -> anyhow::Result<Gathered> {
        let mut whole = Gathered {
            outcomes: Vec::new(),
            measures: Measures::new()?,
        };
        for part in parts {
            whole.measures.merge(&part.measures)?;
            whole.outcomes.extend(part.outcomes);
        }
        Ok(whole)
    }

    /// The outcomes in seat order (None for a seat that did not finish).
    pub fn place(self, seats: usize) -> (Vec<Option<Outcome>>, Measures) {
        let mut placed: Vec<Option<Outcome>> =
            std::iter::repeat_with(|| None).take(seats).collect();
        for (index, outcome) in self.outcomes {
            match placed.get_mut(index) {
                Some(slot) => *slot = Some(outcome),
                None => eprintln!("warning: an outcome for seat {index} of {seats} was ignored"),
            }
        }
        (placed, self.measures)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn a_config_crosses_to_a_worker_as_flags_unchanged() {
        let config = Config {
            dial: Dial {
                access: vec![
                    "127.0.0.1:7100".parse().unwrap(),
                    "[::1]:7101".parse().unwrap(),
                ],
                gateway: None,
                source_ips: crate::idle::wire::loopback_sources(3),
            },
            rate: 2.5,
            body_bytes: 64,
            login_timeout: 30.0,
            nonce: 42,
        };
        let args = std::iter::once("worker".to_owned()).chain(config.to_args());
        assert_eq!(Flags::try_parse_from(args).unwrap().config, config);
    }

    #[test]
    fn a_window_reads_as_instants_the_same_distance_apart() {
        let window = Window::from_now(Duration::from_millis(300), 2.0);
        let (start, end) = window.instants();
        assert_eq!(end - start, Duration::from_secs(2));
        assert!(start > Instant::now());
    }
}
