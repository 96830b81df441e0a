//! How a client finds its access node, who it is, and how patient it is.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`Client`](crate::Client).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// host:port of the gateway's TCP listener; asked for a node on every (re)connect.
    pub gateway: Option<String>,
    /// Connect straight to this access node (used when `gateway` is `None`).
    pub access: Option<String>,
    /// The login token from the register service.
    pub token: String,
    /// A stable id of this device; one connection per (user, device).
    pub device_id: String,
    /// A small local file keeping the last seen seq per (user, device); `None` keeps it in memory only.
    pub state_file: Option<PathBuf>,
    /// How long one request may take; a send keeps retrying (same client_msg_id) across reconnects until then.
    pub request_timeout: Duration,
    /// The first reconnect delay cap; it doubles per failed attempt.
    pub backoff_initial: Duration,
    /// The largest reconnect delay cap.
    pub backoff_max: Duration,
    /// Send `DELIVERY_ACK` after handing messages to the application.
    pub auto_ack: bool,
}

/// The gateway address when none is given.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:7000";

impl ClientOptions {
    /// Options for `token` on `device_id`, through the gateway at [`DEFAULT_GATEWAY`].
    pub fn new(token: impl Into<String>, device_id: impl Into<String>) -> Self {
        Self {
            gateway: Some(DEFAULT_GATEWAY.to_owned()),
            access: None,
            token: token.into(),
            device_id: device_id.into(),
            state_file: None,
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            auto_ack: true,
        }
    }
}
