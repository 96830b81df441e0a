//! Optional TLS on the client port, inside the event loops.
//!
//! rustls is used as a state machine without I/O of its own: the loop hands
//! it the ciphertext it reads from a socket (`read_tls`, then
//! `process_new_packets`), takes the plaintext out of its `reader()`, puts
//! frames into its `writer()` and writes the ciphertext out with
//! `write_tls` until the socket would block. So a handshake never blocks the
//! loop: it advances with each readable event, and one that never finishes is
//! closed at the login deadline like any connection that does not log in.
//!
//! Only a TLS connection pays for it: its state lives behind a box in the
//! connection's buffers (`conn.rs`), which a plain connection frees when idle.

use std::io::{self, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// Why the client TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// Only one of the two files was given.
    #[error("client TLS needs both client_tls_cert and client_tls_key")]
    Partial,
    /// The files do not make a server configuration.
    #[error(transparent)]
    Files(#[from] fishchat_node::PublicTlsError),
}

/// The client port's TLS configuration, shared by every loop.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ServerConfig>,
}

impl ClientTls {
    /// The configuration for the certificate chain at `cert` and its key at
    /// `key` (PEM); `None` when both are empty (plain TCP).
    pub fn load(cert: &str, key: &str) -> Result<Option<Self>, ClientTlsError> {
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => {
                let config = fishchat_node::tls_server_config(Path::new(cert), Path::new(key))?;
                Ok(Some(Self {
                    config: Arc::new(config),
                }))
            }
            _ => Err(ClientTlsError::Partial),
        }
    }

    /// The TLS state of a newly accepted connection.
    pub fn accept(&self) -> Result<TlsConn, rustls::Error> {
        let mut conn = ServerConnection::new(self.config.clone())?;
        // Unlimited here because the loop enforces its own cap
        // (`max_outbound_bytes`) on what is pending, TLS or not, and kicks
        // the slow reader; rustls' default 64 KiB would refuse frames instead.
        conn.set_buffer_limit(None);
        Ok(TlsConn { conn, unsent: 0 })
    }
}

/// One connection's TLS state.
#[derive(Debug)]
pub struct TlsConn {
    conn: ServerConnection,
    /// Plaintext given to rustls and not yet written out as ciphertext, less
    /// what has been (an estimate: records add a few bytes each); 0 once
    /// rustls holds nothing to send.
    unsent: usize,
}

impl TlsConn {
    /// Reads plaintext into `buf`, the way a socket read would answer:
    /// `Ok(0)` at the end of the stream, `WouldBlock` when the socket has
    /// nothing more. `Interrupted` means bytes were read and processed but
    /// gave no plaintext yet (a handshake message): call again. Bytes that are
    /// not TLS fail with `InvalidData`, after rustls' alert was sent if the
    /// socket takes it.
    pub fn read(&mut self, stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        // Plaintext left from an earlier read goes first: the loop may have
        // stopped reading (the in-flight cap) with records still decrypted.
        match self.conn.reader().read(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        let mut socket = stream;
        if self.conn.read_tls(&mut socket)? == 0 {
            return Ok(0);
        }
        if let Err(err) = self.conn.process_new_packets() {
            let peer = stream.peer_addr().ok();
            tracing::info!(?peer, %err, "closing a client connection over bad TLS");
            let _ = self.flush(stream);
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        // Handshake answers go out at once, not at the end of the iteration.
        self.flush(stream)?;
        match self.conn.reader().read(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                Err(io::ErrorKind::Interrupted.into())
            }
            done => done,
        }
    }

    /// Encrypts `frames` (taken from the slice) and writes what the socket
    /// takes; the rest stays in rustls for [`flush`](Self::flush). Before the
    /// handshake ends, rustls keeps them as plaintext. Returns the bytes
    /// written to the socket.
    pub fn write(&mut self, stream: &TcpStream, frames: &mut [Bytes]) -> io::Result<usize> {
        let mut writer = self.conn.writer();
        for frame in frames.iter_mut() {
            writer.write_all(frame)?;
            self.unsent += frame.len();
            *frame = Bytes::new();
        }
        self.flush(stream)
    }

    /// Writes pending ciphertext until done or the socket is full; returns
    /// the bytes written.
    pub fn flush(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let mut socket = stream;
        let mut written = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.unsent = self.unsent.saturating_sub(n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if !self.conn.wants_write() {
            self.unsent = 0;
        }
        Ok(written)
    }

    /// Bytes waiting to be written (an estimate), 0 when nothing is; frames
    /// held as plaintext until the handshake ends do not count, since they
    /// cannot be written before.
    pub fn unsent(&self) -> usize {
        if self.conn.wants_write() {
            self.unsent.max(1)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_is_plain_tcp_and_one_file_or_a_missing_one_is_refused() {
        assert!(matches!(ClientTls::load("", ""), Ok(None)));
        assert!(matches!(
            ClientTls::load("cert.pem", ""),
            Err(ClientTlsError::Partial)
        ));
        assert!(matches!(
            ClientTls::load("", "key.pem"),
            Err(ClientTlsError::Partial)
        ));
        let missing = ClientTls::load("/nonexistent/cert.pem", "/nonexistent/key.pem");
        assert!(
            matches!(missing, Err(ClientTlsError::Files(_))),
            "{missing:?}"
        );
    }
}
