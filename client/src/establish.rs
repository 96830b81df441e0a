//! One connection attempt: ask the gateway for a node (or take the configured
//! one), connect, and log in.

use fishchat_codec::{Body, ErrorCode, pb};

use crate::connection::{Connection, ConnectionError};
use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::tls::Stream;

/// A logged-in connection.
pub(crate) struct Established {
    /// The framed connection, logged in.
    pub(crate) conn: Connection<Stream>,
    /// The access node's id (from the gateway) or address.
    pub(crate) node: String,
    /// What the server said at login.
    pub(crate) login: pb::LoginReply,
}

/// The request id of the one request on a fresh connection (gateway lookup, login).
const FIRST_REQUEST: u32 = 1;

/// Connects and logs in, all within the request timeout.
pub(crate) async fn establish(options: &ClientOptions) -> Result<Established, ClientError> {
    tokio::time::timeout(options.request_timeout, attempt(options))
        .await
        .map_err(|_| ClientError::Timeout(options.request_timeout))?
}

async fn attempt(options: &ClientOptions) -> Result<Established, ClientError> {
    let (addr, node) = match (&options.gateway, &options.access) {
        (Some(gateway), _) => lookup(gateway).await?,
        (None, Some(access)) => (access.clone(), access.clone()),
        (None, None) => {
            return Err(ClientError::Gateway {
                addr: String::new(),
                message: "neither a gateway nor an access node is configured".into(),
            });
        }
    };
    let failed = |source| ClientError::Connection {
        addr: addr.clone(),
        source,
    };
    let mut conn = Connection::open(&addr, options.tls.as_ref())
        .await
        .map_err(failed)?;
    let login = pb::LoginRequest {
        token: options.token.clone(),
        device_id: options.device_id.clone(),
    };
    conn.send(FIRST_REQUEST, &login.into())
        .await
        .map_err(failed)?;
    let login = match conn.recv().await.map_err(failed)? {
        (FIRST_REQUEST, Body::LoginReply(reply)) => reply,
        (FIRST_REQUEST, Body::Error(error)) => {
            return Err(ClientError::Login {
                code: error.code(),
                message: error.message,
            });
        }
        (_, Body::Kick(kick)) => {
            return Err(ClientError::Login {
                code: ErrorCode::Unspecified,
                message: format!("kicked during login: {:?}: {}", kick.reason(), kick.text),
            });
        }
        (id, other) => {
            return Err(ClientError::Protocol(format!(
                "expected LOGIN_REPLY to request {FIRST_REQUEST}, got {:?} to request {id}",
                other.command()
            )));
        }
    };
    Ok(Established { conn, node, login })
}

/// Asks the gateway for an access node: (its client address, its node id).
async fn lookup(gateway: &str) -> Result<(String, String), ClientError> {
    let failed = |source: ConnectionError| ClientError::Connection {
        addr: gateway.to_owned(),
        source,
    };
    let refused = |message: String| ClientError::Gateway {
        addr: gateway.to_owned(),
        message,
    };
    let mut conn = Connection::connect(gateway).await.map_err(failed)?;
    conn.send(FIRST_REQUEST, &pb::GatewayLookup {}.into())
        .await
        .map_err(failed)?;
    match conn.recv().await.map_err(failed)? {
        (FIRST_REQUEST, Body::GatewayReply(reply)) if !reply.access_addr.is_empty() => {
            let node = if reply.node_id.is_empty() {
                reply.access_addr.clone()
            } else {
                reply.node_id
            };
            Ok((reply.access_addr, node))
        }
        (FIRST_REQUEST, Body::GatewayReply(_)) => Err(refused("empty access address".into())),
        (FIRST_REQUEST, Body::Error(error)) => {
            Err(refused(format!("{:?}: {}", error.code(), error.message)))
        }
        (id, other) => Err(refused(format!(
            "expected GATEWAY_REPLY to request {FIRST_REQUEST}, got {:?} to request {id}",
            other.command()
        ))),
    }
}
