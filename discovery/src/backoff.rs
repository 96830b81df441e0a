//! Exponential retry delays, so a lost etcd is retried quickly at first and
//! then without hammering it.

use std::time::Duration;

/// The delay before the first retry.
const FIRST: Duration = Duration::from_millis(100);

/// Doubling delays from [`FIRST`] up to a cap; reset after a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays growing up to `max`.
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: FIRST.min(max),
            max,
        }
    }

    /// Sleeps for the current delay and doubles the next one.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.advance()).await;
    }

    /// The current delay; doubles the next one.
    fn advance(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Starts over from the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(300));
        let delays: Vec<u128> = (0..4).map(|_| backoff.advance().as_millis()).collect();
        assert_eq!(delays, [100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.advance(), Duration::from_millis(100));
    }
}
