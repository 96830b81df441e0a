//! The `fishchat` command's subcommands, one module per concern.

pub mod account;
pub mod chat;
pub mod format;
pub mod names;
pub mod profile;
pub mod script;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fishchat_client::register::RegisterApi;
use fishchat_client::{Client, ClientError, ClientOptions, ClientTls, Events};

use self::names::Names;
use self::profile::{Home, Profile};

/// Where the services are and who this is; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// The profile folder (tokens, conversation positions).
    #[arg(long, global = true, env = "FISHCHAT_HOME")]
    pub home: Option<PathBuf>,
    /// The register service's HTTP API.
    #[arg(
        long,
        global = true,
        env = "FISHCHAT_REGISTER",
        default_value = "http://127.0.0.1:8010"
    )]
    pub register: String,
    /// The gateway's TCP address (asked for an access node on every connect).
    #[arg(
        long,
        global = true,
        env = "FISHCHAT_GATEWAY",
        default_value = fishchat_client::DEFAULT_GATEWAY
    )]
    pub gateway: String,
    /// Connect straight to this access node instead of asking the gateway.
    #[arg(long, global = true, env = "FISHCHAT_ACCESS")]
    pub access: Option<String>,
    /// Speak TLS to the access node, trusting the CA certificates in this PEM
    /// file (for a node with `client_tls_cert`).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "FISHCHAT_CLIENT_TLS_CA"
    )]
    pub tls_ca: Option<PathBuf>,
    /// The name the access node's certificate must carry (default: the host
    /// of its address).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "FISHCHAT_CLIENT_TLS_SERVER_NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
    /// This device's id (default: host name and profile name).
    #[arg(long, global = true, env = "FISHCHAT_DEVICE")]
    pub device: Option<String>,
    /// Act as this logged-in profile instead of the last login.
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub as_name: Option<String>,
    /// Seconds one request may take (sends retry across reconnects until then).
    #[arg(long, global = true, default_value_t = 10)]
    pub request_timeout: u64,
}

impl Globals {
    /// The profile folder.
    pub fn home(&self) -> anyhow::Result<Home> {
        let dir = match &self.home {
            Some(dir) => dir.clone(),
            None => Home::default_dir()?,
        };
        Ok(Home::new(dir))
    }

    /// The register API client.
    pub fn register_api(&self) -> RegisterApi {
        RegisterApi::new(self.register.clone())
    }

    /// The chosen identity.
    pub fn profile(&self) -> anyhow::Result<Profile> {
        self.home()?.load(self.as_name.as_deref())
    }

    /// Names known on this machine.
    pub fn names(&self) -> anyhow::Result<Names> {
        let profiles = self.home()?.all()?;
        Ok(Names::new(
            profiles.into_iter().map(|p| (p.user_id, p.name)).collect(),
        ))
    }

    /// The device id: `--device`, else stable from the host and profile names.
    pub fn device(&self, profile: &Profile) -> String {
        match &self.device {
            Some(device) => device.clone(),
            None => format!("{}-{}", host_name(), profile.name),
        }
    }

    /// Client options for `profile` on `device`.
    pub fn options(&self, profile: &Profile, device: String) -> anyhow::Result<ClientOptions> {
        let mut options = ClientOptions::new(profile.token.clone(), device);
        match &self.access {
            Some(access) => {
                options.gateway = None;
                options.access = Some(access.clone());
            }
            None => options.gateway = Some(self.gateway.clone()),
        }
        if let Some(ca) = &self.tls_ca {
            options.tls = Some(ClientTls::from_ca_file(
                ca,
                self.tls_server_name.as_deref(),
            )?);
        }
        options.state_file = Some(self.home()?.state_file());
        options.request_timeout = Duration::from_secs(self.request_timeout.max(1));
        Ok(options)
    }
}

/// Connects, explaining the usual failures.
pub async fn connect(
    options: ClientOptions,
    profile: &Profile,
) -> anyhow::Result<(Client, Events)> {
    let target = options
        .gateway
        .as_ref()
        .map(|g| format!("gateway {g}"))
        .or_else(|| options.access.as_ref().map(|a| format!("access node {a}")))
        .unwrap_or_default();
    match Client::connect(options).await {
        Ok(connected) => Ok(connected),
        Err(err @ ClientError::Login { .. }) => Err(err).with_context(|| {
            format!(
                "logging in as {}: run `fishchat login {}` for a new token",
                profile.name, profile.name
            )
        }),
        Err(err) => Err(err).with_context(|| format!("connecting to {target}")),
    }
}

/// This machine's host name, for default device ids.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
