//! Binding and running the whole gateway from its [`Config`].
//!
//! [`Gateway::bind`] does everything that can fail at start (listeners, the
//! first etcd read, the registration) so a misconfigured gateway exits before
//! it claims to serve; [`Gateway::serve`] runs the three servers until told to
//! stop, then leaves etcd first so no one is sent here any more, stops
//! accepting, and lets open connections finish.

use std::future::Future;
use std::net::SocketAddr;

use fishchat_discovery::{DiscoveryError, NodeInfo, Registration, Resolver, default_node_id};
use fishchat_node::RpcMetrics;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::directory::Directory;
use crate::{http, tcp};

/// The service name the gateway registers under.
pub const SERVICE: &str = "gateway";

/// Why the gateway could not start or stopped early.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// A listener could not be bound, or the HTTP server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// etcd refused the registration or the first read of access nodes.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A bound, registered gateway, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    tcp: TcpListener,
    http: TcpListener,
    grpc: TcpListener,
    addrs: Addrs,
    resolver: Resolver,
    directory: Directory,
    rpc: RpcMetrics,
    metrics: tokio::task::JoinHandle<()>,
    registration: Registration,
    health: HealthReporter,
    routes: Routes,
}

/// The addresses the gateway actually listens on.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    tcp: SocketAddr,
    http: SocketAddr,
    grpc: SocketAddr,
    metrics: SocketAddr,
}

impl Gateway {
    /// Binds the three listeners, starts following the access nodes and
    /// registers this gateway in etcd.
    pub async fn bind(config: Config) -> Result<Self, GatewayError> {
        let tcp = bind(config.listen, "TCP").await?;
        let http = bind(config.http_listen, "HTTP").await?;
        let grpc = bind(config.grpc_listen, "gRPC").await?;
        let metrics = bind(config.metrics_listen, "metrics").await?;
        let addrs = Addrs {
            tcp: local_addr(&tcp)?,
            http: local_addr(&http)?,
            grpc: local_addr(&grpc)?,
            metrics: local_addr(&metrics)?,
        };
        let (health, routes) = fishchat_node::health_and_reflection(&[])?;
        let resolver = Resolver::start(&config.etcd_endpoints, &config.access_service).await?;
        let directory = Directory::new(resolver.subscribe());
        let mut registry = Registry::with_prefix("fishchat_gateway");
        let rpc = RpcMetrics::register(&mut registry);
        directory.register_metrics(&mut registry);
        let metrics = fishchat_node::spawn_metrics(metrics, registry);
        let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
        let info = NodeInfo::new(SERVICE, node_id)
            .with_addr("tcp", addrs.tcp.to_string())
            .with_addr("http", addrs.http.to_string())
            .with_addr("grpc", addrs.grpc.to_string());
        let registration =
            Registration::start_with_ttl(&config.etcd_endpoints, info, config.lease_ttl()).await?;
        Ok(Self {
            config,
            tcp,
            http,
            grpc,
            addrs,
            resolver,
            directory,
            rpc,
            metrics,
            registration,
            health,
            routes,
        })
    }

    /// Where the TCP front door listens.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.addrs.tcp
    }

    /// Where the HTTP front door listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.addrs.http
    }

    /// Where the gRPC server listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addrs.grpc
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addrs.metrics
    }

    /// This gateway's node id in etcd.
    pub fn node_id(&self) -> String {
        self.registration.info().node_id
    }

    /// Serves until `stop` resolves (or a server fails), then deregisters and
    /// drains: listeners close at once, open connections finish.
    pub async fn serve(self, stop: impl Future<Output = ()>) -> Result<(), GatewayError> {
        let Gateway {
            config,
            tcp,
            http,
            grpc,
            addrs,
            resolver,
            directory,
            rpc,
            metrics,
            registration,
            health,
            routes,
        } = self;
        let (stopping, stopped) = watch::channel(false);
        let mut servers: JoinSet<Result<(), GatewayError>> = JoinSet::new();

        let settings = tcp::Settings {
            idle_timeout: config.idle_timeout(),
            max_frame_len: config.max_frame_len,
        };
        let tcp_directory = directory.clone();
        let tcp_stop = stopped.clone();
        servers.spawn(async move {
            tcp::serve(tcp, tcp_directory, settings, tcp_stop).await;
            Ok(())
        });
        let http_stop = until_stopped(stopped.clone());
        servers.spawn(async move {
            http::serve(http, directory, http_stop)
                .await
                .map_err(|source| GatewayError::Io {
                    what: "HTTP server".to_owned(),
                    source,
                })
        });
        let grpc_stop = until_stopped(stopped);
        let mut grpc_server = fishchat_node::server_builder()?.layer(rpc);
        servers.spawn(async move {
            grpc_server
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    grpc_stop,
                )
                .await
                .map_err(GatewayError::from)
        });
        tracing::info!(
            tcp = %addrs.tcp, http = %addrs.http, grpc = %addrs.grpc,
            access_service = %config.access_service, "gateway serving"
        );
        // Every listener was bound in `start`.
        fishchat_node::notify_ready();

        let early = tokio::select! {
            () = stop => None,
            ended = servers.join_next() => ended,
        };
        fishchat_node::notify_stopping();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Err(err) = registration.deregister().await {
            tracing::warn!(%err, "cannot deregister; the key expires with its lease");
        }
        let _ = stopping.send(true);
        let mut result = match early {
            Some(ended) => ended.map_err(GatewayError::from).and_then(|r| r),
            None => Ok(()),
        };
        while let Some(ended) = servers.join_next().await {
            if let Err(err) = ended.map_err(GatewayError::from).and_then(|r| r) {
                tracing::error!(%err, "server failed while stopping");
                result = result.and(Err(err));
            }
        }
        drop(resolver);
        metrics.abort();
        tracing::info!("gateway stopped");
        result
    }
}

/// Resolves once the gateway is stopping.
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Io {
            what: format!("cannot bind the {what} listener on {addr}"),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, GatewayError> {
    listener.local_addr().map_err(|source| GatewayError::Io {
        what: "cannot read a listener's address".to_owned(),
        source,
    })
}
