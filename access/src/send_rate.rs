//! How fast one connection may send: a token bucket kept in two small fields
//! of the connection (a few bytes, since idle connections are counted in
//! bytes). A send over the rate is answered with a `TOO_MANY_REQUESTS` ack
//! that the client may retry; the connection stays open.

/// Tokens are tenths of a send, so that a rate below 10 per second still
/// refills something every 100 ms tick.
const TENTHS: u32 = 10;

/// The rate and burst a node allows each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendRate {
    /// Sends per second in the long run; 0: no limit.
    pub per_second: u32,
    /// Sends allowed at once after a quiet spell (at most 6,553).
    pub burst: u32,
}

impl SendRate {
    /// Takes one send from the bucket `tokens` last refilled at tick `last`,
    /// at tick `now` (ticks of 100 ms); false when the bucket is empty.
    /// A fresh connection's bucket is `u16::MAX`: full.
    pub(crate) fn take(&self, tokens: &mut u16, last: &mut u32, now: u32) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let cap = self.cap();
        let refill = now.saturating_sub(*last).saturating_mul(self.per_second);
        let available = u32::from(*tokens).saturating_add(refill).min(cap);
        *last = now;
        let (left, allowed) = match available.checked_sub(TENTHS) {
            Some(left) => (left, true),
            None => (available, false),
        };
        *tokens = u16::try_from(left).unwrap_or(u16::MAX);
        allowed
    }

    /// True when the bucket `tokens` last refilled at tick `last` is full at
    /// tick `now`: it would then allow just what a fresh one would.
    pub(crate) fn is_full(&self, tokens: u16, last: u32, now: u32) -> bool {
        let refill = now.saturating_sub(last).saturating_mul(self.per_second);
        self.per_second == 0 || u32::from(tokens).saturating_add(refill) >= self.cap()
    }

    /// The bucket's size in tenths of a send.
    fn cap(&self) -> u32 {
        self.burst
            .max(1)
            .saturating_mul(TENTHS)
            .min(u32::from(u16::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = SendRate {
            per_second: 10,
            burst: 5,
        };
        let (mut tokens, mut last) = (u16::MAX, 0);
        let allowed = (0..8)
            .filter(|_| rate.take(&mut tokens, &mut last, 0))
            .count();
        assert_eq!(allowed, 5, "the burst, then nothing in the same tick");
        // 10 per second: one send per 100 ms tick.
        assert!(rate.take(&mut tokens, &mut last, 1));
        assert!(!rate.take(&mut tokens, &mut last, 1));
        // A quiet second refills the burst, not more.
        let allowed = (0..8)
            .filter(|_| rate.take(&mut tokens, &mut last, 20))
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn a_slow_rate_refills_over_several_ticks_and_zero_means_no_limit() {
        let rate = SendRate {
            per_second: 2,
            burst: 1,
        };
        let (mut tokens, mut last) = (u16::MAX, 0);
        assert!(rate.take(&mut tokens, &mut last, 0));
        assert!(
            !rate.take(&mut tokens, &mut last, 4),
            "0.8 of a send after 400 ms"
        );
        assert!(
            rate.take(&mut tokens, &mut last, 5),
            "a whole one after 500 ms"
        );
        let free = SendRate {
            per_second: 0,
            burst: 0,
        };
        assert!((0..10_000).all(|_| free.take(&mut tokens, &mut last, 5)));
    }

    #[test]
    fn a_bucket_is_full_once_it_has_refilled_its_burst() {
        let rate = SendRate {
            per_second: 10,
            burst: 3,
        };
        assert!(rate.is_full(u16::MAX, 0, 0), "a fresh bucket");
        let (mut tokens, mut last) = (u16::MAX, 0);
        assert!(rate.take(&mut tokens, &mut last, 7));
        assert!(!rate.is_full(tokens, last, 7));
        assert!(rate.is_full(tokens, last, 8), "one send back after 100 ms");
        assert!(rate.take(&mut tokens, &mut last, 8));
        assert!(rate.take(&mut tokens, &mut last, 8));
        assert!(!rate.is_full(tokens, last, 9));
        assert!(rate.is_full(tokens, last, 10));
    }
}
