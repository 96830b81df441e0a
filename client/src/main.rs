//! `fishchat`: the command-line client.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fishchat_client::Connection;
use fishchat_codec::{Body, pb};

#[derive(Debug, Parser)]
#[command(name = "fishchat", version, about = "FishChat command-line client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends PING to a FishChat server and prints the round trip.
    Ping {
        /// host:port of an access node.
        #[arg(long, default_value = "127.0.0.1:7100")]
        addr: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ping { addr, timeout } => {
            let started = Instant::now();
            let reply = tokio::time::timeout(Duration::from_secs(timeout), async {
                let mut conn = Connection::connect(&addr).await?;
                conn.send(1, &pb::Ping::default().into()).await?;
                conn.recv().await
            })
            .await
            .context("no reply in time")?
            .with_context(|| format!("ping {addr}"))?;
            match reply {
                (1, Body::Pong(_)) => println!("pong from {addr} in {:?}", started.elapsed()),
                other => bail!("unexpected reply {other:?}"),
            }
        }
    }
    Ok(())
}
