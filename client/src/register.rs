//! A client of the register service's HTTP JSON API: accounts, login tokens
//! and groups (see `register/src/http.rs` for the routes).

use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a register call failed.
#[derive(Debug, Error)]
pub enum RegisterError {
    /// The service could not be reached, or its answer was not the expected JSON.
    #[error("register service at {url}: {source}")]
    Http {
        /// The URL called.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The service refused the request.
    #[error("register refused ({status}): {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The client-protocol error code name (for example `BAD_TOKEN`).
        code: String,
        /// The service's explanation.
        message: String,
    },
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The user logged in.
    pub user_id: u64,
    /// The token for the access node and the authenticated HTTP routes.
    pub token: String,
    /// When the token expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Its id (what `SEND_TO_GROUP` names).
    pub group_id: u64,
    /// Its name.
    pub name: String,
    /// The user who created it.
    pub owner_id: u64,
}

#[derive(Serialize)]
struct Credentials<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct UserIdBody {
    user_id: u64,
}

#[derive(Deserialize)]
struct GroupsBody {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct ChangedBody {
    changed: bool,
}

#[derive(Deserialize)]
struct MembersBody {
    user_ids: Vec<u64>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The register service's HTTP API at one base URL (for example `http://127.0.0.1:8010`).
#[derive(Debug, Clone)]
pub struct RegisterApi {
    base: String,
    http: reqwest::Client,
}

impl RegisterApi {
    /// A client of the API at `base` (a trailing slash is ignored).
    pub fn new(base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Creates a user; returns its id.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<u64, RegisterError> {
        let request = self
            .http
            .post(self.url("/users"))
            .json(&Credentials { name, password });
        let body: UserIdBody = self.call("/users", request).await?;
        Ok(body.user_id)
    }

    /// Logs in; returns the user id and a token.
    pub async fn login(&self, name: &str, password: &str) -> Result<Login, RegisterError> {
        let request = self
            .http
            .post(self.url("/login"))
            .json(&Credentials { name, password });
        self.call("/login", request).await
    }

    /// The groups the token's user belongs to.
    pub async fn my_groups(&self, token: &str) -> Result<Vec<Group>, RegisterError> {
        let request = self.http.get(self.url("/me/groups")).bearer_auth(token);
        let body: GroupsBody = self.call("/me/groups", request).await?;
        Ok(body.groups)
    }

    /// Creates a group owned (and joined) by the token's user.
    pub async fn create_group(&self, token: &str, name: &str) -> Result<Group, RegisterError> {
        #[derive(Serialize)]
        struct NewGroup<'a> {
            name: &'a str,
        }
        let request = self
            .http
            .post(self.url("/groups"))
            .bearer_auth(token)
            .json(&NewGroup { name });
        self.call("/groups", request).await
    }

    /// The token's user joins a group; `false` when already a member.
    pub async fn join_group(&self, token: &str, group_id: u64) -> Result<bool, RegisterError> {
        let path = format!("/groups/{group_id}/join");
        let request = self.http.post(self.url(&path)).bearer_auth(token);
        let body: ChangedBody = self.call(&path, request).await?;
        Ok(body.changed)
    }

    /// The members of a group.
    pub async fn group_members(
        &self,
        token: &str,
        group_id: u64,
    ) -> Result<Vec<u64>, RegisterError> {
        let path = format!("/groups/{group_id}/members");
        let request = self.http.get(self.url(&path)).bearer_auth(token);
        let body: MembersBody = self.call(&path, request).await?;
        Ok(body.user_ids)
    }

    /// Revokes the token.
    pub async fn logout(&self, token: &str) -> Result<(), RegisterError> {
        let request = self.http.post(self.url("/logout")).bearer_auth(token);
        self.send("/logout", request).await.map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        request: RequestBuilder,
    ) -> Result<T, RegisterError> {
        let response = self.send(path, request).await?;
        response.json().await.map_err(|source| RegisterError::Http {
            url: self.url(path),
            source,
        })
    }

    /// Sends a request; a non-success status becomes [`RegisterError::Refused`].
    async fn send(
        &self,
        path: &str,
        request: RequestBuilder,
    ) -> Result<reqwest::Response, RegisterError> {
        let failed = |source| RegisterError::Http {
            url: self.url(path),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.map_err(failed)?;
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
            code: status.canonical_reason().unwrap_or("HTTP error").to_owned(),
            message: text,
        });
        Err(RegisterError::Refused {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        })
    }
}

impl RegisterError {
    /// True when the service said the name or password is wrong, or the token is bad.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, RegisterError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED.as_u16())
    }
}
