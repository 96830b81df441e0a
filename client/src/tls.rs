//! TLS to the access node, for a node whose client port has it
//! (`client_tls_cert` in its config): the same frames inside a TLS stream,
//! checked against a CA the client is given.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Why the TLS settings cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The CA file could not be read as PEM certificates.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The name to check the server's certificate against is not a DNS name or an IP address.
    #[error("server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// How to speak TLS to access nodes: whom to trust, and which name their
/// certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// `None`: the host part of the address connected to.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the certificates in the PEM file `ca` and checks the server's
    /// certificate against `server_name`, or when `None` against the host of
    /// the address connected to (a DNS name or an IP address).
    pub fn from_ca_file(ca: &Path, server_name: Option<&str>) -> Result<Self, TlsError> {
        let bad = |reason: String| TlsError::Ca {
            path: ca.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| bad(err.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert)?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = server_name.map(parse_name).transpose()?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the handshake over `tcp`, which was connected to `addr` (host:port).
    pub async fn handshake(&self, tcp: TcpStream, addr: &str) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => parse_name(host_of(addr))
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?,
        };
        self.connector.connect(name, tcp).await
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// The host of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A connection's byte stream: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("127.0.0.1:7100"), "127.0.0.1");
        assert_eq!(host_of("access-1.example.com:7100"), "access-1.example.com");
        assert_eq!(host_of("[::1]:7100"), "::1");
        assert!(parse_name(host_of("[::1]:7100")).is_ok());
        assert!(matches!(
            parse_name("not a name"),
            Err(TlsError::ServerName(_))
        ));
    }
}
