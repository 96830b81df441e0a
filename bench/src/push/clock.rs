//! The send time a pushed message carries in its body: microseconds since the
//! Unix epoch, big-endian, in the first 8 bytes (driver and receivers are one
//! process, so they read the same clock).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the time stamp.
pub const STAMP_LEN: usize = 8;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A message body of `len` bytes (at least the stamp) stamped with `at_us`.
pub fn stamped(at_us: u64, len: usize) -> Bytes {
    let mut body = BytesMut::with_capacity(len.max(STAMP_LEN));
    body.put_u64(at_us);
    body.resize(len.max(STAMP_LEN), b'x');
    body.freeze()
}

/// The stamp of a body, if it has one.
pub fn sent_us(body: &[u8]) -> Option<u64> {
    let stamp: [u8; STAMP_LEN] = body.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_whatever_the_body_length() {
        assert_eq!(sent_us(&stamped(42, 3)), Some(42));
        let body = stamped(7, 100);
        assert_eq!(body.len(), 100);
        assert_eq!(sent_us(&body), Some(7));
        assert_eq!(sent_us(b"short"), None);
    }
}
