//! What register counts for `GET /metrics`: logins by result, the password
//! hashing queue, and sessions recorded, replaced and removed.
//!
//! The families live here with their label values, so the registry and the
//! password hasher only say what happened.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

type Labels = Vec<(&'static str, &'static str)>;

/// Every `result` of a login, shown at zero from the start.
const LOGIN_RESULTS: [&str; 4] = ["ok", "bad_credentials", "too_many_attempts", "error"];
/// Every `change` of a session.
const SESSION_CHANGES: [&str; 4] = ["recorded", "replaced", "removed", "swept"];

/// register's metrics; clones share their values.
#[derive(Debug, Clone)]
pub struct Metrics {
    logins: Family<Labels, Counter>,
    sessions: Family<Labels, Counter>,
    /// Hashes and verifications waiting for a turn (the cap is one per core).
    pub hash_waiting: Gauge,
    /// Seconds one argon2 hash or verification took, not counting its wait.
    pub hash_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            logins: Family::default(),
            sessions: Family::default(),
            hash_waiting: Gauge::default(),
            // 1 ms to about 4 s.
            hash_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
        }
    }
}

impl Metrics {
    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        for result in LOGIN_RESULTS {
            self.logins.get_or_create_owned(&vec![("result", result)]);
        }
        for change in SESSION_CHANGES {
            self.sessions.get_or_create_owned(&vec![("change", change)]);
        }
        registry.register(
            "logins",
            "Logins by result: ok, bad_credentials, too_many_attempts or error",
            self.logins.clone(),
        );
        registry.register(
            "sessions",
            "Session changes: recorded, replaced (another connection of the device was kicked), removed, swept (their access node died)",
            self.sessions.clone(),
        );
        registry.register(
            "password_hash_waiting",
            "Password hashes and verifications waiting for a turn",
            self.hash_waiting.clone(),
        );
        registry.register(
            "password_hash_seconds",
            "How long one argon2 hash or verification took, not counting its wait",
            self.hash_seconds.clone(),
        );
    }

    /// Counts a login's outcome.
    pub fn login<T>(&self, result: &Result<T, Error>) {
        let result = match result {
            Ok(_) => "ok",
            Err(Error::BadCredentials) => "bad_credentials",
            Err(Error::TooManyAttempts { .. }) => "too_many_attempts",
            Err(_) => "error",
        };
        self.logins.get_or_create(&vec![("result", result)]).inc();
    }

    /// Counts `n` session changes of one kind.
    pub fn sessions(&self, change: &'static str, n: u64) {
        self.sessions
            .get_or_create(&vec![("change", change)])
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn logins_are_counted_by_result() {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("fishchat_register");
        metrics.register(&mut registry);
        metrics.login(&Ok::<(), Error>(()));
        metrics.login::<()>(&Err(Error::BadCredentials));
        metrics.login::<()>(&Err(Error::BadCredentials));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(text.contains(r#"fishchat_register_logins_total{result="ok"} 1"#));
        assert!(text.contains(r#"fishchat_register_logins_total{result="bad_credentials"} 2"#));
    }
}
