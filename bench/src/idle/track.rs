//! The over-time side of a run: a once-a-second clock, a counter read on it
//! (for rate charts such as `throughput`), and what the idle scenarios sample
//! on it (connections set up, and the server's memory) for the `ramp` and
//! `memory` charts.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::probe;
use crate::report::{Chart, Series};

/// Time between two samples of an over-time chart.
pub const EVERY: Duration = Duration::from_secs(1);

/// A clock that is due every [`EVERY`] from its start, the first time at once.
#[derive(Debug)]
pub struct Ticker {
    started: Instant,
    next: Instant,
}

impl Ticker {
    /// Starts the clock now.
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            next: now,
        }
    }

    /// When the next tick is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Seconds from the start to `now`.
    pub fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.started).as_secs_f64()
    }

    /// The seconds from the start to `now` if a tick is due, moving on to the
    /// next one (a late tick is not made up for); None otherwise.
    pub fn tick(&mut self, now: Instant) -> Option<f64> {
        if now < self.next {
            return None;
        }
        self.next += EVERY;
        if self.next <= now {
            self.next = now + EVERY;
        }
        Some(self.secs(now))
    }
}

/// A cumulative counter read on a [`Ticker`]: `(seconds, count)` pairs for
/// [`Series::rates`].
#[derive(Debug)]
pub struct Readings {
    ticker: Ticker,
    points: Vec<(f64, u64)>,
}

impl Readings {
    /// Starts the clock now; the first reading is due at once.
    pub fn start() -> Self {
        Self {
            ticker: Ticker::start(),
            points: Vec::new(),
        }
    }

    /// When the next reading is due.
    pub fn due(&self) -> Instant {
        self.ticker.due()
    }

    /// Keeps `count`, read at `now`, if a reading is due.
    pub fn poll(&mut self, now: Instant, count: u64) {
        if let Some(secs) = self.ticker.tick(now) {
            self.points.push((secs, count));
        }
    }

    /// The readings with a last one, `count` at `now`, the end of the
    /// window, unless the one before is less than a quarter tick older (too
    /// short an interval for a steady rate).
    pub fn finish(mut self, now: Instant, count: u64) -> Vec<(f64, u64)> {
        let secs = self.ticker.secs(now);
        if self
            .points
            .last()
            .is_none_or(|&(last, _)| secs - last >= EVERY.as_secs_f64() / 4.0)
        {
            self.points.push((secs, count));
        }
        self.points
    }
}

/// Connections set up over time, and the server's resident memory
/// against them when its pids are known.
#[derive(Debug)]
pub struct Track {
    ticker: Ticker,
    pids: Vec<u32>,
    running: bool,
    ramp: Vec<(f64, f64)>,
    memory: Vec<(f64, f64)>,
}

impl Track {
    /// Starts sampling now (the start of the flood); memory of `pids`, if any.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            ticker: Ticker::start(),
            pids: pids.to_vec(),
            running: true,
            ramp: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// When the next sample is due; None once stopped.
    pub fn due(&self) -> Option<Instant> {
        self.running.then(|| self.ticker.due())
    }

    /// Takes a sample, `logged_in` at `now`, if one is due and sampling has
    /// not stopped.
    pub fn sample(&mut self, now: Instant, logged_in: u64) {
        if !self.running {
            return;
        }
        let Some(secs) = self.ticker.tick(now) else {
            return;
        };
        self.ramp.push((secs, logged_in as f64));
        // A process that cannot be read now is left out of the chart; the
        // scenario's own readings report it.
        if !self.pids.is_empty()
            && let Ok(bytes) = probe::rss_sum(&self.pids)
        {
            self.memory.push((logged_in as f64, bytes as f64 / 1e6));
        }
    }

    /// Waits until `until`, sampling `logged_in()` whenever due.
    pub async fn wait_until(&mut self, until: Instant, logged_in: impl Fn() -> u64) {
        while let Some(due) = self.due().filter(|due| *due < until) {
            sleep_until(due).await;
            self.sample(Instant::now(), logged_in());
        }
        sleep_until(until).await;
    }

    /// No more samples (the connections are closing).
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// The `ramp` chart, and the `memory` chart when memory was sampled;
    /// `label` names the server, `what` the connections.
    pub fn charts(&self, scenario: &str, label: &str, what: &str) -> Vec<Chart> {
        let mut charts = vec![Chart::ramp(
            &format!("{scenario}: {what} over time"),
            vec![Series {
                label: label.into(),
                points: self.ramp.clone(),
            }],
        )];
        if !self.pids.is_empty() {
            charts.push(Chart::memory(
                &format!("{scenario}: server memory against {what}"),
                vec![Series {
                    label: label.into(),
                    points: self.memory.clone(),
                }],
            ));
        }
        charts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ticker: &Ticker, ms: u64) -> Instant {
        ticker.started + Duration::from_millis(ms)
    }

    #[test]
    fn the_ticker_is_due_at_once_then_every_second_without_making_up() {
        let mut ticker = Ticker::start();
        assert_eq!(ticker.tick(at(&ticker, 0)), Some(0.0));
        assert_eq!(ticker.tick(at(&ticker, 10)), None);
        assert_eq!(ticker.tick(at(&ticker, 1500)), Some(1.5));
        assert_eq!(ticker.due(), at(&ticker, 2000));
        assert_eq!(ticker.tick(at(&ticker, 6500)), Some(6.5));
        assert_eq!(ticker.tick(at(&ticker, 6600)), None);
        assert_eq!(ticker.due(), at(&ticker, 7500));
    }

    #[test]
    fn readings_end_with_the_window_unless_a_tick_just_read() {
        let mut readings = Readings::start();
        let t = |ms| at(&readings.ticker, ms);
        let (t0, t1, t2) = (t(0), t(1000), t(1500));
        readings.poll(t0, 0);
        readings.poll(t1, 100);
        assert_eq!(readings.finish(t2, 150), [(0.0, 0), (1.0, 100), (1.5, 150)]);
        let mut readings = Readings::start();
        let (t0, t1) = (at(&readings.ticker, 0), at(&readings.ticker, 100));
        readings.poll(t0, 0);
        assert_eq!(readings.finish(t1, 7), [(0.0, 0)]);
    }

    #[test]
    fn a_track_samples_when_due_until_stopped() {
        let mut track = Track::start(&[std::process::id()]);
        for (ms, count) in [(0, 10), (400, 15), (1000, 20), (2100, 30)] {
            track.sample(at(&track.ticker, ms), count);
        }
        assert_eq!(track.ramp, [(0.0, 10.0), (1.0, 20.0), (2.1, 30.0)]);
        assert_eq!(track.memory.len(), 3);
        assert!(track.memory.iter().all(|&(_, mb)| mb > 0.0));
        track.stop();
        assert_eq!(track.due(), None);
        track.sample(at(&track.ticker, 5000), 99);
        assert_eq!(track.ramp.len(), 3);
        let names: Vec<_> = track
            .charts("idle", "access", "connections")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["ramp", "memory"]);
        let without_pids = Track::start(&[]).charts("idle", "access", "connections");
        assert_eq!(without_pids.len(), 1);
    }

    #[tokio::test]
    async fn waiting_samples_on_every_tick_before_the_deadline() {
        let mut track = Track::start(&[]);
        let until = track.ticker.started + Duration::from_millis(1200);
        track.wait_until(until, || 7).await;
        assert!(Instant::now() >= until);
        // Due at 0 and 1 s; the next, at 2 s, is past the deadline.
        assert_eq!(track.ramp.len(), 2);
        assert!(track.ramp.iter().all(|&(_, n)| n == 7.0));
    }
}
