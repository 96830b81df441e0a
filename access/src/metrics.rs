//! The access node's metrics, exported over HTTP in Prometheus text format.
//!
//! Event loops count frames and bytes in plain integers and add them here
//! once per loop iteration, so the shared atomics are touched per batch, not
//! per frame.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fishchat_codec::KickReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric of one access node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fishchat_access");
        let connections = Gauge::default();
        let logins = Family::<Labels, Counter>::default();
        let frames_in = Counter::default();
        let frames_out = Counter::default();
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let kicks = Family::<Labels, Counter>::default();
        // 50 µs to about 1.6 s.
        let push_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let push_absent_users = Counter::default();
        let pushes_dropped = Counter::default();
        // 1 to 512.
        let send_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let send_batch_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register("logins", "Login attempts by result", logins.clone());
        registry.register(
            "frames_in",
            "Frames received from clients",
            frames_in.clone(),
        );
        registry.register("frames_out", "Frames queued to clients", frames_out.clone());
        registry.register("bytes_in", "Bytes received from clients", bytes_in.clone());
        registry.register("bytes_out", "Bytes written to clients", bytes_out.clone());
        registry.register("kicks", "Connections kicked, by reason", kicks.clone());
        registry.register(
            "push_latency_seconds",
            "From a push request's arrival to its frames being written",
            push_latency.clone(),
        );
        registry.register(
            "push_absent_users",
            "Users named in pushes with no connection here",
            push_absent_users.clone(),
        );
        registry.register(
            "pushes_dropped",
            "Frames dropped for a connection because its loop's mailbox was over its push budget",
            pushes_dropped.clone(),
        );
        registry.register(
            "send_batch_size",
            "Sends per batch call to logic",
            send_batch_size.clone(),
        );
        registry.register(
            "send_batch_latency_seconds",
            "How long a batch call to logic took, retries included",
            send_batch_latency.clone(),
        );
        Self {
            registry,
            connections,
            logins,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            kicks,
            push_latency,
            push_absent_users,
            pushes_dropped,
            send_batch_size,
            send_batch_latency,
        }
    }
}

impl Metrics {
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(%err, "encoding metrics failed");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Binds the metrics listener (so a bad address fails at start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
