//! When to pause after a Kafka consumer error.
//!
//! librdkafka queues an error event for each failed connection attempt (and
//! an "all brokers down" besides), a few a second per broker while the broker
//! is away, and the consumer hands them over in order before the next
//! message. The pipeline used to pause 200 ms after each one: a broker
//! restart of ~3.5 s queued more errors than the pipeline drained at five a
//! second, so it went on reading stale errors for ~2 s after the broker was
//! back while messages waited behind them (chaos campaign, bench/README).
//! Now a burst of errors is read at once and only an endless stream of them,
//! more than [`BURST`] in a second, is slowed down, so a consumer that fails
//! at every poll is still not polled in a tight loop.

use std::time::{Duration, Instant};

/// Errors read without pausing within one second.
pub(crate) const BURST: u32 = 50;
/// The pause once a second holds more than [`BURST`] errors.
pub(crate) const PAUSE: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(1);

/// Counts consumer errors in one-second windows.
#[derive(Debug, Default)]
pub(crate) struct ErrorPace {
    window: Option<(Instant, u32)>,
}

impl ErrorPace {
    /// Notes an error read at `now`; returns how long to pause before polling again.
    pub(crate) fn after_error(&mut self, now: Instant) -> Option<Duration> {
        let (started, count) = match self.window {
            Some((started, count)) if now.duration_since(started) < WINDOW => (started, count + 1),
            _ => (now, 1),
        };
        self.window = Some((started, count));
        (count > BURST).then_some(PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_read_without_pausing() {
        let mut pace = ErrorPace::default();
        let start = Instant::now();
        for i in 0..BURST {
            let now = start + Duration::from_millis(u64::from(i));
            assert_eq!(pace.after_error(now), None, "error {i}");
        }
    }

    #[test]
    fn errors_beyond_the_burst_in_one_second_pause() {
        let mut pace = ErrorPace::default();
        let start = Instant::now();
        for _ in 0..BURST {
            pace.after_error(start);
        }
        assert_eq!(
            pace.after_error(start + Duration::from_millis(900)),
            Some(PAUSE)
        );
        assert_eq!(
            pace.after_error(start + Duration::from_millis(950)),
            Some(PAUSE)
        );
    }

    #[test]
    fn a_new_second_starts_a_new_burst() {
        let mut pace = ErrorPace::default();
        let start = Instant::now();
        for _ in 0..=BURST {
            pace.after_error(start);
        }
        assert_eq!(pace.after_error(start + WINDOW), None);
    }

    #[test]
    fn a_few_errors_a_second_never_pause() {
        let mut pace = ErrorPace::default();
        let start = Instant::now();
        for i in 0..600 {
            // Eight a second, for 75 seconds: a broker away that long.
            let now = start + Duration::from_millis(125 * i);
            assert_eq!(pace.after_error(now), None, "error {i}");
        }
    }
}
