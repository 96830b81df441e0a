//! etcd smoke tests: FishChat registers live nodes as keys bound to a lease, so the registry is
//! only right if a kept-alive lease outlives its TTL, a revoked or abandoned lease deletes its keys,
//! and watchers see both the registration and the removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Event, EventType, GetOptions, PutOptions, WatchOptions, WatchStream};
use fishchat_e2e::{etcd, unique_name};

/// The lease TTL asked for, in seconds: short so the tests are quick, but at or above etcd's
/// minimum lease TTL (about 1.5 s with default election settings), which etcd would silently raise.
const TTL_SECS: i64 = 2;

/// Opens a watch on every key under `prefix` and waits until etcd confirms it, so no event that
/// follows can be missed.
async fn watch_prefix(client: &mut Client, prefix: &str) -> WatchStream {
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .expect("open a watch");
    let created = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("etcd did not confirm the watch within 5 s")
        .expect("watch stream failed")
        .expect("watch stream ended before confirming");
    assert!(
        created.created(),
        "first watch response must confirm creation"
    );
    stream
}

/// Waits for the next event of `kind` on `key`, skipping unrelated ones, and fails after `deadline`.
async fn next_event(
    stream: &mut WatchStream,
    kind: EventType,
    key: &str,
    deadline: Duration,
) -> Event {
    tokio::time::timeout(deadline, any_event(stream, kind, key))
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event for {key} within {deadline:?}"))
}

/// The next `kind` event for exactly `key`, however long it takes.
async fn any_event(stream: &mut WatchStream, kind: EventType, key: &str) -> Event {
    loop {
        let response = stream
            .message()
            .await
            .expect("watch stream failed")
            .expect("watch stream ended");
        assert!(!response.canceled(), "watch was canceled by etcd");
        if let Some(event) = response
            .events()
            .iter()
            .find(|e| e.event_type() == kind && e.kv().is_some_and(|kv| kv.key() == key.as_bytes()))
        {
            return event.clone();
        }
    }
}

/// How many copies of `key` etcd holds right now (0 or 1).
async fn count(client: &mut Client, key: &str) -> i64 {
    client
        .get(key, Some(GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_lease_outlives_ttl_and_revoke_deletes_key() {
    let mut client = etcd().await;
    let prefix = format!("{}/", unique_name("/fishchat-e2e/etcd-keepalive"));
    let key = format!("{prefix}node-1");
    let mut watch = watch_prefix(&mut client, &prefix).await;

    let lease = client.lease_grant(TTL_SECS, None).await.expect("grant");
    let ttl = Duration::from_secs(u64::try_from(lease.ttl()).expect("positive TTL"));
    assert!(lease.ttl() >= TTL_SECS, "granted TTL {} s", lease.ttl());
    client
        .put(
            key.as_str(),
            "127.0.0.1:7000",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put with lease");

    let put = next_event(&mut watch, EventType::Put, &key, Duration::from_secs(5)).await;
    let kv = put.kv().expect("put event carries the key");
    assert_eq!(kv.value(), b"127.0.0.1:7000");
    assert_eq!(
        kv.lease(),
        lease.id(),
        "the watched key is bound to the lease"
    );

    // Keep the lease alive the way a node would: a refresh every third of the TTL, each answered
    // with a renewed positive TTL.
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease.id())
        .await
        .expect("keep alive");
    let renewals = Arc::new(AtomicU64::new(0));
    let keep_alive = tokio::spawn({
        let renewals = Arc::clone(&renewals);
        async move {
            // Renew three times per TTL, as a service's keep-alive task does.
            let mut every = tokio::time::interval(ttl / 3);
            loop {
                every.tick().await;
                keeper.keep_alive().await.expect("send keep-alive");
                let answer = responses
                    .message()
                    .await
                    .expect("keep-alive stream failed")
                    .expect("keep-alive stream ended");
                assert!(answer.ttl() > 0, "etcd says the lease is gone");
                renewals.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // Across more than twice the TTL the watch must see no delete of the key.
    let span = ttl * 2 + Duration::from_millis(500);
    let deleted = tokio::time::timeout(span, any_event(&mut watch, EventType::Delete, &key)).await;
    assert!(
        deleted.is_err(),
        "key deleted although its lease is kept alive"
    );
    assert_eq!(count(&mut client, &key).await, 1);
    assert!(
        !keep_alive.is_finished(),
        "the keep-alive task stopped early"
    );
    keep_alive.abort();
    assert!(
        renewals.load(Ordering::Relaxed) >= 4,
        "only {} renewals in {span:?}",
        renewals.load(Ordering::Relaxed)
    );

    client.lease_revoke(lease.id()).await.expect("revoke");
    next_event(&mut watch, EventType::Delete, &key, Duration::from_secs(5)).await;
    assert_eq!(
        count(&mut client, &key).await,
        0,
        "revoked lease left its key behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lease_expires_and_deletes_key() {
    let mut client = etcd().await;
    let prefix = format!("{}/", unique_name("/fishchat-e2e/etcd-expiry"));
    let key = format!("{prefix}node-1");
    let mut watch = watch_prefix(&mut client, &prefix).await;

    let granted_at = Instant::now();
    let lease = client.lease_grant(TTL_SECS, None).await.expect("grant");
    let ttl = Duration::from_secs(u64::try_from(lease.ttl()).expect("positive TTL"));
    client
        .put(
            key.as_str(),
            "127.0.0.1:7001",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put with lease");
    assert_eq!(
        count(&mut client, &key).await,
        1,
        "key missing right after the put"
    );

    // etcd checks for expired leases every 500 ms and only the leader expires them, so allow the
    // TTL plus a generous margin.
    next_event(
        &mut watch,
        EventType::Delete,
        &key,
        ttl + Duration::from_secs(5),
    )
    .await;
    let expired_after = granted_at.elapsed();
    assert!(
        expired_after + Duration::from_millis(100) >= ttl,
        "key deleted after {expired_after:?}, before the {ttl:?} TTL ran out"
    );
    assert_eq!(
        count(&mut client, &key).await,
        0,
        "expired lease left its key behind"
    );
}
