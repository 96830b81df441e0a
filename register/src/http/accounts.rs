//! Accounts and tokens: `POST /users`, `POST /login`, `POST /logout`, `GET /users/{name}`.

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::extract::{Body, Caller, Params};
use super::{ApiError, Shared};
use crate::model::UserId;

#[derive(Deserialize)]
pub struct Credentials {
    name: String,
    password: String,
}

#[derive(Serialize)]
struct UserIdBody {
    user_id: UserId,
}

#[derive(Serialize)]
pub struct LoginBody {
    user_id: UserId,
    token: String,
    expires_at_ms: i64,
}

#[derive(Serialize)]
pub struct UserBody {
    user_id: UserId,
    name: String,
}

pub async fn create_user(
    State(registry): State<Shared>,
    Body(c): Body<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = registry.create_user(&c.name, &c.password).await?;
    Ok((StatusCode::CREATED, Json(UserIdBody { user_id })))
}

pub async fn login(
    State(registry): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(c): Body<Credentials>,
) -> Result<Json<LoginBody>, ApiError> {
    let login = registry
        .login(&c.name, &c.password, Some(peer.ip()))
        .await?;
    Ok(Json(LoginBody {
        user_id: login.user_id,
        token: login.token,
        expires_at_ms: login.expires_at_ms,
    }))
}

pub async fn logout(
    State(registry): State<Shared>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    registry.revoke_token(&caller.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn user_by_name(
    State(registry): State<Shared>,
    _caller: Caller,
    Params(name): Params<String>,
) -> Result<Json<UserBody>, ApiError> {
    let user = registry.user_by_name(&name).await?;
    Ok(Json(UserBody {
        user_id: user.id,
        name: user.name,
    }))
}
