//! The chaos campaign's accounting, pure: which fault window each message
//! was sent in, and per window what was sent, acked, delivered, found only
//! by the final audit, lost and duplicated, and how long the clients took to
//! be back after the fault.
//!
//! Times are milliseconds since the run started. Window 0 runs from the start
//! of the sending to the first fault; window `i` (for `i ≥ 1`) from fault
//! `i - 1` to fault `i` (the last one to the end of the run).

use std::collections::HashMap;

use serde::Serialize;

/// One message a sender sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Its number within its pair (the body names it).
    pub n: u64,
    /// When it was first sent.
    pub sent_ms: u64,
    /// When it was acked, if it was (after however many resends).
    pub acked_ms: Option<u64>,
}

/// What one client did over the run, for the time it took to be back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// When its connection was lost (each Disconnected or Kicked event).
    pub downs: Vec<u64>,
    /// When it made progress: an ack (a sender) or a message handed to the
    /// application (a receiver), in time order.
    pub progress: Vec<u64>,
}

/// Everything one pair left behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairLog {
    /// The sender's messages, by number.
    pub sent: Vec<Sent>,
    /// The message numbers the receiver's application got, in order, with repeats.
    pub delivered: Vec<u64>,
    /// The message numbers in the conversation read whole at the end, with repeats.
    pub audited: Vec<u64>,
    /// The sender's connection and acks.
    pub sender: Activity,
    /// The receiver's connection and deliveries.
    pub receiver: Activity,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// What was killed or restarted.
    pub name: String,
    /// When (just before the kill).
    pub at_ms: u64,
    /// How long the fault command took (a service: kill and start; a server:
    /// stop, start and answer).
    pub command_ms: u64,
    /// Whether the command succeeded.
    pub ok: bool,
}

/// One row of the table: a fault window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// The fault that opened the window (`before faults` for window 0).
    pub fault: String,
    /// Messages sent in the window.
    pub sent: u64,
    /// Of them, acked.
    pub acked: u64,
    /// Of them, handed to the receiving application (acked or not).
    pub delivered: u64,
    /// Acked, never handed to the application, but in the final audit.
    pub found_by_audit: u64,
    /// Acked, and neither handed to the application nor in the final audit.
    pub lost: u64,
    /// Handed to the application more than once.
    pub duplicated: u64,
    /// From the fault's beginning until every client was back (see
    /// [`back_ms`]); `None` when one never was, and for window 0.
    pub back_ms: Option<u64>,
    /// The fault command's duration.
    pub command_ms: Option<u64>,
}

/// The window a message sent at `ms` belongs to, given the faults' times in order.
pub fn window(fault_times: &[u64], ms: u64) -> usize {
    fault_times.partition_point(|&at| at <= ms)
}

/// When a client was back after a fault that began at `at` and whose
/// command ended at `over` (a service killed and started again, a server
/// stopped, started and answering): its first progress at or after `over`
/// and after its last connection loss in `[at, until)` (`until`: the next
/// fault, or the end of the run), in milliseconds after `at`. `None` when it
/// made no progress after that.
pub fn back_ms(activity: &Activity, at: u64, over: u64, until: u64) -> Option<u64> {
    let from = activity
        .downs
        .iter()
        .copied()
        .filter(|&down| down >= at && down < until)
        .fold(over.max(at), u64::max);
    let i = activity.progress.partition_point(|&p| p < from);
    activity.progress.get(i).map(|p| p - at)
}

/// The table: window 0, then a row per fault; `end_ms` closes the last window.
pub fn rows(faults: &[Fault], pairs: &[PairLog], end_ms: u64) -> Vec<Row> {
    let times: Vec<u64> = faults.iter().map(|f| f.at_ms).collect();
    let mut rows = vec![Row {
        fault: "before faults".to_owned(),
        ..Row::default()
    }];
    rows.extend(faults.iter().map(|f| Row {
        fault: f.name.clone(),
        command_ms: Some(f.command_ms),
        ..Row::default()
    }));
    for pair in pairs {
        let mut delivered: HashMap<u64, u64> = HashMap::new();
        for n in &pair.delivered {
            *delivered.entry(*n).or_default() += 1;
        }
        let mut audited: HashMap<u64, u64> = HashMap::new();
        for n in &pair.audited {
            *audited.entry(*n).or_default() += 1;
        }
        for sent in &pair.sent {
            let row = &mut rows[window(&times, sent.sent_ms)];
            row.sent += 1;
            let times_delivered = delivered.get(&sent.n).copied().unwrap_or(0);
            if times_delivered > 0 {
                row.delivered += 1;
            }
            if times_delivered > 1 {
                row.duplicated += 1;
            }
            if sent.acked_ms.is_some() {
                row.acked += 1;
                if times_delivered == 0 {
                    if audited.contains_key(&sent.n) {
                        row.found_by_audit += 1;
                    } else {
                        row.lost += 1;
                    }
                }
            }
        }
    }
    for (i, fault) in faults.iter().enumerate() {
        let until = times.get(i + 1).copied().unwrap_or(end_ms);
        let over = fault.at_ms + fault.command_ms;
        let mut worst = Some(0);
        for pair in pairs {
            for activity in [&pair.sender, &pair.receiver] {
                worst = worst
                    .zip(back_ms(activity, fault.at_ms, over, until))
                    .map(|(w, b)| w.max(b));
            }
        }
        rows[i + 1].back_ms = worst;
    }
    rows
}

/// Messages stored more than once in the audited conversations (a resend
/// that logic's dedup let through would show here even if the receiving
/// client dropped it).
pub fn stored_twice(pairs: &[PairLog]) -> u64 {
    pairs
        .iter()
        .map(|pair| {
            let mut seen: HashMap<u64, u64> = HashMap::new();
            for n in &pair.audited {
                *seen.entry(*n).or_default() += 1;
            }
            seen.values().filter(|&&c| c > 1).count() as u64
        })
        .sum()
}

/// The table in Markdown, as bench/README.md shows it.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | sent | acked | delivered | found only by the final audit | lost | duplicated | every client back, after the fault began | fault command took | every client back, after the command ended |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |v: Option<u64>| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{:.2} s", v as f64 / 1000.0))
    };
    for row in rows {
        let (back, after_command) = match (row.back_ms, row.command_ms) {
            (Some(b), Some(c)) => (ms(Some(b)), ms(Some(b.saturating_sub(c)))),
            (None, Some(_)) => ("never".to_owned(), "never".to_owned()),
            (_, None) => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.fault,
            row.sent,
            row.acked,
            row.delivered,
            row.found_by_audit,
            row.lost,
            row.duplicated,
            back,
            ms(row.command_ms),
            after_command,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(name: &str, at_ms: u64) -> Fault {
        Fault {
            name: name.to_owned(),
            at_ms,
            command_ms: 10,
            ok: true,
        }
    }

    fn sent(n: u64, sent_ms: u64, acked: bool) -> Sent {
        Sent {
            n,
            sent_ms,
            acked_ms: acked.then_some(sent_ms + 5),
        }
    }

    #[test]
    fn a_message_belongs_to_the_last_fault_at_or_before_it() {
        let times = [100, 200];
        assert_eq!(window(&times, 0), 0);
        assert_eq!(window(&times, 99), 0);
        assert_eq!(window(&times, 100), 1);
        assert_eq!(window(&times, 199), 1);
        assert_eq!(window(&times, 200), 2);
        assert_eq!(window(&times, 10_000), 2);
        assert_eq!(window(&[], 5), 0);
    }

    #[test]
    fn back_is_the_first_progress_after_the_last_loss_in_the_window() {
        let activity = Activity {
            downs: vec![50, 1_010, 1_300, 2_500],
            progress: vec![900, 1_005, 1_200, 1_450, 1_500, 2_600],
        };
        // Lost at 1,010 and 1,300 after the fault at 1,000: back at 1,450.
        assert_eq!(back_ms(&activity, 1_000, 1_000, 2_000), Some(450));
        // The fault's command ended at 1,460 (a server answering again): back at 1,500.
        assert_eq!(back_ms(&activity, 1_000, 1_460, 2_000), Some(500));
        // No loss in the window: the first progress after the fault.
        let steady = Activity {
            downs: vec![],
            progress: vec![900, 1_020],
        };
        assert_eq!(back_ms(&steady, 1_000, 1_000, 2_000), Some(20));
        // Lost and never made progress again.
        let gone = Activity {
            downs: vec![1_100],
            progress: vec![1_050],
        };
        assert_eq!(back_ms(&gone, 1_000, 1_000, 2_000), None);
    }

    #[test]
    fn rows_count_each_message_in_its_window() {
        let faults = [fault("access", 100), fault("kafka", 200)];
        let pair = PairLog {
            sent: vec![
                sent(0, 10, true),   // window 0, delivered once
                sent(1, 110, true),  // window 1, delivered twice
                sent(2, 120, true),  // window 1, only in the audit
                sent(3, 210, true),  // window 2, lost
                sent(4, 220, false), // window 2, never acked, delivered
                sent(5, 230, false), // window 2, never acked, nowhere
            ],
            delivered: vec![0, 1, 1, 4],
            audited: vec![0, 1, 2, 4],
            sender: Activity {
                downs: vec![],
                progress: vec![15, 115, 125, 215],
            },
            receiver: Activity {
                downs: vec![105],
                progress: vec![20, 150, 160, 250],
            },
        };
        let rows = rows(&faults, &[pair], 300);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.sent,
                    r.acked,
                    r.delivered,
                    r.found_by_audit,
                    r.lost,
                    r.duplicated,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [(1, 1, 1, 0, 0, 0), (2, 2, 1, 1, 0, 1), (3, 1, 1, 0, 1, 0)]
        );
        assert_eq!(rows[0].back_ms, None);
        // Fault at 100, over at 110: the sender acked at 115, the receiver (lost
        // at 105) got one at 150.
        assert_eq!(rows[1].back_ms, Some(50));
        // Fault at 200, over at 210: sender 215, receiver 250.
        assert_eq!(rows[2].back_ms, Some(50));
        assert_eq!(rows[1].command_ms, Some(10));
    }

    #[test]
    fn a_client_never_back_makes_the_row_never() {
        let faults = [fault("logic", 100)];
        let pair = PairLog {
            sender: Activity {
                downs: vec![],
                progress: vec![110],
            },
            receiver: Activity {
                downs: vec![120],
                progress: vec![115],
            },
            ..PairLog::default()
        };
        let rows = rows(&faults, &[pair], 300);
        assert_eq!(rows[1].back_ms, None);
        assert!(
            markdown(&rows).contains("| logic | 0 | 0 | 0 | 0 | 0 | 0 | never | 0.01 s | never |")
        );
    }

    #[test]
    fn a_message_stored_twice_is_counted_once() {
        let pair = PairLog {
            audited: vec![1, 2, 2, 3, 3, 3],
            ..PairLog::default()
        };
        assert_eq!(stored_twice(&[pair.clone(), pair]), 4);
    }
}
