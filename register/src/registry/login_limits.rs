//! How many failed logins an account and a source address may have before
//! further logins are refused for a while. Guessing a password needs many
//! failures; a person mistyping needs few. Only failures count: a client
//! that logs in many users from one address (a NAT, a load test) is never
//! held back, and a successful login cost is bounded by the hash cap.
//!
//! Counting per account alone would let anyone lock a victim out from
//! anywhere; per address alone, a botnet guesses one account from many
//! addresses. Both together bound either attack, and an account's count
//! clears when its owner logs in.

use std::net::IpAddr;
use std::time::Duration;

/// Limits on failed logins; a limit of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins one account may have in `account_window`.
    pub failures_per_account: u64,
    /// The window of an account's count, from its first failure.
    pub account_window: Duration,
    /// Failed logins one source address may have in `address_window`.
    pub failures_per_address: u64,
    /// The window of an address's count, from its first failure.
    pub address_window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures_per_account: 10,
            account_window: Duration::from_secs(15 * 60),
            failures_per_address: 100,
            address_window: Duration::from_secs(15 * 60),
        }
    }
}

/// The counter key of an account's failures.
pub(super) fn account_key(name: &str) -> String {
    format!("login-failures:user:{name}")
}

/// The counter key of a source address's failures. An IPv6 client holds a
/// whole /64, so its address is counted by that prefix.
pub(super) fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("login-failures:ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("login-failures:ip:{v4}"),
            None => {
                let s = v6.segments();
                format!(
                    "login-failures:ip:{:x}:{:x}:{:x}:{:x}::/64",
                    s[0], s[1], s[2], s[3]
                )
            }
        },
    }
}

/// How long until a login may be tried again, if a count is at its limit:
/// `counts` pairs each count with its window's time left, `limits` gives
/// the limit of each.
pub(super) fn refusal(counts: &[(u64, Duration)], limits: &[u64]) -> Option<Duration> {
    counts
        .iter()
        .zip(limits)
        .filter(|((count, _), limit)| **limit > 0 && count >= *limit)
        .map(|((_, left), _)| (*left).max(Duration::from_secs(1)))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_at_its_limit_refuses_until_its_window_ends() {
        let left = Duration::from_secs(30);
        assert_eq!(refusal(&[(9, left), (0, Duration::ZERO)], &[10, 100]), None);
        assert_eq!(
            refusal(&[(10, left), (0, Duration::ZERO)], &[10, 100]),
            Some(left)
        );
        assert_eq!(
            refusal(&[(10, left), (100, Duration::from_secs(90))], &[10, 100]),
            Some(Duration::from_secs(90))
        );
        // A limit of 0 is none; a window about to end still says a second.
        assert_eq!(refusal(&[(1_000, left)], &[0]), None);
        assert_eq!(
            refusal(&[(10, Duration::ZERO)], &[10]),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(
            address_key(mapped),
            address_key(IpAddr::from([10, 0, 0, 7]))
        );
    }
}
