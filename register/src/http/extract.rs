//! What handlers take from a request, each refusing in the API's error shape:
//! the JSON body, the path's parameters and the logged-in caller.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, Shared};
use crate::error::Error;
use crate::model::UserId;

/// A JSON body; bad JSON, a wrong field type and a body too large are all 400.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The path's parameters (a number, a name, or a tuple of them); 400 when one does not parse.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The logged-in caller, from `Authorization: Bearer <token>`.
pub struct Caller {
    /// Who the token logs in as.
    pub user_id: UserId,
    /// The token itself (for logout).
    pub token: String,
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, registry: &Shared) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "NOT_LOGGED_IN",
                "log in first: send Authorization: Bearer <token>",
            ));
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
