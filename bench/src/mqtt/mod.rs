//! The Mosquitto baselines: the same load shapes as the `idle` and `push`
//! scenarios, spoken over MQTT 3.1.1 to a broker, so the access node's figures
//! have a well-known server beside them. Every client subscribes to its own
//! topic `u/<i>`, as every FishChat user has an inbox of their own.

mod client;
mod codec;
mod fanout;
mod fleet;
mod idle;
#[cfg(all(test, feature = "mosquitto"))]
mod live;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::ensure;
use hdrhistogram::Histogram;
use serde::Serialize;

pub use fanout::{FanoutArgs, run as run_fanout};
pub use idle::{IdleArgs, run as run_idle};

use crate::report::Report;

/// How the subscribers connect (shared by both MQTT scenarios).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ConnectArgs {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: SocketAddr,
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Subscribers started per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// CONNECT keepalive in seconds; each subscriber sends PINGREQ this often.
    #[arg(long, default_value_t = 30)]
    pub keepalive: u16,
    /// Use source addresses 127.0.0.2 .. 127.0.0.<K+1>, round-robin (each
    /// gives ~28k ephemeral ports).
    #[arg(long)]
    pub source_ip_count: Option<u8>,
    /// Seconds one subscriber may take to connect, CONNECT and SUBSCRIBE.
    #[arg(long, default_value_t = 30.0)]
    pub setup_timeout: f64,
    /// Client ids are `<prefix>-<i>`.
    #[arg(long, default_value = "bench")]
    pub client_prefix: String,
}

impl ConnectArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.connections > 0, "--connections must be positive");
        ensure!(self.rate > 0.0, "--rate must be positive");
        ensure!(self.keepalive > 0, "--keepalive must be positive");
        ensure!(self.setup_timeout > 0.0, "--setup-timeout must be positive");
        ensure!(
            self.source_ip_count.is_none_or(|k| (1..=253).contains(&k)),
            "--source-ip-count must be 1..=253"
        );
        if let Some(limit) = crate::idle::probe::open_files_limit()
            && limit < self.connections as u64 + 64
        {
            eprintln!(
                "warning: the open-files limit is {limit}, below {} sockets: run `ulimit -n 20000` first",
                self.connections
            );
        }
        Ok(())
    }

    fn plan(&self) -> fleet::Plan {
        fleet::Plan {
            broker: self.broker,
            source_ips: (0..self.source_ip_count.unwrap_or(0))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
                .collect(),
            keepalive_secs: self.keepalive,
            setup_timeout: Duration::from_secs_f64(self.setup_timeout),
            client_prefix: self.client_prefix.clone(),
        }
    }
}

/// Adds the setup figures every MQTT scenario reports.
fn add_setup(report: &mut Report, fleet: &fleet::Fleet) {
    let subscribed = fleet.subscribed.len() as f64;
    report.add("subscribers connected+subscribed", subscribed, "");
    report.add(
        "subscribers failed",
        fleet.failures.values().sum::<u64>() as f64,
        "",
    );
    report.add("connect+subscribe time", fleet.ramp_secs, "s");
    report.add(
        "connect+subscribe rate",
        subscribed / fleet.ramp_secs.max(f64::EPSILON),
        "clients/s",
    );
    add_percentiles(report, "connect+subscribe latency", &fleet.setup);
}

/// Adds p50 .. p999 and max of a µs histogram, in ms.
fn add_percentiles(report: &mut Report, what: &str, histogram: &Histogram<u64>) {
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("{what} {label}"),
            ms(histogram.value_at_quantile(q)),
            "ms",
        );
    }
    report.add(&format!("{what} max"), ms(histogram.max()), "ms");
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}
