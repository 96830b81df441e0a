//! `fishchat-gateway`: tells clients which access node to connect to.
//!
//! Wiring only: command line, configuration and logs here; everything else is
//! in the library ([`fishchat_gateway::Gateway`]).

use clap::Parser;
use fishchat_gateway::config::Overrides;
use fishchat_gateway::{Config, Gateway};
use fishchat_node::{CommonArgs, init_logging, load_config, shutdown_signal};

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
