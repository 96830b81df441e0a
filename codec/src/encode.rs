//! Frame encoder.
//!
//! Encoding writes the length, the header and the protobuf body straight into
//! the caller's buffer: no temporary body buffer. A frame meant for many
//! connections (a group push) is encoded once into its own buffer, frozen into
//! `Bytes`, and the same bytes are queued on every connection.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::frame::{HEADER_LEN, Header, LENGTH_LEN};
use crate::pb::Command;

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// Header plus body would exceed the maximum frame length.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Header plus encoded body.
        len: usize,
        /// The maximum frame length.
        max: u32,
    },
}

/// Appends one frame (`command`, `request_id`, `body`) to `dst`.
///
/// Fails, writing nothing, when the frame would be longer than `max_frame_len`
/// (the peer's decoder would refuse it).
pub fn encode_frame(
    command: Command,
    request_id: u32,
    body: &impl prost::Message,
    max_frame_len: u32,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let len = HEADER_LEN + body.encoded_len();
    if len > max_frame_len as usize {
        return Err(EncodeError::TooLarge {
            len,
            max: max_frame_len,
        });
    }
    dst.reserve(LENGTH_LEN + len);
    // `len` is at most `max_frame_len`, a u32, so the cast is exact.
    dst.put_u32(len as u32);
    Header {
        command,
        request_id,
    }
    .put(dst);
    body.encode_raw(dst);
    Ok(())
}

/// Encodes one frame into a buffer of exactly its size and freezes it, ready to
/// be shared by many connections.
pub fn encode_frame_to_bytes(
    command: Command,
    request_id: u32,
    body: &impl prost::Message,
    max_frame_len: u32,
) -> Result<Bytes, EncodeError> {
    let mut dst = BytesMut::with_capacity(LENGTH_LEN + HEADER_LEN + body.encoded_len());
    encode_frame(command, request_id, body, max_frame_len, &mut dst)?;
    Ok(dst.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Ping;

    #[test]
    fn too_large_writes_nothing() {
        let body = crate::pb::SendToUser {
            client_msg_id: "c".into(),
            to_user_id: 2,
            body: Bytes::from(vec![7u8; 100]),
        };
        let mut dst = BytesMut::new();
        let err = encode_frame(Command::SendToUser, 1, &body, 64, &mut dst).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { max: 64, .. }));
        assert!(dst.is_empty());
    }

    #[test]
    fn exact_size_buffer_is_not_reallocated() {
        let ping = Ping { client_time_ms: 5 };
        let bytes = encode_frame_to_bytes(Command::Ping, 3, &ping, 1024).unwrap();
        assert_eq!(bytes.len(), LENGTH_LEN + HEADER_LEN + 2);
        assert_eq!(&bytes[..12], &[0, 0, 0, 10, 1, 0, 0, 3, 0, 0, 0, 3]);
    }
}
