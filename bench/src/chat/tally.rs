//! The figures of a chat run, from what every connection saw: a message is
//! delivered when its receiver got it by PUSH, stored-not-pushed when only
//! the final SYNC found it, and lost when it was acked and neither did.

use std::collections::BTreeMap;

use serde::Serialize;

use super::measures::Measures;
use super::member::Outcome;
use super::run::{Plan, Timing};
use crate::report::Report;

/// Counts over all connections.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Connections that logged in.
    pub logged_in: u64,
    /// Login failures by kind.
    pub login_failures: BTreeMap<String, u64>,
    /// Connections that ended before the run did, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Senders that logged in.
    pub senders: u64,
    /// Sends written.
    pub sent: u64,
    /// Sends acked without error.
    pub acked: u64,
    /// Sends refused, by error code.
    pub ack_errors: BTreeMap<String, u64>,
    /// Sends never answered.
    pub unacked: u64,
    /// Send times skipped because a connection had 32 requests in flight.
    pub throttled: u64,
    /// Deliveries the acked sends call for (acked × receivers).
    pub expected: u64,
    /// Unique messages from others received by PUSH.
    pub delivered: u64,
    /// Expected deliveries received by PUSH.
    pub delivered_expected: u64,
    /// Expected deliveries not pushed but found by the final SYNC.
    pub stored_not_pushed: u64,
    /// Expected deliveries neither pushed nor found by SYNC.
    pub lost: u64,
    /// Expected deliveries whose receiver never logged in or did not finish
    /// (neither delivered nor lost: nobody looked).
    pub unchecked: u64,
    /// PUSHed messages received again.
    pub duplicated: u64,
    /// Connections whose final SYNC did not finish, by reason.
    pub sync_failures: BTreeMap<String, u64>,
    /// Frames nobody asked for, by name.
    pub unexpected: BTreeMap<String, u64>,
    /// Connection tasks that did not finish in time.
    pub unfinished: u64,
}

/// Builds the report of a run.
pub fn report(
    plan: &Plan,
    outcomes: &[Option<Outcome>],
    measures: &Measures,
    timing: Timing,
    rate: f64,
    config: serde_json::Value,
) -> anyhow::Result<Report> {
    let mut totals = Totals::default();
    let (latency, ack) = (&measures.latency_us, &measures.ack_us);
    let mut last_push_us = 0;
    for (seat, outcome) in plan.seats.iter().zip(outcomes) {
        let Some(out) = outcome else {
            totals.unfinished += 1;
            continue;
        };
        if let Some(why) = &out.login_failure {
            *totals.login_failures.entry(why.clone()).or_default() += 1;
            continue;
        }
        totals.logged_in += 1;
        if seat.target.is_some() {
            totals.senders += 1;
        }
        add(&mut totals.dropped, out.dropped.as_ref());
        add(&mut totals.sync_failures, out.sync_failure.as_ref());
        for (kind, n) in out.ack_errors.iter().chain(&out.unexpected) {
            let map = if out.ack_errors.contains_key(kind) {
                &mut totals.ack_errors
            } else {
                &mut totals.unexpected
            };
            *map.entry(kind.clone()).or_default() += n;
        }
        totals.sent += out.sent;
        totals.acked += out.acked.len() as u64;
        totals.unacked += out.unacked;
        totals.throttled += out.throttled;
        totals.delivered += out.pushed.len() as u64;
        totals.duplicated += out.duplicates;
        last_push_us = last_push_us.max(out.last_push_us);
        for id in &out.acked {
            for &r in &seat.receivers {
                totals.expected += 1;
                match outcomes.get(r).and_then(Option::as_ref) {
                    Some(rx) if rx.login_failure.is_none() => {
                        if rx.pushed.contains(id) {
                            totals.delivered_expected += 1;
                        } else if rx.synced.contains(id) {
                            totals.stored_not_pushed += 1;
                        } else if rx.sync_failure.is_some() || rx.dropped.is_some() {
                            totals.unchecked += 1;
                        } else {
                            totals.lost += 1;
                        }
                    }
                    _ => totals.unchecked += 1,
                }
            }
        }
    }

    if !timing.drained && totals.lost > 0 {
        eprintln!(
            "warning: --drain passed with acks or pushes still missing: `lost` counts messages that may \
             still be on their way; rerun with a longer --drain"
        );
    }
    let mut report = Report {
        charts: measures.charts(),
        scenario: plan.scenario.into(),
        config,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    let delivering_secs = if last_push_us > timing.start_us {
        ((last_push_us - timing.start_us) as f64 / 1e6).max(timing.seconds)
    } else {
        timing.seconds
    };
    report.add("connections logged in", totals.logged_in as f64, "");
    report.add(
        "connections failed",
        totals.login_failures.values().sum::<u64>() as f64,
        "",
    );
    report.add("senders", totals.senders as f64, "");
    report.add("offered send rate", totals.senders as f64 * rate, "msgs/s");
    report.add("sent", totals.sent as f64, "");
    report.add("acked", totals.acked as f64, "");
    report.add(
        "achieved send rate (acked)",
        totals.acked as f64 / timing.seconds,
        "msgs/s",
    );
    report.add(
        "ack errors",
        totals.ack_errors.values().sum::<u64>() as f64,
        "",
    );
    report.add("unacked", totals.unacked as f64, "");
    report.add("throttled (32 in flight)", totals.throttled as f64, "");
    report.add("expected deliveries", totals.expected as f64, "");
    report.add("delivered (unique)", totals.delivered as f64, "");
    report.add(
        "delivery rate",
        totals.delivered as f64 / delivering_secs,
        "deliveries/s",
    );
    report.add("stored but not pushed", totals.stored_not_pushed as f64, "");
    report.add("lost", totals.lost as f64, "");
    report.add("unchecked", totals.unchecked as f64, "");
    report.add("duplicated", totals.duplicated as f64, "");
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("delivery latency {label}"),
            ms(latency.value_at_quantile(q)),
            "ms",
        );
    }
    report.add("delivery latency max", ms(latency.max()), "ms");
    report.add("ack latency p50", ms(ack.value_at_quantile(0.5)), "ms");
    report.add("ack latency p99", ms(ack.value_at_quantile(0.99)), "ms");
    report.add("drain", timing.drain_secs, "s");
    report.add(
        "drained (every ack and push in before --drain)",
        f64::from(u8::from(timing.drained)),
        "",
    );
    report.add(
        "connections dropped",
        totals.dropped.values().sum::<u64>() as f64,
        "",
    );
    report.details = serde_json::json!({
        "totals": totals,
        "drained": timing.drained,
        "delivering_secs": delivering_secs,
    });
    Ok(report)
}

fn add(map: &mut BTreeMap<String, u64>, why: Option<&String>) {
    if let Some(why) = why {
        *map.entry(why.clone()).or_default() += 1;
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::member::Target;
    use crate::chat::run::Seat;
    use crate::idle::provision::Account;

    fn seat(user_id: u64, target: Option<Target>, receivers: Vec<usize>) -> Seat {
        Seat {
            account: Account {
                name: format!("u-{user_id}"),
                user_id,
                token: String::new(),
                expires_at_ms: 0,
            },
            target,
            receivers,
        }
    }

    #[test]
    fn pushed_synced_and_missing_messages_are_told_apart_per_receiver() {
        let plan = Plan {
            scenario: "group",
            seats: vec![
                seat(1, Some(Target::Group(7)), vec![1, 2, 3]),
                seat(2, None, Vec::new()),
                seat(3, None, Vec::new()),
                seat(4, None, Vec::new()),
            ],
        };
        let sender = Outcome {
            sent: 3,
            acked: vec![10, 11],
            unacked: 1,
            ..Outcome::default()
        };
        // Receiver 2 got 10 by PUSH; 11 only by SYNC.
        let mut pushed_and_synced = Outcome::default();
        pushed_and_synced.pushed.extend([10]);
        pushed_and_synced.synced.extend([10, 11]);
        // Receiver 3 got 10 twice; 11 nowhere.
        let mut lossy = Outcome::default();
        lossy.pushed.extend([10]);
        lossy.duplicates = 1;
        // Receiver 4 never logged in.
        let absent = Outcome {
            login_failure: Some("refused: BAD_TOKEN".into()),
            ..Outcome::default()
        };
        let outcomes = [sender, pushed_and_synced, lossy, absent].map(Some);
        let timing = Timing {
            start_us: 0,
            seconds: 1.0,
            drain_secs: 0.0,
            drained: true,
        };
        let measures = Measures::new().unwrap();
        let report = report(
            &plan,
            &outcomes,
            &measures,
            timing,
            1.0,
            serde_json::Value::Null,
        )
        .unwrap();
        let totals = &report.details["totals"];
        let count = |name: &str| totals[name].as_u64().unwrap();
        assert_eq!(count("logged_in"), 3);
        assert_eq!((count("sent"), count("acked"), count("unacked")), (3, 2, 1));
        assert_eq!(count("expected"), 6);
        assert_eq!(count("delivered"), 2);
        assert_eq!(count("delivered_expected"), 2);
        assert_eq!(count("stored_not_pushed"), 1);
        assert_eq!(count("lost"), 1);
        assert_eq!(count("unchecked"), 2);
        assert_eq!(count("duplicated"), 1);
        assert_eq!(totals["login_failures"]["refused: BAD_TOKEN"], 1);
    }
}
