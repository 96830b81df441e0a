//! Why a request is refused, in the domain's terms; each surface maps these
//! onto its own status codes (see `rpc` and `http`).

use fishchat_codec::ErrorCode;
use thiserror::Error;

/// A failure of a storage adapter.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique key (a user name) is already taken.
    #[error("already exists")]
    Duplicate,
    /// The backend failed or is unreachable; the request may not have taken effect.
    #[error("storage backend failed: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A backend failure described by `message` (say, a record that does not decode).
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Backend(message.into().into())
    }
}

/// Why the register refused a request.
#[derive(Debug, Error)]
pub enum Error {
    /// A name, password or id is empty, too long or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The user name is taken.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// The name or the password is wrong (the two are not told apart).
    #[error("wrong name or password")]
    BadCredentials,
    /// No such user.
    #[error("unknown user {0}")]
    UnknownUser(u64),
    /// No user has this name.
    #[error("no user is named {0:?}")]
    UnknownUserName(String),
    /// No such group.
    #[error("unknown group {0}")]
    UnknownGroup(u64),
    /// The token is unknown or revoked.
    #[error("unknown or revoked token")]
    BadToken,
    /// The token was valid but has expired.
    #[error("the token has expired; log in again")]
    TokenExpired,
    /// The caller's role in the group does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller is not a member of the group.
    #[error("you are not a member of group {0}")]
    NotGroupMember(u64),
    /// The user the request names is not a member of the group.
    #[error("user {user} is not a member of group {group}")]
    NotAMember {
        /// The group.
        group: u64,
        /// The user.
        user: u64,
    },
    /// The user has no join request awaiting a decision in the group.
    #[error("user {user} has not asked to join group {group}")]
    NoSuchRequest {
        /// The group.
        group: u64,
        /// The user.
        user: u64,
    },
    /// The owner asked to leave its own group.
    #[error("the owner cannot leave group {0}")]
    OwnerCannotLeave(u64),
    /// Too many failed logins of this account or from this address lately.
    #[error("too many failed logins; retry in {} s", retry_after.as_secs().max(1))]
    TooManyAttempts {
        /// When a login may be tried again.
        retry_after: std::time::Duration,
    },
    /// A backend is down; nothing was done, retry.
    #[error("backend unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// The membership log (manager) refused or is unreachable; nothing was done, retry.
    #[error("membership log unavailable: {0}")]
    LogUnavailable(#[source] crate::membership::LogError),
    /// The (group, user) pair kept changing under concurrent requests; nothing was done, retry.
    #[error("the membership kept changing; retry")]
    Contended,
    /// A fault of ours (a hash that does not parse, a crashed worker).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The client-protocol code this refusal carries.
    ///
    /// A taken name, wrong credentials, a missing join request and an owner
    /// that tries to leave are `INVALID_ARGUMENT` to the client: the protocol
    /// has no closer code, and the surfaces add the precise transport status
    /// (gRPC `ALREADY_EXISTS` / HTTP 409 for a taken name, gRPC
    /// `UNAUTHENTICATED` / HTTP 401 for wrong credentials, and so on).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) | Error::NameTaken(_) | Error::BadCredentials => {
                ErrorCode::InvalidArgument
            }
            Error::UnknownUser(_) | Error::UnknownUserName(_) => ErrorCode::UnknownUser,
            Error::UnknownGroup(_) => ErrorCode::UnknownGroup,
            Error::BadToken => ErrorCode::BadToken,
            Error::TokenExpired => ErrorCode::TokenExpired,
            Error::Forbidden(_) | Error::NotGroupMember(_) | Error::NotAMember { .. } => {
                ErrorCode::NotGroupMember
            }
            Error::NoSuchRequest { .. } | Error::OwnerCannotLeave(_) => ErrorCode::InvalidArgument,
            Error::Unavailable(_) | Error::LogUnavailable(_) | Error::Contended => {
                ErrorCode::Unavailable
            }
            Error::TooManyAttempts { .. } => ErrorCode::TooManyRequests,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl Error {
    /// What the caller is told: backend and internal details stay in our logs.
    pub fn client_message(&self) -> String {
        match self {
            Error::Unavailable(_) | Error::LogUnavailable(_) => {
                "a backend is unavailable; retry".to_owned()
            }
            Error::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// Whether this is our fault or a backend's, worth a warning in the logs.
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::LogUnavailable(_) | Error::Internal(_)
        )
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Unavailable(err)
    }
}
