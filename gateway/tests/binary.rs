//! The built `fishchat-gateway` binary: configuration from flags and the
//! environment, registration, and a clean stop on SIGTERM.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use fishchat_discovery::Resolver;
use fishchat_e2e::{etcd_endpoint, unique_name, wait_until};
use fishchat_gateway::server::SERVICE;
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_fishchat-gateway");

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
}

#[tokio::test]
async fn help_lists_the_settings() {
    let out = Command::new(BINARY).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--http-listen",
        "--grpc-listen",
        "--etcd-endpoints",
        "--node-id",
        "--idle-timeout-secs",
        "--config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn binary_registers_serves_and_leaves_etcd_on_sigterm() {
    let (tcp, http, grpc) = (free_port(), free_port(), free_port());
    let node_id = unique_name("gw-bin");
    let mut child = Command::new(BINARY)
        .args(["--listen", &tcp.to_string()])
        .args(["--http-listen", &http.to_string()])
        .args(["--grpc-listen", &grpc.to_string()])
        .args(["--etcd-endpoints", &etcd_endpoint()])
        .args(["--node-id", &node_id])
        .env("FISHCHAT_GATEWAY_ACCESS_SERVICE", unique_name("access"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway binary");

    let resolver = Resolver::start(&[etcd_endpoint()], SERVICE).await.unwrap();
    let me = wait_until(
        Duration::from_secs(10),
        "the binary to register",
        async || resolver.node(&node_id),
    )
    .await;
    assert_eq!(me.addr("http"), Some(http.to_string().as_str()));
    let lookup = reqwest::get(format!("http://{http}/lookup")).await.unwrap();
    assert_eq!(lookup.status().as_u16(), 503);

    let pid = child.id().expect("child pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("no exit within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // Deregistered on the way out: gone well before the 10 s lease could expire.
    wait_until(
        Duration::from_secs(1),
        "the binary to leave etcd",
        async || resolver.node(&node_id).is_none().then_some(()),
    )
    .await;
}
