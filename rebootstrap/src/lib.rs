//! A way back for a librdkafka client that has dropped every broker it knew.
//!
//! Since 2.10, librdkafka removes the brokers a Metadata response leaves out,
//! its bootstrap servers included. A broker in controlled shutdown is fenced
//! before it stops answering, and a one-broker cluster then answers Metadata
//! with no broker at all: a client that asks at that moment is left with none.
//! With no broker it sends no Metadata request, so neither its re-bootstrap
//! timer nor anything else ever brings one back (librdkafka issue #5301, open
//! as of 2.12.1). In the chaos campaign one Kafka restart in about eight left
//! logic's producer cut off until logic restarted, every send failing.
//!
//! [`Rebootstrap`] lives in a client's context (set up with [`configure`])
//! and looks at each statistics report: a client with neither a configured nor a learned broker gets its
//! bootstrap servers added again, as the re-bootstrap librdkafka meant to do.
//! A client with any broker, reachable or not, is left alone.

use std::ffi::{CString, NulError};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafka;

/// How often a client with a [`Rebootstrap`] reports its statistics
/// (`statistics.interval.ms`): the longest a client stays without a broker.
const STATISTICS_INTERVAL_MS: u64 = 1_000;

/// The longest wait between two attempts to reach a broker that went away.
/// librdkafka doubles its backoff up to 10 s by default, so a client could
/// wait seconds more after the broker was back; at 250 ms a broker back from
/// a restart (~3.5 s in the chaos campaign) is reached again within a quarter
/// of a second, at the price of four connection attempts a second while it
/// is away.
const RECONNECT_BACKOFF_MAX_MS: u64 = 250;

/// Sets what a client needs to get back to its brokers soon after they
/// return: the reconnect backoff, and the statistics reports that
/// [`Rebootstrap::check`] reads (and that the client's context may read too).
pub fn configure(config: &mut ClientConfig) -> &mut ClientConfig {
    config
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
}

/// Re-adds a client's bootstrap servers when it has no broker left.
#[derive(Debug)]
pub struct Rebootstrap {
    bootstrap: CString,
    client: AtomicPtr<RDKafka>,
    repairs: AtomicU64,
}

impl Rebootstrap {
    /// For a client whose `bootstrap.servers` is `bootstrap`.
    pub fn new(bootstrap: &str) -> Result<Self, NulError> {
        Ok(Self {
            bootstrap: CString::new(bootstrap)?,
            client: AtomicPtr::new(std::ptr::null_mut()),
            repairs: AtomicU64::new(0),
        })
    }

    /// Names the client whose context holds this; until then [`Self::check`]
    /// does nothing.
    pub fn attach<C: ClientContext>(&self, client: &Client<C>) {
        self.client.store(client.native_ptr(), Ordering::Release);
    }

    /// To be called from the client's statistics callback.
    pub fn check(&self, statistics: &Statistics) {
        if !has_no_broker(statistics) {
            return;
        }
        let client = self.client.load(Ordering::Acquire);
        if client.is_null() {
            return;
        }
        let added = add_brokers(client, &self.bootstrap);
        let repairs = self.repairs.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            bootstrap = %self.bootstrap.to_string_lossy(),
            added,
            repairs,
            "the Kafka client had dropped every broker (librdkafka #5301): its bootstrap servers are back"
        );
    }

    /// How many times the bootstrap servers were added back.
    pub fn repairs(&self) -> u64 {
        self.repairs.load(Ordering::Relaxed)
    }
}

/// Whether the client reporting `statistics` has neither a configured
/// (bootstrap) nor a learned broker: only its internal and logical ones.
fn has_no_broker(statistics: &Statistics) -> bool {
    !statistics
        .brokers
        .values()
        .any(|broker| matches!(broker.source.as_str(), "configured" | "learned"))
}

#[allow(unsafe_code)]
fn add_brokers(client: *mut RDKafka, brokers: &CString) -> i32 {
    // SAFETY: `client` came from `Client::native_ptr` of the client whose
    // context holds the `Rebootstrap`, and `check` runs only in that client's
    // statistics callback, so the client is alive. `rd_kafka_brokers_add`
    // takes the client's own lock and copies the list, which is a valid
    // NUL-terminated string for the length of the call.
    unsafe { rdkafka::bindings::rd_kafka_brokers_add(client, brokers.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::Broker;

    fn with_brokers(sources: &[&str]) -> Statistics {
        let mut statistics = Statistics::default();
        for (i, source) in sources.iter().enumerate() {
            statistics.brokers.insert(
                format!("broker-{i}"),
                Broker {
                    source: (*source).to_owned(),
                    ..Broker::default()
                },
            );
        }
        statistics
    }

    #[test]
    fn only_internal_and_logical_brokers_count_as_none() {
        assert!(has_no_broker(&with_brokers(&[])));
        assert!(has_no_broker(&with_brokers(&["internal"])));
        assert!(has_no_broker(&with_brokers(&["internal", "logical"])));
        assert!(!has_no_broker(&with_brokers(&["internal", "configured"])));
        assert!(!has_no_broker(&with_brokers(&["internal", "learned"])));
    }

    #[test]
    fn a_check_before_attach_adds_nothing() {
        let rebootstrap = Rebootstrap::new("127.0.0.1:1").expect("no NUL");
        rebootstrap.check(&with_brokers(&["internal"]));
        assert_eq!(rebootstrap.repairs(), 0);
    }
}
