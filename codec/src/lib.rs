//! The FishChat client wire protocol, with no I/O.
//!
//! A connection carries length-prefixed frames (see [`frame`]); the command and
//! request id travel in a fixed header so the access tier can route a frame
//! without touching its protobuf body (see [`pb`]). [`FrameDecoder`] turns any
//! split of a byte stream into frames and refuses a too-large frame before it
//! allocates for it; [`encode_frame`] writes a frame straight into a caller's
//! buffer, so one encoding can be frozen into `Bytes` and shared by many
//! connections. [`Body`] ties each command to its message type.

mod body;
mod decode;
mod encode;
pub mod frame;

pub use body::{Body, BodyError};
pub use decode::{DecodeError, FrameDecoder};
pub use encode::{EncodeError, encode_frame, encode_frame_to_bytes};
pub use frame::{DEFAULT_MAX_FRAME_LEN, Frame, HEADER_LEN, Header, LENGTH_LEN, VERSION};

/// Messages generated from `proto/fishchat.proto`.
#[allow(missing_docs, clippy::doc_lazy_continuation)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/fishchat.v1.rs"));
}

pub use pb::{Command, ErrorCode, KickReason};
