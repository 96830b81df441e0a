//! The resync run's checks and figures: each round's reply against the
//! conversations that changed, and the latencies of every round.

use std::collections::{HashMap, HashSet};

use fishchat_codec::pb;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::device::Held;
use crate::chat::conversation::Conversation;
use crate::report::{Chart, Report, Series};

/// How one round's reply compares with what changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Conversations the reply listed (every page).
    pub listed: u64,
    /// Listed but not changed this round (or listed twice, or naming none).
    pub unchanged_listed: u64,
    /// Changed but not listed.
    pub changed_unlisted: u64,
    /// Changed and listed, but not one past what the device held, or without
    /// the round's message among its newest, or with `has_gap`.
    pub changed_incomplete: u64,
}

impl Check {
    /// The reply `summaries` against `changed` (each changed conversation
    /// with the server_msg_id of its one new message), for a device that
    /// held `held` before the round.
    pub fn of(
        changed: &HashMap<Conversation, u64>,
        held: &HashMap<Conversation, Held>,
        summaries: &[pb::ConversationSummary],
    ) -> Check {
        let mut check = Check {
            listed: summaries.len() as u64,
            ..Check::default()
        };
        let mut found = HashSet::new();
        for summary in summaries {
            let conversation = Conversation::from_ref(summary.conversation.as_ref());
            let Some(conversation) = conversation.filter(|c| found.insert(*c)) else {
                check.unchanged_listed += 1;
                continue;
            };
            let Some(&message) = changed.get(&conversation) else {
                check.unchanged_listed += 1;
                continue;
            };
            let before = held.get(&conversation).map_or(0, |h| h.seq);
            let carried = summary
                .messages
                .iter()
                .any(|m| m.server_msg_id == message && m.seq == summary.head_seq);
            if summary.head_seq != before + 1 || !carried || summary.has_gap {
                check.changed_incomplete += 1;
            }
        }
        check.changed_unlisted = changed.keys().filter(|c| !found.contains(c)).count() as u64;
        check
    }

    /// Whether the reply was anything but exactly the changed conversations, each whole.
    pub fn mismatch(&self) -> bool {
        self.unchanged_listed + self.changed_unlisted + self.changed_incomplete > 0
    }
}

/// One measured round.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    /// Connect + LOGIN + SYNC_CONVERSATIONS (every page), µs.
    pub reconnect_sync_us: u64,
    /// SYNC_CONVERSATIONS alone (every page), µs.
    pub sync_us: u64,
    /// Its reply against what changed.
    #[serde(flatten)]
    pub check: Check,
}

/// Counts over the run.
#[derive(Debug, Default, Serialize)]
struct Totals {
    rounds: u64,
    conversations_held: u64,
    changed_per_round: u64,
    mismatched_rounds: u64,
    unchanged_listed: u64,
    changed_unlisted: u64,
    changed_incomplete: u64,
}

/// The run's shape, for the report.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Conversations the device held (its `known` on every reconnect).
    pub held: usize,
    /// Conversations changed per round.
    pub changed: usize,
}

/// The report of `rounds` (the configuration and CPU figures are the caller's).
pub fn report(shape: Shape, rounds: &[Round]) -> anyhow::Result<Report> {
    let mut total = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut sync = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut totals = Totals {
        rounds: rounds.len() as u64,
        conversations_held: shape.held as u64,
        changed_per_round: shape.changed as u64,
        ..Totals::default()
    };
    for round in rounds {
        total.saturating_record(round.reconnect_sync_us.max(1));
        sync.saturating_record(round.sync_us.max(1));
        totals.mismatched_rounds += u64::from(round.check.mismatch());
        totals.unchanged_listed += round.check.unchanged_listed;
        totals.changed_unlisted += round.check.changed_unlisted;
        totals.changed_incomplete += round.check.changed_incomplete;
    }
    let mut report = Report {
        scenario: "resync".into(),
        config: serde_json::Value::Null,
        figures: Vec::new(),
        details: serde_json::Value::Null,
        charts: Vec::new(),
    };
    report.add("conversations held", totals.conversations_held as f64, "");
    report.add("changed per round", totals.changed_per_round as f64, "");
    report.add("rounds", totals.rounds as f64, "");
    report.add(
        "rounds whose reply was not exactly the changed",
        totals.mismatched_rounds as f64,
        "",
    );
    report.add("listed but unchanged", totals.unchanged_listed as f64, "");
    report.add("changed but not listed", totals.changed_unlisted as f64, "");
    report.add(
        "changed, listed without their new message",
        totals.changed_incomplete as f64,
        "",
    );
    for (what, histogram) in [
        ("reconnect+sync", &total),
        ("SYNC_CONVERSATIONS alone", &sync),
    ] {
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            report.add(
                &format!("{what} latency {label}"),
                ms(histogram.value_at_quantile(q)),
                "ms",
            );
        }
        report.add(&format!("{what} latency max"), ms(histogram.max()), "ms");
    }
    report.details = serde_json::json!({ "totals": totals, "rounds": rounds });
    report.charts = vec![
        Chart::latency_cdf(
            "reconnect + SYNC_CONVERSATIONS latency",
            vec![
                Series::latency_cdf("reconnect+sync", &total),
                Series::latency_cdf("sync alone", &sync),
            ],
        ),
        Chart::per_round(
            "latency per round",
            vec![
                per_round("reconnect+sync", rounds, |r| r.reconnect_sync_us),
                per_round("sync alone", rounds, |r| r.sync_us),
            ],
        ),
    ];
    Ok(report)
}

/// One point per round: its number (from 1) and `us` of it in ms.
fn per_round(label: &str, rounds: &[Round], us: impl Fn(&Round) -> u64) -> Series {
    Series {
        label: label.into(),
        points: rounds
            .iter()
            .enumerate()
            .map(|(i, round)| ((i + 1) as f64, ms(us(round))))
            .collect(),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_codec::pb::stored_message;

    fn summary(peer: u64, head_seq: u64, message: Option<u64>) -> pb::ConversationSummary {
        pb::ConversationSummary {
            conversation: Some(Conversation::User(peer).to_ref()),
            head_seq,
            messages: message
                .map(|server_msg_id| pb::StoredMessage {
                    seq: head_seq,
                    server_msg_id,
                    from_user_id: peer,
                    conversation: Some(stored_message::Conversation::ToUserId(1)),
                    ..pb::StoredMessage::default()
                })
                .into_iter()
                .collect(),
            ..pb::ConversationSummary::default()
        }
    }

    fn held(seqs: &[(u64, u64)]) -> HashMap<Conversation, Held> {
        seqs.iter()
            .map(|&(peer, seq)| (Conversation::User(peer), Held { seq, read_seq: 0 }))
            .collect()
    }

    #[test]
    fn exactly_the_changed_conversations_each_one_past_what_was_held() {
        let held = held(&[(2, 1), (3, 4), (4, 1)]);
        let changed = HashMap::from([(Conversation::User(2), 20), (Conversation::User(3), 30)]);
        let reply = [summary(2, 2, Some(20)), summary(3, 5, Some(30))];
        let check = Check::of(&changed, &held, &reply);
        assert_eq!(
            check,
            Check {
                listed: 2,
                ..Check::default()
            }
        );
        assert!(!check.mismatch());
    }

    #[test]
    fn an_extra_a_missing_a_repeated_and_an_incomplete_conversation_are_counted() {
        let held = held(&[(2, 1), (3, 4), (4, 1), (5, 7)]);
        let changed = HashMap::from([
            (Conversation::User(2), 20),
            (Conversation::User(3), 30),
            (Conversation::User(5), 50),
        ]);
        let reply = [
            summary(2, 2, Some(20)),
            summary(2, 2, Some(20)),
            summary(4, 2, Some(40)),
            // Two past what was held: a message this round did not send.
            summary(5, 9, Some(50)),
            pb::ConversationSummary::default(),
        ];
        let check = Check::of(&changed, &held, &reply);
        assert_eq!(
            check,
            Check {
                listed: 5,
                unchanged_listed: 3,
                changed_unlisted: 1,
                changed_incomplete: 1,
            }
        );
        assert!(check.mismatch());
        let without_message = [summary(2, 2, None)];
        let only = HashMap::from([(Conversation::User(2), 20)]);
        assert_eq!(
            Check::of(&only, &held, &without_message).changed_incomplete,
            1
        );
    }

    #[test]
    fn the_report_has_both_latencies_and_a_point_per_round() {
        let rounds: Vec<Round> = (1..=4)
            .map(|i| Round {
                reconnect_sync_us: i * 10_000,
                sync_us: i * 1_000,
                check: Check {
                    listed: 10,
                    changed_unlisted: u64::from(i == 4),
                    ..Check::default()
                },
            })
            .collect();
        let report = report(
            Shape {
                held: 1000,
                changed: 10,
            },
            &rounds,
        )
        .unwrap();
        let figure = |name: &str| {
            report
                .figures
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value)
                .unwrap_or_else(|| panic!("no figure {name}"))
        };
        assert_eq!(
            figure("rounds whose reply was not exactly the changed"),
            1.0
        );
        assert!((figure("reconnect+sync latency max") - 40.0).abs() < 0.1);
        assert!((figure("SYNC_CONVERSATIONS alone latency p50") - 2.0).abs() < 0.01);
        assert_eq!(report.details["totals"]["mismatched_rounds"], 1);
        assert_eq!(report.details["rounds"][3]["changed_unlisted"], 1);
        let per_round = &report.charts[1];
        assert_eq!(per_round.name, "rounds");
        assert_eq!(per_round.series[0].points[3], (4.0, 40.0));
    }
}
