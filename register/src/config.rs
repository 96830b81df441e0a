//! The register's settings: TOML file, then `FISHCHAT_REGISTER_<KEY>`
//! environment variables, then command-line options (see `fishchat_node::load_config`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::password::Passwords;
use crate::registry::{LoginLimits, TokenPolicy};

/// Settings of the register service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server (the `Register` service, health, reflection).
    pub grpc_listen: SocketAddr,
    /// Address of the metrics HTTP server (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// Address of the HTTP JSON API.
    pub http_listen: SocketAddr,
    /// Redis URL (tokens, sessions).
    pub redis_url: String,
    /// Prefix of every Redis key this service writes.
    pub key_prefix: String,
    /// MongoDB connection string (users, groups).
    pub mongo_url: String,
    /// MongoDB database name.
    pub database: String,
    /// How long a login token is accepted, in seconds.
    pub token_ttl_secs: u64,
    /// How long after expiry a token is still reported as expired rather than unknown, in seconds.
    pub token_grace_secs: u64,
    /// How long a device's session (which access node holds its connection)
    /// lives unless that node refreshes it, in milliseconds: a few times the
    /// access nodes' `session_refresh_ms`, so that the sessions of a node
    /// that died stop receiving pushes.
    pub session_ttl_ms: u64,
    /// How long an access node may be missing from etcd before its sessions
    /// are deleted, in milliseconds: a node killed with -9 leaves etcd when
    /// its lease expires, and its users stop being pushed to soon after.
    pub dead_node_grace_ms: u64,
    /// argon2id memory cost per password hash, in KiB (default 19456, OWASP's minimum).
    /// Lower it only for tests: debug builds take about a second per hash at the default.
    pub argon2_memory_kib: u32,
    /// argon2id iterations per password hash (default 2).
    pub argon2_iterations: u32,
    /// Failed logins one account may have in `login_account_window_secs`
    /// before its logins are refused (HTTP 429) until that window ends; 0: no limit.
    pub login_failures_per_account: u64,
    /// The window of an account's failed logins, in seconds, from its first failure.
    pub login_account_window_secs: u64,
    /// Failed logins one client address (an IPv6 /64) may have in
    /// `login_address_window_secs` before its logins are refused; 0: no limit.
    pub login_failures_per_address: u64,
    /// The window of an address's failed logins, in seconds, from its first failure.
    pub login_address_window_secs: u64,
    /// Password hashes computed at once (each takes `argon2_memory_kib`);
    /// further logins and sign-ups wait their turn. 0: one per core.
    pub max_concurrent_hashes: usize,
    /// This node's id, unique among register nodes (its etcd key).
    pub node_id: String,
    /// etcd endpoints, for registering this node.
    pub etcd_endpoints: Vec<String>,
    /// manager's gRPC address, told of every membership change (`Joined`,
    /// `Left`) before register answers the change.
    pub manager_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7010)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9110)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8010)),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "fc:".into(),
            mongo_url: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
            database: "fishchat".into(),
            token_ttl_secs: 7 * 24 * 3600,
            token_grace_secs: 24 * 3600,
            session_ttl_ms: u64::try_from(crate::store::redis::DEFAULT_SESSION_TTL.as_millis())
                .unwrap_or(u64::MAX),
            dead_node_grace_ms: 10_000,
            argon2_memory_kib: argon2::Params::DEFAULT_M_COST,
            argon2_iterations: argon2::Params::DEFAULT_T_COST,
            login_failures_per_account: LoginLimits::default().failures_per_account,
            login_account_window_secs: LoginLimits::default().account_window.as_secs(),
            login_failures_per_address: LoginLimits::default().failures_per_address,
            login_address_window_secs: LoginLimits::default().address_window.as_secs(),
            max_concurrent_hashes: 0,
            node_id: fishchat_discovery::default_node_id(),
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            manager_addr: "http://127.0.0.1:7030".into(),
        }
    }
}

impl Config {
    /// The token lifetimes these settings ask for.
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            ttl: Duration::from_secs(self.token_ttl_secs),
            grace: Duration::from_secs(self.token_grace_secs),
        }
    }

    /// The limits on failed logins these settings ask for.
    pub fn login_limits(&self) -> LoginLimits {
        LoginLimits {
            failures_per_account: self.login_failures_per_account,
            account_window: Duration::from_secs(self.login_account_window_secs),
            failures_per_address: self.login_failures_per_address,
            address_window: Duration::from_secs(self.login_address_window_secs),
        }
    }

    /// Password hashing with the configured argon2id costs.
    pub fn passwords(&self) -> Result<Passwords, argon2::Error> {
        let params = argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            argon2::Params::DEFAULT_P_COST,
            None,
        )?;
        Ok(match self.max_concurrent_hashes {
            0 => Passwords::with_params(params),
            cap => Passwords::with_limit(params, cap),
        })
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Address of the gRPC server (the `Register` service, health, reflection) [default: 127.0.0.1:7010].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9110].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the HTTP JSON API [default: 127.0.0.1:8010].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Redis URL (tokens, sessions) [default: redis://127.0.0.1:6379].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this service writes [default: fc:].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// MongoDB connection string (users, groups) [default: mongodb://127.0.0.1:27017/?directConnection=true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo_url: Option<String>,
    /// MongoDB database name [default: fishchat].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// How long a login token is accepted, in seconds [default: 604800].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
    /// How long after expiry a token reads as expired rather than unknown, in seconds [default: 86400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_grace_secs: Option<u64>,
    /// How long a device's session lives unless its access node refreshes it, in milliseconds [default: 180000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ttl_ms: Option<u64>,
    /// How long an access node may be missing from etcd before its sessions are deleted, in milliseconds [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_node_grace_ms: Option<u64>,
    /// argon2id memory cost per password hash, in KiB (lower it only for tests) [default: 19456].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations per password hash [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2_iterations: Option<u32>,
    /// Failed logins one account may have per window before HTTP 429 (0: no limit) [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_failures_per_account: Option<u64>,
    /// The window of an account's failed logins, in seconds [default: 900].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_account_window_secs: Option<u64>,
    /// Failed logins one client address (IPv6: /64) may have per window (0: no limit) [default: 100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_failures_per_address: Option<u64>,
    /// The window of an address's failed logins, in seconds [default: 900].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_address_window_secs: Option<u64>,
    /// Password hashes computed at once; more logins wait (0: one per core) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_hashes: Option<usize>,
    /// This node's id, unique among register nodes (its etcd key) [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// etcd endpoints, for registering this node, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// manager's gRPC address, told of every membership change; `none` runs register alone [default: http://127.0.0.1:7030].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_addr: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_usable() {
        let config = Config::default();
        config.passwords().expect("default argon2 costs are valid");
        assert_eq!(
            config.manager_addr, "http://127.0.0.1:7030",
            "manager's default gRPC address"
        );
        assert_eq!(
            config.token_policy().ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        let bad = Config {
            argon2_memory_kib: 1,
            ..Config::default()
        };
        assert!(
            bad.passwords().is_err(),
            "a too-small memory cost is refused"
        );
    }
}
