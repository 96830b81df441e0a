//! Command-line options every service accepts.

use std::path::PathBuf;

use clap::Args;

use crate::logging::LogFormat;

/// Options shared by every service binary; flattened into each one's `clap` parser.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file. Environment variables `FISHCHAT_<SERVICE>_<KEY>`
    /// override it, and command-line options override both.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FISHCHAT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The deployment CA's certificate (PEM). With --tls-cert and --tls-key,
    /// every gRPC port and call between services uses mutual TLS.
    #[arg(long, value_name = "FILE", env = "FISHCHAT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA, for fishchat.internal
    /// (or --tls-server-name).
    #[arg(long, value_name = "FILE", env = "FISHCHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", env = "FISHCHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The certificate chain (PEM) clients see on this service's HTTP API
    /// (register, gateway): a public CA's. With --public-tls-key, HTTPS only.
    #[arg(long, value_name = "FILE", env = "FISHCHAT_PUBLIC_TLS_CERT")]
    pub public_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --public-tls-cert.
    #[arg(long, value_name = "FILE", env = "FISHCHAT_PUBLIC_TLS_KEY")]
    pub public_tls_key: Option<PathBuf>,
    /// The name peers' certificates must carry.
    #[arg(long, value_name = "NAME", default_value = crate::tls::DEFAULT_SERVER_NAME, env = "FISHCHAT_TLS_SERVER_NAME")]
    pub tls_server_name: String,
}
