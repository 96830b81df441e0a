//! The HTTP JSON API for apps and curl: a thin translation between JSON and
//! [`Registry`] calls.
//!
//! - `POST /users {name, password}` → 201 `{user_id}`
//! - `POST /login {name, password}` → `{user_id, token, expires_at_ms}`
//! - with `Authorization: Bearer <token>`:
//!   `POST /groups {name}` → 201 group; `POST /groups/{id}/join` and
//!   `POST /groups/{id}/quit` → `{changed}` (the caller joins or quits);
//!   `GET /groups/{id}/members` → `{group_id, user_ids}`;
//!   `GET /me/groups` → `{groups}`; `POST /logout` → 204 (revokes the token).
//!
//! Every error is an HTTP status plus `{code, message}`, `code` being the
//! client-protocol `ErrorCode` name.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fishchat_codec::ErrorCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::model::{Group, GroupId, UserId};
use crate::registry::Registry;

/// Largest request body accepted (names and passwords are small).
const MAX_BODY_BYTES: usize = 16 * 1024;

type Shared = Arc<Registry>;

/// The API's routes over a shared [`Registry`].
pub fn router(registry: Shared) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/groups", post(create_group))
        .route("/groups/{id}/join", post(join_group))
        .route("/groups/{id}/quit", post(quit_group))
        .route("/groups/{id}/members", get(group_members))
        .route("/me/groups", get(my_groups))
        .fallback(not_found)
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
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(stop)
        .await
}

/// A refusal as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.as_str_name(),
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        if err.is_server_side() {
            tracing::warn!(%err, "request failed");
        }
        let status = match &err {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::NameTaken(_) => StatusCode::CONFLICT,
            Error::BadCredentials | Error::BadToken | Error::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Error::UnknownUser(_) | Error::UnknownGroup(_) => StatusCode::NOT_FOUND,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            code: err.code(),
            message: err.client_message(),
        }
    }
}

/// A JSON body whose rejections (bad JSON, wrong type, too large) answer in the API's error shape.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    ApiError {
        status: rejection.status(),
        code: ErrorCode::InvalidArgument,
        message: rejection.body_text(),
    }
}

/// A numeric id from the path.
struct Id(u64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<u64>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(rejection) => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: ErrorCode::InvalidArgument,
                message: rejection.body_text(),
            }),
        }
    }
}

/// The logged-in caller, from `Authorization: Bearer <token>`.
struct Caller {
    user_id: UserId,
    token: String,
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, registry: &Shared) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: ErrorCode::NotLoggedIn,
                message: "log in first: send Authorization: Bearer <token>".into(),
            });
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Error::BadToken)?;
        let record = registry.verify_token(token).await?;
        Ok(Caller {
            user_id: record.user_id,
            token: token.to_owned(),
        })
    }
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

#[derive(Serialize)]
struct UserIdBody {
    user_id: UserId,
}

#[derive(Serialize)]
struct LoginBody {
    user_id: UserId,
    token: String,
    expires_at_ms: i64,
}

#[derive(Deserialize)]
struct NewGroup {
    name: String,
}

#[derive(Serialize)]
struct GroupBody {
    group_id: GroupId,
    name: String,
    owner_id: UserId,
}

impl From<Group> for GroupBody {
    fn from(g: Group) -> Self {
        GroupBody {
            group_id: g.id,
            name: g.name,
            owner_id: g.owner_id,
        }
    }
}

#[derive(Serialize)]
struct ChangedBody {
    changed: bool,
}

#[derive(Serialize)]
struct MembersBody {
    group_id: GroupId,
    user_ids: Vec<UserId>,
}

#[derive(Serialize)]
struct GroupsBody {
    groups: Vec<GroupBody>,
}

async fn create_user(
    State(registry): State<Shared>,
    Body(c): Body<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = registry.create_user(&c.name, &c.password).await?;
    Ok((StatusCode::CREATED, Json(UserIdBody { user_id })))
}

async fn login(
    State(registry): State<Shared>,
    Body(c): Body<Credentials>,
) -> Result<Json<LoginBody>, ApiError> {
    let login = registry.login(&c.name, &c.password).await?;
    Ok(Json(LoginBody {
        user_id: login.user_id,
        token: login.token,
        expires_at_ms: login.expires_at_ms,
    }))
}

async fn logout(State(registry): State<Shared>, caller: Caller) -> Result<StatusCode, ApiError> {
    registry.revoke_token(&caller.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_group(
    State(registry): State<Shared>,
    caller: Caller,
    Body(g): Body<NewGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let group = registry.create_group(caller.user_id, &g.name).await?;
    Ok((StatusCode::CREATED, Json(GroupBody::from(group))))
}

async fn join_group(
    State(registry): State<Shared>,
    caller: Caller,
    Id(group): Id,
) -> Result<Json<ChangedBody>, ApiError> {
    let changed = registry.join_group(group, caller.user_id).await?;
    Ok(Json(ChangedBody { changed }))
}

async fn quit_group(
    State(registry): State<Shared>,
    caller: Caller,
    Id(group): Id,
) -> Result<Json<ChangedBody>, ApiError> {
    let changed = registry.quit_group(group, caller.user_id).await?;
    Ok(Json(ChangedBody { changed }))
}

async fn group_members(
    State(registry): State<Shared>,
    _caller: Caller,
    Id(group_id): Id,
) -> Result<Json<MembersBody>, ApiError> {
    let user_ids = registry.group_members(group_id).await?;
    Ok(Json(MembersBody { group_id, user_ids }))
}

async fn my_groups(
    State(registry): State<Shared>,
    caller: Caller,
) -> Result<Json<GroupsBody>, ApiError> {
    let groups = registry.user_groups(caller.user_id).await?;
    Ok(Json(GroupsBody {
        groups: groups.into_iter().map(GroupBody::from).collect(),
    }))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: ErrorCode::InvalidArgument,
        message: "no such endpoint".into(),
    }
}
