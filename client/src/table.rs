//! What the client holds of each conversation, and the rule that keeps each
//! one's delivery gapless: a message reaches the application only as the next
//! seq after the last one it got (`held`), or from a reply the server promises
//! is gapless (a SYNC page, a summary without `has_gap`).

use std::collections::BTreeMap;

use fishchat_codec::pb::{self, StoredMessage};

use crate::conversation::{Conversation, ConversationInfo};
use crate::state::{Saved, SavedConversations};

/// One conversation.
#[derive(Debug, Default)]
struct Entry {
    /// The last seq handed to the application; every visible seq before it was handed over too.
    held: u64,
    /// The highest seq known to exist.
    head: u64,
    /// The user's read position.
    read: u64,
    /// The first seq this user can see (0: not told).
    first: u64,
    /// Pushed messages beyond a gap, waiting for the gap to be synced.
    early: BTreeMap<u64, StoredMessage>,
}

impl Entry {
    /// Hands `message` over: it is the next one.
    fn advance(&mut self, message: StoredMessage, out: &mut Vec<StoredMessage>) {
        self.held = message.seq;
        self.head = self.head.max(message.seq);
        out.push(message);
    }

    /// Hands over the early messages that now follow without a gap.
    fn drain(&mut self, out: &mut Vec<StoredMessage>) {
        while let Some(next) = self.early.first_entry() {
            let seq = *next.key();
            if seq <= self.held {
                next.remove();
            } else if seq == self.held + 1 {
                let message = next.remove();
                self.advance(message, out);
            } else {
                break;
            }
        }
    }

    /// Takes messages that follow `held` without a gap, ascending: whatever
    /// their seqs, nothing the user can see lies between (seqs the user cannot
    /// see, such as those before joining a group, are simply absent).
    fn take_gapless(&mut self, messages: Vec<StoredMessage>, out: &mut Vec<StoredMessage>) {
        for message in messages {
            if message.seq > self.held {
                self.advance(message, out);
            }
        }
        self.drain(out);
    }

    /// Takes pushed messages: only the next seq goes through; later ones wait.
    fn take_pushed(&mut self, messages: Vec<StoredMessage>, out: &mut Vec<StoredMessage>) {
        for message in messages {
            if message.seq > self.held {
                self.head = self.head.max(message.seq);
                self.early.insert(message.seq, message);
            }
        }
        self.drain(out);
    }

    /// True when the server has messages this client lacks.
    fn behind(&self) -> bool {
        !self.early.is_empty() || self.head > self.held
    }

    fn unread(&self) -> u64 {
        let read = self.read.max(self.first.saturating_sub(1));
        self.head.saturating_sub(read)
    }
}

/// What became of messages offered to a conversation.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Taken {
    /// Messages to hand to the application, in seq order.
    pub(crate) deliver: Vec<StoredMessage>,
    /// The server has more than was handed over: SYNC after [`Table::held`].
    pub(crate) behind: bool,
}

/// Every conversation of this user that the client knows of.
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: BTreeMap<Conversation, Entry>,
}

impl Table {
    /// A table resuming from a state file's entries.
    pub(crate) fn from_saved(saved: &SavedConversations) -> Self {
        let entries = saved
            .iter()
            .map(|(conversation, saved)| {
                let entry = Entry {
                    held: saved.seq,
                    head: saved.seq,
                    read: saved.read_seq,
                    ..Entry::default()
                };
                (*conversation, entry)
            })
            .collect();
        Self { entries }
    }

    fn entry(&mut self, conversation: Conversation) -> &mut Entry {
        self.entries.entry(conversation).or_default()
    }

    /// The `known` list of a SYNC_CONVERSATIONS request.
    pub(crate) fn known(&self) -> Vec<pb::KnownConversation> {
        self.entries
            .iter()
            .map(|(conversation, entry)| pb::KnownConversation {
                conversation: Some((*conversation).into()),
                seq: entry.held,
                read_seq: entry.read,
            })
            .collect()
    }

    /// The last seq handed over in `conversation` (0 when none).
    pub(crate) fn held(&self, conversation: Conversation) -> u64 {
        self.entries.get(&conversation).map_or(0, |e| e.held)
    }

    /// True when the server has messages of `conversation` this client lacks.
    pub(crate) fn behind(&self, conversation: Conversation) -> bool {
        self.entries.get(&conversation).is_some_and(Entry::behind)
    }

    /// The read position in `conversation`.
    pub(crate) fn read_seq(&self, conversation: Conversation) -> u64 {
        self.entries.get(&conversation).map_or(0, |e| e.read)
    }

    /// Applies a SYNC_CONVERSATIONS summary.
    pub(crate) fn apply_summary(
        &mut self,
        conversation: Conversation,
        summary: pb::ConversationSummary,
    ) -> Taken {
        let entry = self.entry(conversation);
        entry.head = entry.head.max(summary.head_seq);
        entry.read = entry.read.max(summary.read_seq);
        entry.first = summary.first_seq;
        let mut deliver = Vec::new();
        if summary.has_gap {
            // Kept until the sync of the gap reaches them, so they are not fetched twice.
            entry.take_pushed(summary.messages, &mut deliver);
        } else {
            entry.take_gapless(summary.messages, &mut deliver);
        }
        Taken {
            deliver,
            behind: entry.behind(),
        }
    }

    /// Takes a PUSH's messages of `conversation`.
    pub(crate) fn take_pushed(
        &mut self,
        conversation: Conversation,
        messages: Vec<StoredMessage>,
    ) -> Taken {
        let entry = self.entry(conversation);
        let mut deliver = Vec::new();
        entry.take_pushed(messages, &mut deliver);
        Taken {
            deliver,
            behind: entry.behind(),
        }
    }

    /// Takes a SYNC page of `conversation` (gapless after the `held` it asked after).
    pub(crate) fn take_synced(
        &mut self,
        conversation: Conversation,
        messages: Vec<StoredMessage>,
    ) -> Taken {
        let entry = self.entry(conversation);
        let mut deliver = Vec::new();
        entry.take_gapless(messages, &mut deliver);
        Taken {
            deliver,
            behind: entry.behind(),
        }
    }

    /// Moves the read position forward; false when it was there already.
    pub(crate) fn read_to(&mut self, conversation: Conversation, read_seq: u64) -> bool {
        let entry = self.entry(conversation);
        if read_seq <= entry.read {
            return false;
        }
        entry.read = read_seq;
        entry.head = entry.head.max(read_seq);
        true
    }

    /// What the client knows of `conversation`.
    pub(crate) fn info(&self, conversation: Conversation) -> Option<ConversationInfo> {
        self.entries
            .get(&conversation)
            .map(|entry| info(conversation, entry))
    }

    /// Every conversation, in [`Conversation`] order.
    pub(crate) fn infos(&self) -> Vec<ConversationInfo> {
        self.entries
            .iter()
            .map(|(conversation, entry)| info(*conversation, entry))
            .collect()
    }

    /// What a state file keeps: the read positions, and `seq` from `taken`
    /// (what the application has taken, which may trail what was handed over).
    pub(crate) fn saved(&self, taken: &BTreeMap<Conversation, u64>) -> SavedConversations {
        taken
            .iter()
            .map(|(conversation, seq)| {
                let saved = Saved {
                    seq: *seq,
                    read_seq: self.read_seq(*conversation),
                };
                (*conversation, saved)
            })
            .collect()
    }
}

fn info(conversation: Conversation, entry: &Entry) -> ConversationInfo {
    ConversationInfo {
        conversation,
        seq: entry.held,
        head_seq: entry.head,
        read_seq: entry.read,
        unread: entry.unread(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::messages;

    const BOB: Conversation = Conversation::User(9);

    fn seqs(taken: &Taken) -> Vec<u64> {
        taken.deliver.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn pushes_go_through_in_order_and_wait_behind_a_gap() {
        let mut table = Table::default();
        let taken = table.take_pushed(BOB, messages(1..=2));
        assert_eq!((seqs(&taken), taken.behind), (vec![1, 2], false));
        let taken = table.take_pushed(BOB, messages(4..=5));
        assert_eq!((seqs(&taken), taken.behind), (vec![], true));
        assert_eq!(table.held(BOB), 2);
        // The sync of the gap brings 3 and 4; 5 waited and follows.
        let taken = table.take_synced(BOB, messages(3..=4));
        assert_eq!((seqs(&taken), taken.behind), (vec![3, 4, 5], false));
        let taken = table.take_pushed(BOB, messages(2..=5));
        assert_eq!((seqs(&taken), taken.behind), (vec![], false));
    }

    #[test]
    fn a_summary_with_a_gap_keeps_its_messages_until_the_gap_is_synced() {
        let mut table = Table::default();
        let summary = pb::ConversationSummary {
            head_seq: 30,
            read_seq: 10,
            messages: messages(21..=30),
            has_gap: true,
            first_seq: 1,
            ..pb::ConversationSummary::default()
        };
        let taken = table.apply_summary(BOB, summary);
        assert_eq!((seqs(&taken), taken.behind), (vec![], true));
        assert_eq!(table.info(BOB).map(|i| i.unread), Some(20));
        let taken = table.take_synced(BOB, messages(1..=21));
        assert_eq!(taken.deliver.len(), 30);
        assert!(!taken.behind);
    }

    #[test]
    fn a_gapless_summary_starts_where_the_user_can_see() {
        let mut table = Table::default();
        let group = Conversation::Group(5);
        let summary = pb::ConversationSummary {
            head_seq: 102,
            read_seq: 0,
            messages: messages(100..=102),
            first_seq: 100,
            ..pb::ConversationSummary::default()
        };
        let taken = table.apply_summary(group, summary);
        assert_eq!((seqs(&taken), taken.behind), (vec![100, 101, 102], false));
        let info = table.info(group).unwrap();
        assert_eq!((info.seq, info.unread), (102, 3));
    }

    #[test]
    fn the_read_position_only_moves_forward() {
        let mut table = Table::default();
        table.take_pushed(BOB, messages(1..=4));
        assert!(table.read_to(BOB, 3));
        assert!(!table.read_to(BOB, 2));
        let info = table.info(BOB).unwrap();
        assert_eq!((info.read_seq, info.unread), (3, 1));
    }
}
