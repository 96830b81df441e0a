//! The Mosquitto baselines: the same load shapes as the `idle` and `push`
//! scenarios, spoken over MQTT 3.1.1 to a broker, so the access node's figures
//! have a well-known server beside them. Every client subscribes to its own
//! topic `u/<i>`, as every FishChat user has an inbox of their own.

mod client;
mod codec;
mod fanout;
#[cfg(all(test, feature = "mosquitto"))]
mod live;

use std::net::SocketAddr;

use serde::Serialize;

pub use fanout::{FanoutArgs, run as run_fanout};

use crate::report::Report;
use crate::subscribers::{ConnectArgs, idle};

/// The broker and the keepalive (shared by both MQTT scenarios).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct MqttArgs {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: SocketAddr,
    /// CONNECT keepalive in seconds; each subscriber sends PINGREQ this often.
    #[arg(long, default_value_t = 30)]
    pub keepalive: u16,
}

impl MqttArgs {
    fn protocol(&self, connect: &ConnectArgs) -> anyhow::Result<client::Mqtt> {
        anyhow::ensure!(self.keepalive > 0, "--keepalive must be positive");
        Ok(client::Mqtt {
            broker: self.broker,
            keepalive_secs: self.keepalive,
            client_prefix: connect.client_prefix.clone(),
        })
    }
}

/// Parameters of `mqtt-idle`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) mqtt: MqttArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub(super) idle: idle::IdleArgs,
}

/// Runs `mqtt-idle`: N subscribers that only PINGREQ, and the broker's
/// resident memory per connection.
pub async fn run_idle(args: &IdleArgs) -> anyhow::Result<Report> {
    let protocol = args.mqtt.protocol(&args.idle.connect)?;
    let mut report = idle::run(protocol, &args.idle, "mqtt-idle", "mosquitto").await?;
    report.config = serde_json::to_value(args)?;
    Ok(report)
}
