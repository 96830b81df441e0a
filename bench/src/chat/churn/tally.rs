//! The churn run's figures, pair by pair: each acked message is delivered
//! (PUSH or a catch-up), found only by the final audit, lost, or unchecked;
//! and each pair's conversation, as the audit read it whole, must hold every
//! acked message once with seqs from the first to the head without a gap.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::receiver::Seen;
use crate::chat::conversation::Conversation;
use crate::chat::member::Outcome;
use crate::report::Report;

/// Counts over the run.
#[derive(Debug, Default, Serialize)]
struct Totals {
    logged_in: u64,
    failures: BTreeMap<String, u64>,
    disconnects: u64,
    dropped: BTreeMap<String, u64>,
    reconnects: u64,
    reconnect_failures: BTreeMap<String, u64>,
    sent: u64,
    acked: u64,
    ack_errors: BTreeMap<String, u64>,
    unacked: u64,
    delivered: u64,
    found_by_final_sync: u64,
    lost: u64,
    unchecked: u64,
    absent_from_audit: u64,
    stored_twice: u64,
    seq_gaps: u64,
    seq_repeats: u64,
    received_raw: u64,
    received_unique: u64,
    duplicates_raw: u64,
}

/// One pair's conversation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// Messages the sender had acked.
    pub acked: u64,
    /// Of them, seen by PUSH or a catch-up SYNC.
    pub delivered: u64,
    /// Of them, found only by the final audit.
    pub found_by_final_sync: u64,
    /// Of them, nowhere (and the receiver finished its audit).
    pub lost: u64,
    /// Of them, not checked: the receiver gave up or did not finish.
    pub unchecked: u64,
    /// Of them, not in the conversation as the audit read it (whether or not
    /// they were delivered before).
    pub absent_from_audit: u64,
    /// Of them, stored more than once.
    pub stored_twice: u64,
    /// The head the audit was told.
    pub head_seq: u64,
    /// Seqs from the first to the head missing from the conversation.
    pub seq_gaps: u64,
    /// Messages whose seq did not rise.
    pub seq_repeats: u64,
}

/// Builds the report from the senders' and receivers' outcomes (pair by pair).
pub fn tally(
    sent: &[Option<Outcome>],
    seen: &[Option<Seen>],
    seconds: f64,
) -> anyhow::Result<Report> {
    let mut t = Totals::default();
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    let mut resync = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (sender, receiver) in sent.iter().zip(seen) {
        let acked: &[u64] = match sender {
            Some(out) => {
                t.logged_in += u64::from(out.login_failure.is_none());
                if let Some(why) = out.login_failure.as_ref().or(out.dropped.as_ref()) {
                    *t.failures.entry(format!("sender: {why}")).or_default() += 1;
                }
                t.sent += out.sent;
                t.unacked += out.unacked;
                for (code, n) in &out.ack_errors {
                    *t.ack_errors.entry(code.clone()).or_default() += n;
                }
                &out.acked
            }
            None => {
                *t.failures.entry("sender unfinished".into()).or_default() += 1;
                &[]
            }
        };
        t.acked += acked.len() as u64;
        let Some(rx) = receiver else {
            *t.failures.entry("receiver unfinished".into()).or_default() += 1;
            t.unchecked += acked.len() as u64;
            continue;
        };
        t.logged_in += u64::from(rx.logged_in);
        t.disconnects += rx.disconnects;
        t.reconnects += rx.reconnects;
        for (why, n) in &rx.dropped {
            *t.dropped.entry(why.clone()).or_default() += n;
        }
        for (why, n) in &rx.reconnect_failures {
            *t.reconnect_failures.entry(why.clone()).or_default() += n;
        }
        t.received_raw += rx.raw;
        t.received_unique += rx.unique.len() as u64;
        resync.add(&rx.resync_us)?;
        if let Some(why) = &rx.failure {
            *t.failures.entry(format!("receiver: {why}")).or_default() += 1;
        }
        let pair = pair(acked, rx);
        t.delivered += pair.delivered;
        t.found_by_final_sync += pair.found_by_final_sync;
        t.lost += pair.lost;
        t.unchecked += pair.unchecked;
        t.absent_from_audit += pair.absent_from_audit;
        t.stored_twice += pair.stored_twice;
        t.seq_gaps += pair.seq_gaps;
        t.seq_repeats += pair.seq_repeats;
        pairs.insert(Conversation::User(rx.sender).label(rx.user_id), pair);
    }
    t.duplicates_raw = t.received_raw.saturating_sub(t.received_unique);
    let mut report = Report {
        charts: Vec::new(),
        scenario: "churn".into(),
        config: serde_json::Value::Null,
        figures: Vec::new(),
        details: serde_json::Value::Null,
    };
    report.add("disconnects", t.disconnects as f64, "");
    report.add("reconnects", t.reconnects as f64, "");
    report.add(
        "reconnect failures",
        t.reconnect_failures.values().sum::<u64>() as f64,
        "",
    );
    report.add(
        "dropped by the server",
        t.dropped.values().sum::<u64>() as f64,
        "",
    );
    report.add("sent", t.sent as f64, "");
    report.add("acked", t.acked as f64, "");
    report.add(
        "achieved send rate (acked)",
        t.acked as f64 / seconds,
        "msgs/s",
    );
    report.add("delivered (PUSH or catch-up SYNC)", t.delivered as f64, "");
    report.add(
        "found only by the final audit",
        t.found_by_final_sync as f64,
        "",
    );
    report.add("lost", t.lost as f64, "");
    report.add("unchecked", t.unchecked as f64, "");
    report.add(
        "acked but absent from the audited conversation",
        t.absent_from_audit as f64,
        "",
    );
    report.add("acked but stored twice", t.stored_twice as f64, "");
    report.add(
        "seq gaps in the audited conversations",
        t.seq_gaps as f64,
        "",
    );
    report.add(
        "seq repeats in the audited conversations",
        t.seq_repeats as f64,
        "",
    );
    report.add("received (raw)", t.received_raw as f64, "");
    report.add("received (unique)", t.received_unique as f64, "");
    report.add(
        "duplicates seen (dropped by dedupe)",
        t.duplicates_raw as f64,
        "",
    );
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        report.add(
            &format!("reconnect+catch-up latency {label}"),
            resync.value_at_quantile(q) as f64 / 1000.0,
            "ms",
        );
    }
    report.add(
        "reconnect+catch-up latency max",
        resync.max() as f64 / 1000.0,
        "ms",
    );
    report.details = serde_json::json!({ "totals": t, "conversations": pairs });
    Ok(report)
}

/// One pair's figures: the sender's acked messages against what the
/// receiver saw and what its audit read.
fn pair(acked: &[u64], rx: &Seen) -> Pair {
    let mut pair = Pair {
        acked: acked.len() as u64,
        ..Pair::default()
    };
    let audit = rx.audit.as_ref().filter(|_| rx.failure.is_none());
    if let Some(audit) = audit {
        pair.head_seq = audit.head_seq;
        pair.seq_gaps = audit.seq_gaps;
        pair.seq_repeats = audit.seq_repeats;
    }
    for &id in acked {
        let copies = audit.map(|a| a.copies_of(id));
        if rx.unique.contains(&id) {
            pair.delivered += 1;
        } else if copies.is_some_and(|n| n > 0) {
            pair.found_by_final_sync += 1;
        } else if copies.is_none() {
            pair.unchecked += 1;
        } else {
            pair.lost += 1;
        }
        match copies {
            Some(0) => pair.absent_from_audit += 1,
            Some(2..) => pair.stored_twice += 1,
            _ => {}
        }
    }
    pair
}

#[cfg(test)]
mod tests {
    use fishchat_codec::pb;

    use super::*;
    use crate::chat::churn::audit::Audit;

    fn seen() -> Seen {
        Seen {
            logged_in: true,
            ..Seen::new(2, 1).unwrap()
        }
    }

    fn stored(seqs_and_ids: &[(u64, u64)]) -> Vec<pb::StoredMessage> {
        seqs_and_ids
            .iter()
            .map(|&(seq, server_msg_id)| pb::StoredMessage {
                seq,
                server_msg_id,
                ..pb::StoredMessage::default()
            })
            .collect()
    }

    #[test]
    fn seen_found_late_missing_doubled_and_gapped_messages_are_told_apart() {
        let sender = Outcome {
            sent: 5,
            acked: vec![1, 2, 3, 4, 5],
            ..Outcome::default()
        };
        // 1 by PUSH, 2 by PUSH and again by a catch-up SYNC, 3 only by the
        // audit, 4 nowhere, 5 by PUSH and stored twice; seq 4 is missing.
        let mut receiver = seen();
        receiver.disconnects = 1;
        receiver.reconnects = 1;
        receiver.raw = 4;
        receiver.unique.extend([1, 2, 5]);
        receiver.audit = Some(Audit::of(
            1,
            6,
            &stored(&[(1, 1), (2, 2), (3, 3), (5, 5), (6, 5)]),
        ));
        let report = tally(&[Some(sender)], &[Some(receiver)], 1.0).unwrap();
        let totals = &report.details["totals"];
        let count = |name: &str| totals[name].as_u64().unwrap();
        assert_eq!(count("logged_in"), 2);
        assert_eq!((count("sent"), count("acked")), (5, 5));
        assert_eq!((count("disconnects"), count("reconnects")), (1, 1));
        assert_eq!(count("delivered"), 3);
        assert_eq!(count("found_by_final_sync"), 1);
        assert_eq!(count("lost"), 1);
        assert_eq!(count("unchecked"), 0);
        assert_eq!(count("absent_from_audit"), 1);
        assert_eq!(count("stored_twice"), 1);
        assert_eq!((count("seq_gaps"), count("seq_repeats")), (1, 0));
        assert_eq!((count("received_raw"), count("received_unique")), (4, 3));
        assert_eq!(count("duplicates_raw"), 1);
        let pair = &report.details["conversations"]["direct:1-2"];
        assert_eq!(pair["acked"], 5);
        assert_eq!(pair["head_seq"], 6);
        assert_eq!(pair["lost"], 1);
    }

    #[test]
    fn a_receiver_that_gave_up_leaves_its_messages_unchecked() {
        let sender = Outcome {
            sent: 2,
            acked: vec![1, 2],
            ..Outcome::default()
        };
        let mut receiver = seen();
        receiver.raw = 1;
        receiver.unique.insert(1);
        receiver.failure = Some("gave up reconnecting".into());
        let report = tally(&[Some(sender)], &[Some(receiver)], 1.0).unwrap();
        let totals = &report.details["totals"];
        assert_eq!(totals["delivered"], 1);
        assert_eq!(totals["lost"], 0);
        assert_eq!(totals["unchecked"], 1);
        assert_eq!(totals["absent_from_audit"], 0);
        assert_eq!(totals["failures"]["receiver: gave up reconnecting"], 1);
    }
}
