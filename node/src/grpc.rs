//! The gRPC server plumbing every service shares: health, reflection, and a
//! graceful stop.

use std::future::Future;
use std::net::SocketAddr;

use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::RpcMetrics;

/// The health service's name, as health checks and reflection know it.
const HEALTH: &str = "grpc.health.v1.Health";

/// The standard health service (whose reporter the caller flips as its
/// dependencies come and go) and the reflection service, both versions
/// (`grpc.reflection.v1` and the `v1alpha` older clients still ask), so
/// `grpcurl` and load balancers can inspect any node.
///
/// Reflection lists exactly what the port serves: `served` (the full names of
/// the FishChat services the caller adds to the routes), health, and itself.
/// Every FishChat contract stays resolvable by symbol, but a service the port
/// does not serve is not advertised.
pub fn health_and_reflection(
    served: &[&str],
) -> Result<(HealthReporter, Routes), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let listing = |reflection: &str| {
        served.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(fishchat_rpc::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH)
                .with_service_name(reflection),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let v1 = listing("grpc.reflection.v1.ServerReflection").build_v1()?;
    let v1alpha = listing("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?;
    Ok((
        reporter,
        Routes::new(health).add_service(v1).add_service(v1alpha),
    ))
}

/// Why the gRPC server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A gRPC server builder, with mutual TLS once [`init_tls`](crate::init_tls)
/// turned it on: every gRPC port of a service starts here.
pub fn server_builder() -> Result<tonic::transport::Server, tonic::transport::Error> {
    let server = tonic::transport::Server::builder();
    match crate::tls::server_tls() {
        Some(tls) => server.tls_config(tls.clone()),
        None => Ok(server),
    }
}

/// Serves `routes` on `addr` until `stop` resolves, then lets in-flight calls
/// finish, counting and timing every call in `rpc`. Once the address is
/// bound, systemd (if it started us) hears that the service is ready.
pub async fn serve(
    addr: SocketAddr,
    routes: Routes,
    rpc: RpcMetrics,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(%addr, "gRPC listening");
    crate::notify_ready();
    // Without TCP_NODELAY a reply written in more than one segment waits for
    // the caller's delayed ACK (40 ms on Linux) whenever calls are not
    // back to back: one batch call at a time took ~50 ms instead of ~10.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    server_builder()?
        .layer(rpc)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async {
            stop.await;
            crate::notify_stopping();
        })
        .await?;
    Ok(())
}
