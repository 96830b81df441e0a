//! The TCP front door: client-protocol frames in, lookups answered.
//!
//! Each connection is a small task: it reads until a whole frame is buffered
//! (never more than one frame plus one read, since the decoder refuses a frame
//! above the cap from its length alone), answers every complete frame, writes
//! the answers, and closes on a protocol error, on silence longer than the
//! idle timeout, or when the gateway stops.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fishchat_codec::FrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::directory::Directory;
use crate::reply::{After, answer, answer_bad_stream};

/// Bytes set aside for reading when a connection starts: a lookup is 12.
const READ_CAPACITY: usize = 64;

/// How long a connection closed for a protocol error keeps draining its peer's
/// bytes, and how many it drains at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// How a connection behaves.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Largest frame accepted (header + body).
    pub max_frame_len: u32,
}

/// Accepts connections on `listener` until `stop` turns true, then waits for
/// open connections to close (they close at their next read).
pub async fn serve(
    listener: TcpListener,
    directory: Directory,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut watching = stop.clone();
    let stopping = async move {
        let _ = watching.wait_for(|stopped| *stopped).await;
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, directory.clone(), settings, stop.clone()));
                }
                // Accept errors (say, out of file descriptors) concern one
                // attempt; the listener stays usable.
                Err(err) => tracing::warn!(%err, "TCP accept failed"),
            },
            Some(_) = connections.join_next() => {}
            () = &mut stopping => break,
        }
    }
    drop(listener);
    tracing::info!(
        open = connections.len(),
        "TCP front door closed; finishing connections"
    );
    while connections.join_next().await.is_some() {}
}

/// Serves one client until it leaves, errs, idles or the gateway stops.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    directory: Directory,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let decoder = FrameDecoder::new(settings.max_frame_len);
    let mut input = BytesMut::with_capacity(READ_CAPACITY);
    let mut output = BytesMut::new();
    loop {
        let mut after = After::Continue;
        while after == After::Continue {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => after = answer(&frame, &directory, &mut output),
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%peer, %err, "malformed frame stream");
                    answer_bad_stream(&err, &mut output);
                    after = After::Close;
                }
            }
        }
        if !output.is_empty() {
            if let Err(err) = stream.write_all(&output).await {
                tracing::debug!(%peer, %err, "write failed");
                return;
            }
            output.clear();
        }
        if after == After::Close {
            linger_close(stream).await;
            return;
        }
        tokio::select! {
            read = tokio::time::timeout(settings.idle_timeout, stream.read_buf(&mut input)) => match read {
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "read failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Closes after an error frame so that the peer can read it: ends our side,
/// then discards what the peer still sends for a moment. Closing with unread
/// bytes in the socket would send a reset, which may destroy the error frame
/// before the peer reads it.
async fn linger_close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut scratch = [0u8; 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
