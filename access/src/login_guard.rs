//! Failed LOGINs per client address. A LOGIN carries a 256-bit token, so
//! guessing one is hopeless; what a flood of bad tokens does is cost a call
//! to logic and register each. Past `limit` bad tokens from one address (an
//! IPv6 client by its /64) within a window, further LOGINs from it are
//! refused on the spot, before any call, until the window ends.
//!
//! The counts live in the node (a shared table would cost a round trip per
//! LOGIN), bounded in size: when the table is full of live windows, a new
//! address is not counted. Failing open keeps a spoofed-address flood from
//! growing memory; the per-connection deadlines still bound each socket.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

/// Addresses counted at once, at most (about 2 MiB).
const MAX_ADDRESSES: usize = 65_536;

/// An address as counted: IPv4 (also IPv4-mapped IPv6) whole, IPv6 by /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    failures: u32,
    /// Tick of the first failure of this window.
    since: u32,
}

/// Bad-token LOGINs per address, in windows of ticks.
#[derive(Debug)]
pub(crate) struct LoginGuard {
    /// Failures allowed per window; 0: no limit.
    limit: u32,
    window: u32,
    counts: Mutex<HashMap<Source, Window>>,
}

impl LoginGuard {
    /// `limit` failures per address in `window` ticks (0: no limit).
    pub(crate) fn new(limit: u32, window: u32) -> Self {
        Self {
            limit,
            window: window.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a LOGIN from `addr` may go upstream at tick `now`.
    pub(crate) fn allows(&self, addr: IpAddr, now: u32) -> bool {
        if self.limit == 0 {
            return true;
        }
        let counts = self.counts.lock();
        counts
            .get(&Source::from(addr))
            .is_none_or(|w| now.saturating_sub(w.since) >= self.window || w.failures < self.limit)
    }

    /// Counts a LOGIN from `addr` refused for its token, at tick `now`.
    pub(crate) fn failed(&self, addr: IpAddr, now: u32) {
        if self.limit == 0 {
            return;
        }
        let mut counts = self.counts.lock();
        let source = Source::from(addr);
        if counts.len() >= MAX_ADDRESSES && !counts.contains_key(&source) {
            let window = self.window;
            counts.retain(|_, w| now.saturating_sub(w.since) < window);
            if counts.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let entry = counts.entry(source).or_insert(Window {
            failures: 0,
            since: now,
        });
        if now.saturating_sub(entry.since) >= self.window {
            *entry = Window {
                failures: 0,
                since: now,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0; 4]))
    }

    #[test]
    fn an_address_is_refused_after_its_limit_until_the_window_ends() {
        let guard = LoginGuard::new(3, 100);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for t in 0..3 {
            assert!(guard.allows(a, t));
            guard.failed(a, t);
        }
        assert!(!guard.allows(a, 50), "three failures: refused");
        assert!(guard.allows(b, 50), "another address is not");
        assert!(guard.allows(a, 100), "the window ended");
        guard.failed(a, 100);
        assert!(guard.allows(a, 101), "a new window counts from one");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let guard = LoginGuard::new(2, 100);
        guard.failed(ip("2001:db8:0:1::1"), 0);
        guard.failed(ip("2001:db8:0:1:ffff::2"), 0);
        assert!(!guard.allows(ip("2001:db8:0:1::3"), 0));
        assert!(guard.allows(ip("2001:db8:0:2::1"), 0));
        guard.failed(ip("::ffff:10.0.0.9"), 0);
        guard.failed(ip("10.0.0.9"), 0);
        assert!(!guard.allows(ip("10.0.0.9"), 0));
    }

    #[test]
    fn a_full_table_drops_ended_windows_then_stops_counting() {
        let guard = LoginGuard::new(1, 10);
        for i in 0..MAX_ADDRESSES as u32 {
            guard.failed(IpAddr::from(i.to_be_bytes()), 0);
        }
        let late = ip("2001:db8::1");
        guard.failed(late, 5);
        assert!(guard.allows(late, 5), "full of live windows: not counted");
        guard.failed(late, 10);
        assert!(!guard.allows(late, 10), "the ended windows made room");
        assert_eq!(guard.counts.lock().len(), 1);
    }
}
