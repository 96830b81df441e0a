//! The `resync` scenario, the issue's target "a user with 1,000
//! conversations of which 10 changed while offline: reconnect +
//! SYNC_CONVERSATIONS gets exactly those 10, p99 <= 50 ms".
//!
//! The user (`<prefix>-0`) has a direct chat with each of `--conversations`
//! peers (`<prefix>-1` on), each holding at least one message a peer sent
//! over the wire, and the user's measuring device holds every head. Each
//! round, while that device is offline, `--changed` random peers send the
//! user one message each; once the user's other, always-connected device
//! has been PUSHed all of them (so they are stored), the measuring device
//! connects, logs in and asks SYNC_CONVERSATIONS with all it holds, timed
//! from the connect to the reply's last page, which must list exactly the
//! changed conversations.

mod device;
mod peer;
mod tally;
mod watcher;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use serde::Serialize;
use tokio::time::{Instant, timeout};

use crate::idle::provision;
use crate::idle::wire::{Endpoints, Failure};
use crate::procstat::Watched;
use crate::push::clock;
use crate::report::Report;
use device::Device;
use peer::{Peer, To};
use tally::{Check, Round, Shape};
use watcher::Watcher;

/// Register requests in flight at once while provisioning.
const PROVISION_CONCURRENCY: usize = 64;
/// How long the setup's messages may take to be stored (pushed to the watching device).
const SETUP_STORED_WITHIN: Duration = Duration::from_secs(120);
/// How long a round's messages may take to be stored.
const ROUND_STORED_WITHIN: Duration = Duration::from_secs(30);
/// Longest the first look or one measured reconnect may take.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cached token must stay valid: this for the setup, plus
/// [`TOKEN_PER_ROUND`] for each round.
const TOKEN_BASE: Duration = Duration::from_secs(600);
/// A round's share of a cached token's validity (sends, storing, reconnect).
const TOKEN_PER_ROUND: Duration = Duration::from_secs(10);

/// Parameters of the resync scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ResyncArgs {
    /// Access nodes (or a gateway) and register.
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Conversations of the user: one direct chat with each of as many peers.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    /// Conversations changed while the user is offline, per round (a random
    /// subset each round).
    #[arg(long, default_value_t = 10)]
    pub changed: usize,
    /// Rounds measured.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Accounts are named `<prefix>-<i>` (the user is `<prefix>-0`); their
    /// tokens are cached per prefix.
    #[arg(long, default_value = "bench-resync")]
    pub user_prefix: String,
    /// A process whose CPU the run reports, as NAME=PID (repeat it for every
    /// server and service): CPU-seconds over the measured reconnects alone,
    /// with its child processes, and microseconds per reconnect.
    #[arg(long = "cpu", value_name = "NAME=PID")]
    pub cpu: Vec<String>,
}

impl ResyncArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.conversations > 0, "--conversations must be positive");
        ensure!(
            (1..=self.conversations).contains(&self.changed),
            "--changed must be 1..=--conversations"
        );
        ensure!(self.iterations > 0, "--iterations must be positive");
        Ok(())
    }
}

/// A finished run: its report, and the rounds whose reply was not exactly
/// the changed conversations (the run fails after saving the report when
/// there is any).
#[derive(Debug)]
pub struct Resync {
    /// The figures.
    pub report: Report,
    /// Rounds with a mismatch.
    pub mismatched_rounds: u64,
}

/// Runs the resync scenario.
pub async fn resync(args: &ResyncArgs, out_dir: &Path) -> anyhow::Result<Resync> {
    args.check()?;
    let watched = Watched::parse(&args.cpu)?;
    let accounts = accounts(args, out_dir).await?;
    let (user, peers) = accounts
        .split_first()
        .context("no accounts were provisioned")?;
    let dial = args.endpoints.dial(Vec::new());
    let peers: Vec<Peer> = peers
        .iter()
        .enumerate()
        .map(|(i, account)| Peer {
            index: i + 2,
            user_id: account.user_id,
            token: account.token.clone(),
        })
        .collect();
    let mut watcher = Watcher::start(&dial, 1, user.token.clone())
        .await
        .map_err(|Failure(why)| anyhow!("the user's watching device: {why}"))?;
    let nonce = clock::now_us();
    let to = |round| To {
        user_id: user.user_id,
        nonce,
        round,
    };

    // Setup: every peer's conversation with the user holds a message, and
    // the measuring device holds every head.
    eprintln!("{} peers send the user a message...", peers.len());
    let everyone: Vec<&Peer> = peers.iter().collect();
    let sent = peer::send_all(&dial, &everyone, to(0)).await?;
    let ids: Vec<u64> = sent.iter().map(|&(_, id)| id).collect();
    watcher
        .wait_for(&ids, Instant::now() + SETUP_STORED_WITHIN)
        .await?;
    let mut device = Device {
        dial: dial.clone(),
        index: 0,
        token: user.token.clone(),
        holds: HashMap::new(),
    };
    timeout(RESYNC_TIMEOUT, device.look())
        .await
        .map_err(|_| anyhow!("the first look timed out"))?
        .map_err(|Failure(why)| anyhow!("the first look: {why}"))?;
    let unheld = sent
        .iter()
        .filter(|(conversation, _)| device.holds.get(conversation).is_none_or(|h| h.seq == 0))
        .count();
    ensure!(
        unheld == 0,
        "the first look did not find {unheld} of the {} peers' conversations",
        peers.len()
    );
    let shape = Shape {
        held: device.holds.len(),
        changed: args.changed,
    };
    eprintln!(
        "the user holds {} conversations; {} rounds of {} changed...",
        shape.held, args.iterations, args.changed
    );

    // The rounds.
    let mut rounds = Vec::with_capacity(args.iterations);
    let mut cpu_used = vec![Some(0.0); watched.sample().len()];
    let mut measured_secs = 0.0;
    for round in 1..=args.iterations {
        let picked: Vec<&Peer> =
            rand::seq::index::sample(&mut rand::rng(), peers.len(), args.changed)
                .into_iter()
                .map(|i| &peers[i])
                .collect();
        let sent = peer::send_all(&dial, &picked, to(round)).await?;
        let ids: Vec<u64> = sent.iter().map(|&(_, id)| id).collect();
        watcher
            .wait_for(&ids, Instant::now() + ROUND_STORED_WITHIN)
            .await
            .with_context(|| format!("round {round}"))?;
        let cpu_before = watched.sample();
        let timed = timeout(RESYNC_TIMEOUT, device.resync())
            .await
            .map_err(|_| anyhow!("round {round}: the reconnect timed out"))?
            .map_err(|Failure(why)| anyhow!("round {round}: the reconnect: {why}"))?;
        let cpu_after = watched.sample();
        for ((used, before), after) in cpu_used.iter_mut().zip(&cpu_before).zip(&cpu_after) {
            *used = used
                .zip(before.zip(*after))
                .map(|(sum, (b, a))| sum + (a - b));
        }
        measured_secs += timed.total_us as f64 / 1e6;
        let changed: HashMap<_, _> = sent.into_iter().collect();
        let check = Check::of(&changed, &device.holds, &timed.summaries);
        if check.mismatch() {
            eprintln!(
                "round {round}: the reply was not exactly the changed conversations: {check:?}"
            );
        }
        device.take(&timed.summaries);
        rounds.push(Round {
            reconnect_sync_us: timed.total_us,
            sync_us: timed.sync_us,
            check,
        });
    }
    watcher.close().await;

    let mut report = tally::report(shape, &rounds)?;
    let zero = vec![Some(0.0); cpu_used.len()];
    watched.add_to(
        &mut report,
        &zero,
        &cpu_used,
        measured_secs,
        (rounds.len() as f64, "reconnect"),
    );
    report.config = serde_json::to_value(args)?;
    let mismatched_rounds = rounds.iter().filter(|r| r.check.mismatch()).count() as u64;
    Ok(Resync {
        report,
        mismatched_rounds,
    })
}

/// The user and its peers, with tokens, cached in `<out-dir>/resync-tokens-<prefix>.json`.
async fn accounts(args: &ResyncArgs, out_dir: &Path) -> anyhow::Result<Vec<provision::Account>> {
    let cache = out_dir.join(format!("resync-tokens-{}.json", args.user_prefix));
    let rounds = u32::try_from(args.iterations).unwrap_or(u32::MAX);
    let (accounts, _) = provision::accounts(
        &provision::Plan {
            register: &args.endpoints.register,
            prefix: &args.user_prefix,
            count: args.conversations + 1,
            concurrency: PROVISION_CONCURRENCY,
            valid_for: TOKEN_BASE + TOKEN_PER_ROUND.saturating_mul(rounds),
            fresh: false,
        },
        &cache,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    Ok(accounts)
}
