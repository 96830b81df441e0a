//! `fishchat-register`: accounts, login tokens, sessions and groups.
//!
//! Wiring only: read the configuration, connect MongoDB and Redis (and, on
//! first use, manager), and serve the gRPC service and the HTTP API until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fishchat_discovery::{NodeInfo, Registration, Resolver};
use fishchat_node::{
    CommonArgs, DEPENDENCY_CHECKS, Dependency, RpcMetrics, follow, health_and_reflection,
    init_logging, load_config, serve, serve_metrics, shutdown_signal,
};
use fishchat_register::config::{Config, Overrides};
use fishchat_register::membership::{ManagerLog, MembershipLog};
use fishchat_register::metrics::Metrics;
use fishchat_register::rpc::RegisterRpc;
use fishchat_register::store::mongo::{self, MongoStore};
use fishchat_register::store::redis::RedisStore;
use fishchat_register::{Outbound, Registry, Stores, dead_nodes, http};
use fishchat_rpc::register::register_server::{self, RegisterServer};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-register",
    version,
    about = "accounts, login tokens, sessions and groups"
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
    fishchat_node::init_tls(&cli.common).context("mutual TLS")?;
    let config: Config = load_config("register", cli.common.config.as_deref(), &cli.overrides)?;
    tracing::info!(
        node_id = config.node_id,
        database = config.database,
        "starting"
    );

    let client = mongo::connect(&config.mongo_url)
        .await
        .context("MongoDB connection string")?;
    let mongo = Arc::new(
        MongoStore::open(&client.database(&config.database))
            .await
            .context("MongoDB: creating indexes and counters")?,
    );
    let redis = Arc::new(
        RedisStore::connect(&config.redis_url, &config.key_prefix)
            .await
            .context("Redis connection")?
            .with_session_ttl(Duration::from_millis(config.session_ttl_ms)),
    );
    let stores = Stores {
        accounts: mongo.clone(),
        groups: mongo,
        tokens: redis.clone(),
        sessions: redis.clone(),
        attempts: redis.clone(),
    };
    let membership: Arc<dyn MembershipLog> =
        Arc::new(ManagerLog::new(&config.manager_addr).context("manager_addr")?);
    let outbound = Outbound {
        membership,
        announcer: redis,
    };
    let passwords = config
        .passwords()
        .map_err(|err| anyhow::anyhow!("argon2 settings: {err}"))?;
    let mut metrics = prometheus_client::registry::Registry::with_prefix("fishchat_register");
    let rpc = RpcMetrics::register(&mut metrics);
    let counted = Metrics::default();
    counted.register(&mut metrics);
    let registry = Arc::new(
        Registry::new(stores, outbound, config.token_policy(), passwords)
            .with_login_limits(config.login_limits())
            .with_metrics(counted),
    );

    let (health, routes) = health_and_reflection(&[register_server::SERVICE_NAME])?;
    health.set_serving::<RegisterServer<RegisterRpc>>().await;
    let redis = redis::Client::open(config.redis_url.as_str())
        .context("Redis URL")?
        .get_connection_manager()
        .await
        .context("Redis connection")?;
    let dependencies = vec![
        Dependency::new("mongodb", client.database("admin"), |admin| async move {
            admin
                .run_command(mongodb::bson::doc! { "ping": 1 })
                .await
                .map(drop)
        }),
        Dependency::new("redis", redis, |mut redis| async move {
            redis::cmd("PING").query_async::<()>(&mut redis).await
        }),
    ];
    follow(
        health,
        &[register_server::SERVICE_NAME],
        dependencies,
        DEPENDENCY_CHECKS,
    );
    let routes = routes.add_service(RegisterRpc::server(registry.clone()));
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http_listen))?;

    let info = NodeInfo::new("register", config.node_id.clone())
        .with_addr("grpc", config.grpc_listen.to_string())
        .with_addr("http", config.http_listen.to_string());
    let registration = Registration::start(&config.etcd_endpoints, info)
        .await
        .context("registering in etcd")?;

    // One signal stops both servers, after this node has left etcd.
    let (stop_tx, stop_rx) = watch::channel(false);
    let access_nodes = Resolver::start(&config.etcd_endpoints, "access")
        .await
        .context("following the access nodes in etcd")?;
    tokio::spawn(dead_nodes::sweep(
        registry.clone(),
        access_nodes.subscribe(),
        Duration::from_millis(config.dead_node_grace_ms),
        stop_rx.clone(),
    ));
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = tokio::spawn(http::serve(
        http_listener,
        registry,
        stopped(stop_rx.clone()),
    ));
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        if let Err(err) = registration.deregister().await {
            tracing::warn!(%err, "leaving etcd failed; the lease will expire");
        }
        let _ = stop_tx.send(true);
    });
    let _metrics = serve_metrics(config.metrics_listen, metrics)
        .await
        .with_context(|| format!("binding metrics to {}", config.metrics_listen))?;
    serve(config.grpc_listen, routes, rpc, stopped(stop_rx)).await?;
    http.await.context("HTTP server task")??;
    tracing::info!("stopped");
    Ok(())
}
