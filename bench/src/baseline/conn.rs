//! One client connection's task: frames in through `LengthDelimitedCodec`,
//! replies and pushes out through the same `Framed`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fishchat_codec::encode_frame_to_bytes;
use fishchat_codec::pb::{self, Command, ErrorCode};
use fishchat_codec::{Body, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LENGTH_LEN, VERSION};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::registry::{Peer, Registry};

/// What the client is told to ping at.
const HEARTBEAT_INTERVAL_MS: u32 = 30_000;

/// What a frame from the client asks of the connection.
enum Next {
    Reply(Bytes),
    Close,
}

/// Serves one connection until it closes.
pub async fn serve(stream: TcpStream, registry: Arc<Registry>, queue: usize) {
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_LEN)
        .big_endian()
        .max_frame_length(DEFAULT_MAX_FRAME_LEN as usize)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue.max(1));
    let conn_id = registry.next_conn_id();
    let mut user_id = None;
    loop {
        tokio::select! {
            incoming = framed.next() => {
                let Some(Ok(payload)) = incoming else { break };
                let next = on_frame(payload, &mut user_id, || Peer { conn_id, tx: tx.clone() }, &registry);
                match next {
                    Next::Reply(frame) => {
                        if framed.send(frame).await.is_err() {
                            break;
                        }
                    }
                    Next::Close => break,
                }
            }
            Some(frame) = rx.recv() => {
                // Write what is queued in one go, then flush once.
                let mut ok = framed.feed(frame).await.is_ok();
                while ok && let Ok(more) = rx.try_recv() {
                    ok = framed.feed(more).await.is_ok();
                }
                if !ok || SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(user_id) = user_id {
        registry.remove(user_id, conn_id);
    }
}

/// Handles one frame (header + body, without the length prefix).
fn on_frame(
    payload: BytesMut,
    user_id: &mut Option<u64>,
    peer: impl FnOnce() -> Peer,
    registry: &Registry,
) -> Next {
    let Some((command, request_id, body)) = split(payload) else {
        return Next::Close;
    };
    let body = match Body::decode(command, body) {
        Ok(body) => body,
        Err(err) => return reply(Command::Error, request_id, &error(err.code())),
    };
    match (body, *user_id) {
        (Body::Ping(ping), _) => {
            let pong = pb::Pong {
                client_time_ms: ping.client_time_ms,
                server_time_ms: now_ms(),
            };
            reply(Command::Pong, request_id, &pong)
        }
        (Body::Login(login), None) => {
            let id = login
                .token
                .strip_prefix("tok-")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| registry.next_conn_id());
            registry.insert(id, peer());
            *user_id = Some(id);
            let body = pb::LoginReply {
                user_id: id,
                heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                server_time_ms: now_ms(),
            };
            reply(Command::LoginReply, request_id, &body)
        }
        (Body::Login(_), Some(_)) => reply(
            Command::Error,
            request_id,
            &error(ErrorCode::AlreadyLoggedIn),
        ),
        (Body::Logout(_), _) => Next::Close,
        (_, _) => reply(
            Command::Error,
            request_id,
            &error(ErrorCode::UnknownCommand),
        ),
    }
}

/// The command, request id and body of a frame, or None when the header is bad.
fn split(mut payload: BytesMut) -> Option<(Command, u32, Bytes)> {
    if payload.len() < HEADER_LEN || payload[0] != VERSION || payload[1] != 0 {
        return None;
    }
    let command =
        Command::try_from(i32::from(u16::from_be_bytes([payload[2], payload[3]]))).ok()?;
    let request_id = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let body = payload.split_off(HEADER_LEN).freeze();
    Some((command, request_id, body))
}

fn error(code: ErrorCode) -> pb::Error {
    pb::Error {
        code: code as i32,
        message: code.as_str_name().to_owned(),
    }
}

/// A reply frame without its length prefix (the codec writes it).
fn reply(command: Command, request_id: u32, body: &impl prost::Message) -> Next {
    match encode_frame_to_bytes(command, request_id, body, DEFAULT_MAX_FRAME_LEN) {
        Ok(frame) => Next::Reply(frame.slice(LENGTH_LEN..)),
        Err(_) => Next::Close,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_codec::FrameDecoder;

    fn payload(command: Command, body: &impl prost::Message) -> BytesMut {
        let frame = encode_frame_to_bytes(command, 3, body, DEFAULT_MAX_FRAME_LEN).unwrap();
        BytesMut::from(&frame[LENGTH_LEN..])
    }

    fn decode(next: Next) -> Body {
        let Next::Reply(frame) = next else {
            panic!("no reply");
        };
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        wire.extend_from_slice(&frame);
        let frame = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
            .decode(&mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(frame.header.request_id, 3);
        frame.body().unwrap()
    }

    #[tokio::test]
    async fn a_tok_token_logs_in_as_its_user_and_pushes_reach_the_connection() {
        let registry = Registry::default();
        let (tx, mut rx) = mpsc::channel(4);
        let mut user_id = None;
        let login = pb::LoginRequest {
            token: "tok-42".into(),
            device_id: "d".into(),
        };
        let peer = || Peer {
            conn_id: 1,
            tx: tx.clone(),
        };
        match decode(on_frame(
            payload(Command::Login, &login),
            &mut user_id,
            peer,
            &registry,
        )) {
            Body::LoginReply(reply) => assert_eq!(reply.user_id, 42),
            other => panic!("{other:?}"),
        }
        assert_eq!(user_id, Some(42));
        assert_eq!(registry.send(42, &Bytes::from_static(b"x")), 1);
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"x"));
        registry.remove(42, 1);
        assert_eq!(registry.send(42, &Bytes::from_static(b"x")), 0);
    }

    #[test]
    fn a_second_login_is_refused_and_a_ping_is_answered() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel(4);
        let mut user_id = Some(1);
        let peer = || Peer { conn_id: 1, tx };
        let login = pb::LoginRequest::default();
        match decode(on_frame(
            payload(Command::Login, &login),
            &mut user_id,
            peer,
            &registry,
        )) {
            Body::Error(e) => assert_eq!(e.code, ErrorCode::AlreadyLoggedIn as i32),
            other => panic!("{other:?}"),
        }
        let (tx, _rx) = mpsc::channel(4);
        let peer = || Peer { conn_id: 1, tx };
        let ping = pb::Ping { client_time_ms: 5 };
        match decode(on_frame(
            payload(Command::Ping, &ping),
            &mut user_id,
            peer,
            &registry,
        )) {
            Body::Pong(pong) => assert_eq!(pong.client_time_ms, 5),
            other => panic!("{other:?}"),
        }
    }
}
