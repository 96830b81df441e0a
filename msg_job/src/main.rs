//! `fishchat-msg-job`: stores messages from Kafka in their conversations, then pushes them.
//!
//! Wiring only: configuration, the Kafka topics and consumer, the MongoDB
//! conversation store, the session cache and its announcements, the gRPC
//! pusher, the health endpoint, and the pipeline that ties them together
//! (see the library's `pipeline` module).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fishchat_discovery::{NodeInfo, Registration};
use std::sync::Arc;

use fishchat_announcements::{AnnouncedCache, listen};
use fishchat_codec::DEFAULT_MAX_FRAME_LEN;
use fishchat_conversations::ConversationStore;
use fishchat_msg_job::config::Overrides;
use fishchat_msg_job::grpc_push::{GrpcPusher, SESSION_CAPACITY, SESSION_TTL};
use fishchat_msg_job::pipeline::BatchConfig;
use fishchat_msg_job::{Config, Pipeline, kafka};
use fishchat_node::{
    CommonArgs, DEPENDENCY_CHECKS, DEPENDENCY_TIMEOUT, Dependency, RpcMetrics, follow,
    health_and_reflection, init_logging, load_config, serve, serve_metrics, shutdown_signal,
};
use prometheus_client::registry::Registry;
use rdkafka::consumer::Consumer as _;
use tokio::sync::watch;
use tonic_health::ServingStatus;

#[derive(Debug, Parser)]
#[command(
    name = "fishchat-msg-job",
    version,
    about = "stores messages from Kafka in their conversations, then pushes them"
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
    let config: Config = load_config("msg_job", cli.common.config.as_deref(), &cli.overrides)?;
    tracing::info!(node_id = %config.node_id, group_id = %config.group_id, "starting");

    let (stop, stopped) = watch::channel(false);
    let on_signal = stop.clone();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        on_signal.send_replace(true);
    });

    let mut registry = Registry::with_prefix("fishchat_msg_job");
    let rpc = RpcMetrics::register(&mut registry);
    let (health, routes) = health_and_reflection(&[])?;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let mut server_stopped = stopped.clone();
    let mut server = tokio::spawn(serve(config.grpc_listen, routes, rpc, async move {
        let _ = server_stopped.wait_for(|stopped| *stopped).await;
    }));

    let topics = config.topics();
    kafka::ensure_topics(&config.kafka_brokers, &topics, config.partitions)
        .await
        .context("creating the Kafka topics")?;
    let store = ConversationStore::connect(&config.mongo_url, &config.database).await?;
    store
        .prepare()
        .await
        .context("preparing the conversation store")?;
    let sessions = Arc::new(AnnouncedCache::new(SESSION_TTL, SESSION_CAPACITY));
    tokio::spawn(listen(
        config.redis_url.clone(),
        fishchat_rpc::channels::SESSIONS,
        Arc::clone(&sessions),
        stopped.clone(),
    ));
    let pusher = GrpcPusher::new(&config.register_addr, sessions)?;
    let consumer = kafka::consumer(
        &config.kafka_brokers,
        &config.group_id,
        Some(&config.node_id),
        &topics,
        config.fetch_wait_ms,
    )?;
    let batch = BatchConfig {
        max_messages: config.batch_size.max(1),
        linger: Duration::from_millis(config.linger_ms),
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
    };
    let dependencies = vec![
        Dependency::new(
            "kafka",
            kafka::BrokerCheck::new(&config.kafka_brokers, &config.p2p_topic)?,
            |kafka| async move { kafka.run(DEPENDENCY_TIMEOUT).await },
        ),
        Dependency::new("mongodb", store.clone(), |store| async move {
            store.ping().await
        }),
    ];
    consumer.context().register(&mut registry);
    registry.register(
        "redeliveries_absorbed",
        "Messages consumed again (after a crash or rebalance) that were already stored",
        store.already_stored(),
    );
    let pipeline = Pipeline::new(consumer, store, pusher, batch);
    pipeline.stats().register(&mut registry);
    let _metrics = serve_metrics(config.metrics_listen, registry)
        .await
        .with_context(|| format!("binding metrics to {}", config.metrics_listen))?;

    // Registered so operators and health checks can see which nodes consume;
    // nothing calls msg_job. The node id doubles as the Kafka static member id,
    // so it must stay the same across restarts of one node.
    let info = NodeInfo::new("msg_job", config.node_id.clone())
        .with_addr("grpc", config.grpc_listen.to_string());
    let registration = Registration::start(&config.etcd_endpoints, info)
        .await
        .context("registering in etcd")?;

    health.set_service_status("", ServingStatus::Serving).await;
    follow(health, &[], dependencies, DEPENDENCY_CHECKS);
    tracing::info!(?topics, "consuming");
    let mut pipeline = tokio::spawn(pipeline.run(stopped));
    // Whichever ends first (a signal ends both) stops the other: a gRPC server
    // that cannot serve, or a pipeline that failed, ends the process.
    let (served, consumed) = tokio::select! {
        served = &mut server => {
            stop.send_replace(true);
            (served, pipeline.await)
        }
        consumed = &mut pipeline => {
            stop.send_replace(true);
            (server.await, consumed)
        }
    };
    if let Err(err) = registration.deregister().await {
        tracing::warn!(%err, "leaving etcd failed; the lease will expire");
    }
    consumed??;
    served??;
    tracing::info!("stopped");
    Ok(())
}
