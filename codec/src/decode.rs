//! Streaming frame decoder.
//!
//! The decoder keeps no state of its own: everything it needs is in the
//! caller's buffer, so one decoder serves every connection of an event loop and
//! an idle connection owes it nothing. It validates the length prefix and the
//! header as soon as their bytes arrive, before waiting for (or reserving room
//! for) the body, so a peer cannot make it allocate more than the cap.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::frame::{DEFAULT_MAX_FRAME_LEN, Frame, HEADER_LEN, Header, LENGTH_LEN, VERSION};
use crate::pb::{Command, ErrorCode};

/// Why a byte stream is not a valid frame stream. Every error is final for the
/// connection: the stream cannot be resynchronised after it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The length prefix claims more than the configured maximum.
    #[error("frame of {claimed} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The claimed length (header + body).
        claimed: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The length prefix is smaller than the fixed header.
    #[error("frame length {claimed} is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The claimed length.
        claimed: u32,
    },
    /// The header names a protocol version this decoder does not speak.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// Reserved header flags are set.
    #[error("reserved header flags {flags:#04x} are set")]
    ReservedFlags {
        /// The flags byte.
        flags: u8,
        /// The request id of the refused frame.
        request_id: u32,
    },
    /// The command code is not defined by the protocol.
    #[error("unknown command {command}")]
    UnknownCommand {
        /// The command code.
        command: u16,
        /// The request id of the refused frame.
        request_id: u32,
    },
}

impl DecodeError {
    /// The error code to report to the peer before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownCommand { .. } => ErrorCode::UnknownCommand,
            DecodeError::TooShort { .. }
            | DecodeError::BadVersion(_)
            | DecodeError::ReservedFlags { .. } => ErrorCode::BadFrame,
        }
    }

    /// The request id of the refused frame, for the ERROR that answers it: the
    /// frame's own when its header could be read in this protocol version, else 0.
    pub fn request_id(&self) -> u32 {
        match self {
            DecodeError::UnknownCommand { request_id, .. }
            | DecodeError::ReservedFlags { request_id, .. } => *request_id,
            DecodeError::TooLarge { .. }
            | DecodeError::TooShort { .. }
            | DecodeError::BadVersion(_) => 0,
        }
    }
}

/// Cuts frames out of a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames whose length field exceeds `max_frame_len`.
    /// The maximum is raised to at least [`HEADER_LEN`] so an empty body always fits.
    pub fn new(max_frame_len: u32) -> Self {
        Self {
            max_frame_len: max_frame_len.max(HEADER_LEN as u32),
        }
    }

    /// The largest length field this decoder accepts.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Takes the next complete frame off the front of `src`; its body is a
    /// slice of `src`'s buffer, so no byte is copied.
    ///
    /// Returns `Ok(None)` when more bytes are needed; in that case it may reserve
    /// room in `src` for the rest of the frame, never more than the maximum frame
    /// size. Bytes of later frames stay in `src`.
    ///
    /// While the body lives, `src`'s buffer cannot be reused: a reader that
    /// reuses one buffer for every read and hands bodies on (to wait for an
    /// answer, say) wants [`FrameDecoder::decode_copied`].
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((header, total)) = self.next_frame(src)? else {
            return Ok(None);
        };
        let mut frame = src.split_to(total);
        frame.advance(LENGTH_LEN + HEADER_LEN);
        Ok(Some(Frame {
            header,
            body: frame.freeze(),
        }))
    }

    /// As [`FrameDecoder::decode`], but the body is copied into a buffer of its
    /// own, so `src` keeps sole ownership of its buffer and can read into it
    /// again without allocating, however long the body is kept.
    pub fn decode_copied(&self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((header, total)) = self.next_frame(src)? else {
            return Ok(None);
        };
        let body = Bytes::copy_from_slice(&src[LENGTH_LEN + HEADER_LEN..total]);
        src.advance(total);
        Ok(Some(Frame { header, body }))
    }

    /// The header and the whole length (length field included) of the frame at
    /// the front of `src`, once all of it is there.
    fn next_frame(&self, src: &mut BytesMut) -> Result<Option<(Header, usize)>, DecodeError> {
        let Some(len_bytes) = src.get(..LENGTH_LEN) else {
            return Ok(None);
        };
        let claimed = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if claimed > self.max_frame_len {
            return Err(DecodeError::TooLarge {
                claimed,
                max: self.max_frame_len,
            });
        }
        if (claimed as usize) < HEADER_LEN {
            return Err(DecodeError::TooShort { claimed });
        }
        let header = match src.get(LENGTH_LEN..LENGTH_LEN + HEADER_LEN) {
            Some(bytes) => Some(validate(bytes)?),
            None => None,
        };
        let total = LENGTH_LEN + claimed as usize;
        let (Some(header), true) = (header, src.len() >= total) else {
            // `total` is bounded by the checked maximum, so this reservation is too.
            src.reserve(total - src.len());
            return Ok(None);
        };
        Ok(Some((header, total)))
    }
}

fn validate(bytes: &[u8]) -> Result<Header, DecodeError> {
    let raw = Header::raw(bytes);
    if raw.version != VERSION {
        return Err(DecodeError::BadVersion(raw.version));
    }
    if raw.flags != 0 {
        return Err(DecodeError::ReservedFlags {
            flags: raw.flags,
            request_id: raw.request_id,
        });
    }
    let command = match Command::try_from(i32::from(raw.command)) {
        Ok(Command::Unspecified) | Err(_) => {
            return Err(DecodeError::UnknownCommand {
                command: raw.command,
                request_id: raw.request_id,
            });
        }
        Ok(command) => command,
    };
    Ok(Header {
        command,
        request_id: raw.request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn too_large_is_refused_from_the_length_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let before = buf.capacity();
        let err = FrameDecoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                claimed: u32::MAX,
                max: 1024
            }
        );
        assert_eq!(buf.capacity(), before);
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn bad_header_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u32(1000);
        buf.put_slice(&[VERSION, 0, 0xff, 0xff, 0, 0, 0, 24]);
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownCommand {
                command: 0xffff,
                request_id: 24
            }
        );
        assert_eq!(err.request_id(), 24);

        let mut buf = BytesMut::new();
        buf.put_u32(8);
        buf.put_slice(&[2, 0, 0, 3, 0, 0, 0, 1]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf).unwrap_err(),
            DecodeError::BadVersion(2)
        );

        let mut buf = BytesMut::new();
        buf.put_u32(8);
        buf.put_slice(&[VERSION, 0x80, 0, 3, 0, 0, 0, 1]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf).unwrap_err(),
            DecodeError::ReservedFlags {
                flags: 0x80,
                request_id: 1
            }
        );
    }

    #[test]
    fn length_below_header_is_refused() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 7][..]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf).unwrap_err(),
            DecodeError::TooShort { claimed: 7 }
        );
    }

    #[test]
    fn command_zero_is_unknown() {
        let mut buf = BytesMut::new();
        buf.put_u32(8);
        buf.put_slice(&[VERSION, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf).unwrap_err(),
            DecodeError::UnknownCommand {
                command: 0,
                request_id: 1
            }
        );
    }

    #[test]
    fn partial_frame_waits_and_keeps_bytes() {
        let mut buf = BytesMut::new();
        buf.put_u32(10);
        buf.put_slice(&[VERSION, 0, 0, 3, 0, 0, 0, 9, 0xAA]);
        let decoder = FrameDecoder::default();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 13);
        buf.put_u8(0xBB);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.header.command, Command::Ping);
        assert_eq!(frame.header.request_id, 9);
        assert_eq!(&frame.body[..], &[0xAA, 0xBB]);
        assert!(buf.is_empty());
    }

    /// A read buffer of `capacity` holding two PING frames with 3-byte bodies.
    fn two_frames(capacity: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(capacity);
        for request_id in [1u8, 2] {
            buf.put_u32(11);
            buf.put_slice(&[VERSION, 0, 0, 3, 0, 0, 0, request_id, 7, 8, 9]);
        }
        buf
    }

    #[test]
    fn a_copied_body_leaves_the_buffer_free_to_read_into_again() {
        const CAPACITY: usize = 16 * 1024;
        let decoder = FrameDecoder::default();

        let mut buf = two_frames(CAPACITY);
        let first = decoder.decode_copied(&mut buf).unwrap().unwrap();
        let second = decoder.decode_copied(&mut buf).unwrap().unwrap();
        assert_eq!((first.header.request_id, second.header.request_id), (1, 2));
        assert_eq!(&first.body[..], &[7, 8, 9]);
        assert!(buf.is_empty());
        // Both bodies are still held, as requests waiting upstream would be.
        buf.clear();
        assert!(buf.try_reclaim(CAPACITY), "the whole buffer is reusable");

        // A body sliced out of the buffer pins it while it lives.
        let mut buf = two_frames(CAPACITY);
        let sliced = decoder.decode(&mut buf).unwrap().unwrap();
        decoder.decode(&mut buf).unwrap().unwrap();
        buf.clear();
        assert!(!buf.try_reclaim(CAPACITY), "a sliced body pins the buffer");
        assert_eq!(&sliced.body[..], &[7, 8, 9]);
    }
}
