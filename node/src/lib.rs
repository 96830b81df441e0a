//! What every FishChat service process does the same way: read its
//! configuration, log, report health, and shut down cleanly.
//!
//! Each service owns its configuration type and its RPC surface; this crate
//! only holds the process plumbing around them, so that a fix to (say) signal
//! handling lands in every service at once.

mod args;
mod config;
mod grpc;
mod health;
mod logging;
mod metrics;
mod public_tls;
mod ready;
mod rpc_metrics;
mod shutdown;
mod tls;

pub use args::CommonArgs;
pub use config::{ConfigError, load_config};
pub use grpc::{ServeError, health_and_reflection, serve, server_builder};
pub use health::{DEPENDENCY_CHECKS, DEPENDENCY_TIMEOUT, Dependency, follow};
pub use logging::{LogFormat, init_logging};
pub use metrics::{serve_metrics, spawn_metrics};
pub use public_tls::{
    HANDSHAKE_TIMEOUT, PublicTlsError, init_public_tls, serve_http, tls_server_config,
};
pub use ready::{notify_ready, notify_stopping};
pub use rpc_metrics::RpcMetrics;
pub use shutdown::shutdown_signal;
pub use tls::{DEFAULT_SERVER_NAME, TlsError, init_tls};
