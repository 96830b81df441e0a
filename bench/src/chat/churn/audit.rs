//! A conversation as the final audit read it whole: which messages it holds
//! and how often, and whether its seqs run from the first to the head
//! without a gap or a repeat.

use std::collections::HashMap;

use fishchat_codec::pb;

/// One conversation read from its first seq to its end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The head SYNC_CONVERSATIONS reported (0: the conversation was not listed).
    pub head_seq: u64,
    /// Copies of each server_msg_id in it.
    pub copies: HashMap<u64, u32>,
    /// Seqs from the first to the head (or to the last read, when more came
    /// after the head was reported) that are not in it.
    pub seq_gaps: u64,
    /// Messages whose seq was not above the one before (a seq read twice, or
    /// out of order).
    pub seq_repeats: u64,
}

impl Audit {
    /// The audit of `messages`, read ascending from `first_seq` of a
    /// conversation whose head was `head_seq`.
    pub fn of(first_seq: u64, head_seq: u64, messages: &[pb::StoredMessage]) -> Audit {
        let mut audit = Audit {
            head_seq,
            ..Audit::default()
        };
        let mut next = first_seq.max(1);
        for message in messages {
            *audit.copies.entry(message.server_msg_id).or_default() += 1;
            if message.seq < next {
                audit.seq_repeats += 1;
            } else {
                audit.seq_gaps += message.seq - next;
                next = message.seq + 1;
            }
        }
        audit.seq_gaps += head_seq.saturating_sub(next - 1);
        audit
    }

    /// How often the message `server_msg_id` is stored here.
    pub fn copies_of(&self, server_msg_id: u64) -> u32 {
        self.copies.get(&server_msg_id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, server_msg_id: u64) -> pb::StoredMessage {
        pb::StoredMessage {
            seq,
            server_msg_id,
            ..pb::StoredMessage::default()
        }
    }

    #[test]
    fn a_whole_conversation_has_no_gap_and_each_message_once() {
        let audit = Audit::of(1, 3, &[at(1, 10), at(2, 11), at(3, 12)]);
        assert_eq!((audit.seq_gaps, audit.seq_repeats), (0, 0));
        assert_eq!(audit.copies_of(11), 1);
        assert_eq!(audit.copies_of(99), 0);
        let more_than_the_head = Audit::of(1, 2, &[at(1, 10), at(2, 11), at(3, 12)]);
        assert_eq!(more_than_the_head.seq_gaps, 0);
        assert_eq!(Audit::of(0, 0, &[]), Audit::default());
    }

    #[test]
    fn gaps_repeats_a_short_end_and_a_late_start_are_counted() {
        // 1 is missing at the start, 4 in the middle, 7 and 8 at the end;
        // seq 3 comes twice, the second time with another message.
        let messages = [at(2, 11), at(3, 12), at(3, 13), at(5, 15), at(6, 12)];
        let audit = Audit::of(1, 8, &messages);
        assert_eq!(audit.seq_gaps, 4);
        assert_eq!(audit.seq_repeats, 1);
        assert_eq!(audit.copies_of(12), 2, "one message stored under two seqs");
        // A member who joined at 5 sees from 5: nothing before is missing.
        assert_eq!(Audit::of(5, 6, &[at(5, 1), at(6, 2)]).seq_gaps, 0);
    }
}
