//! Login tokens: how they are made and when they are accepted.
//!
//! A token is 256 random bits from the OS, hex-encoded. Its record (user and
//! expiry instant) lives in Redis under a key that outlives the expiry by a
//! grace period: a token presented after `expires_at_ms` but within the grace
//! period is still found and reported as EXPIRED (the client should log in
//! again), while one never issued, revoked (its key deleted) or expired
//! longer than the grace period ago is not found and reported as BAD_TOKEN.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::error::Error;
use crate::model::{TokenRecord, UserId};

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Longest string looked up as a token; longer ones cannot be ours.
pub const MAX_TOKEN_LEN: usize = TOKEN_BYTES * 2;

/// A fresh random token.
pub fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| Error::Internal(format!("no OS randomness for a token: {err}")))?;
    let mut token = String::with_capacity(MAX_TOKEN_LEN);
    for byte in bytes {
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

/// The current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The record of a token issued for `user_id` at `now_ms`, valid for `ttl`.
pub fn record_for(user_id: UserId, now_ms: i64, ttl: Duration) -> TokenRecord {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    TokenRecord {
        user_id,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    }
}

/// The user a found token stands for at `now_ms`, or EXPIRED.
pub fn check(record: TokenRecord, now_ms: i64) -> Result<UserId, Error> {
    if now_ms >= record.expires_at_ms {
        Err(Error::TokenExpired)
    } else {
        Ok(record.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_hex() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_eq!(a.len(), MAX_TOKEN_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn expiry_is_exclusive() {
        let record = record_for(7, 1_000, Duration::from_millis(500));
        assert_eq!(record.expires_at_ms, 1_500);
        assert_eq!(check(record, 1_499).expect("valid"), 7);
        assert!(matches!(check(record, 1_500), Err(Error::TokenExpired)));
    }
}
