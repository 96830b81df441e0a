//! Every service's `GET /metrics`: one Prometheus registry per process,
//! served in the format the scraper asks for.
//!
//! `prometheus-client` writes OpenMetrics only. Prometheus itself, `promtool`
//! and most scrapers that do not say otherwise expect the older text format
//! 0.0.4, where a counter's HELP and TYPE name its `_total` sample and there
//! is no `# EOF`; a scraper that asks for `application/openmetrics-text` gets
//! OpenMetrics as written.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// The content type of Prometheus text format 0.0.4.
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics 1.0.0.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` (so a taken port fails the service at start) and serves
/// `GET /metrics` from `registry` (see [`spawn_metrics`]).
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(spawn_metrics(listener, registry))
}

/// Serves `GET /metrics` from `registry` on `listener` in a task of its own,
/// for the rest of the process's life unless aborted, so that the last
/// scrapes still see a draining service.
pub fn spawn_metrics(
    listener: tokio::net::TcpListener,
    registry: Registry,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(registry));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the metrics server stopped");
        }
    })
}

async fn render(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let mut body = String::new();
    if let Err(err) = encode(&mut body, &registry) {
        tracing::error!(%err, "encoding metrics failed");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, TEXT_004)],
            String::new(),
        );
    }
    if wants_openmetrics {
        (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body)
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT_004)],
            to_text_004(&body),
        )
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4: counters'
/// HELP and TYPE lines name the `_total` sample, `unknown` becomes `untyped`,
/// and the `# UNIT` and `# EOF` lines, which 0.0.4 does not have, go.
fn to_text_004(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match descriptor(line) {
            Some((kind, name, rest)) => {
                out.push_str("# ");
                out.push_str(kind);
                out.push(' ');
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if kind == "TYPE" && rest == "unknown" {
                    "untyped"
                } else {
                    rest
                });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Splits `# HELP name text` or `# TYPE name type` into its three parts.
fn descriptor(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (kind, rest) = rest.split_once(' ')?;
    if kind != "HELP" && kind != "TYPE" {
        return None;
    }
    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((kind, name, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;

    fn sample() -> String {
        let mut registry = Registry::with_prefix("fishchat_test");
        let sends = Counter::<u64>::default();
        sends.inc_by(3);
        registry.register("sends", "Sends accepted", sends);
        let open = Gauge::<i64>::default();
        open.set(2);
        registry.register("open", "Open things", open);
        let latency = Histogram::new([0.1, 1.0]);
        latency.observe(0.5);
        registry.register("latency_seconds", "How long", latency);
        let mut out = String::new();
        encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn counters_are_described_by_their_total_sample() {
        let text = to_text_004(&sample());
        assert!(text.contains("# HELP fishchat_test_sends_total Sends accepted.\n"));
        assert!(text.contains("# TYPE fishchat_test_sends_total counter\n"));
        assert!(text.contains("fishchat_test_sends_total 3\n"));
    }

    #[test]
    fn gauges_and_histograms_keep_their_names() {
        let text = to_text_004(&sample());
        assert!(text.contains("# TYPE fishchat_test_open gauge\n"));
        assert!(text.contains("fishchat_test_open 2\n"));
        assert!(text.contains("# TYPE fishchat_test_latency_seconds histogram\n"));
        assert!(text.contains("fishchat_test_latency_seconds_bucket{le=\"1.0\"} 1\n"));
    }

    #[test]
    fn openmetrics_only_lines_are_dropped() {
        let openmetrics = sample();
        assert!(openmetrics.contains("# EOF"));
        let text = to_text_004(&openmetrics);
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn unknown_becomes_untyped() {
        let text = to_text_004("# HELP x_things Things.\n# TYPE x_things unknown\nx_things 1\n");
        assert_eq!(
            text,
            "# HELP x_things Things.\n# TYPE x_things untyped\nx_things 1\n"
        );
    }
}
