//! The subscription: register's announcements into a cache.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::cache::AnnouncedCache;

/// First pause after a lost subscription.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on the Redis at `redis_url` and drops the cache
/// entry of every id announced there, until `stop` turns true. The cache is
/// live only while subscribed; every (re)subscription starts it empty.
pub async fn listen<V: Clone + Send + 'static>(
    redis_url: String,
    channel: &'static str,
    cache: Arc<AnnouncedCache<V>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = RETRY_FIRST;
    loop {
        let ended = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            ended = subscribed(&redis_url, channel, &cache) => ended,
        };
        cache.reset(false);
        match ended {
            Ok(()) => {
                tracing::warn!(
                    channel,
                    "announcements ended; caching stops until resubscribed"
                );
                pause = RETRY_FIRST;
            }
            Err(err) => {
                tracing::warn!(channel, %err, retry_in = ?pause, "cannot subscribe to announcements")
            }
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    cache.reset(false);
}

/// One subscription, for as long as it lasts.
async fn subscribed<V: Clone>(
    redis_url: &str,
    channel: &str,
    cache: &AnnouncedCache<V>,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    cache.reset(true);
    tracing::info!(channel, "subscribed to announcements");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = match message.get_payload() {
            Ok(payload) => payload,
            Err(err) => {
                tracing::warn!(channel, %err, "an announcement is not text; emptying the cache");
                cache.reset(true);
                continue;
            }
        };
        match u64::from_str(payload.trim()) {
            Ok(id) => cache.announce(id),
            Err(_) => {
                tracing::warn!(channel, %payload, "an announcement is not an id; emptying the cache");
                cache.reset(true);
            }
        }
    }
    Ok(())
}
