//! The `p2p` and `group` scenarios: real chat traffic through the whole
//! system (access, logic, Kafka, msg_job, storage, push), measured where it
//! arrives.
//!
//! Every user gets one connection. Senders send at a fixed rate, each
//! message stamped with its send time; every connection counts the PUSHed
//! messages from others it receives (deduplicated by server_msg_id) and
//! their latency, and its own messages pushed back apart. After the send
//! window the run waits for stragglers, then every connection audits its
//! conversations (SYNC_CONVERSATIONS, then SYNC after what it saw) to tell a
//! message stored but never pushed from one that was lost.
//! The connections run in this process or, past one process's open files,
//! in `chat-worker` processes of this program ([`worker`]).

mod chaos;
pub(crate) mod children;
mod churn;
mod conversation;
mod exchange;
mod fleet;
mod groups;
mod local;
mod measures;
mod member;
mod resync;
mod run;
mod tally;
mod track;
pub mod worker;
mod workers;

use std::path::Path;

use anyhow::ensure;
use serde::Serialize;

use crate::idle::PER_WORKER;
use crate::idle::provision;
use crate::idle::wire::{Endpoints, Sources};
use crate::report::Report;
pub use chaos::{ChaosArgs, chaos};
pub use churn::{ChurnArgs, churn};
use member::Target;
pub use resync::{ResyncArgs, resync};
use run::{Plan, Seat};

/// What both scenarios take.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Common {
    /// Access nodes (or a gateway) and register.
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Messages per second each sender sends.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Bytes of each message body (the first 8 carry the send time).
    #[arg(long, default_value_t = 16)]
    pub body_bytes: usize,
    /// Seconds to wait after the sending for acks and pushes still on their way.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds a connection may take to connect and log in.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// Accounts are named `<prefix>-<i>`; their tokens are cached per prefix.
    #[arg(long, default_value = "bench-chat")]
    pub user_prefix: String,
    /// Register requests in flight at once while provisioning.
    #[arg(long, default_value_t = 64)]
    pub provision_concurrency: usize,
    /// Ignore cached tokens and log every account in again.
    #[arg(long)]
    pub fresh_tokens: bool,
    /// A process whose CPU the run reports, as NAME=PID (repeat it for every server and
    /// service): CPU-seconds from the first send to the end of the drain, with its child
    /// processes, and microseconds per acked message.
    #[arg(long = "cpu", value_name = "NAME=PID")]
    pub cpu: Vec<String>,
}

impl Common {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate must be positive"
        );
        ensure!(
            self.seconds > 0.0 && self.seconds.is_finite(),
            "--seconds must be positive"
        );
        ensure!(
            self.drain >= 0.0 && self.login_timeout > 0.0,
            "--drain must not be negative and --login-timeout must be positive"
        );
        Ok(())
    }
}

/// How p2p and group spread their connections: over processes and source addresses.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Scale {
    /// Worker processes, at most 19,000 connections each [default:
    /// connections / 19,000, rounded up]; with 1 the connections run in this process.
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    pub sources: Sources,
}

impl Scale {
    /// The worker processes for `connections`.
    fn workers(&self, connections: usize) -> usize {
        self.workers
            .unwrap_or_else(|| connections.div_ceil(PER_WORKER))
            .max(1)
    }

    fn check(&self, connections: usize) -> anyhow::Result<()> {
        self.sources.check()?;
        let workers = self.workers(connections);
        ensure!(workers <= connections, "more workers than connections");
        ensure!(
            connections.div_ceil(workers) <= PER_WORKER,
            "at most {PER_WORKER} connections per worker: use --workers {} or more",
            connections.div_ceil(PER_WORKER)
        );
        Ok(())
    }
}

/// Parameters of the p2p scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct P2pArgs {
    /// Pairs of users; in each, A sends to B.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub scale: Scale,
}

/// Parameters of the group scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct GroupArgs {
    /// Groups; each has one sender.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Members per group, the sender included.
    #[arg(long, default_value_t = 10)]
    pub size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub scale: Scale,
}

/// Runs the p2p scenario: user `2k` sends to user `2k+1`.
pub async fn p2p(args: &P2pArgs, out_dir: &Path) -> anyhow::Result<Report> {
    let common = &args.common;
    common.check()?;
    ensure!(args.pairs > 0, "--pairs must be positive");
    args.scale.check(2 * args.pairs)?;
    let accounts = accounts("p2p", common, 2 * args.pairs, out_dir).await?;
    let seats = accounts
        .chunks_exact(2)
        .enumerate()
        .flat_map(|(k, pair)| {
            [
                Seat {
                    account: pair[0].clone(),
                    target: Some(Target::User(pair[1].user_id)),
                    receivers: vec![2 * k + 1],
                },
                Seat {
                    account: pair[1].clone(),
                    target: None,
                    receivers: Vec::new(),
                },
            ]
        })
        .collect();
    let plan = Plan {
        scenario: "p2p",
        seats,
    };
    run::run(plan, common, &args.scale, out_dir, args).await
}

/// Runs the group scenario: in every group, the first member sends.
pub async fn group(args: &GroupArgs, out_dir: &Path) -> anyhow::Result<Report> {
    let common = &args.common;
    common.check()?;
    ensure!(args.groups > 0, "--groups must be positive");
    ensure!(args.size >= 2, "--size must be at least 2");
    args.scale.check(args.groups * args.size)?;
    let accounts = accounts("group", common, args.groups * args.size, out_dir).await?;
    let ids = groups::create(
        &common.endpoints.register,
        &common.user_prefix,
        &accounts,
        args.size,
        common.provision_concurrency,
    )
    .await?;
    let seats = accounts
        .iter()
        .enumerate()
        .map(|(i, account)| {
            let (g, k) = (i / args.size, i % args.size);
            let first = g * args.size;
            Seat {
                account: account.clone(),
                target: (k == 0).then(|| Target::Group(ids[g])),
                receivers: if k == 0 {
                    (first + 1..first + args.size).collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    let plan = Plan {
        scenario: "group",
        seats,
    };
    run::run(plan, common, &args.scale, out_dir, args).await
}

/// `count` accounts with tokens, cached in `<out-dir>/<scenario>-tokens-<prefix>.json`.
async fn accounts(
    scenario: &str,
    common: &Common,
    count: usize,
    out_dir: &Path,
) -> anyhow::Result<Vec<provision::Account>> {
    let cache = out_dir.join(format!("{scenario}-tokens-{}.json", common.user_prefix));
    let run_secs = common.login_timeout + common.seconds + common.drain + 600.0;
    let (accounts, _) = provision::accounts(
        &provision::Plan {
            register: &common.endpoints.register,
            prefix: &common.user_prefix,
            count,
            concurrency: common.provision_concurrency,
            valid_for: std::time::Duration::from_secs_f64(run_secs),
            fresh: common.fresh_tokens,
        },
        &cache,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    Ok(accounts)
}
