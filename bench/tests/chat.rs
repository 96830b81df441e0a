//! The chat scenarios end to end: the bench binary against a whole cluster
//! (register, manager, logic, msg_job and a real access node, each its own
//! process on the real servers); a small run must lose nothing, deliver
//! nothing twice, and leave every conversation without a seq gap; a small
//! resync run must get exactly the conversations changed while offline.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::Path;
use std::time::Duration;

use fishchat_e2e::cluster::Cluster;
use serde_json::Value;

/// Longest one bench run may take (a debug build on a busy machine).
const RUN_DEADLINE: Duration = Duration::from_secs(180);

async fn cluster(test: &str) -> Cluster {
    let mut cluster = Cluster::start(test).await;
    cluster.add_access(&[]).await;
    cluster
}

/// Runs the bench's chat `scenario` (p2p, group, churn) with `args` (split
/// at spaces) against a cluster of its own named for `test`, with 20 s for
/// stragglers; returns its JSON report.
async fn run(scenario: &str, test: &str, args: &str) -> Value {
    let cluster = cluster(test).await;
    let out = tempfile::tempdir().unwrap();
    bench(
        &cluster,
        out.path(),
        scenario,
        &format!("--drain 20 {args}"),
    )
    .await
}

/// Runs the bench with `args` (split at spaces) against `cluster`; returns
/// its JSON report.
async fn bench(cluster: &Cluster, out: &Path, scenario: &str, args: &str) -> Value {
    let access = cluster.access[0].client.to_string();
    let register = format!("http://{}", cluster.register_http);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fishchat-bench"))
        .arg("--out-dir")
        .arg(out)
        .arg(scenario)
        .args(["--access", &access, "--register", &register])
        .args(["--user-prefix", &cluster.name])
        .args(args.split_whitespace())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(RUN_DEADLINE, child.wait())
        .await
        .expect("the bench run ended in time")
        .unwrap();
    assert!(
        status.success(),
        "fishchat-bench {scenario} failed: {status}"
    );
    let json = std::fs::read(out.join(format!("{scenario}.json"))).unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// A count from the report's totals.
fn total(report: &Value, name: &str) -> u64 {
    report["details"]["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no total {name} in {report:#}"))
}

/// Every acked message reached every receiver by PUSH, once, and its sender
/// by the same PUSH; the audit found no seq missing in any conversation.
fn assert_all_delivered_once(report: &Value, connections: u64, expected: u64) {
    let summary = format!("{report:#}");
    assert_eq!(total(report, "logged_in"), connections, "{summary}");
    assert!(total(report, "acked") > 0, "{summary}");
    assert_eq!(total(report, "acked"), total(report, "sent"), "{summary}");
    assert_eq!(total(report, "expected"), expected, "{summary}");
    assert_eq!(total(report, "delivered_expected"), expected, "{summary}");
    assert_eq!(total(report, "stored_not_pushed"), 0, "{summary}");
    assert_eq!(total(report, "lost"), 0, "{summary}");
    assert_eq!(total(report, "unchecked"), 0, "{summary}");
    assert_eq!(total(report, "duplicated"), 0, "{summary}");
    assert_eq!(
        total(report, "own_pushed"),
        total(report, "acked"),
        "{summary}"
    );
    assert_eq!(total(report, "seq_gaps"), 0, "{summary}");
    assert!(total(report, "conversations") > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p_delivers_every_acked_message_once() {
    // 4 pairs, 10 messages/s for 0.5 s: about 20 messages.
    let report = run("p2p", "bench-p2p", "--pairs 4 --rate 10 --seconds 0.5").await;
    let acked = total(&report, "acked");
    assert_all_delivered_once(&report, 8, acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn p2p_over_two_worker_processes_and_two_source_addresses_loses_nothing() {
    // 6 pairs over 2 workers (every sender in one, every receiver in the
    // other), sockets from 127.0.0.2 and 127.0.0.3.
    let report = run(
        "p2p",
        "bench-p2p-workers",
        "--pairs 6 --rate 10 --seconds 1 --workers 2 --source-ip-count 2",
    )
    .await;
    let acked = total(&report, "acked");
    assert_all_delivered_once(&report, 12, acked);
    assert_eq!(report["details"]["workers"], 2);
    assert_eq!(
        report["details"]["source_ips"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    let charts: Vec<&str> = report["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(charts, ["latency-cdf", "throughput"]);
    let throughput = &report["charts"][1]["series"];
    let per_second = |series: &Value| -> u64 {
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap() as u64)
            .sum()
    };
    assert_eq!(
        per_second(&throughput[0]),
        acked,
        "acked/s adds up to every ack"
    );
    assert_eq!(
        per_second(&throughput[1]),
        acked,
        "delivered/s adds up to every delivery"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_fans_every_acked_message_out_to_every_member_once() {
    let report = run(
        "group",
        "bench-group",
        "--groups 1 --size 5 --rate 10 --seconds 1",
    )
    .await;
    let acked = total(&report, "acked");
    assert_all_delivered_once(&report, 5, acked * 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_loses_nothing_while_receivers_reconnect_and_sync() {
    // 3 pairs, 10 messages/s for 2 s, 2 receiver disconnects per second.
    let report = run(
        "churn",
        "bench-churn",
        "--pairs 3 --rate 10 --seconds 2 --churn-rate 2",
    )
    .await;
    let summary = format!("{report:#}");
    assert_eq!(total(&report, "logged_in"), 6, "{summary}");
    assert!(total(&report, "acked") > 0, "{summary}");
    assert_eq!(total(&report, "acked"), total(&report, "sent"), "{summary}");
    assert!(total(&report, "disconnects") >= 3, "{summary}");
    assert_eq!(
        total(&report, "reconnects"),
        total(&report, "disconnects")
            + report["details"]["totals"]["dropped"]
                .as_object()
                .map_or(0, |d| d.values().filter_map(Value::as_u64).sum()),
        "{summary}"
    );
    assert_eq!(total(&report, "lost"), 0, "{summary}");
    assert_eq!(total(&report, "unchecked"), 0, "{summary}");
    assert_eq!(
        total(&report, "delivered") + total(&report, "found_by_final_sync"),
        total(&report, "acked"),
        "{summary}"
    );
    for stored_wrong in [
        "absent_from_audit",
        "stored_twice",
        "seq_gaps",
        "seq_repeats",
    ] {
        assert_eq!(total(&report, stored_wrong), 0, "{summary}");
    }
    let pairs = report["details"]["conversations"].as_object().unwrap();
    assert_eq!(pairs.len(), 3, "{summary}");
    for (pair, audit) in pairs {
        assert!(
            audit["head_seq"].as_u64().unwrap() >= audit["acked"].as_u64().unwrap(),
            "{pair}: {summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resync_lists_exactly_the_conversations_changed_while_offline() {
    let cluster = cluster("bench-resync").await;
    let out = tempfile::tempdir().unwrap();
    // The CPU of this test's process stands in for a server's.
    let args = format!(
        "--conversations 50 --changed 5 --iterations 3 --cpu test={}",
        std::process::id()
    );
    let report = bench(&cluster, out.path(), "resync", &args).await;
    let summary = format!("{report:#}");
    assert_eq!(total(&report, "conversations_held"), 50, "{summary}");
    assert_eq!(total(&report, "rounds"), 3, "{summary}");
    for wrong in [
        "mismatched_rounds",
        "unchanged_listed",
        "changed_unlisted",
        "changed_incomplete",
    ] {
        assert_eq!(total(&report, wrong), 0, "{summary}");
    }
    let rounds = report["details"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{summary}");
    for round in rounds {
        assert_eq!(round["listed"], 5, "{summary}");
        let whole = round["reconnect_sync_us"].as_u64().unwrap();
        let sync = round["sync_us"].as_u64().unwrap();
        assert!(sync > 0 && sync <= whole, "{summary}");
    }
    let charts: Vec<&str> = report["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(charts, ["latency-cdf", "rounds"], "{summary}");
    assert_eq!(report["config"]["changed"], 5, "{summary}");
    let figures = report["figures"].as_array().unwrap();
    assert!(
        figures
            .iter()
            .any(|f| f["name"] == "CPU test per reconnect"),
        "{summary}"
    );
}
