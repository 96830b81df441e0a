//! `fishchat-gateway`: tells clients which access node to connect to.
//!
//! Wiring only: command line, configuration and logs here; everything else is
//! in the library ([`fishchat_gateway::Gateway`]).

use std::net::SocketAddr;

use clap::Parser;
use fishchat_gateway::{Config, Gateway};
use fishchat_node::{CommonArgs, init_logging, load_config, shutdown_signal};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-gateway",
    version,
    about = "tells clients which access node to connect to"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Command-line overrides of [`Config`]; only the ones given are applied.
#[derive(Debug, clap::Args, Serialize)]
struct Overrides {
    /// Address of the TCP front door [default: 127.0.0.1:7000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Address of the HTTP front door [default: 127.0.0.1:8000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<SocketAddr>,
    /// Address of the gRPC server (health, reflection) [default: 127.0.0.1:7001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_listen: Option<SocketAddr>,
    /// etcd endpoints, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_endpoints: Option<Vec<String>>,
    /// This node's id in etcd [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// Seconds a TCP connection may stay silent [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_secs: Option<u64>,
    /// The service name access nodes register under [default: access].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    access_service: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.common.log_format);
    fishchat_node::init_public_tls(&cli.common)?;
    fishchat_node::init_tls(&cli.common)?;
    let config: Config = load_config("gateway", cli.common.config.as_deref(), &cli.overrides)?;
    let gateway = Gateway::bind(config).await?;
    gateway.serve(shutdown_signal()).await?;
    Ok(())
}
