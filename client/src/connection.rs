//! One framed connection to a FishChat server (an access node or the gateway).

use bytes::BytesMut;
use fishchat_codec::{Body, BodyError, DecodeError, EncodeError, Frame, FrameDecoder};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::tls::{ClientTls, Stream};

/// Why a connection failed.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a frame stream.
    #[error("bad frame from server: {0}")]
    Decode(#[from] DecodeError),
    /// A frame's body does not decode as its command says.
    #[error("bad body from server: {0}")]
    Body(#[from] BodyError),
    /// A frame to send is larger than the protocol allows.
    #[error("cannot send: {0}")]
    Encode(#[from] EncodeError),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
}

/// A framed, bidirectional connection.
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    stream: S,
    decoder: FrameDecoder,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Connection<TcpStream> {
    /// Connects over TCP.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ConnectionError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::new(stream))
    }
}

impl Connection<Stream> {
    /// Connects over TCP to `addr` (host:port), and over TLS on it when `tls` is given.
    pub async fn open(addr: &str, tls: Option<&ClientTls>) -> Result<Self, ConnectionError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            Some(tls) => Stream::Tls(Box::new(tls.handshake(tcp, addr).await?)),
            None => Stream::Plain(tcp),
        };
        Ok(Self::new(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Frames an existing stream with the default maximum frame size.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::default(),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
        }
    }

    /// The underlying stream, for writing raw bytes (tests of bad input).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, request_id: u32, body: &Body) -> Result<(), ConnectionError> {
        self.write_buf.clear();
        body.encode(
            request_id,
            self.decoder.max_frame_len(),
            &mut self.write_buf,
        )?;
        self.stream.write_all(&self.write_buf).await?;
        // A TLS stream may still hold the last record's ciphertext.
        self.stream.flush().await?;
        Ok(())
    }

    /// Waits for the next frame.
    pub async fn recv_frame(&mut self) -> Result<Frame, ConnectionError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(frame);
            }
            self.read_buf.reserve(4096);
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ConnectionError::Closed);
            }
        }
    }

    /// Waits for the next frame and decodes its body: (request id, body).
    pub async fn recv(&mut self) -> Result<(u32, Body), ConnectionError> {
        let frame = self.recv_frame().await?;
        Ok((frame.header.request_id, frame.body()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_codec::pb;

    #[tokio::test]
    async fn frames_cross_a_duplex_stream_both_ways() {
        let (a, b) = tokio::io::duplex(64);
        let (mut client, mut server) = (Connection::new(a), Connection::new(b));
        let ping: Body = pb::Ping { client_time_ms: 77 }.into();
        let big: Body = pb::SendToUser {
            client_msg_id: "m".into(),
            to_user_id: 5,
            body: vec![1u8; 1000].into(),
        }
        .into();
        let (sent, received) = tokio::join!(
            async {
                client.send(1, &ping).await?;
                client.send(2, &big).await
            },
            async {
                let first = server.recv().await?;
                let second = server.recv().await?;
                Ok::<_, ConnectionError>((first, second))
            }
        );
        sent.unwrap();
        assert_eq!(received.unwrap(), ((1, ping), (2, big)));
        drop(client);
        assert!(matches!(server.recv().await, Err(ConnectionError::Closed)));
    }
}
