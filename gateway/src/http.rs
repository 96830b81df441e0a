//! The HTTP front door: `GET /lookup` and `GET /healthz`.

use std::future::Future;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::directory::Directory;

/// The body of a refused lookup, named like the client protocol's error codes.
#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: &'static str,
}

/// The routes of the HTTP front door.
pub fn router(directory: Directory) -> Router {
    Router::new()
        .route("/lookup", get(lookup))
        .route("/healthz", get(healthz))
        .with_state(directory)
}

/// Serves [`router`] on `listener` until `stop` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    directory: Directory,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    fishchat_node::serve_http(listener, router(directory), stop).await
}

/// 200 with `{"access_addr","node_id"}`, or 503 with `{"code":"UNAVAILABLE","message"}`.
async fn lookup(State(directory): State<Directory>) -> Response {
    match directory.lookup() {
        Some(route) => Json(route).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                code: "UNAVAILABLE",
                message: "no access node is available",
            }),
        )
            .into_response(),
    }
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}
