//! The client side of the wire, as small as a load generator needs: open a
//! socket (bound to a chosen source address, so many addresses share the load
//! of ephemeral ports), write one frame, read the next frame.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use fishchat_codec::pb::{self, Command};
use fishchat_codec::{Body, DEFAULT_MAX_FRAME_LEN, Frame, FrameDecoder, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A client connection: the socket and what was read but not yet decoded.
#[derive(Debug)]
pub struct Wire {
    stream: TcpStream,
    input: BytesMut,
    decoder: FrameDecoder,
}

/// Why a connection attempt or an exchange failed, named for the failure table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// A failure of the I/O `stage` ("connect", "read", ...), by error kind.
    pub(crate) fn io(stage: &str, err: &std::io::Error) -> Self {
        Failure(format!("{stage}: {:?}", err.kind()))
    }
}

/// A TCP connection to `target` from `source` (each source address has its
/// own ephemeral ports), without Nagle: frames are written whole.
pub(crate) async fn dial(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, Failure> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| Failure::io("socket", &e))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::io("bind", &e))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| Failure::io("connect", &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Wire {
    /// Connects to `target`, from `source` (port chosen by the kernel) when given.
    pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<Wire, Failure> {
        let stream = dial(target, source).await?;
        Ok(Wire {
            stream,
            input: BytesMut::new(),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
        })
    }

    /// Writes one frame.
    pub async fn send(
        &mut self,
        command: Command,
        request_id: u32,
        body: &impl prost::Message,
    ) -> Result<(), Failure> {
        let mut frame = BytesMut::new();
        encode_frame(command, request_id, body, DEFAULT_MAX_FRAME_LEN, &mut frame)
            .map_err(|e| Failure(format!("encode: {e}")))?;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| Failure::io("write", &e))
    }

    /// Reads the next whole frame and decodes its body; cancel-safe (a partial
    /// read stays buffered).
    pub async fn recv(&mut self) -> Result<(u32, Body), Failure> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => return decode(&frame),
                Ok(None) => {}
                Err(err) => return Err(Failure(format!("bad frame: {:?}", err.code()))),
            }
            self.input.reserve(256);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) => return Err(Failure("closed by server".into())),
                Ok(_) => {}
                Err(err) => return Err(Failure::io("read", &err)),
            }
        }
    }

    /// Sends LOGOUT and closes, ignoring errors: the run is over for this connection.
    pub async fn logout(mut self) {
        let _ = self.send(Command::Logout, 0, &pb::Logout {}).await;
        let _ = self.stream.shutdown().await;
    }
}

fn decode(frame: &Frame) -> Result<(u32, Body), Failure> {
    frame
        .body()
        .map(|body| (frame.header.request_id, body))
        .map_err(|e| Failure(format!("bad body: {:?}", e.code())))
}

/// Asks the gateway at `gateway` for an access node's client address.
pub async fn lookup(gateway: SocketAddr, source: Option<IpAddr>) -> Result<SocketAddr, Failure> {
    let mut wire = Wire::connect(gateway, source)
        .await
        .map_err(|Failure(f)| Failure(format!("gateway {f}")))?;
    wire.send(Command::GatewayLookup, 1, &pb::GatewayLookup {})
        .await?;
    match wire.recv().await {
        Ok((_, Body::GatewayReply(reply))) => reply.access_addr.parse().map_err(|_| {
            Failure(format!(
                "gateway gave a bad address {:?}",
                reply.access_addr
            ))
        }),
        Ok((_, Body::Error(err))) => {
            Err(Failure(format!("gateway refused: {}", code_name(err.code))))
        }
        Ok((_, other)) => Err(Failure(format!("gateway answered {:?}", other.command()))),
        Err(Failure(f)) => Err(Failure(format!("gateway {f}"))),
    }
}

/// The protocol name of an error code number.
pub fn code_name(code: i32) -> String {
    pb::ErrorCode::try_from(code)
        .map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned())
}

/// The protocol name of a kick reason number.
pub fn kick_name(reason: i32) -> String {
    pb::KickReason::try_from(reason).map_or_else(
        |_| format!("reason {reason}"),
        |r| r.as_str_name().to_owned(),
    )
}
