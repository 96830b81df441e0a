//! The `push` scenario: N logged-in connections on one server, its Push RPC
//! driven directly with batches, to measure the push path of the access tier
//! alone (no msg_job, no Kafka): frames delivered per second, counted where
//! they arrive, and send-to-receive latency.
//!
//! With `--target both` the same load runs against the access node and then
//! against the tokio baseline (`tokio-server`, started here as a child
//! process unless `--tokio-addr` names a running one), and the report gives
//! their ratios.

pub(crate) mod clock;
mod driver;
mod receiver;
mod run;

pub use run::run;

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// Which server(s) to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The access node (`--access`, `--push-addr`), accounts from register.
    Access,
    /// The tokio baseline, tokens `tok-<i>`.
    Tokio,
    /// Access, then the baseline, with the same parameters; reports ratios.
    Both,
}

/// Parameters of the push scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    /// Server(s) to measure.
    #[arg(long, value_enum, default_value = "access")]
    pub target: Target,
    /// The access node's client address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub access: SocketAddr,
    /// The access node's push gRPC address.
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub push_addr: String,
    /// The access process, for its CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The register HTTP API, for the access node's accounts and tokens.
    #[arg(long, default_value = "http://127.0.0.1:8010")]
    pub register: String,
    /// User name prefix of the accounts (`<prefix>-<i>`); tokens are cached per prefix.
    #[arg(long, default_value = "bench-push")]
    pub user_prefix: String,
    /// A running baseline's client address; without it one is started here.
    #[arg(long)]
    pub tokio_addr: Option<SocketAddr>,
    /// The running baseline's push gRPC address (with `--tokio-addr`).
    #[arg(long)]
    pub tokio_push_addr: Option<String>,
    /// The running baseline's process (with `--tokio-addr`).
    #[arg(long)]
    pub tokio_pid: Option<u32>,
    /// Ports the started baseline listens on: PORT for clients, PORT+1 for pushes.
    #[arg(long, default_value_t = 23500)]
    pub tokio_port: u16,
    /// Logged-in connections on the server.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Users named per push request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Messages per delivery (they travel in one PUSH frame).
    #[arg(long, default_value_t = 1)]
    pub messages: usize,
    /// Bytes of each message body (the first 8 carry the send time).
    #[arg(long, default_value_t = 16)]
    pub body_bytes: usize,
    /// One delivery naming every user of a request (one frame shared, like a
    /// group) instead of one delivery per user (like direct messages).
    #[arg(long)]
    pub shared_delivery: bool,
    /// Deliveries per named user in each request, so that many frames wait
    /// on each connection at once and leave in one write (1 = one frame per
    /// connection per request, the direct-message case).
    #[arg(long, default_value_t = 1)]
    pub frames_per_user: usize,
    /// Concurrent push RPC streams, each on its own HTTP/2 connection.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Frames sent but not yet received beyond which the streams wait.
    #[arg(long, default_value_t = 50_000)]
    pub window: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Receiver threads (each a mio poll over its share of the connections).
    #[arg(long, default_value_t = 1)]
    pub receivers: usize,
    /// Source addresses to spread connections over: 127.0.0.2 .. 127.0.0.K+1
    /// (default: none up to 20,000 connections, else one per 20,000).
    #[arg(long)]
    pub source_ip_count: Option<u8>,
    /// Seconds one chunk of logins may take.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// Register requests in flight while provisioning accounts.
    #[arg(long, default_value_t = 64)]
    pub provision_concurrency: usize,
}

impl Args {
    /// The source addresses connections are spread over.
    fn sources(&self) -> Vec<IpAddr> {
        let count = self.source_ip_count.unwrap_or_else(|| {
            if self.connections > 20_000 {
                u8::try_from(self.connections.div_ceil(20_000)).unwrap_or(u8::MAX)
            } else {
                0
            }
        });
        (0..count)
            .map(|k| IpAddr::from([127, 0, 0, 2u8.saturating_add(k)]))
            .collect()
    }
}
