//! The `chat-worker` process: runs its seats as a [`Local`] fleet, follows
//! the parent's orders on stdin ([`Order`]), reports its counters a few
//! times a second and at the end its outcomes on stdout ([`Event`]). It
//! exits when its stdin closes (the parent went away) or its deadline passes.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};

use super::fleet::{Config, Fleet, Spec};
use super::local::Local;
use super::run::FINISH;
use super::workers::{Event, Order};

/// How often the counters are reported.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Parameters of one worker, set by the parent.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// File of JSON lines, one seat (role and token) each: this worker's connections.
    #[arg(long)]
    pub seats: PathBuf,
    /// What every connection shares.
    #[command(flatten)]
    pub config: Config,
    /// Seconds after which the worker gives up, whatever its parent says.
    #[arg(long)]
    pub deadline: f64,
}

/// Runs the worker to the end.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let deadline = Instant::now()
        + Duration::try_from_secs_f64(args.deadline)
            .with_context(|| format!("--deadline {}", args.deadline))?;
    let specs = read_seats(&args.seats)?;
    let mut fleet = Local::start(specs, args.config.setup());
    let (orders_tx, mut orders) = mpsc::unbounded_channel();
    // A thread of its own, not tokio's stdin: a read still blocked in the
    // runtime's blocking pool would keep the process from exiting at its deadline.
    std::thread::spawn(move || read_orders(&orders_tx));

    let mut report = interval(REPORT_EVERY);
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported = None;
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(Order::Send(window)) => fleet.send(window).await,
                Some(Order::Sync) => break,
                None => return Ok(()),
            },
            _ = report.tick() => {
                let counts = fleet.counts();
                if reported != Some(counts) {
                    reported = Some(counts);
                    emit(&Event::Counts(counts))?;
                }
            }
            () = sleep_until(deadline) => bail!("the deadline passed before the parent said SYNC"),
        }
    }
    fleet.sync().await;
    let until = deadline.min(Instant::now() + FINISH);
    tokio::select! {
        gathered = fleet.collect(until) => emit(&Event::Done(Box::new(gathered?))),
        // The parent went away: nobody wants the outcomes.
        None = orders.recv() => Ok(()),
    }
}

fn read_seats(path: &PathBuf) -> anyhow::Result<Vec<Spec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("bad seat in {}", path.display()))
        })
        .collect()
}

/// Forwards the parent's orders until its stdin closes.
fn read_orders(orders: &mpsc::UnboundedSender<Order>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        match serde_json::from_str(&line) {
            Ok(order) => {
                if orders.send(order).is_err() {
                    return;
                }
            }
            Err(err) => eprintln!("chat worker: ignored order {line:?}: {err}"),
        }
    }
}

/// Writes one event as a JSON line on stdout.
fn emit(event: &Event) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()?;
    Ok(())
}
