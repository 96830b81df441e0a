//! The Centrifugo baselines: Centrifugo v6, the real-time messaging server
//! FishChat's users compare it with, under the same load shapes as
//! `mqtt-idle` and `mqtt-fanout`. Every client connects over WebSocket in
//! Centrifugo's JSON protocol and subscribes to its own channel `u-<i>` (a
//! colon would name a namespace), as every FishChat user has an inbox of
//! their own; the fan-out publishes
//! through the server API's `broadcast`, many channels per call, as one push
//! request names many users. `scripts/centrifugo.sh` installs (with `go
//! install`) and starts a private server.

mod client;
mod fanout;
#[cfg(all(test, feature = "centrifugo"))]
mod live;

use std::net::SocketAddr;

use serde::Serialize;

pub use fanout::{FanoutArgs, run as run_fanout};

use crate::report::Report;
use crate::subscribers::idle;

/// The server (shared by both Centrifugo scenarios).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ServerArgs {
    /// Centrifugo's HTTP address: WebSocket clients at `/connection/websocket`,
    /// the server API at `/api`.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub server: SocketAddr,
    /// The server API key (`http_api.key`; the bench script sets this one).
    #[arg(long, default_value = "fishchat-bench")]
    pub api_key: String,
}

impl ServerArgs {
    fn protocol(&self) -> client::Centrifugo {
        client::Centrifugo {
            server: self.server,
        }
    }
}

/// Parameters of `centrifugo-idle`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) server: ServerArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) idle: idle::IdleArgs,
}

/// Runs `centrifugo-idle`: N subscribers that only answer the server's pings,
/// and the server's resident memory per connection.
pub async fn run_idle(args: &IdleArgs) -> anyhow::Result<Report> {
    let mut report = idle::run(
        args.server.protocol(),
        &args.idle,
        "centrifugo-idle",
        "centrifugo",
    )
    .await?;
    report.config = serde_json::to_value(args)?;
    Ok(report)
}
