//! Stopping as systemd does: a SIGTERM that follows READY=1 at once still
//! drains. Each service runs under a notify socket of the test's own, is
//! stopped the moment it says READY=1, and must exit 0 after STOPPING=1.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::Path;
use std::time::Duration;

use fishchat_e2e::cluster::Cluster;
use fishchat_e2e::services::ServiceProcess;
use tokio::net::UnixDatagram;

/// Tries per service: the race this guards against lost 3 of ~9 tries.
const TRIES: usize = 3;
/// A debug build's start (msg_job creates its topics) and drain.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for the datagram `state` on `socket`, skipping others; fails at
/// once, naming the log, if `process` ends first.
async fn until_state(
    socket: &UnixDatagram,
    state: &str,
    process: &mut ServiceProcess,
    service: &str,
) {
    let mut buf = [0u8; 256];
    let mut checks = tokio::time::interval(Duration::from_millis(50));
    let wait = async {
        loop {
            tokio::select! {
                received = socket.recv(&mut buf) => {
                    let n = received.unwrap();
                    if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == state) {
                        return;
                    }
                }
                _ = checks.tick() => {
                    if let Some(status) = process.exited() {
                        panic!("{service} ended ({status}) before it said {state}; see {}", process.log().display());
                    }
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{service} never said {state}; see {}",
                process.log().display()
            )
        });
}

/// Starts `process` under a fresh notify socket in `dir`, stops it the
/// moment it is ready, and checks it drained: STOPPING=1 and exit 0.
async fn stopped_at_once(process: &mut ServiceProcess, service: &str, dir: &Path) {
    for attempt in 0..TRIES {
        let path = dir.join(format!("{service}-{attempt}.sock"));
        let socket = UnixDatagram::bind(&path).unwrap();
        process.kill9();
        process.set_env("NOTIFY_SOCKET", path.to_str().unwrap());
        process.restart();
        until_state(&socket, "READY=1", process, service).await;
        let status = process.terminate(DEADLINE);
        assert!(
            status.is_some_and(|s| s.success()),
            "{service}, try {attempt}: SIGTERM right after READY=1 ended it with {status:?}; see {}",
            process.log().display()
        );
        until_state(&socket, "STOPPING=1", process, service).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_right_after_ready_drains_every_service() {
    let mut cluster = Cluster::start("sigterm-ready").await;
    cluster.add_access(&[]).await;
    cluster.add_gateway().await;
    let dir = std::env::temp_dir().join(&cluster.name);
    std::fs::create_dir_all(&dir).unwrap();
    stopped_at_once(&mut cluster.register, "register", &dir).await;
    stopped_at_once(&mut cluster.manager, "manager", &dir).await;
    stopped_at_once(&mut cluster.logic[0].0, "logic", &dir).await;
    stopped_at_once(&mut cluster.msg_job, "msg_job", &dir).await;
    stopped_at_once(&mut cluster.access[0].process, "access", &dir).await;
    let gateway = cluster.gateway.as_mut().unwrap();
    stopped_at_once(&mut gateway.process, "gateway", &dir).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
