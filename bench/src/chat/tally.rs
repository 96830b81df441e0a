//! The figures of a chat run, from what every connection saw: a message is
//! delivered when its receiver got it by PUSH, stored-not-pushed when only
//! the final audit found it, and lost when it was acked and neither did;
//! each counted for the whole run and per conversation.

use std::collections::BTreeMap;

use serde::Serialize;

use super::conversation::Conversation;
use super::measures::Measures;
use super::member::{Outcome, Target};
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
    /// Senders' own messages PUSHed back to them, once each (not deliveries).
    pub own_pushed: u64,
    /// Expected deliveries received by PUSH.
    pub delivered_expected: u64,
    /// Expected deliveries not pushed but found by the final audit.
    pub stored_not_pushed: u64,
    /// Expected deliveries neither pushed nor found by the audit.
    pub lost: u64,
    /// Expected deliveries whose receiver never logged in or did not finish
    /// (neither delivered nor lost: nobody looked).
    pub unchecked: u64,
    /// PUSHed messages received again.
    pub duplicated: u64,
    /// Messages PUSHed with a seq past the next one their receiver lacked.
    pub out_of_order: u64,
    /// Seqs of this run up to a conversation's head that a member never got
    /// (by PUSH or the audit), summed over the members.
    pub seq_gaps: u64,
    /// Conversations that carried this run's messages.
    pub conversations: u64,
    /// Of them, those with anything in [`PerConversation::anomalous`].
    pub conversations_with_anomalies: u64,
    /// Connections whose final audit did not finish, by reason.
    pub sync_failures: BTreeMap<String, u64>,
    /// Frames nobody asked for, by name.
    pub unexpected: BTreeMap<String, u64>,
    /// Connection tasks that did not finish in time.
    pub unfinished: u64,
}

/// The audit of one conversation, over all its members.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerConversation {
    /// Deliveries its acked messages call for.
    pub expected: u64,
    /// Of them, received by PUSH.
    pub delivered: u64,
    /// Of them, found only by the final audit.
    pub stored_not_pushed: u64,
    /// Of them, found nowhere.
    pub lost: u64,
    /// Of them, whose receiver nobody could ask.
    pub unchecked: u64,
    /// Messages PUSHed to a member again.
    pub duplicated: u64,
    /// Messages PUSHed past a seq their member lacked.
    pub out_of_order: u64,
    /// Seqs up to the head a member never got.
    pub seq_gaps: u64,
}

impl PerConversation {
    /// Anything but a clean delivery of everything, once, in seq order.
    pub fn anomalous(&self) -> bool {
        self.stored_not_pushed
            + self.lost
            + self.unchecked
            + self.duplicated
            + self.out_of_order
            + self.seq_gaps
            > 0
    }
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
    let mut conversations: BTreeMap<String, PerConversation> = BTreeMap::new();
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
        totals.own_pushed += out.own_pushed;
        last_push_us = last_push_us.max(out.last_push_us);
        let me = seat.account.user_id;
        for (conversation, seen) in &out.conversations {
            let per = conversations.entry(conversation.label(me)).or_default();
            per.duplicated += seen.duplicates;
            per.out_of_order += seen.out_of_order;
            per.seq_gaps += seen.seq_gaps;
        }
        let Some(target) = seat.target else {
            continue;
        };
        let per = conversations.entry(label(me, target)).or_default();
        for id in &out.acked {
            for &r in &seat.receivers {
                per.expected += 1;
                match outcomes.get(r).and_then(Option::as_ref) {
                    Some(rx) if rx.login_failure.is_none() => {
                        if rx.pushed.contains(id) {
                            per.delivered += 1;
                        } else if rx.synced.contains(id) {
                            per.stored_not_pushed += 1;
                        } else if rx.sync_failure.is_some() || rx.dropped.is_some() {
                            per.unchecked += 1;
                        } else {
                            per.lost += 1;
                        }
                    }
                    _ => per.unchecked += 1,
                }
            }
        }
    }
    for per in conversations.values() {
        totals.expected += per.expected;
        totals.delivered_expected += per.delivered;
        totals.stored_not_pushed += per.stored_not_pushed;
        totals.lost += per.lost;
        totals.unchecked += per.unchecked;
        totals.duplicated += per.duplicated;
        totals.out_of_order += per.out_of_order;
        totals.seq_gaps += per.seq_gaps;
        totals.conversations_with_anomalies += u64::from(per.anomalous());
    }
    totals.conversations = conversations.len() as u64;
    let anomalous: BTreeMap<&String, &PerConversation> = conversations
        .iter()
        .filter(|(_, per)| per.anomalous())
        .collect();

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
    report.add(
        "own messages pushed back to their sender",
        totals.own_pushed as f64,
        "",
    );
    report.add("pushed out of seq order", totals.out_of_order as f64, "");
    report.add("seq gaps after the audit", totals.seq_gaps as f64, "");
    report.add("conversations", totals.conversations as f64, "");
    report.add(
        "conversations with an anomaly",
        totals.conversations_with_anomalies as f64,
        "",
    );
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
        "conversations_with_anomalies": anomalous,
        "drained": timing.drained,
        "delivering_secs": delivering_secs,
    });
    Ok(report)
}

/// The report's name of the conversation `sender` sends to.
fn label(sender: u64, target: Target) -> String {
    match target {
        Target::User(to) => Conversation::User(to).label(sender),
        Target::Group(group) => Conversation::Group(group).label(sender),
    }
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
    use crate::chat::member::Anomalies;
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
    fn pushed_synced_and_missing_messages_are_told_apart_per_receiver_and_conversation() {
        let plan = Plan {
            scenario: "group",
            seats: vec![
                seat(1, Some(Target::Group(7)), vec![1, 2, 3]),
                seat(2, None, Vec::new()),
                seat(3, None, Vec::new()),
                seat(4, None, Vec::new()),
                seat(6, Some(Target::User(5)), vec![5]),
                seat(5, None, Vec::new()),
            ],
        };
        // The group's sender got its own two messages back: not deliveries.
        let sender = Outcome {
            sent: 3,
            acked: vec![10, 11],
            unacked: 1,
            own_pushed: 2,
            ..Outcome::default()
        };
        // Receiver 2 got 10 by PUSH; 11 only by the audit.
        let mut pushed_and_synced = Outcome::default();
        pushed_and_synced.pushed.extend([10]);
        pushed_and_synced.synced.extend([10, 11]);
        // Receiver 3 got 10 twice; 11 nowhere, and the audit saw its seq missing.
        let mut lossy = Outcome::default();
        lossy.pushed.extend([10]);
        lossy.conversations.insert(
            Conversation::Group(7),
            Anomalies {
                duplicates: 1,
                out_of_order: 0,
                seq_gaps: 1,
            },
        );
        // Receiver 4 never logged in.
        let absent = Outcome {
            login_failure: Some("refused: BAD_TOKEN".into()),
            ..Outcome::default()
        };
        // User 6 to user 5: one message, pushed (user 5 files it under 6).
        let direct_sender = Outcome {
            sent: 1,
            acked: vec![20],
            own_pushed: 1,
            ..Outcome::default()
        };
        let mut direct_receiver = Outcome::default();
        direct_receiver.pushed.insert(20);
        direct_receiver
            .conversations
            .insert(Conversation::User(6), Anomalies::default());
        let outcomes = [
            sender,
            pushed_and_synced,
            lossy,
            absent,
            direct_sender,
            direct_receiver,
        ]
        .map(Some);
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
        assert_eq!(count("logged_in"), 5);
        assert_eq!((count("sent"), count("acked"), count("unacked")), (4, 3, 1));
        assert_eq!(count("expected"), 7);
        assert_eq!(count("delivered"), 3);
        assert_eq!(count("own_pushed"), 3);
        assert_eq!(count("delivered_expected"), 3);
        assert_eq!(count("stored_not_pushed"), 1);
        assert_eq!(count("lost"), 1);
        assert_eq!(count("unchecked"), 2);
        assert_eq!(count("duplicated"), 1);
        assert_eq!(count("seq_gaps"), 1);
        assert_eq!(totals["login_failures"]["refused: BAD_TOKEN"], 1);
        assert_eq!(
            (
                count("conversations"),
                count("conversations_with_anomalies")
            ),
            (2, 1)
        );
        let group = &report.details["conversations_with_anomalies"]["group:7"];
        assert_eq!(group["expected"], 6);
        assert_eq!(group["delivered"], 2);
        assert_eq!(group["stored_not_pushed"], 1);
        assert_eq!(group["lost"], 1);
        assert_eq!(group["duplicated"], 1);
        assert!(
            report.details["conversations_with_anomalies"]
                .get("direct:5-6")
                .is_none(),
            "a clean conversation is only counted"
        );
    }
}
