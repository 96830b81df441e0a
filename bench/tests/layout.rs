//! The layout scenario on the real MongoDB server: both layouts written and
//! read back, every page checked against the seqs written (the run fails on
//! a wrong page), and the figures saved.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::time::Duration;

use serde_json::Value;

/// Longest the run may take (a debug build on a busy machine).
const RUN_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn both_layouts_store_and_page_every_message() {
    let out = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fishchat-bench"))
        .arg("--out-dir")
        .arg(out.path())
        .arg("layout")
        .args(["--mongo", &fishchat_e2e::mongo_url()])
        .args(["--conversations", "7", "--batch", "5", "--batch", "12"])
        .args(["--partitions", "3", "--messages", "150", "--reads", "30"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(RUN_DEADLINE, child.wait())
        .await
        .expect("the layout run ended in time")
        .unwrap();
    assert!(status.success(), "fishchat-bench layout failed: {status}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("layout.json")).unwrap()).unwrap();
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    for layout in ["messages", "segments"] {
        for batch in [5, 12] {
            assert_eq!(
                figure(&format!("{layout} batch {batch}: messages written")),
                143.0
            );
            assert!(figure(&format!("{layout} batch {batch}: sync p50")) > 0.0);
        }
    }
}
