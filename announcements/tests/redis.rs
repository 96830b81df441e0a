//! The subscription against the real Redis: an announced id leaves the cache,
//! and a subscription that cannot be made keeps the cache from caching.

use std::sync::Arc;
use std::time::Duration;

use fishchat_announcements::{AnnouncedCache, listen};
use redis::AsyncCommands;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_announced_id_is_dropped_from_the_cache() {
    let channel: &'static str = Box::leak(fishchat_e2e::unique_name("announce").into_boxed_str());
    let cache = Arc::new(AnnouncedCache::<u32>::new(Duration::from_secs(60), 1000));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(listen(
        fishchat_e2e::redis_url(),
        channel,
        Arc::clone(&cache),
        stopped,
    ));
    fishchat_e2e::wait_until(DEADLINE, "subscribed", || async {
        cache.is_live().then_some(())
    })
    .await;
    cache.fill(cache.ticket(), [(7, 1), (8, 2)]);
    let mut redis = fishchat_e2e::redis().await;
    let _: i64 = redis.publish(channel, "7").await.expect("publish");
    fishchat_e2e::wait_until(DEADLINE, "7 dropped", || async {
        cache.get(7).is_none().then_some(())
    })
    .await;
    assert_eq!(cache.get(8), Some(2), "other ids stay");
    let _: i64 = redis.publish(channel, "not an id").await.expect("publish");
    fishchat_e2e::wait_until(DEADLINE, "emptied on garbage", || async {
        cache.get(8).is_none().then_some(())
    })
    .await;
    stop.send_replace(true);
    task.await.expect("listener");
    assert!(!cache.is_live());
}

#[tokio::test]
async fn nothing_is_cached_while_redis_cannot_be_reached() {
    let cache = Arc::new(AnnouncedCache::<u32>::new(Duration::from_secs(60), 1000));
    let (stop, stopped) = watch::channel(false);
    // Port 1 on loopback refuses connections at once.
    let task = tokio::spawn(listen(
        "redis://127.0.0.1:1".to_owned(),
        "fishchat:test",
        Arc::clone(&cache),
        stopped,
    ));
    cache.fill(cache.ticket(), [(1, 1)]);
    assert_eq!(cache.get(1), None);
    stop.send_replace(true);
    task.await.expect("listener");
}
