//! `fishchat-gateway`: tells clients which access node to connect to.
//!
//! For now the process only answers gRPC health and reflection on its
//! listen address; the service itself arrives with the backend issue.

use std::net::SocketAddr;

use clap::Parser;
use fishchat_node::{
    CommonArgs, health_and_reflection, init_logging, load_config, serve, shutdown_signal,
};
use serde::{Deserialize, Serialize};

/// Settings of this service, from its TOML file, the environment and the command line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Address of the gRPC server.
    listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
        }
    }
}

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
    /// Address of the gRPC server [default: 127.0.0.1:7001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.common.log_format);
    let config: Config = load_config("gateway", cli.common.config.as_deref(), &cli.overrides)?;
    let (_health, routes) = health_and_reflection()?;
    serve(config.listen, routes, shutdown_signal()).await?;
    Ok(())
}
