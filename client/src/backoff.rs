//! Reconnect delays: exponential growth with full jitter.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads
//! the clients of a dead node across the whole window, so they do not all hit
//! the gateway and the surviving nodes in the same instant.

use std::time::Duration;

use rand::Rng;

/// The delays of one run of failed reconnect attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts a run whose caps go initial, 2×initial, 4×initial ... up to max.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The cap of the next delay (without jitter).
    pub(crate) fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in [0, cap]; the cap doubles for the next call.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Starts over after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_up_to_the_maximum_and_delays_stay_under_them() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut caps = Vec::new();
        for _ in 0..6 {
            let cap = backoff.cap();
            caps.push(cap.as_millis());
            assert!(backoff.next_delay() <= cap);
        }
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.cap(), Duration::from_millis(100));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
