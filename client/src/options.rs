//! How a client finds its access node, who it is, and how patient it is.

use std::path::PathBuf;
use std::time::Duration;

use crate::tls::ClientTls;

/// Settings of a [`Client`](crate::Client).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// host:port of the gateway's TCP listener; asked for a node on every (re)connect.
    pub gateway: Option<String>,
    /// Connect straight to this access node (used when `gateway` is `None`).
    pub access: Option<String>,
    /// The login token from the register service.
    pub token: String,
    /// Speak TLS to the access node (the gateway lookup stays plain TCP);
    /// `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// A stable id of this device; one connection per (user, device).
    pub device_id: String,
    /// A small local file keeping, per (user, device), how far the application
    /// took each conversation, so a restart resumes there; `None` starts afresh.
    pub state_file: Option<PathBuf>,
    /// How long one request may take; a send keeps retrying (same client_msg_id) across reconnects until then.
    pub request_timeout: Duration,
    /// The first reconnect delay cap; it doubles per failed attempt.
    pub backoff_initial: Duration,
    /// The largest reconnect delay cap.
    pub backoff_max: Duration,
    /// After every login, list what changed and sync every gap, delivering
    /// all of it as events (the default). `false` suits a client that only
    /// sends: it asks for nothing after login, and a pushed message that does
    /// not follow what it holds waits until [`Client::sync`](crate::Client::sync)
    /// of its conversation.
    pub catch_up: bool,
}

/// The gateway address when none is given.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:7000";

impl ClientOptions {
    /// Options for `token` on `device_id`, through the gateway at [`DEFAULT_GATEWAY`].
    pub fn new(token: impl Into<String>, device_id: impl Into<String>) -> Self {
        Self {
            gateway: Some(DEFAULT_GATEWAY.to_owned()),
            access: None,
            tls: None,
            token: token.into(),
            device_id: device_id.into(),
            state_file: None,
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            catch_up: true,
        }
    }
}
