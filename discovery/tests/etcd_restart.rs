//! Recovery from an etcd that dies and comes back empty.
//!
//! The shared test etcd must never be restarted, so this test runs a private
//! etcd (the same `etcd` binary the stack script starts) on free loopback
//! ports, kills it, and starts it again on a wiped data folder: every lease is
//! gone, every watch broken, and revisions start over. Registrations must
//! grant new leases and put their keys again; resolvers must re-read and watch
//! anew.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fishchat_discovery::{NodeInfo, Registration, Resolver};
use fishchat_e2e::{unique_name, wait_until};
use tokio::process::{Child, Command};

const TTL: Duration = Duration::from_secs(2);
/// Generous: etcd elects itself leader in about a second, and the resolver's
/// retry delay grows to 5 s while etcd is down.
const RECOVERY: Duration = Duration::from_secs(20);

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
}

/// A one-member etcd cluster owned by this test.
struct PrivateEtcd {
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl PrivateEtcd {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(unique_name("fishchat-etcd"));
        let (client, peer) = (free_port(), free_port());
        let child = Self::spawn(client, peer, &dir);
        let etcd = Self {
            client,
            peer,
            dir,
            child,
        };
        etcd.wait_healthy().await;
        etcd
    }

    fn spawn(client: SocketAddr, peer: SocketAddr, dir: &PathBuf) -> Child {
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        Command::new("etcd")
            .args(["--name", "restart-test"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("restart-test={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd (Debian package etcd-server; `scripts/stack up` installs it)")
    }

    fn endpoints(&self) -> Vec<String> {
        vec![self.client.to_string()]
    }

    async fn wait_healthy(&self) {
        let endpoints = self.endpoints();
        wait_until(RECOVERY, "the private etcd to answer", async || {
            let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
            client.status().await.ok().map(drop)
        })
        .await;
    }

    /// Kills etcd (-9) and starts it again with no data: a total loss of state.
    async fn restart_empty(&mut self) {
        self.child.kill().await.expect("kill etcd");
        std::fs::remove_dir_all(&self.dir).expect("wipe the etcd data folder");
        self.child = Self::spawn(self.client, self.peer, &self.dir);
        self.wait_healthy().await;
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn registrations_and_resolvers_recover_after_etcd_loses_everything() {
    let mut etcd = PrivateEtcd::start().await;
    let endpoints = etcd.endpoints();
    let resolver = Resolver::start(&endpoints, "access").await.unwrap();
    let reg = Registration::start_with_ttl(&endpoints, NodeInfo::new("access", "old"), TTL)
        .await
        .unwrap();
    wait_until(RECOVERY, "the node to be resolved", async || {
        resolver.node("old").map(drop)
    })
    .await;

    etcd.restart_empty().await;

    // The registration notices its lease is gone and puts the key again.
    reg.set_load(4);
    wait_until(
        RECOVERY,
        "the node to come back with its new load",
        async || (resolver.node("old")?.load == 4).then_some(()),
    )
    .await;
    // The resolver watches again: a node that registers now is seen.
    let new = Registration::start_with_ttl(&endpoints, NodeInfo::new("access", "new"), TTL)
        .await
        .unwrap();
    wait_until(
        RECOVERY,
        "a node registered after the restart",
        async || resolver.node("new").map(drop),
    )
    .await;
    new.deregister().await.unwrap();
    wait_until(RECOVERY, "the deregistered node to go", async || {
        resolver.node("new").is_none().then_some(())
    })
    .await;
    reg.deregister().await.unwrap();
}
