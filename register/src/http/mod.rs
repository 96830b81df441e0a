//! The HTTP JSON API for apps and curl: a thin translation between JSON and
//! [`Registry`] calls. `docs/http-api.md` describes every route, body and
//! status; a test (`register/tests/http_doc.rs`) holds that page and
//! [`routes`] to each other.
//!
//! Every route but `POST /users` and `POST /login` needs
//! `Authorization: Bearer <token>`. Every refusal is an HTTP status plus
//! `{"error": "<text>", "code": "<NAME>"}` (see [`error`]).

mod accounts;
mod error;
mod extract;
mod groups;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::registry::Registry;

/// Largest request body accepted (names and passwords are small).
const MAX_BODY_BYTES: usize = 16 * 1024;

type Shared = Arc<Registry>;

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET: reads.
    Get,
    /// POST: creates or acts.
    Post,
    /// DELETE: removes.
    Delete,
}

impl Verb {
    /// The method's name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

struct Route {
    verb: Verb,
    path: &'static str,
    handler: MethodRouter<Shared>,
}

fn route<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
where
    H: Handler<T, Shared>,
    T: 'static,
{
    Route {
        verb,
        path,
        handler: on(verb.filter(), handler),
    }
}

/// The one table both [`router`] and [`routes`] are made from.
fn table() -> Vec<Route> {
    use Verb::{Delete, Get, Post};
    vec![
        route(Post, "/users", accounts::create_user),
        route(Post, "/login", accounts::login),
        route(Post, "/logout", accounts::logout),
        route(Get, "/users/{name}", accounts::user_by_name),
        route(Post, "/groups", groups::create),
        route(Get, "/groups/{id}", groups::get),
        route(Post, "/groups/{id}/join", groups::join),
        route(Post, "/groups/{id}/leave", groups::leave),
        route(Post, "/groups/{id}/invite", groups::invite),
        route(Get, "/groups/{id}/requests", groups::requests),
        route(
            Post,
            "/groups/{id}/requests/{user_id}/approve",
            groups::approve,
        ),
        route(
            Post,
            "/groups/{id}/requests/{user_id}/reject",
            groups::reject,
        ),
        route(Get, "/groups/{id}/members", groups::members),
        route(
            Delete,
            "/groups/{id}/members/{user_id}",
            groups::remove_member,
        ),
        route(Post, "/groups/{id}/admins", groups::add_admin),
        route(
            Delete,
            "/groups/{id}/admins/{user_id}",
            groups::remove_admin,
        ),
        route(Get, "/me/groups", groups::mine),
    ]
}

/// Every route the API serves: its method and its path, `{name}` marking a parameter.
pub fn routes() -> Vec<(Verb, &'static str)> {
    table().into_iter().map(|r| (r.verb, r.path)).collect()
}

/// The API's routes over a shared [`Registry`].
pub fn router(registry: Shared) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(registry)
}

/// Serves the API on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Shared,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP listening");
    }
    // HTTPS when the node has a public certificate; either way handlers see
    // the peer's address, which login limits count (see `LoginLimits`).
    fishchat_node::serve_http(listener, router(registry), stop).await
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NO_SUCH_ROUTE", "no such route")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
}
