//! Every service's `GET /metrics`, as an operator's tools see it: each
//! process of a whole cluster (with traffic through it) passes Debian's
//! `promtool check metrics` in the text format Prometheus asks for, answers
//! OpenMetrics when asked, and counts what it did; and every query of the
//! Grafana dashboard in `deploy/grafana/` names a metric some service exports.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::pb::SendToUser;
use fishchat_e2e::cluster::Cluster;
use fishchat_e2e::wait_until;
use fishchat_rpc::logic::{Outgoing, SendBatch, outgoing};

/// How long the cluster may take to store and push one message (debug
/// builds, several clusters at once).
const WITHIN: Duration = Duration::from_secs(60);

struct Scrape {
    content_type: String,
    body: String,
}

async fn scrape(addr: SocketAddr, accept: Option<&str>) -> Scrape {
    let mut request = reqwest::Client::new().get(format!("http://{addr}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{addr}: {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Scrape {
        content_type,
        body: response.text().await.unwrap(),
    }
}

/// `promtool check metrics` on `text`: its complaints, empty when it passes.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; `scripts/stack up` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The value of the sample written exactly as `sample` (name and labels).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every metric name `text` declares or samples, with the histogram types
/// apart (their samples are `_bucket`, `_sum` and `_count`).
fn names(text: &str, all: &mut BTreeSet<String>, histograms: &mut BTreeSet<String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            all.insert(name.to_owned());
            if kind == "histogram" {
                histograms.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            all.insert(name.to_owned());
        }
    }
}

/// The metric names a PromQL expression mentions (ours all start `fishchat_`).
fn mentioned(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("fishchat_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

/// Every `expr` of the dashboard, however deep in its panels.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

async fn send(cluster: &Cluster, from: u64, to: u64) {
    let batch = SendBatch {
        sends: vec![Outgoing {
            from_user_id: from,
            message: Some(outgoing::Message::ToUser(SendToUser {
                client_msg_id: "metrics-1".into(),
                to_user_id: to,
                body: Bytes::from_static(b"counted"),
            })),
        }],
    };
    let acks = cluster
        .logic()
        .await
        .send(batch)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.acks.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_serves_metrics_promtool_accepts_and_the_dashboard_queries_them() {
    let mut cluster = Cluster::start("metrics").await;
    cluster.add_access(&[]).await;
    cluster.add_gateway().await;
    let (alice, _) = cluster.new_user("alice").await;
    let (bob, _) = cluster.new_user("bob").await;
    send(&cluster, alice, bob).await;
    let gateway = cluster.gateway.as_ref().unwrap().http;
    reqwest::get(format!("http://{gateway}/lookup"))
        .await
        .unwrap();

    // Work shows in the counters of the services that did it.
    let of = |service: &str| {
        cluster
            .metrics
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, addr)| *addr)
            .unwrap()
    };
    let msg_job = of("msg_job");
    wait_until(
        WITHIN,
        "msg_job to count the message committed",
        async || {
            let text = scrape(msg_job, None).await.body;
            (value(&text, "fishchat_msg_job_committed_records_total")? >= 1.0).then_some(())
        },
    )
    .await;
    // Lag comes from librdkafka's statistics, every second, once partitions are assigned.
    wait_until(WITHIN, "msg_job to report its consumer lag", async || {
        let text = scrape(msg_job, None).await.body;
        text.contains("fishchat_msg_job_consumer_lag{")
            .then_some(())
    })
    .await;
    let logic = scrape(of("logic"), None).await.body;
    assert_eq!(
        value(&logic, r#"fishchat_logic_sends_total{outcome="accepted"}"#),
        Some(1.0),
        "{logic}"
    );
    assert!(
        value(
            &logic,
            r#"fishchat_logic_rpc_requests_total{method="fishchat.logic.v1.Logic/Send",code="Ok"}"#
        )
        .is_some(),
        "{logic}"
    );
    let register = scrape(of("register"), None).await.body;
    assert_eq!(
        value(&register, r#"fishchat_register_logins_total{result="ok"}"#),
        Some(2.0),
        "{register}"
    );
    let gateway = scrape(of("gateway"), None).await.body;
    let access_node = format!("{}-access-0", cluster.name);
    assert_eq!(
        value(
            &gateway,
            &format!(r#"fishchat_gateway_lookups_total{{node="{access_node}"}}"#)
        ),
        Some(1.0),
        "{gateway}"
    );

    let mut all = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut failures = Vec::new();
    for (service, addr) in &cluster.metrics {
        let text = scrape(*addr, None).await;
        assert_eq!(
            text.content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{service}"
        );
        assert!(
            text.body
                .contains(&format!("fishchat_{service}_rpc_requests")),
            "{service} counts its RPCs:\n{}",
            text.body
        );
        if let Err(complaint) = promtool(&text.body) {
            failures.push(format!("{service} at {addr}:\n{complaint}"));
        }
        names(&text.body, &mut all, &mut histograms);
        let openmetrics = scrape(*addr, Some("application/openmetrics-text; version=1.0.0")).await;
        assert!(
            openmetrics
                .content_type
                .starts_with("application/openmetrics-text"),
            "{service}: {}",
            openmetrics.content_type
        );
        assert!(openmetrics.body.ends_with("# EOF\n"), "{service}");
    }
    assert!(
        failures.is_empty(),
        "promtool check metrics:\n{}",
        failures.join("\n")
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/fishchat.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 10,
        "the dashboard has {} queries",
        queries.len()
    );
    let exported = |name: &str| {
        all.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| histograms.contains(base))
            })
    };
    let unknown: Vec<String> = queries
        .iter()
        .flat_map(|expr| mentioned(expr).into_iter().map(move |n| (expr, n)))
        .filter(|(_, name)| !exported(name))
        .map(|(expr, name)| format!("{name} in {expr}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries naming no exported metric:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn mentioned_names_are_read_out_of_promql() {
    assert_eq!(
        mentioned(
            "histogram_quantile(0.99, sum by (le) (rate(fishchat_logic_rpc_duration_seconds_bucket[5m]))) / fishchat_x"
        ),
        vec![
            "fishchat_logic_rpc_duration_seconds_bucket".to_owned(),
            "fishchat_x".to_owned()
        ]
    );
}
