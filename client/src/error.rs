//! What can go wrong for a client, in terms an application can act on.

use fishchat_codec::{ErrorCode, KickReason};
use thiserror::Error;

use crate::connection::ConnectionError;

/// Why a client call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The connection to the gateway or the access node failed.
    #[error("{addr}: {source}")]
    Connection {
        /// The address that failed.
        addr: String,
        /// What failed.
        #[source]
        source: ConnectionError,
    },
    /// The gateway had no access node to offer, or answered nonsense.
    #[error("gateway {addr}: {message}")]
    Gateway {
        /// The gateway's address.
        addr: String,
        /// What it said.
        message: String,
    },
    /// The access node refused the login (for example a bad or expired token).
    #[error("login refused: {code:?}: {message}")]
    Login {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server refused a request (a send's `SendAck.error`, or an `ERROR` reply).
    #[error("refused: {code:?}: {message}")]
    Refused {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// A send reused a client_msg_id of an earlier message with a different
    /// target or body; nothing was sent. A resend must repeat the first message exactly.
    #[error("client_msg_id {client_msg_id:?} was used before for another message: {message}")]
    ResendMismatch {
        /// The reused id.
        client_msg_id: String,
        /// The server's explanation.
        message: String,
    },
    /// The server broke the protocol (an unexpected or malformed frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The server cut this client off for good (duplicate login, revoked session).
    #[error("kicked: {reason:?}: {text}")]
    Kicked {
        /// Why.
        reason: KickReason,
        /// The server's explanation.
        text: String,
    },
    /// The client was closed, or stopped after a fatal error.
    #[error("the client is closed")]
    Closed,
    /// The state file could not be read or written.
    #[error("state file {path}: {message}")]
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ClientError {
    /// A refusal from an `ERROR` body.
    pub(crate) fn refused(error: &fishchat_codec::pb::Error) -> Self {
        ClientError::Refused {
            code: error.code(),
            message: error.message.clone(),
        }
    }

    /// A refused send of `client_msg_id`, from a `SendAck.error` or an `ERROR` body.
    pub(crate) fn send_refused(client_msg_id: &str, error: &fishchat_codec::pb::Error) -> Self {
        match error.code() {
            ErrorCode::ResendMismatch => ClientError::ResendMismatch {
                client_msg_id: client_msg_id.to_owned(),
                message: error.message.clone(),
            },
            _ => Self::refused(error),
        }
    }
}
