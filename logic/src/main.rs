//! `fishchat-logic`: checks, deduplicates and routes messages into Kafka on
//! behalf of the access tier; passes logins to register and reads to manager.
//!
//! Wiring only: configuration, the adapters, the gRPC server, and etcd
//! registration and resolution.

use clap::Parser;
use fishchat_discovery::{NodeInfo, Registration, Resolver, default_node_id};
use std::sync::Arc;
use std::time::Duration;

use fishchat_announcements::{AnnouncedCache, listen};
use fishchat_logic::adapters::kafka::{KafkaConfig, KafkaPublisher};
use fishchat_logic::adapters::redis::{RedisDedup, RedisIds};
use fishchat_logic::adapters::register::RegisterDirectory;
use fishchat_logic::cached_groups::CachedGroups;
use fishchat_logic::chat::{Chat, Limits};
use fishchat_logic::known_users::KnownUsers;
use fishchat_logic::service::LogicService;
use fishchat_logic::{Config, Overrides};
use fishchat_node::{
    CommonArgs, DEPENDENCY_CHECKS, DEPENDENCY_TIMEOUT, Dependency, RpcMetrics, follow,
    health_and_reflection, init_logging, load_config, serve, serve_metrics, shutdown_signal,
};
use fishchat_rpc::logic::logic_server::{self, LogicServer};
use prometheus_client::registry::Registry;
use tonic_health::ServingStatus;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-logic",
    version,
    about = "routes, checks and deduplicates messages into Kafka"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Existing users a logic node remembers, so that a send asks register only about a
/// recipient it has not seen: a million ids take some 20 MB.
const KNOWN_USERS: usize = 1_000_000;

/// Groups whose members a logic node remembers between register's announcements.
const CACHED_GROUPS: usize = 100_000;

/// How long cached members are trusted without an announcement (a backstop).
const GROUP_TTL: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.common.log_format);
    fishchat_node::init_tls(&cli.common)?;
    let config: Config = load_config("logic", cli.common.config.as_deref(), &cli.overrides)?;

    let redis =
        redis::aio::ConnectionManager::new(redis::Client::open(config.redis_url.as_str())?).await?;
    let publisher = KafkaPublisher::connect(KafkaConfig {
        brokers: config.kafka_brokers.clone(),
        p2p_topic: config.p2p_topic.clone(),
        group_topic: config.group_topic.clone(),
        partitions: config.partitions,
        send_timeout_ms: config.send_timeout_ms,
        linger_ms: config.kafka_linger_ms,
    })
    .await?;
    let mut registry = Registry::with_prefix("fishchat_logic");
    let rpc = RpcMetrics::register(&mut registry);
    publisher.register_metrics(&mut registry);
    let register = Resolver::start(&config.etcd_endpoints, "register").await?;
    let manager = Resolver::start(&config.etcd_endpoints, "manager").await?;
    let groups = Arc::new(AnnouncedCache::new(GROUP_TTL, CACHED_GROUPS));
    let (_stop_listening, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(listen(
        config.redis_url.clone(),
        fishchat_rpc::channels::GROUPS,
        Arc::clone(&groups),
        stopped,
    ));
    let dependencies = vec![
        Dependency::new("kafka", publisher.check(), |kafka| async move {
            kafka.run(DEPENDENCY_TIMEOUT).await
        }),
        Dependency::new("redis", redis.clone(), |mut redis| async move {
            redis::cmd("PING").query_async::<()>(&mut redis).await
        }),
    ];
    let chat = Chat::new(
        KnownUsers::new(
            CachedGroups::new(
                RegisterDirectory::new(register.balanced_channel("grpc")),
                groups,
            ),
            KNOWN_USERS,
        ),
        RedisDedup::new(redis.clone(), &config.key_prefix, config.dedup_ttl_secs),
        RedisIds::new(redis, &config.key_prefix, config.id_block),
        publisher,
        Limits {
            max_body: config.max_body,
            ..Limits::default()
        },
    );
    chat.register_metrics(&mut registry);
    let service = LogicService::new(
        chat,
        register.balanced_channel("grpc"),
        manager.balanced_channel("grpc"),
    );

    let (health, routes) = health_and_reflection(&[logic_server::SERVICE_NAME])?;
    health
        .set_service_status(logic_server::SERVICE_NAME, ServingStatus::Serving)
        .await;
    follow(
        health,
        &[logic_server::SERVICE_NAME],
        dependencies,
        DEPENDENCY_CHECKS,
    );
    let routes = routes.add_service(LogicServer::new(service));
    let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
    let info = NodeInfo::new("logic", node_id).with_addr("grpc", config.grpc_listen.to_string());
    let registration = Registration::start(&config.etcd_endpoints, info).await?;

    // Before `serve` reports READY=1, so a SIGTERM at once still drains.
    let signal = shutdown_signal();
    let stop = async move {
        signal.await;
        // Leave etcd first, so callers stop picking this node while in-flight calls finish.
        if let Err(err) = registration.deregister().await {
            tracing::warn!(%err, "deregistering from etcd failed; the lease will expire");
        }
    };
    let _metrics = serve_metrics(config.metrics_listen, registry).await?;
    serve(config.grpc_listen, routes, rpc, stop).await?;
    Ok(())
}
