//! A fleet of worker processes: the parent starts `fishchat-bench
//! chat-worker` children of its own executable, each with a file of its
//! seats, tells them the phases on their stdin and hears their counters and
//! outcomes on their stdout, one JSON line each ([`Order`], [`Event`]).
//!
//! Connections are spread over processes because one process may hold only
//! so many sockets (20,000 open files here).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::children::{self, Heard};
use super::fleet::{Config, Fleet, Gathered, Spec, Window};
use super::member::Counts;

/// How long a worker that sent its outcomes has to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What the parent tells a worker, one JSON line on its stdin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Send in this window.
    Send(Window),
    /// Stop sending, audit, log out, and report the outcomes.
    Sync,
}

/// What a worker tells the parent, one JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Its counters now (a few times a second, when they change).
    Counts(Counts),
    /// Its seats' outcomes and measures; the worker exits after it.
    Done(Box<Gathered>),
}

/// The seats of `workers` workers: worker `k` gets every `workers`-th seat
/// from `k` (any split works: the parent tallies the whole run).
pub fn split(specs: Vec<Spec>, workers: usize) -> Vec<Vec<Spec>> {
    let workers = workers.max(1);
    let mut shares: Vec<Vec<Spec>> = (0..workers)
        .map(|_| Vec::with_capacity(specs.len().div_ceil(workers)))
        .collect();
    for (i, spec) in specs.into_iter().enumerate() {
        shares[i % workers].push(spec);
    }
    shares
}

/// Worker processes and what they said last.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    heard: mpsc::UnboundedReceiver<Heard<Event>>,
    seats: Vec<u64>,
    counts: Vec<Counts>,
    gathered: Vec<Option<Gathered>>,
    exited: Vec<bool>,
}

impl Workers {
    /// Writes each share to `<dir>/worker-<k>.seats` and starts its worker,
    /// which gives up by itself after `deadline`.
    pub fn start(
        shares: Vec<Vec<Spec>>,
        config: &Config,
        deadline: Duration,
        dir: &Path,
    ) -> anyhow::Result<Workers> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let (tx, heard) = mpsc::unbounded_channel();
        let mut workers = Workers {
            children: Vec::with_capacity(shares.len()),
            stdins: Vec::with_capacity(shares.len()),
            heard,
            seats: shares.iter().map(|s| s.len() as u64).collect(),
            counts: vec![Counts::default(); shares.len()],
            gathered: std::iter::repeat_with(|| None).take(shares.len()).collect(),
            exited: vec![false; shares.len()],
        };
        for (k, share) in shares.iter().enumerate() {
            let mut args: Vec<OsString> = vec!["chat-worker".into(), "--seats".into()];
            args.push(write_seats(dir, k, share)?.into());
            args.extend(config.to_args().into_iter().map(OsString::from));
            args.push(format!("--deadline={}", deadline.as_secs_f64()).into());
            let (child, stdin) = children::spawn(k, args, tx.clone())?;
            workers.children.push(child);
            workers.stdins.push(Some(stdin));
        }
        Ok(workers)
    }

    fn hear(&mut self, heard: Heard<Event>) {
        match heard {
            Heard::Event(k, Event::Counts(counts)) => self.counts[k] = counts,
            Heard::Event(k, Event::Done(gathered)) => self.gathered[k] = Some(*gathered),
            Heard::Exited(k) => {
                self.exited[k] = true;
                if self.gathered[k].is_none() {
                    // Gone without its outcomes: its connections are too.
                    eprintln!("warning: chat worker {k} ended before reporting");
                    let counts = &mut self.counts[k];
                    counts.failed = self.seats[k].saturating_sub(counts.logged_in);
                    counts.in_flight = 0;
                }
            }
        }
    }

    /// Writes `order` to every worker still listening.
    async fn tell(&mut self, order: Order) {
        let Ok(mut line) = serde_json::to_vec(&order) else {
            return;
        };
        line.push(b'\n');
        for (k, slot) in self.stdins.iter_mut().enumerate() {
            if let Some(stdin) = slot
                && stdin.write_all(&line).await.is_err()
            {
                eprintln!("warning: chat worker {k} is not listening");
                *slot = None;
            }
        }
    }
}

impl Fleet for Workers {
    fn counts(&mut self) -> Counts {
        while let Ok(heard) = self.heard.try_recv() {
            self.hear(heard);
        }
        let mut sum = Counts::default();
        self.counts.iter().for_each(|c| sum.add(c));
        sum
    }

    async fn send(&mut self, window: Window) {
        self.tell(Order::Send(window)).await;
    }

    async fn sync(&mut self) {
        self.tell(Order::Sync).await;
    }

    async fn collect(mut self, until: Instant) -> anyhow::Result<Gathered> {
        let all_in = |w: &Workers| {
            w.gathered
                .iter()
                .zip(&w.exited)
                .all(|(g, e)| g.is_some() || *e)
        };
        while !all_in(&self) {
            tokio::select! {
                heard = self.heard.recv() => match heard {
                    Some(heard) => self.hear(heard),
                    None => break,
                },
                () = sleep_until(until) => break,
            }
        }
        // A closed stdin tells a worker still running to exit.
        self.stdins.clear();
        for (k, child) in self.children.iter_mut().enumerate() {
            if timeout(EXIT_GRACE, child.wait()).await.is_err() {
                eprintln!("warning: chat worker {k} did not exit; killing it");
                let _ = child.kill().await;
            }
        }
        let parts = self.gathered.into_iter().enumerate().filter_map(|(k, g)| {
            if g.is_none() {
                eprintln!("warning: chat worker {k} sent no outcomes");
            }
            g
        });
        Gathered::merge(parts)
    }
}

/// Writes worker `k`'s seats as JSON lines of [`Spec`].
fn write_seats(dir: &Path, k: usize, share: &[Spec]) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("worker-{k}.seats"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?,
    );
    for spec in share {
        serde_json::to_writer(&mut file, spec)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::measures::{Measures, Samples};
    use crate::chat::member::{Outcome, Role};

    fn spec(index: usize) -> Spec {
        Spec {
            role: Role {
                index,
                user_id: index as u64 + 100,
                target: None,
                fanout: 0,
            },
            token: format!("t{index}"),
        }
    }

    #[test]
    fn every_seat_goes_to_exactly_one_worker_in_even_shares() {
        let shares = split((0..11).map(spec).collect(), 3);
        assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 3]);
        let mut seen: Vec<usize> = shares.iter().flatten().map(|s| s.role.index).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..11).collect::<Vec<_>>());
        assert_eq!(
            split(vec![spec(0)], 4).iter().map(Vec::len).sum::<usize>(),
            1
        );
    }

    /// A worker's part as it arrives: through its JSON line.
    fn part(indexes: &[usize], latencies: &[u64], delivered_per_sec: Vec<u64>) -> Gathered {
        let mut measures = Measures::new().unwrap();
        measures.add(&Samples {
            latency_us: latencies.to_vec(),
            delivered_per_sec,
            ..Samples::default()
        });
        let outcomes = indexes
            .iter()
            .map(|&i| {
                let outcome = Outcome {
                    acked: vec![i as u64],
                    pushed: [1000 + i as u64].into(),
                    ..Outcome::default()
                };
                (i, outcome)
            })
            .collect();
        let line =
            serde_json::to_string(&Event::Done(Box::new(Gathered { outcomes, measures }))).unwrap();
        match serde_json::from_str(&line).unwrap() {
            Event::Done(gathered) => *gathered,
            Event::Counts(_) => panic!("not an outcome: {line}"),
        }
    }

    #[test]
    fn workers_outcomes_merge_into_seat_order_and_one_set_of_measures() {
        let merged = Gathered::merge([
            part(&[0, 2], &[1_000, 2_000], vec![1, 1]),
            part(&[1], &[3_000], vec![0, 0, 5]),
        ])
        .unwrap();
        let (outcomes, measures) = merged.place(4);
        for (i, outcome) in outcomes.iter().take(3).enumerate() {
            let outcome = outcome.as_ref().unwrap();
            assert_eq!(outcome.acked, [i as u64]);
            assert!(outcome.pushed.contains(&(1000 + i as u64)));
        }
        assert!(
            outcomes[3].is_none(),
            "a seat nobody reported is unfinished"
        );
        assert_eq!(measures.latency_us.len(), 3);
        assert_eq!(
            measures.latency_us.max(),
            measures.latency_us.highest_equivalent(3_000)
        );
        assert_eq!(measures.delivered_per_sec, [1, 1, 5]);
    }
}
