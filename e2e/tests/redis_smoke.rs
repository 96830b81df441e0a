//! Redis smoke test: FishChat keeps short-lived state (sessions, dedup marks) in keys with a
//! millisecond TTL, so a key must exist with its TTL set and then disappear on its own.

use std::time::{Duration, Instant};

use fishchat_e2e::{redis, unique_name};
use redis::AsyncCommands;

/// The TTL given to the key: short so the test is quick, long enough to observe the key first.
const TTL_MS: i64 = 300;

#[tokio::test]
async fn key_with_px_ttl_exists_then_expires() {
    let mut conn = redis().await;
    let key = unique_name("fishchat-e2e:redis:px");

    let set_at = Instant::now();
    let reply: String = ::redis::cmd("SET")
        .arg(&key)
        .arg("online")
        .arg("PX")
        .arg(TTL_MS)
        .query_async(&mut conn)
        .await
        .expect("SET PX");
    assert_eq!(reply, "OK");

    let value: Option<String> = conn.get(&key).await.expect("GET");
    assert_eq!(
        value.as_deref(),
        Some("online"),
        "key missing right after SET"
    );
    let pttl: i64 = conn.pttl(&key).await.expect("PTTL");
    assert!(
        pttl > 0 && pttl <= TTL_MS,
        "PTTL {pttl} ms: the TTL was not set as asked ({TTL_MS} ms)"
    );

    fishchat_e2e::wait_until(Duration::from_secs(3), "the key to expire", async || {
        let exists: bool = conn.exists(&key).await.expect("EXISTS");
        (!exists).then_some(())
    })
    .await;
    let expired_after = set_at.elapsed();
    assert!(
        expired_after >= Duration::from_millis(u64::try_from(TTL_MS).expect("positive")),
        "key gone after {expired_after:?}, before its TTL"
    );
    let pttl: i64 = conn.pttl(&key).await.expect("PTTL");
    assert_eq!(pttl, -2, "Redis still reports a TTL for the expired key");
    let value: Option<String> = conn.get(&key).await.expect("GET");
    assert_eq!(value, None);
}
