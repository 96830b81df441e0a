//! Registration and resolution against a real etcd: the registry is only
//! right if resolvers see nodes come, change and go exactly as the leases say.

use std::time::{Duration, Instant};

use etcd_client::DeleteOptions;
use fishchat_discovery::{NodeInfo, Registration, Resolver, node_key, service_prefix};
use fishchat_e2e::{etcd, etcd_endpoint, unique_name, wait_until};

/// Short so expiry tests are quick, at or above etcd's minimum lease TTL.
const TTL: Duration = Duration::from_secs(2);

/// How long past the TTL etcd may take to notice an expired lease and a
/// watch to report it (etcd checks expiry on its own timer).
const EXPIRY_MARGIN: Duration = Duration::from_secs(3);

/// Deadline for anything that should happen in a round trip or two.
const SOON: Duration = Duration::from_secs(5);

fn endpoints() -> Vec<String> {
    vec![etcd_endpoint()]
}

fn node(service: &str, id: &str, load: u64) -> NodeInfo {
    NodeInfo {
        load,
        ..NodeInfo::new(service, id)
            .with_addr("grpc", "127.0.0.1:1")
            .with_addr("client", "127.0.0.1:2")
    }
}

#[tokio::test]
async fn resolver_sees_registration_info_and_load_changes() {
    let service = unique_name("svc");
    let watching = Resolver::start(&endpoints(), &service).await.unwrap();
    assert!(watching.nodes().is_empty());
    let mut changes = watching.subscribe();

    let info = node(&service, "n1", 4);
    let reg = Registration::start_with_ttl(&endpoints(), info.clone(), TTL)
        .await
        .unwrap();
    assert_eq!(reg.info(), info);
    tokio::time::timeout(SOON, changes.changed())
        .await
        .expect("no change reported")
        .unwrap();
    wait_until(SOON, "the watching resolver to see n1", async || {
        (watching.node("n1") == Some(info.clone())).then_some(())
    })
    .await;

    // A resolver started after the registration finds it by its first read.
    let late = Resolver::start(&endpoints(), &service).await.unwrap();
    assert_eq!(late.node("n1"), Some(info.clone()));
    assert_eq!(late.least_loaded().map(|n| n.node_id), Some("n1".into()));

    reg.set_load(7);
    assert_eq!(reg.info().load, 7);
    for resolver in [&watching, &late] {
        wait_until(SOON, "load 7 to be visible", async || {
            (resolver.node("n1")?.load == 7).then_some(())
        })
        .await;
    }
    reg.deregister().await.unwrap();
}

#[tokio::test]
async fn dead_node_expires_within_ttl_while_the_live_one_stays() {
    let service = unique_name("svc");
    let resolver = Resolver::start(&endpoints(), &service).await.unwrap();
    let alive = Registration::start_with_ttl(&endpoints(), node(&service, "alive", 1), TTL)
        .await
        .unwrap();
    let doomed = Registration::start_with_ttl(&endpoints(), node(&service, "doomed", 1), TTL)
        .await
        .unwrap();
    wait_until(SOON, "both nodes to be visible", async || {
        (resolver.nodes().len() == 2).then_some(())
    })
    .await;

    // Dropping without deregistering is what a crash looks like: renewals stop,
    // the key stays until the lease runs out.
    drop(doomed);
    let died = Instant::now();
    wait_until(TTL + EXPIRY_MARGIN, "the dead node to expire", async || {
        resolver.node("doomed").is_none().then_some(())
    })
    .await;
    assert!(
        died.elapsed() >= TTL / 2,
        "the key went away before its lease could have expired ({:?})",
        died.elapsed()
    );
    // By now the live node has been up for more than a TTL: its renewals work.
    assert!(resolver.node("alive").is_some());
    let mut client = etcd().await;
    let kept = client.get(node_key(&service, "alive"), None).await.unwrap();
    assert_eq!(kept.kvs().len(), 1);
    alive.deregister().await.unwrap();
}

#[tokio::test]
async fn deregister_removes_the_key_at_once() {
    let service = unique_name("svc");
    let resolver = Resolver::start(&endpoints(), &service).await.unwrap();
    // The default TTL (10 s): the key must go long before it could expire.
    let reg = Registration::start(&endpoints(), node(&service, "n1", 0))
        .await
        .unwrap();
    wait_until(SOON, "the node to be visible", async || {
        resolver.node("n1").map(drop)
    })
    .await;
    let left = Instant::now();
    reg.deregister().await.unwrap();
    let mut client = etcd().await;
    let gone = client.get(node_key(&service, "n1"), None).await.unwrap();
    assert!(gone.kvs().is_empty(), "key still in etcd after deregister");
    wait_until(
        Duration::from_secs(2),
        "the resolver to drop the node",
        async || resolver.nodes().is_empty().then_some(()),
    )
    .await;
    assert!(left.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_lost_lease_is_granted_again_and_the_node_comes_back() {
    let service = unique_name("svc");
    let resolver = Resolver::start(&endpoints(), &service).await.unwrap();
    let reg = Registration::start_with_ttl(&endpoints(), node(&service, "n1", 3), TTL)
        .await
        .unwrap();
    let key = node_key(&service, "n1");
    let mut client = etcd().await;
    let first = client.get(key.as_str(), None).await.unwrap().kvs()[0].lease();

    // Revoking the lease behind the registration's back is what an etcd that
    // lost its state, or a pause longer than the TTL, looks like to the node.
    client.lease_revoke(first).await.unwrap();
    let again = wait_until(SOON, "the node to register under a new lease", async || {
        let resp = client.get(key.as_str(), None).await.ok()?;
        let lease = resp.kvs().first()?.lease();
        (lease != first).then_some(lease)
    })
    .await;
    assert_ne!(again, 0);
    wait_until(SOON, "the resolver to see the node again", async || {
        (resolver.node("n1")?.load == 3).then_some(())
    })
    .await;
    // The new lease is kept alive too: the node outlives another TTL.
    reg.set_load(5);
    wait_until(
        TTL + EXPIRY_MARGIN,
        "the new lease to carry load updates",
        async || (resolver.node("n1")?.load == 5).then_some(()),
    )
    .await;
    reg.deregister().await.unwrap();
    assert!(
        client
            .get(key.as_str(), None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
    );
}

#[tokio::test]
async fn values_that_are_not_node_descriptions_are_ignored() {
    let service = unique_name("svc");
    let mut client = etcd().await;
    client
        .put(node_key(&service, "junk"), "not json", None)
        .await
        .unwrap();
    let resolver = Resolver::start(&endpoints(), &service).await.unwrap();
    assert!(resolver.nodes().is_empty());
    let reg = Registration::start_with_ttl(&endpoints(), node(&service, "n1", 0), TTL)
        .await
        .unwrap();
    client
        .put(node_key(&service, "junk2"), "{", None)
        .await
        .unwrap();
    wait_until(SOON, "the real node to be visible", async || {
        resolver.node("n1").map(drop)
    })
    .await;
    assert_eq!(resolver.nodes().len(), 1);
    reg.deregister().await.unwrap();
    client
        .delete(
            service_prefix(&service),
            Some(DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
}
