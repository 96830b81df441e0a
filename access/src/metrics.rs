//! The access node's metrics, served by `fishchat_node::serve_metrics`.
//!
//! Event loops count frames and bytes in plain integers and add them here
//! once per loop iteration, so the shared atomics are touched per batch, not
//! per frame.

use fishchat_codec::KickReason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric of one access node.
#[derive(Debug)]
pub struct Metrics {
    /// Open client connections.
    pub connections: Gauge,
    /// Logins, by result.
    logins: Family<Labels, Counter>,
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Frames queued to clients.
    pub frames_out: Counter,
    /// Bytes received from clients.
    pub bytes_in: Counter,
    /// Bytes written to clients.
    pub bytes_out: Counter,
    /// Kicks, by reason.
    kicks: Family<Labels, Counter>,
    /// Seconds from a push request's arrival to its frames being written to sockets.
    pub push_latency: Histogram,
    /// Users named in push requests with no connection on this node.
    pub push_absent_users: Counter,
    /// Frames not queued on a connection because its loop's mailbox was over
    /// its push budget (the messages are stored; clients catch up by sync).
    pub pushes_dropped: Counter,
    /// Sends per batch call to logic: how much batching the load gives.
    pub send_batch_size: Histogram,
    /// Seconds a batch call to logic took, retries included.
    pub send_batch_latency: Histogram,
    /// Session heartbeats per call to logic (see `upstream::heartbeats`).
    pub heartbeat_batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: Gauge::default(),
            logins: Family::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            kicks: Family::default(),
            // 50 µs to about 1.6 s.
            push_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            push_absent_users: Counter::default(),
            pushes_dropped: Counter::default(),
            // 1 to 512.
            send_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            send_batch_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 to 1,024.
            heartbeat_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

impl Metrics {
    /// Registers every metric in `registry`, each labelled family with its
    /// known values at zero, so a rate over them works from the start.
    pub fn register(&self, registry: &mut Registry) {
        for result in ["ok", "refused"] {
            self.logins.get_or_create_owned(&vec![("result", result)]);
        }
        for reason in (1..).map_while(|n| KickReason::try_from(n).ok()) {
            self.kicks
                .get_or_create_owned(&vec![("reason", reason.as_str_name())]);
        }
        registry.register(
            "connections",
            "Open client connections",
            self.connections.clone(),
        );
        registry.register("logins", "Login attempts by result", self.logins.clone());
        registry.register(
            "frames_in",
            "Frames received from clients",
            self.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames queued to clients",
            self.frames_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received from clients",
            self.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes written to clients",
            self.bytes_out.clone(),
        );
        registry.register("kicks", "Connections kicked, by reason", self.kicks.clone());
        registry.register(
            "push_latency_seconds",
            "From a push request's arrival to its frames being written",
            self.push_latency.clone(),
        );
        registry.register(
            "push_absent_users",
            "Users named in pushes with no connection here",
            self.push_absent_users.clone(),
        );
        registry.register(
            "pushes_dropped",
            "Frames dropped for a connection because its loop's mailbox was over its push budget",
            self.pushes_dropped.clone(),
        );
        registry.register(
            "send_batch_size",
            "Sends per batch call to logic",
            self.send_batch_size.clone(),
        );
        registry.register(
            "send_batch_latency_seconds",
            "How long a batch call to logic took, retries included",
            self.send_batch_latency.clone(),
        );
        registry.register(
            "heartbeat_batch_size",
            "Session heartbeats per call to logic",
            self.heartbeat_batch_size.clone(),
        );
    }

    /// Counts one login attempt.
    pub fn login(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.logins.get_or_create(&vec![("result", result)]).inc();
    }

    /// Counts one kick.
    pub fn kick(&self, reason: KickReason) {
        self.kicks
            .get_or_create(&vec![("reason", reason.as_str_name())])
            .inc();
    }

    /// How many connections were kicked for `reason`.
    pub fn kicked(&self, reason: KickReason) -> u64 {
        self.kicks
            .get_or_create(&vec![("reason", reason.as_str_name())])
            .get()
    }
}
