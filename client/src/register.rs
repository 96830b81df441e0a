//! A client of the register service's HTTP JSON API: accounts, login tokens
//! and groups. Every route, body and status is in `docs/http-api.md`; each
//! method here is one route, named after it.

use std::fmt::Write;

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
        /// The refusal's code name (for example `BAD_TOKEN`, `FORBIDDEN`; see `docs/http-api.md`).
        code: String,
        /// The service's explanation.
        message: String,
    },
}

impl RegisterError {
    /// True when the service said the name or password is wrong, or the token is bad.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegisterError::Refused { status, .. } => Some(*status),
            RegisterError::Http { .. } => None,
        }
    }

    /// The code of a refusal (for example `NOT_GROUP_MEMBER`).
    pub fn code(&self) -> Option<&str> {
        match self {
            RegisterError::Refused { code, .. } => Some(code),
            RegisterError::Http { .. } => None,
        }
    }
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

/// A user, as anyone logged in may look it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id (what `SEND_TO_USER` names).
    pub user_id: u64,
    /// Its login name.
    pub name: String,
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
    /// Whether anyone may join at once (else joins wait for the owner or an admin).
    pub open: bool,
}

/// What a member may do in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The creator: cannot leave, names admins.
    Owner,
    /// Invites, decides join requests, removes plain members.
    Admin,
    /// Sends and reads.
    Member,
}

/// A member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member.
    pub user_id: u64,
    /// Its role.
    pub role: Role,
}

/// Where a join left the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStatus {
    /// A member (the group is open, the caller was invited, or already was one).
    Member,
    /// The group is closed: the caller's join request awaits the owner or an admin.
    Pending,
}

/// Where an invitation left the invited user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteStatus {
    /// Invited: it becomes a member when it joins.
    Invited,
    /// A member: it had asked to join (the invitation approved it) or already was one.
    Member,
}

#[derive(Serialize)]
struct Credentials<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct NewGroup<'a> {
    name: &'a str,
    open: bool,
}

#[derive(Serialize)]
struct Target {
    user_id: u64,
}

#[derive(Deserialize)]
struct UserIdBody {
    user_id: u64,
}

#[derive(Deserialize)]
struct UserIdsBody {
    user_ids: Vec<u64>,
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
    members: Vec<Member>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Member,
    Pending,
    Invited,
}

#[derive(Deserialize)]
struct StatusBody {
    status: Status,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    error: String,
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

    /// `POST /users`: creates a user; returns its id.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<u64, RegisterError> {
        let request = self
            .http
            .post(self.url("/users"))
            .json(&Credentials { name, password });
        let body: UserIdBody = self.call("/users", request).await?;
        Ok(body.user_id)
    }

    /// `POST /login`: logs in; returns the user id and a token.
    pub async fn login(&self, name: &str, password: &str) -> Result<Login, RegisterError> {
        let request = self
            .http
            .post(self.url("/login"))
            .json(&Credentials { name, password });
        self.call("/login", request).await
    }

    /// `POST /logout`: revokes the token.
    pub async fn logout(&self, token: &str) -> Result<(), RegisterError> {
        let request = self.http.post(self.url("/logout")).bearer_auth(token);
        self.send("/logout", request).await.map(drop)
    }

    /// `GET /users/{name}`: the user with this name.
    pub async fn user_by_name(&self, token: &str, name: &str) -> Result<User, RegisterError> {
        let path = format!("/users/{}", path_segment(name));
        let request = self.http.get(self.url(&path)).bearer_auth(token);
        self.call(&path, request).await
    }

    /// `POST /groups`: creates a group owned (and joined) by the token's user.
    pub async fn create_group(
        &self,
        token: &str,
        name: &str,
        open: bool,
    ) -> Result<Group, RegisterError> {
        let request = self
            .http
            .post(self.url("/groups"))
            .bearer_auth(token)
            .json(&NewGroup { name, open });
        self.call("/groups", request).await
    }

    /// `GET /groups/{id}`: a group.
    pub async fn group(&self, token: &str, group_id: u64) -> Result<Group, RegisterError> {
        let path = format!("/groups/{group_id}");
        let request = self.http.get(self.url(&path)).bearer_auth(token);
        self.call(&path, request).await
    }

    /// `POST /groups/{id}/join`: the token's user joins, or asks to.
    pub async fn join_group(
        &self,
        token: &str,
        group_id: u64,
    ) -> Result<JoinStatus, RegisterError> {
        let path = format!("/groups/{group_id}/join");
        let request = self.http.post(self.url(&path)).bearer_auth(token);
        let body: StatusBody = self.call(&path, request).await?;
        Ok(match body.status {
            Status::Pending => JoinStatus::Pending,
            Status::Member | Status::Invited => JoinStatus::Member,
        })
    }

    /// `POST /groups/{id}/leave`: the token's user leaves (or withdraws its
    /// request, or declines its invitation); false when it had none of those.
    pub async fn leave_group(&self, token: &str, group_id: u64) -> Result<bool, RegisterError> {
        let path = format!("/groups/{group_id}/leave");
        let request = self.http.post(self.url(&path)).bearer_auth(token);
        let body: ChangedBody = self.call(&path, request).await?;
        Ok(body.changed)
    }

    /// `POST /groups/{id}/invite`: the owner or an admin invites `user_id`.
    pub async fn invite(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<InviteStatus, RegisterError> {
        let path = format!("/groups/{group_id}/invite");
        let request = self
            .http
            .post(self.url(&path))
            .bearer_auth(token)
            .json(&Target { user_id });
        let body: StatusBody = self.call(&path, request).await?;
        Ok(match body.status {
            Status::Invited => InviteStatus::Invited,
            Status::Member | Status::Pending => InviteStatus::Member,
        })
    }

    /// `GET /groups/{id}/requests`: the users whose join requests await a decision.
    pub async fn join_requests(
        &self,
        token: &str,
        group_id: u64,
    ) -> Result<Vec<u64>, RegisterError> {
        let path = format!("/groups/{group_id}/requests");
        let request = self.http.get(self.url(&path)).bearer_auth(token);
        let body: UserIdsBody = self.call(&path, request).await?;
        Ok(body.user_ids)
    }

    /// `POST /groups/{id}/requests/{user_id}/approve`: `user_id` becomes a member.
    pub async fn approve(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<(), RegisterError> {
        let path = format!("/groups/{group_id}/requests/{user_id}/approve");
        let request = self.http.post(self.url(&path)).bearer_auth(token);
        let _: StatusBody = self.call(&path, request).await?;
        Ok(())
    }

    /// `POST /groups/{id}/requests/{user_id}/reject`: the request is gone.
    pub async fn reject(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<(), RegisterError> {
        let path = format!("/groups/{group_id}/requests/{user_id}/reject");
        let request = self.http.post(self.url(&path)).bearer_auth(token);
        self.send(&path, request).await.map(drop)
    }

    /// `GET /groups/{id}/members`: the members and their roles (for members only).
    pub async fn group_members(
        &self,
        token: &str,
        group_id: u64,
    ) -> Result<Vec<Member>, RegisterError> {
        let path = format!("/groups/{group_id}/members");
        let request = self.http.get(self.url(&path)).bearer_auth(token);
        let body: MembersBody = self.call(&path, request).await?;
        Ok(body.members)
    }

    /// `DELETE /groups/{id}/members/{user_id}`: removes a member.
    pub async fn remove_member(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<(), RegisterError> {
        let path = format!("/groups/{group_id}/members/{user_id}");
        let request = self.http.delete(self.url(&path)).bearer_auth(token);
        self.send(&path, request).await.map(drop)
    }

    /// `POST /groups/{id}/admins`: the owner makes the member `user_id` an admin.
    pub async fn add_admin(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<Member, RegisterError> {
        let path = format!("/groups/{group_id}/admins");
        let request = self
            .http
            .post(self.url(&path))
            .bearer_auth(token)
            .json(&Target { user_id });
        self.call(&path, request).await
    }

    /// `DELETE /groups/{id}/admins/{user_id}`: the owner makes an admin a plain member.
    pub async fn remove_admin(
        &self,
        token: &str,
        group_id: u64,
        user_id: u64,
    ) -> Result<(), RegisterError> {
        let path = format!("/groups/{group_id}/admins/{user_id}");
        let request = self.http.delete(self.url(&path)).bearer_auth(token);
        self.send(&path, request).await.map(drop)
    }

    /// `GET /me/groups`: the groups the token's user is a member of.
    pub async fn my_groups(&self, token: &str) -> Result<Vec<Group>, RegisterError> {
        let request = self.http.get(self.url("/me/groups")).bearer_auth(token);
        let body: GroupsBody = self.call("/me/groups", request).await?;
        Ok(body.groups)
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
            error: text,
        });
        Err(RegisterError::Refused {
            status: status.as_u16(),
            code: body.code,
            message: body.error,
        })
    }
}

/// `segment` percent-encoded for one path segment: everything but RFC 3986's
/// unreserved characters, so a name with `/`, `?`, `%` or spaces stays one segment.
fn path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(path_segment("alice-1.x_y~"), "alice-1.x_y~");
        assert_eq!(path_segment("a b/c?%"), "a%20b%2Fc%3F%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
