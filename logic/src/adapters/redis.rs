//! Deduplication records and message ids in Redis.

use std::ops::Range;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use crate::ports::{Accepted, Claim, Dedup, IdSource, Refusal};

/// Dedup records `<prefix>dedup:<sender>:<client id>` → `<id>:<timestamp>:<fingerprint>`,
/// written with one atomic `SET NX GET` so two concurrent resends cannot both
/// win; they expire after `ttl_secs` (a client resends within minutes, not days).
#[derive(Clone)]
pub struct RedisDedup {
    conn: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
}

impl RedisDedup {
    /// Dedup records under `prefix`, kept `ttl_secs`.
    pub fn new(conn: ConnectionManager, prefix: &str, ttl_secs: u64) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            ttl_secs,
        }
    }
}

impl Dedup for RedisDedup {
    /// One pipelined round trip for the whole batch; Redis runs the commands
    /// in order, so of two claims of one key the first wins.
    async fn claim(&self, claims: &[Claim<'_>]) -> Vec<Result<Accepted, Refusal>> {
        if claims.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = claims
            .iter()
            .map(|c| format!("{}dedup:{}:{}", self.prefix, c.sender, c.client_msg_id))
            .collect();
        let mut pipe = redis::pipe();
        for (key, claim) in keys.iter().zip(claims) {
            let c = claim.candidate;
            pipe.cmd("SET")
                .arg(key)
                .arg(format!(
                    "{}:{}:{}",
                    c.server_msg_id, c.timestamp_ms, c.fingerprint
                ))
                .arg("NX")
                .arg("GET")
                .arg("EX")
                .arg(self.ttl_secs);
        }
        let previous: Vec<Option<String>> = match pipe.query_async(&mut self.conn.clone()).await {
            Ok(previous) => previous,
            Err(err) => {
                let refusal = Refusal::unavailable("redis dedup", err);
                return vec![Err(refusal); claims.len()];
            }
        };
        if previous.len() != claims.len() {
            let refusal = Refusal::new(
                fishchat_codec::ErrorCode::Internal,
                format!(
                    "redis answered {} of {} dedup claims",
                    previous.len(),
                    claims.len()
                ),
            );
            return vec![Err(refusal); claims.len()];
        }
        previous
            .into_iter()
            .zip(claims.iter().zip(&keys))
            .map(|(previous, (claim, key))| match previous {
                None => Ok(claim.candidate),
                Some(previous) => parse_accepted(&previous).ok_or_else(|| {
                    Refusal::new(
                        fishchat_codec::ErrorCode::Internal,
                        format!("corrupt dedup record {key}"),
                    )
                }),
            })
            .collect()
    }
}

fn parse_accepted(value: &str) -> Option<Accepted> {
    let mut parts = value.split(':');
    let accepted = Accepted {
        server_msg_id: parts.next()?.parse().ok()?,
        timestamp_ms: parts.next()?.parse().ok()?,
        fingerprint: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(accepted)
}

/// Message ids from one Redis counter, `<prefix>msg_id`, taken in blocks so
/// that most ids cost no round trip. Ids are unique across nodes; they are
/// not ordered across nodes (inbox order is the seq, not the id).
///
/// The counter never runs below [`IDS_PER_MS`] × the current Unix time in
/// milliseconds. If Redis loses the counter (a restart without persistence, a
/// failover), new ids still start above every id handed out before, as long as
/// fewer than that many ids per millisecond were taken on average. Without
/// the floor, a reset counter would reuse ids, and msg_job, which treats an id
/// already in an inbox as a redelivery, would drop the new messages.
pub struct RedisIds {
    conn: ConnectionManager,
    key: String,
    block: u64,
    range: Mutex<Range<u64>>,
}

impl RedisIds {
    /// Ids from `<prefix>msg_id`, reserved `block` at a time.
    pub fn new(conn: ConnectionManager, prefix: &str, block: u64) -> Self {
        Self {
            conn,
            key: format!("{prefix}msg_id"),
            block: block.max(1),
            range: Mutex::new(0..0),
        }
    }
}

/// Ids the time floor leaves room for per millisecond (about a million per second).
pub const IDS_PER_MS: u64 = 1024;

/// INCRBY, lifted to the time floor when below it (KEYS[1] counter, ARGV block, floor).
const NEXT_BLOCK: &str = r"
local high = redis.call('INCRBY', KEYS[1], ARGV[1])
local floor = tonumber(ARGV[2]) + tonumber(ARGV[1])
if high < floor then
  redis.call('SET', KEYS[1], floor)
  high = floor
end
return high
";

fn time_floor() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms * IDS_PER_MS
}

impl IdSource for RedisIds {
    async fn next_id(&self) -> Result<u64, Refusal> {
        let mut range = self.range.lock().await;
        if range.is_empty() {
            let high: u64 = redis::Script::new(NEXT_BLOCK)
                .key(&self.key)
                .arg(self.block)
                .arg(time_floor())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|err| Refusal::unavailable("redis ids", err))?;
            *range = (high + 1 - self.block)..(high + 1);
        }
        let id = range.start;
        range.start += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_values_parse_or_fail_cleanly() {
        assert_eq!(
            parse_accepted("12:34:56"),
            Some(Accepted {
                server_msg_id: 12,
                timestamp_ms: 34,
                fingerprint: 56,
            })
        );
        for bad in [
            "", "12", "12:34", "x:1:2", "1:y:2", "1:2:z", "1:2:3:4", "::",
        ] {
            assert_eq!(parse_accepted(bad), None, "{bad}");
        }
    }
}
