//! Mutual TLS on every internal gRPC port. Without it, any process that
//! reaches a port is trusted: it can push a forged message to a client, or
//! send as any user. With it, a service accepts a call only over TLS from a
//! peer whose certificate the deployment's CA signed, and dials others the
//! same way, presenting its own.
//!
//! The CA is the boundary: every certificate it signs is a FishChat service.
//! Peers are checked against one name, [`DEFAULT_SERVER_NAME`] unless set,
//! that every node's certificate carries, so that certificates need not list
//! each node's address (`scripts/certs` issues them; deploy/README explains
//! how for several machines).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::args::CommonArgs;

/// The name every FishChat certificate carries and every peer is checked against.
pub const DEFAULT_SERVER_NAME: &str = "fishchat.internal";

static SERVER_TLS: OnceLock<ServerTlsConfig> = OnceLock::new();

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only some of the CA, certificate and key were given.
    #[error(
        "mutual TLS needs all three of --tls-ca, --tls-cert and --tls-key (FISHCHAT_TLS_CA, _CERT, _KEY); got only {0}"
    )]
    Partial(&'static str),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not PEM of the expected kind.
    #[error("{path} holds no PEM {kind}")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        kind: &'static str,
    },
}

/// Turns on mutual TLS for this process when `args` name the CA, the
/// certificate and the key: the gRPC server (see [`serve`](crate::serve))
/// requires client certificates, and every channel made through
/// `fishchat_discovery::endpoint_for` presents one. False when none were
/// given (plain HTTP/2).
pub fn init_tls(args: &CommonArgs) -> Result<bool, TlsError> {
    let (ca, cert, key) = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (None, None, None) => return Ok(false),
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        (ca, cert, _) => {
            return Err(TlsError::Partial(match (ca, cert) {
                (None, None) => "the key",
                (None, Some(_)) => "the certificate and key",
                (Some(_), None) => "the CA and key",
                (Some(_), Some(_)) => "the CA and certificate",
            }));
        }
    };
    let ca = Certificate::from_pem(read_pem(ca, "CERTIFICATE")?);
    let identity = Identity::from_pem(
        read_pem(cert, "CERTIFICATE")?,
        read_pem(key, "PRIVATE KEY")?,
    );
    let server = ServerTlsConfig::new()
        .identity(identity.clone())
        .client_ca_root(ca.clone());
    let client = ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .domain_name(args.tls_server_name.clone());
    let _ = SERVER_TLS.set(server);
    fishchat_discovery::use_client_tls(client);
    tracing::info!(server_name = %args.tls_server_name, "mutual TLS on every gRPC port and channel");
    Ok(true)
}

/// The server side of mutual TLS, once [`init_tls`] turned it on.
pub(crate) fn server_tls() -> Option<&'static ServerTlsConfig> {
    SERVER_TLS.get()
}

/// The file at `path`, checked to hold a PEM block whose label ends with `kind`.
fn read_pem(path: &Path, kind: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let labelled = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label.ends_with(kind))
    });
    if labelled {
        Ok(bytes)
    } else {
        Err(TlsError::NotPem {
            path: path.to_owned(),
            kind,
        })
    }
}
