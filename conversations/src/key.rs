//! Naming a conversation: one canonical key for everyone, one view per user.
//!
//! A direct chat between users 7 and 3 is the same conversation whoever
//! writes first, so its key orders the pair: `d:3:7`. User 3 sees it as "the
//! chat with 7", user 7 as "the chat with 3" ([`ConvKey::seen_by`]). A group's
//! key is `g:<id>`. The key is what MongoDB indexes and what Kafka partitions
//! by, so every message of a conversation lands in one partition and its
//! consumer alone assigns the conversation's seqs.

use std::fmt;

use fishchat_codec::pb::{self, conversation_ref, stored_message};

use crate::error::ConvError;

/// A conversation's canonical identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvKey {
    /// A direct chat; `low <= high` (equal for a user's chat with itself).
    Direct {
        /// The smaller user id.
        low: u64,
        /// The larger user id.
        high: u64,
    },
    /// A group.
    Group(u64),
}

impl ConvKey {
    /// The direct chat between `a` and `b`, in either order.
    pub fn direct(a: u64, b: u64) -> Self {
        ConvKey::Direct {
            low: a.min(b),
            high: a.max(b),
        }
    }

    /// The conversation a message from `from` to `target` belongs to.
    pub fn of_message(from: u64, target: stored_message::Conversation) -> Self {
        match target {
            stored_message::Conversation::ToUserId(to) => ConvKey::direct(from, to),
            stored_message::Conversation::GroupId(group) => ConvKey::Group(group),
        }
    }

    /// The conversation `user` names with `conversation`; `None` when it names nothing.
    pub fn named_by(user: u64, conversation: &pb::ConversationRef) -> Option<Self> {
        match conversation.id? {
            conversation_ref::Id::UserId(peer) => Some(ConvKey::direct(user, peer)),
            conversation_ref::Id::GroupId(group) => Some(ConvKey::Group(group)),
        }
    }

    /// How `user`, a party to this conversation, names it.
    pub fn seen_by(self, user: u64) -> pb::ConversationRef {
        let id = match self {
            ConvKey::Direct { low, high } if user == low => conversation_ref::Id::UserId(high),
            ConvKey::Direct { low, .. } => conversation_ref::Id::UserId(low),
            ConvKey::Group(group) => conversation_ref::Id::GroupId(group),
        };
        pb::ConversationRef { id: Some(id) }
    }

    /// Whether `user` is one of the two sides of this direct chat (always
    /// false for a group: membership there is a record, not the key).
    pub fn is_party(self, user: u64) -> bool {
        matches!(self, ConvKey::Direct { low, high } if user == low || user == high)
    }

    /// Parses the stored form (`d:<low>:<high>` or `g:<id>`).
    pub fn parse(text: &str) -> Result<Self, ConvError> {
        let corrupt = || ConvError::Corrupt(format!("conversation key {text:?}"));
        let mut parts = text.split(':');
        let key = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("d"), Some(low), Some(high), None) => {
                let low: u64 = low.parse().map_err(|_| corrupt())?;
                let high: u64 = high.parse().map_err(|_| corrupt())?;
                if low > high {
                    return Err(corrupt());
                }
                ConvKey::Direct { low, high }
            }
            (Some("g"), Some(id), None, None) => ConvKey::Group(id.parse().map_err(|_| corrupt())?),
            _ => return Err(corrupt()),
        };
        Ok(key)
    }
}

impl fmt::Display for ConvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvKey::Direct { low, high } => write!(f, "d:{low}:{high}"),
            ConvKey::Group(group) => write!(f, "g:{group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_sides_of_a_direct_chat_share_one_key_and_see_each_other() {
        let key = ConvKey::direct(7, 3);
        assert_eq!(key, ConvKey::direct(3, 7));
        assert_eq!(key.to_string(), "d:3:7");
        let peer = |user| match key.seen_by(user).id {
            Some(conversation_ref::Id::UserId(peer)) => peer,
            other => panic!("{other:?}"),
        };
        assert_eq!((peer(3), peer(7)), (7, 3));
        assert_eq!(
            ConvKey::direct(5, 5).seen_by(5),
            ConvKey::direct(5, 5).seen_by(5)
        );
        assert!(key.is_party(3) && key.is_party(7) && !key.is_party(4));
        assert!(!ConvKey::Group(3).is_party(3));
    }

    #[test]
    fn a_message_files_under_its_conversation() {
        use stored_message::Conversation::{GroupId, ToUserId};
        assert_eq!(ConvKey::of_message(9, ToUserId(2)), ConvKey::direct(2, 9));
        assert_eq!(ConvKey::of_message(9, GroupId(2)), ConvKey::Group(2));
        let named = |id| ConvKey::named_by(9, &pb::ConversationRef { id });
        assert_eq!(
            named(Some(conversation_ref::Id::UserId(2))),
            Some(ConvKey::direct(9, 2))
        );
        assert_eq!(named(None), None);
    }

    #[test]
    fn malformed_keys_are_corrupt_not_panics() {
        for text in [
            "", "d:1", "d:2:1", "g:x", "x:1", "g:1:2", "d:1:2:3", "d:-1:2",
        ] {
            assert!(ConvKey::parse(text).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn keys_round_trip(a: u64, b: u64, group: u64) {
            for key in [ConvKey::direct(a, b), ConvKey::Group(group)] {
                prop_assert_eq!(ConvKey::parse(&key.to_string()).unwrap(), key);
            }
        }
    }
}
