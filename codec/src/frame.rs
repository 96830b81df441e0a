//! The frame layout: a length prefix, a fixed header, a protobuf body.
//!
//! ```text
//! 0       4       5       6               8                      12
//! +-------+-------+-------+---------------+-----------------------+---------
//! | length (u32)  |version| flags |command (u16)|   request_id (u32)    | body ...
//! +-------+-------+-------+---------------+-----------------------+---------
//! ```
//!
//! All integers are big-endian. `length` counts the header and the body, not
//! itself, so the smallest frame has `length == HEADER_LEN`.

use bytes::{Buf, BufMut, Bytes};

use crate::pb::Command;

/// Bytes of the length prefix.
pub const LENGTH_LEN: usize = 4;
/// Bytes of the fixed header that follows the length prefix.
pub const HEADER_LEN: usize = 8;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The default cap on a frame's `length` field (header + body): 64 KiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024;

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the body is and what to do with it.
    pub command: Command,
    /// Chosen by the requester and echoed in the reply; 0 on unprompted frames.
    pub request_id: u32,
}

impl Header {
    /// Writes the header (without the length prefix) into `dst`.
    pub(crate) fn put(&self, dst: &mut impl BufMut) {
        dst.put_u8(VERSION);
        dst.put_u8(0);
        // Command values are defined in the .proto below 2^16; the cast cannot truncate.
        dst.put_u16(self.command as i32 as u16);
        dst.put_u32(self.request_id);
    }

    /// Reads the raw header fields from exactly [`HEADER_LEN`] bytes.
    pub(crate) fn raw(mut src: &[u8]) -> RawHeader {
        RawHeader {
            version: src.get_u8(),
            flags: src.get_u8(),
            command: src.get_u16(),
            request_id: src.get_u32(),
        }
    }
}

/// Header fields before validation.
pub(crate) struct RawHeader {
    pub(crate) version: u8,
    pub(crate) flags: u8,
    pub(crate) command: u16,
    pub(crate) request_id: u32,
}

/// One decoded frame: its header and its still-encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header.
    pub header: Header,
    /// The protobuf body, a slice of the connection's read buffer.
    pub body: Bytes,
}
