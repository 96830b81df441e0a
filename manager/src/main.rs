//! `fishchat-manager`: message store reads: sync, cursors, unread counts, history.
//!
//! Wiring only: configuration, the MongoDB conversation store, the gRPC server.

use anyhow::Context;
use clap::Parser;
use fishchat_conversations::ConversationStore;
use fishchat_discovery::{NodeInfo, Registration};
use fishchat_manager::{Config, ManagerService, Overrides};
use fishchat_node::{
    CommonArgs, DEPENDENCY_CHECKS, Dependency, RpcMetrics, follow, health_and_reflection,
    init_logging, load_config, serve, serve_metrics, shutdown_signal,
};
use fishchat_rpc::manager::manager_server::{self, ManagerServer};
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-manager",
    version,
    about = "message store reads: sync, cursors, unread counts, history"
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
    fishchat_node::init_tls(&cli.common).context("mutual TLS")?;
    let config: Config = load_config("manager", cli.common.config.as_deref(), &cli.overrides)?;
    tracing::info!(
        node_id = %config.node_id,
        database = %config.database,
        etcd_endpoints = ?config.etcd_endpoints,
        "starting"
    );

    let store = ConversationStore::connect(&config.mongo_url, &config.database)
        .await
        .context("configuring the MongoDB client")?;
    store
        .prepare()
        .await
        .context("preparing the conversation store (is MongoDB up?)")?;

    let (health, routes) = health_and_reflection(&[manager_server::SERVICE_NAME])?;
    let mongo = Dependency::new("mongodb", store.clone(), |store| async move {
        store.ping().await
    });
    let service = ManagerServer::new(ManagerService::new(store));
    health
        .set_serving::<ManagerServer<ManagerService<ConversationStore>>>()
        .await;
    follow(
        health,
        &[manager_server::SERVICE_NAME],
        vec![mongo],
        DEPENDENCY_CHECKS,
    );
    let routes = routes.add_service(service);

    let info = NodeInfo::new("manager", config.node_id.clone())
        .with_addr("grpc", config.grpc_listen.to_string());
    let registration = Registration::start(&config.etcd_endpoints, info).await?;
    // Before `serve` reports READY=1, so a SIGTERM at once still drains.
    let signal = shutdown_signal();
    let stop = async move {
        signal.await;
        // Leave etcd first, so callers stop picking this node while in-flight calls finish.
        if let Err(err) = registration.deregister().await {
            tracing::warn!(%err, "leaving etcd failed; the lease will expire");
        }
    };

    // Sync, history and read latencies are the `rpc_duration_seconds` of their methods.
    let mut registry = Registry::with_prefix("fishchat_manager");
    let rpc = RpcMetrics::register(&mut registry);
    let _metrics = serve_metrics(config.metrics_listen, registry).await?;
    serve(config.grpc_listen, routes, rpc, stop).await?;
    Ok(())
}
