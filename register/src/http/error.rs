//! Refusals as the API reports them: a status and `{"error", "code"}`, where
//! `error` is for people and `code` a stable name for programs (the table of
//! names is in `docs/http-api.md`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// A refusal as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds to send in `Retry-After`, for a refusal that ends.
    retry_after: Option<u64>,
}

impl ApiError {
    /// A refusal with this status, code name and text.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Tells the client when to try again (rounded up to whole seconds).
    pub fn retry_after(self, after: std::time::Duration) -> Self {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..self
        }
    }

    /// A malformed request: a body or a path that does not parse.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            code: self.code,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        if err.is_server_side() {
            tracing::warn!(%err, "request failed");
        }
        let (status, code) = match &err {
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Error::NameTaken(_) => (StatusCode::CONFLICT, "NAME_TAKEN"),
            Error::BadCredentials => (StatusCode::UNAUTHORIZED, "BAD_CREDENTIALS"),
            Error::BadToken => (StatusCode::UNAUTHORIZED, "BAD_TOKEN"),
            Error::TokenExpired => (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED"),
            Error::UnknownUser(_) | Error::UnknownUserName(_) => {
                (StatusCode::NOT_FOUND, "UNKNOWN_USER")
            }
            Error::UnknownGroup(_) => (StatusCode::NOT_FOUND, "UNKNOWN_GROUP"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Error::NotGroupMember(_) => (StatusCode::FORBIDDEN, "NOT_GROUP_MEMBER"),
            Error::NotAMember { .. } => (StatusCode::NOT_FOUND, "NOT_A_MEMBER"),
            Error::NoSuchRequest { .. } => (StatusCode::NOT_FOUND, "NO_SUCH_REQUEST"),
            Error::OwnerCannotLeave(_) => (StatusCode::CONFLICT, "OWNER_CANNOT_LEAVE"),
            Error::Unavailable(_) | Error::LogUnavailable(_) | Error::Contended => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            Error::TooManyAttempts { retry_after } => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_ATTEMPTS",
                    err.client_message(),
                )
                .retry_after(*retry_after);
            }
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiError::new(status, code, err.client_message())
    }
}
