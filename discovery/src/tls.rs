//! How this process dials other FishChat services when the deployment uses
//! mutual TLS: once [`use_client_tls`] is called (at start, by
//! `fishchat_node::init_tls`), every channel [`endpoint_for`](crate::endpoint_for)
//! makes is `https`, presents this node's certificate and accepts only peers
//! whose certificate the deployment's CA signed. Process-wide, because every
//! channel to a service must agree, and a channel made before or without it
//! would bypass the boundary.

use std::sync::OnceLock;

use tonic::transport::ClientTlsConfig;

static CLIENT_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Makes every later channel use `config`; false if one was already set
/// (the first stays).
pub fn use_client_tls(config: ClientTlsConfig) -> bool {
    CLIENT_TLS.set(config).is_ok()
}

/// The TLS every channel uses, if the deployment has it.
pub(crate) fn client_tls() -> Option<&'static ClientTlsConfig> {
    CLIENT_TLS.get()
}
