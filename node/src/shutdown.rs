//! The signals that end a service: SIGTERM (systemd stop) and SIGINT (Ctrl-C).

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves when the process is asked to stop.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: call it before the service reports READY=1, or a SIGTERM
/// that follows readiness at once meets the default action and kills the
/// process without a drain.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            },
            (Err(err), Ok(mut interrupt)) => {
                tracing::error!(%err, "cannot listen for SIGTERM; only Ctrl-C will stop this process");
                interrupt.recv().await;
                tracing::info!("SIGINT received, shutting down");
            }
            (Ok(mut term), Err(err)) => {
                tracing::error!(%err, "cannot listen for SIGINT; only SIGTERM will stop this process");
                term.recv().await;
                tracing::info!("SIGTERM received, shutting down");
            }
            (Err(err), Err(_)) => {
                tracing::error!(%err, "cannot listen for signals; stop this process with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
