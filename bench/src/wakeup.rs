//! What one thread waking another costs on this machine.
//!
//! At a low message rate the services' CPU per message is mostly threads
//! waking each other: a loop woken to read one SEND, a runtime worker woken
//! for one reply, a librdkafka thread woken for one fetch. This measures the
//! price of one such wake-up alone: two threads hand a turn back and forth,
//! each parking until the other unparks it, so a round trip is two wake-ups.
//! On a machine with two cores the threads land on both; run it under
//! `taskset -c 0` to see the same with both on one core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::procstat;
use crate::report::Report;

/// Parameters of the wake-up benchmark.
#[derive(Debug, clap::Args, Serialize)]
pub struct Args {
    /// Round trips (two wake-ups each).
    #[arg(long, default_value_t = 200_000)]
    pub round_trips: u64,
}

/// Runs the benchmark and returns its report.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    let n = args.round_trips.max(1);
    // True while it is the peer's turn.
    let peer_turn = Arc::new(AtomicBool::new(false));
    let me = thread::current();
    let cpu_before = procstat::cpu_secs("self").context("reading this process's CPU time")?;
    let started = Instant::now();
    let peer = {
        let peer_turn = peer_turn.clone();
        thread::spawn(move || {
            for _ in 0..n {
                while !peer_turn.load(Ordering::Acquire) {
                    thread::park();
                }
                peer_turn.store(false, Ordering::Release);
                me.unpark();
            }
        })
    };
    for _ in 0..n {
        peer_turn.store(true, Ordering::Release);
        peer.thread().unpark();
        while peer_turn.load(Ordering::Acquire) {
            thread::park();
        }
    }
    peer.join()
        .map_err(|_| anyhow::anyhow!("the peer thread panicked"))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = procstat::cpu_secs("self").context("reading this process's CPU time")? - cpu_before;

    let mut report = Report {
        charts: Vec::new(),
        scenario: "wakeup".into(),
        config: serde_json::to_value(args)?,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    let n = n as f64;
    report.add("round trips", n, "");
    report.add("wall time per round trip", wall * 1e6 / n, "µs");
    report.add("CPU per round trip", cpu * 1e6 / n, "µs");
    report.add("CPU per wake-up", cpu * 1e6 / n / 2.0, "µs");
    report.add("CPU, both threads", cpu, "s");
    Ok(report)
}
