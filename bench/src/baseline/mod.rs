//! `tokio-server`: the baseline the access tier is compared with. The same
//! client protocol and the same Push gRPC, written the way a Rust engineer
//! would without a hand-rolled loop: one tokio task per connection over
//! `Framed<TcpStream, LengthDelimitedCodec>`, and pushes handed to each
//! connection's task through its own bounded `mpsc` channel, found in a
//! `DashMap` from user id to the user's senders.
//!
//! It authenticates nobody: any LOGIN succeeds (user id from a `tok-<id>`
//! token), so what is measured is the connection handling and the push path.

mod conn;
mod push;
mod registry;
pub(crate) mod spawn;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use fishchat_rpc::access::access_server::AccessServer;
use tokio::net::TcpListener;

use registry::Registry;

/// Largest push request accepted, in bytes (as the access node).
const MAX_PUSH_REQUEST: usize = 16 << 20;

/// Parameters of the baseline server.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where clients connect (the client protocol's framing).
    #[arg(long, default_value = "127.0.0.1:23500")]
    pub listen: SocketAddr,
    /// Where the Push gRPC is served.
    #[arg(long, default_value = "127.0.0.1:23501")]
    pub push_listen: SocketAddr,
    /// Frames queued towards one connection before pushes to it are dropped.
    #[arg(long, default_value_t = 4096)]
    pub queue: usize,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::default());
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let push = AccessServer::new(push::PushService::new(registry.clone()))
        .max_decoding_message_size(MAX_PUSH_REQUEST);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(push)
            .serve_with_shutdown(args.push_listen, shutdown()),
    );
    eprintln!(
        "tokio-server: clients on {}, push gRPC on {}",
        args.listen, args.push_listen
    );
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(conn::serve(stream, registry.clone(), args.queue));
                }
                // Out of files, typically: the connection waits in the backlog.
                Err(err) => {
                    eprintln!("tokio-server: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    grpc.await?.context("push gRPC server")?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
