//! What the TCP front door answers to each frame (no I/O here).

use bytes::BytesMut;
use fishchat_codec::pb::{self, Command, ErrorCode};
use fishchat_codec::{Body, DEFAULT_MAX_FRAME_LEN, DecodeError, Frame};

use crate::directory::Directory;

/// Whether the connection goes on after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep reading frames.
    Continue,
    /// Close: the peer broke the protocol and the stream cannot be trusted.
    Close,
}

/// Appends the answer to `frame` to `out`.
pub fn answer(frame: &Frame, directory: &Directory, out: &mut BytesMut) -> After {
    let request_id = frame.header.request_id;
    if frame.header.command != Command::GatewayLookup {
        let message = format!("{:?} is not a gateway command", frame.header.command);
        put_error(ErrorCode::UnknownCommand, message, request_id, out);
        return After::Close;
    }
    if let Err(err) = frame.body() {
        put_error(err.code(), err.to_string(), request_id, out);
        return After::Close;
    }
    match directory.lookup() {
        Some(route) => {
            let reply = Body::GatewayReply(pb::GatewayReply {
                access_addr: route.access_addr,
                node_id: route.node_id,
            });
            if let Err(err) = reply.encode(request_id, DEFAULT_MAX_FRAME_LEN, out) {
                put_error(ErrorCode::Internal, err.to_string(), request_id, out);
            }
        }
        None => put_error(
            ErrorCode::Unavailable,
            "no access node is available".to_owned(),
            request_id,
            out,
        ),
    }
    After::Continue
}

/// Appends the answer to a byte stream that is not a valid frame stream; the
/// connection must close after it. The request id is unknown, so it is 0.
pub fn answer_bad_stream(err: &DecodeError, out: &mut BytesMut) {
    put_error(err.code(), err.to_string(), 0, out);
}

fn put_error(code: ErrorCode, message: String, request_id: u32, out: &mut BytesMut) {
    let error = Body::Error(pb::Error {
        code: code as i32,
        message,
    });
    // An error frame is a code and a short message: far below the protocol maximum.
    if let Err(err) = error.encode(request_id, DEFAULT_MAX_FRAME_LEN, out) {
        tracing::error!(%err, "cannot encode an ERROR frame");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use fishchat_codec::{FrameDecoder, Header};
    use fishchat_discovery::{NodeInfo, Nodes};
    use tokio::sync::watch;

    use super::*;

    fn directory(nodes: Nodes) -> Directory {
        Directory::new(watch::channel(Arc::new(nodes)).1)
    }

    fn frame(command: Command, request_id: u32, body: &[u8]) -> Frame {
        Frame {
            header: Header {
                command,
                request_id,
            },
            body: Bytes::copy_from_slice(body),
        }
    }

    fn decode(out: &mut BytesMut) -> (u32, Body) {
        let frame = FrameDecoder::default().decode(out).unwrap().unwrap();
        (frame.header.request_id, frame.body().unwrap())
    }

    #[test]
    fn lookup_answers_with_the_route_and_the_request_id() {
        let node = NodeInfo::new("access", "a1").with_addr("client", "127.0.0.1:9000");
        let dir = directory([node].into_iter().collect());
        let mut out = BytesMut::new();
        let after = answer(&frame(Command::GatewayLookup, 42, &[]), &dir, &mut out);
        assert_eq!(after, After::Continue);
        assert_eq!(
            decode(&mut out),
            (
                42,
                Body::GatewayReply(pb::GatewayReply {
                    access_addr: "127.0.0.1:9000".into(),
                    node_id: "a1".into()
                })
            )
        );
    }

    #[test]
    fn no_node_is_unavailable_and_keeps_the_connection() {
        let mut out = BytesMut::new();
        let after = answer(
            &frame(Command::GatewayLookup, 7, &[]),
            &directory(Nodes::default()),
            &mut out,
        );
        assert_eq!(after, After::Continue);
        let (id, Body::Error(err)) = decode(&mut out) else {
            panic!("not an error")
        };
        assert_eq!((id, err.code), (7, ErrorCode::Unavailable as i32));
    }

    #[test]
    fn other_commands_and_bad_bodies_close() {
        let dir = directory(Nodes::default());
        let mut out = BytesMut::new();
        assert_eq!(
            answer(&frame(Command::Ping, 3, &[]), &dir, &mut out),
            After::Close
        );
        let (id, Body::Error(err)) = decode(&mut out) else {
            panic!("not an error")
        };
        assert_eq!((id, err.code), (3, ErrorCode::UnknownCommand as i32));

        // Field 1 as a length-delimited value running past the end of the body.
        let after = answer(
            &frame(Command::GatewayLookup, 4, &[0x0a, 0x05]),
            &dir,
            &mut out,
        );
        assert_eq!(after, After::Close);
        let (id, Body::Error(err)) = decode(&mut out) else {
            panic!("not an error")
        };
        assert_eq!((id, err.code), (4, ErrorCode::BadBody as i32));
    }
}
