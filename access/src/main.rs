//! `fishchat-access`: the access tier, holding client connections in mio event loops.
//!
//! Wiring only: configuration, the logic resolver, the event loops, the gRPC
//! push service, metrics, etcd registration with the live connection count,
//! and the drain on SIGTERM (leave etcd, stop accepting, tell clients to
//! reconnect elsewhere, close).

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fishchat_access::{AccessNode, Config, Metrics, Overrides};
use fishchat_discovery::{NodeInfo, Registration, Resolver, default_node_id};
use fishchat_node::{
    CommonArgs, RpcMetrics, health_and_reflection, init_logging, load_config, serve, serve_metrics,
    shutdown_signal,
};
use fishchat_rpc::access::access_server::{self, AccessServer};
use fishchat_rpc::logic::logic_client::LogicClient;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tonic_health::ServingStatus;

/// Largest push request accepted, in bytes.
const MAX_PUSH_REQUEST: usize = 16 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-access",
    version,
    about = "the access tier, holding client connections in mio event loops"
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
    fishchat_node::init_tls(&cli.common)?;
    let config: Config = load_config("access", cli.common.config.as_deref(), &cli.overrides)?;
    let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
    let metrics = Arc::new(Metrics::default());

    let logic = Resolver::start(&config.etcd_endpoints, "logic").await?;
    let mut node = AccessNode::start(
        &config,
        node_id.clone(),
        LogicClient::new(logic.balanced_channel("grpc")),
        metrics.clone(),
        tokio::runtime::Handle::current(),
    )?;

    let (health, routes) = health_and_reflection(&[access_server::SERVICE_NAME])?;
    health
        .set_service_status(access_server::SERVICE_NAME, ServingStatus::Serving)
        .await;
    // msg_job keeps its requests near 1 MiB; the limit only bounds a misbehaving caller.
    let push = AccessServer::new(node.push_service()).max_decoding_message_size(MAX_PUSH_REQUEST);
    let routes = routes.add_service(push);
    // Before `serve` reports READY=1, so a SIGTERM at once still drains.
    let shutdown = shutdown_signal();
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let mut registry = Registry::with_prefix("fishchat_access");
    let rpc = RpcMetrics::register(&mut registry);
    metrics.register(&mut registry);
    let _metrics = serve_metrics(config.metrics_listen, registry).await?;
    let grpc = tokio::spawn(serve(config.grpc_listen, routes, rpc, async {
        let _ = grpc_stopped.await;
    }));

    let registration = Registration::start(
        &config.etcd_endpoints,
        NodeInfo::new("access", &node_id)
            .with_addr("client", config.client_addr())
            .with_addr("push", config.push_addr()),
    )
    .await?;
    tracing::info!(node = %node_id, client = %config.client_addr(), push = %config.push_addr(), "access node up");

    // Publish the live connection count so the gateway balances, until SIGTERM.
    let mut every = tokio::time::interval(Duration::from_millis(config.load_report_ms.max(100)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            reason = node.loop_died() => {
                tracing::error!(%reason, "an event loop died; leaving etcd and exiting, to be restarted");
                if let Err(err) = registration.deregister().await {
                    tracing::warn!(%err, "leaving etcd failed; the lease will expire");
                }
                anyhow::bail!("{reason}");
            }
            _ = every.tick() => {
                registration.set_load(u64::try_from(metrics.connections.get()).unwrap_or(0));
            }
        }
    }
    tracing::info!("draining");
    if let Err(err) = registration.deregister().await {
        tracing::warn!(%err, "leaving etcd failed; the lease will expire");
    }
    let upstream = node.upstream();
    tokio::task::spawn_blocking(move || node.drain()).await?;
    // The drained connections' logouts are still on their way to logic.
    upstream
        .settled(Duration::from_millis(config.drain_timeout_ms))
        .await;
    let _ = stop_grpc.send(());
    grpc.await??;
    Ok(())
}
