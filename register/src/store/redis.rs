//! Tokens and sessions in Redis.
//!
//! Keys (all under a configurable prefix, default `fc:`):
//! - `<prefix>token:<sha256(token) in hex>` → `"<user_id>:<expires_at_ms>"`,
//!   with a TTL of the token's lifetime plus the grace period (see
//!   `crate::token`); only a digest is stored, so a copy of Redis's data
//!   does not hand out live tokens;
//! - `<prefix>sessions:<user_id>` → a hash, device id → JSON
//!   `{"node", "push", "conn", "expires"}` (`conn` as a string: Lua's cjson
//!   reads numbers as doubles and would round large connection ids).
//!
//! A session lives for the session lifetime from its last record or refresh
//! (`expires`, ms since the epoch); the access node holding the connection
//! refreshes it well within that. A session whose node died, or whose login
//! failed after it was recorded, is refreshed by nobody: it stops being
//! listed once it expires, and the hash goes with its last live session
//! (its TTL is set to the lifetime at every record and refresh).
//!
//! Replacing and compare-and-deleting a session run as Lua scripts, so each
//! is one atomic step even when two connections of a device race.
//!
//! Announcements (`crate::announce`) are PUBLISHed on the same connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Attempts, Sessions, Tokens, Touched};
use crate::announce::Announcer;
use crate::error::StoreError;
use crate::model::{Session, TokenRecord, UserId};

/// How long a command may take before it fails as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a session lives unless refreshed, by default: three of the
/// access nodes' default refresh intervals (60 s).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(180);

/// Sets a device's session and returns the one it overwrote (nil if none);
/// the hash lives ARGV[3] ms more. The session is also listed under its node
/// (KEYS[2] gets member ARGV[4]) and the node among those holding sessions
/// (KEYS[3] gets ARGV[5]), so the sessions of a node that died can be found.
const RECORD_SCRIPT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return old
";

/// Deletes a device's session only if it still names node ARGV[2] and
/// connection ARGV[3], and then drops it (ARGV[4]) from its node's list KEYS[2].
const REMOVE_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, s = pcall(cjson.decode, cur)
if ok and s.node == ARGV[2] and s.conn == ARGV[3] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  return 1
end
return 0
";

/// Forgets listed sessions of the dead node ARGV[1]: for each i, the session
/// of device ARGV[i+1] in hash KEYS[i+1] is deleted if it still names the
/// node, and member ARGV[i+1+n] leaves the node's list KEYS[1] either way
/// (n = #KEYS - 1). Returns 1 or 0 per session: deleted or not.
const FORGET_SCRIPT: &str = r"
local n = #KEYS - 1
local deleted = {}
for i = 1, n do
  deleted[i] = 0
  local cur = redis.call('HGET', KEYS[i + 1], ARGV[i + 1])
  if cur then
    local ok, s = pcall(cjson.decode, cur)
    if ok and s.node == ARGV[1] then
      redis.call('HDEL', KEYS[i + 1], ARGV[i + 1])
      deleted[i] = 1
    end
  end
  redis.call('SREM', KEYS[1], ARGV[i + 1 + n])
end
return deleted
";

/// Drops node ARGV[1] from those holding sessions (KEYS[2]) once its list
/// KEYS[1] is empty: a session recorded meanwhile keeps it listed.
const FORGOTTEN_SCRIPT: &str = r"
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
";

/// Counts one more in KEYS[1], whose window of ARGV[1] ms starts with its
/// first count.
const COUNT_SCRIPT: &str = r"
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
";

/// Sessions of a dead node forgotten per round trip.
const FORGET_CHUNK: isize = 256;

/// Sessions touched per round trip: one script run holds Redis for its
/// whole length, so a large batch of heartbeats is split.
const TOUCH_CHUNK: usize = 512;

/// Re-records sessions, each unless another live connection holds its
/// device. KEYS[1] is the set of nodes with sessions; session i has its
/// user's hash in KEYS[2i] and its node's list in KEYS[2i+1], and five
/// arguments from ARGV[2 + 5(i-1) + 1]: device, encoded session, node,
/// connection id and list member. ARGV[1] is now and ARGV[2] the hash's
/// time to live, in ms. Answers per session 0 when another connection holds
/// the device, 1 when this one was the recorded one, 2 when the device had
/// no live session (none, or one expired before now) and now has this one;
/// a recorded session is listed as in `RECORD_SCRIPT`.
const TOUCH_SCRIPT: &str = r"
local now, ttl = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local hash, list = KEYS[2 * i], KEYS[2 * i + 1]
  local a = 2 + 5 * (i - 1)
  local device, node, conn = ARGV[a + 1], ARGV[a + 3], ARGV[a + 4]
  local was = 2
  local cur = redis.call('HGET', hash, device)
  if cur then
    local ok, s = pcall(cjson.decode, cur)
    if ok and s.node == node and s.conn == conn then
      was = 1
    elseif not (ok and s.expires and s.expires < now) then
      was = 0
    end
  end
  if was ~= 0 then
    redis.call('HSET', hash, device, ARGV[a + 2])
    redis.call('PEXPIRE', hash, ttl)
    redis.call('SADD', list, ARGV[a + 5])
    redis.call('SADD', KEYS[1], node)
  end
  out[i] = was
end
return out
";

/// One device's session as stored in its user's hash.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    node: String,
    push: String,
    conn: String,
    /// Absent in sessions written before sessions expired: live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

/// Tokens and sessions under one key prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    session_ttl: Duration,
    record: Script,
    remove: Script,
    touch: Script,
    forget: Script,
    forgotten: Script,
    count: Script,
}

impl RedisStore {
    /// Connects to `url`; the connection reconnects by itself after failures.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
            record: Script::new(RECORD_SCRIPT),
            remove: Script::new(REMOVE_SCRIPT),
            touch: Script::new(TOUCH_SCRIPT),
            forget: Script::new(FORGET_SCRIPT),
            forgotten: Script::new(FORGOTTEN_SCRIPT),
            count: Script::new(COUNT_SCRIPT),
        })
    }

    /// Sessions live `ttl` from their last record or refresh (at least 1 ms).
    pub fn with_session_ttl(self, ttl: Duration) -> Self {
        Self {
            session_ttl: ttl.max(Duration::from_millis(1)),
            ..self
        }
    }

    fn session_ttl_ms(&self) -> u64 {
        u64::try_from(self.session_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The key of a token's record.
    pub fn token_key(&self, token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}token:{hex}", self.prefix)
    }

    /// The key of a user's session hash.
    pub fn sessions_key(&self, user: UserId) -> String {
        format!("{}sessions:{user}", self.prefix)
    }

    /// The set listing the sessions `node` recorded, as `<user>:<device>`.
    fn node_sessions_key(&self, node: &str) -> String {
        format!("{}node-sessions:{node}", self.prefix)
    }

    /// Where the count of `key` (see [`Attempts`]) is kept.
    fn attempts_key(&self, key: &str) -> String {
        format!("{}attempts:{key}", self.prefix)
    }

    /// The set of nodes that recorded sessions.
    fn session_nodes_key(&self) -> String {
        format!("{}session-nodes", self.prefix)
    }

    async fn put_token(
        &self,
        token: &str,
        record: TokenRecord,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let value = format!("{}:{}", record.user_id, record.expires_at_ms);
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        conn.pset_ex::<_, _, ()>(self.token_key(token), value, keep_ms)
            .await
            .map_err(backend)
    }

    async fn get_token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(self.token_key(token)).await.map_err(backend)?;
        value.map(|v| parse_token_record(&v)).transpose()
    }

    async fn delete_token(&self, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn.del(self.token_key(token)).await.map_err(backend)?;
        Ok(removed > 0)
    }

    async fn record_session(&self, session: &Session) -> Result<Option<Session>, StoreError> {
        let ttl = self.session_ttl_ms();
        let value = encode_session(session, now_ms().saturating_add(ttl))?;
        let mut conn = self.conn.clone();
        let old: Option<String> = self
            .record
            .key(self.sessions_key(session.user_id))
            .key(self.node_sessions_key(&session.access_node_id))
            .key(self.session_nodes_key())
            .arg(&session.device_id)
            .arg(value)
            .arg(ttl)
            .arg(node_member(session.user_id, &session.device_id))
            .arg(&session.access_node_id)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        old.map(|old| decode_session(session.user_id, &session.device_id, &old))
            .transpose()
    }

    async fn remove_session(
        &self,
        user: UserId,
        device: &str,
        node: &str,
        conn_id: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .remove
            .key(self.sessions_key(user))
            .key(self.node_sessions_key(node))
            .arg(device)
            .arg(node)
            .arg(conn_id.to_string())
            .arg(node_member(user, device))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(removed == 1)
    }

    async fn touch_sessions(&self, sessions: &[Session]) -> Result<Vec<Touched>, StoreError> {
        let (now, ttl) = (now_ms(), self.session_ttl_ms());
        let mut touched = Vec::with_capacity(sessions.len());
        for chunk in sessions.chunks(TOUCH_CHUNK) {
            let mut invocation = self.touch.prepare_invoke();
            invocation.key(self.session_nodes_key()).arg(now).arg(ttl);
            for session in chunk {
                invocation
                    .key(self.sessions_key(session.user_id))
                    .key(self.node_sessions_key(&session.access_node_id))
                    .arg(&session.device_id)
                    .arg(encode_session(session, now.saturating_add(ttl))?)
                    .arg(&session.access_node_id)
                    .arg(session.conn_id.to_string())
                    .arg(node_member(session.user_id, &session.device_id));
            }
            let mut conn = self.conn.clone();
            let found: Vec<i64> = invocation.invoke_async(&mut conn).await.map_err(backend)?;
            if found.len() != chunk.len() {
                return Err(StoreError::corrupt(format!(
                    "the touch script answered {} results for {} sessions",
                    found.len(),
                    chunk.len()
                )));
            }
            for was in found {
                touched.push(match was {
                    0 => Touched::Replaced,
                    1 => Touched::Current,
                    2 => Touched::Recorded,
                    other => {
                        return Err(StoreError::corrupt(format!(
                            "the touch script answered {other}"
                        )));
                    }
                });
            }
        }
        Ok(touched)
    }

    async fn publish_id(&self, channel: &str, id: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.publish::<_, _, i64>(channel, id.to_string())
            .await
            .map(drop)
            .map_err(backend)
    }

    async fn session_nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.session_nodes_key())
            .await
            .map_err(backend)
    }

    async fn forget_node(&self, node: &str) -> Result<Vec<UserId>, StoreError> {
        let list = self.node_sessions_key(node);
        let mut conn = self.conn.clone();
        let mut users = Vec::new();
        loop {
            let members: Vec<String> = conn
                .srandmember_multiple(&list, FORGET_CHUNK)
                .await
                .map_err(backend)?;
            if members.is_empty() {
                break;
            }
            let mut script = self.forget.key(&list);
            script.arg(node);
            let mut listed = Vec::with_capacity(members.len());
            for member in &members {
                // A member that does not parse was not written by us; it is
                // dropped from the list and deletes nothing.
                let (user, device) = parse_node_member(member).unwrap_or((0, ""));
                script.key(self.sessions_key(user)).arg(device);
                listed.push(user);
            }
            for member in &members {
                script.arg(member);
            }
            let deleted: Vec<i64> = script.invoke_async(&mut conn).await.map_err(backend)?;
            users.extend(
                listed
                    .into_iter()
                    .zip(deleted)
                    .filter(|(_, deleted)| *deleted == 1)
                    .map(|(user, _)| user),
            );
        }
        let _: i64 = self
            .forgotten
            .key(&list)
            .key(self.session_nodes_key())
            .arg(node)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        users.sort_unstable();
        users.dedup();
        Ok(users)
    }

    async fn attempt_counts(&self, keys: &[String]) -> Result<Vec<(u64, Duration)>, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            let key = self.attempts_key(key);
            pipe.get(&key).pttl(&key);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(Option<u64>, i64)> =
            pipe.query_async(&mut conn).await.map_err(backend)?;
        Ok(replies
            .into_iter()
            .map(|(count, left_ms)| {
                let left = u64::try_from(left_ms).unwrap_or(0);
                (count.unwrap_or(0), Duration::from_millis(left))
            })
            .collect())
    }

    async fn count_attempts(&self, keys: &[String], window: Duration) -> Result<(), StoreError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        for key in keys {
            let _: i64 = self
                .count
                .key(self.attempts_key(key))
                .arg(window_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn list_sessions(&self, users: &[UserId]) -> Result<Vec<Session>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hgetall(self.sessions_key(*user));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<Vec<(String, String)>> =
            pipe.query_async(&mut conn).await.map_err(backend)?;
        let now = now_ms();
        let mut sessions = Vec::new();
        for (user, devices) in users.iter().zip(hashes) {
            for (device, value) in devices {
                match decode_live_session(*user, &device, &value, now) {
                    Ok(Some(session)) => sessions.push(session),
                    Ok(None) => {}
                    // One bad entry must not hide the user's other devices.
                    Err(err) => tracing::warn!(user_id = user, device, %err, "skipping a session"),
                }
            }
        }
        Ok(sessions)
    }
}

impl Tokens for RedisStore {
    fn put<'a>(
        &'a self,
        token: &'a str,
        record: TokenRecord,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.put_token(token, record, keep).boxed()
    }

    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        self.get_token(token).boxed()
    }

    fn delete<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.delete_token(token).boxed()
    }
}

impl Sessions for RedisStore {
    fn record<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.record_session(session).boxed()
    }

    fn remove<'a>(
        &'a self,
        user: UserId,
        device: &'a str,
        node: &'a str,
        conn_id: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.remove_session(user, device, node, conn_id).boxed()
    }

    fn touch<'a>(
        &'a self,
        sessions: &'a [Session],
    ) -> BoxFuture<'a, Result<Vec<Touched>, StoreError>> {
        self.touch_sessions(sessions).boxed()
    }

    fn list<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        self.list_sessions(users).boxed()
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.session_nodes().boxed()
    }

    fn forget_node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<UserId>, StoreError>> {
        self.forget_node(node).boxed()
    }
}

/// How a session is listed under its node.
fn node_member(user: UserId, device: &str) -> String {
    format!("{user}:{device}")
}

/// The user and device of a node's list member (a device may hold ':').
fn parse_node_member(member: &str) -> Option<(UserId, &str)> {
    let (user, device) = member.split_once(':')?;
    Some((user.parse().ok()?, device))
}

impl Attempts for RedisStore {
    fn counts<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(u64, Duration)>, StoreError>> {
        self.attempt_counts(keys).boxed()
    }

    fn count<'a>(
        &'a self,
        keys: &'a [String],
        window: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.count_attempts(keys, window).boxed()
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = self.attempts_key(key);
        async move {
            let mut conn = self.conn.clone();
            conn.del::<_, ()>(key).await.map_err(backend)
        }
        .boxed()
    }
}

impl Announcer for RedisStore {
    fn publish(&self, channel: &'static str, id: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.publish_id(channel, id).boxed()
    }
}

fn backend(err: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(err))
}

fn parse_token_record(value: &str) -> Result<TokenRecord, StoreError> {
    let corrupt = || StoreError::corrupt(format!("token record {value:?} does not parse"));
    let (user, expires) = value.split_once(':').ok_or_else(corrupt)?;
    Ok(TokenRecord {
        user_id: user.parse().map_err(|_| corrupt())?,
        expires_at_ms: expires.parse().map_err(|_| corrupt())?,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode_session(session: &Session, expires_ms: u64) -> Result<String, StoreError> {
    let stored = StoredSession {
        node: session.access_node_id.clone(),
        push: session.push_addr.clone(),
        conn: session.conn_id.to_string(),
        expires: Some(expires_ms),
    };
    serde_json::to_string(&stored)
        .map_err(|err| StoreError::corrupt(format!("session encoding: {err}")))
}

fn decode_stored(value: &str) -> Result<StoredSession, StoreError> {
    serde_json::from_str(value)
        .map_err(|err| StoreError::corrupt(format!("session {value:?}: {err}")))
}

fn decode_session(user_id: UserId, device: &str, value: &str) -> Result<Session, StoreError> {
    let stored = decode_stored(value)?;
    Ok(Session {
        user_id,
        device_id: device.to_owned(),
        access_node_id: stored.node,
        push_addr: stored.push,
        conn_id: stored
            .conn
            .parse()
            .map_err(|_| StoreError::corrupt(format!("session conn {:?}", stored.conn)))?,
    })
}

/// The session in `value` unless it expired before `now_ms`.
fn decode_live_session(
    user_id: UserId,
    device: &str,
    value: &str,
    now_ms: u64,
) -> Result<Option<Session>, StoreError> {
    if decode_stored(value)?
        .expires
        .is_some_and(|expires| expires < now_ms)
    {
        return Ok(None);
    }
    decode_session(user_id, device, value).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_records_round_trip_and_reject_garbage() {
        let record = parse_token_record("42:1700000000000").expect("parses");
        assert_eq!(record.user_id, 42);
        assert_eq!(record.expires_at_ms, 1_700_000_000_000);
        assert!(parse_token_record("42").is_err());
        assert!(parse_token_record("x:1").is_err());
    }

    #[test]
    fn large_connection_ids_survive_encoding() {
        let value = r#"{"node":"a","push":"p","conn":"18446744073709551615"}"#;
        let session = decode_session(1, "d", value).expect("decodes");
        assert_eq!(session.conn_id, u64::MAX);
    }
}
