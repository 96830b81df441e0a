//! TLS on the HTTP listeners clients reach (register's account API, the
//! gateway's lookup), with a certificate clients trust: a public CA's, not
//! the deployment's internal one. Without it, passwords and tokens cross the
//! network in clear.
//!
//! Handshakes run in tasks of their own, so a client that stalls in its
//! handshake holds only itself up, never the accepting of others; each has
//! [`HANDSHAKE_TIMEOUT`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::args::CommonArgs;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const READY_BACKLOG: usize = 128;

static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();

/// Why the public certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PublicTlsError {
    /// Only one of the certificate and the key was given.
    #[error(
        "HTTPS needs both --public-tls-cert and --public-tls-key (FISHCHAT_PUBLIC_TLS_CERT, _KEY)"
    )]
    Partial,
    /// The certificate chain could not be read.
    #[error("certificate chain {path}: {reason}")]
    Certificates {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key could not be read.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a server configuration.
    #[error("certificate and key: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// Turns on HTTPS for [`serve_http`] when `args` name a certificate chain and
/// its key; false when they name neither (plain HTTP).
pub fn init_public_tls(args: &CommonArgs) -> Result<bool, PublicTlsError> {
    let (cert, key) = match (&args.public_tls_cert, &args.public_tls_key) {
        (None, None) => return Ok(false),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err(PublicTlsError::Partial),
    };
    let config = server_config(cert, key)?;
    let _ = ACCEPTOR.set(TlsAcceptor::from(Arc::new(config)));
    tracing::info!(cert = %cert.display(), "HTTPS on the client-facing HTTP listeners");
    Ok(true)
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, PublicTlsError> {
    let mut config = tls_server_config(cert, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS server configuration presenting the certificate chain in `cert`
/// with its key in `key` (both PEM), asking clients for no certificate: the
/// public side of a service, HTTP here and the access node's client port.
pub fn tls_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, PublicTlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| PublicTlsError::Certificates {
            path: cert.display().to_string(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PublicTlsError::Certificates {
            path: cert.display().to_string(),
            reason: "no certificate in it".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| PublicTlsError::Key {
        path: key.display().to_string(),
        reason: err.to_string(),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?)
}

/// Serves `app` on `listener` until `stop` resolves, over HTTPS once
/// [`init_public_tls`] turned it on. Handlers may extract
/// `ConnectInfo<SocketAddr>`, the client's address.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match ACCEPTOR.get() {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => {
            let tls = TlsListener::start(listener, acceptor.clone())?;
            // Tapping makes the listener's address the connection's ConnectInfo.
            axum::serve(tls.tap_io(|_| {}), app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// Connections whose TLS handshake finished, from a task that accepts and
/// handshakes in the background until the listener is dropped.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, say: let some close.
                        tracing::warn!(%err, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
