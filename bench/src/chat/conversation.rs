//! A conversation as one user sees it (the peer of a direct chat, or a
//! group), and the name the reports give it, which is the same from both
//! sides of a direct chat.

use std::fmt;
use std::str::FromStr;

use fishchat_codec::pb::{self, conversation_ref::Id, stored_message};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A conversation from one user's side; crosses JSON as `user:<id>` or
/// `group:<id>`, so it can key a map in a worker's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Conversation {
    /// The direct chat with this user.
    User(u64),
    /// This group.
    Group(u64),
}

impl Conversation {
    /// The conversation `message` belongs to for `viewer`: a direct message
    /// is filed under its recipient by its sender and under its sender by
    /// everyone else. None when the message names no conversation.
    pub fn of(message: &pb::StoredMessage, viewer: u64) -> Option<Conversation> {
        match message.conversation? {
            stored_message::Conversation::GroupId(group) => Some(Conversation::Group(group)),
            stored_message::Conversation::ToUserId(to) if message.from_user_id == viewer => {
                Some(Conversation::User(to))
            }
            stored_message::Conversation::ToUserId(_) => {
                Some(Conversation::User(message.from_user_id))
            }
        }
    }

    /// The conversation a wire reference names; None when it names none.
    pub fn from_ref(conversation: Option<&pb::ConversationRef>) -> Option<Conversation> {
        match conversation?.id? {
            Id::UserId(user) => Some(Conversation::User(user)),
            Id::GroupId(group) => Some(Conversation::Group(group)),
        }
    }

    /// The wire reference to it.
    pub fn to_ref(self) -> pb::ConversationRef {
        let id = match self {
            Conversation::User(user) => Id::UserId(user),
            Conversation::Group(group) => Id::GroupId(group),
        };
        pb::ConversationRef { id: Some(id) }
    }

    /// Its name in a report, the same whichever member `viewer` is:
    /// `direct:<lower id>-<higher id>` or `group:<id>`.
    pub fn label(self, viewer: u64) -> String {
        match self {
            Conversation::User(peer) => {
                format!("direct:{}-{}", peer.min(viewer), peer.max(viewer))
            }
            Conversation::Group(group) => format!("group:{group}"),
        }
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::User(user) => write!(f, "user:{user}"),
            Conversation::Group(group) => write!(f, "group:{group}"),
        }
    }
}

impl FromStr for Conversation {
    /// Why the text is not `user:<id>` or `group:<id>`.
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a conversation: {text:?}");
        let (kind, id) = text.split_once(':').ok_or_else(bad)?;
        let id = id.parse().map_err(|_| bad())?;
        match kind {
            "user" => Ok(Conversation::User(id)),
            "group" => Ok(Conversation::Group(id)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Conversation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Conversation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn direct(from: u64, to: u64) -> pb::StoredMessage {
        pb::StoredMessage {
            from_user_id: from,
            conversation: Some(stored_message::Conversation::ToUserId(to)),
            ..pb::StoredMessage::default()
        }
    }

    #[test]
    fn a_direct_message_is_filed_under_the_other_side_by_each_side() {
        let message = direct(1, 2);
        assert_eq!(Conversation::of(&message, 1), Some(Conversation::User(2)));
        assert_eq!(Conversation::of(&message, 2), Some(Conversation::User(1)));
        assert_eq!(
            Conversation::User(2).label(1),
            Conversation::User(1).label(2)
        );
        let to_self = direct(3, 3);
        assert_eq!(Conversation::of(&to_self, 3), Some(Conversation::User(3)));
        let group = pb::StoredMessage {
            from_user_id: 1,
            conversation: Some(stored_message::Conversation::GroupId(9)),
            ..pb::StoredMessage::default()
        };
        assert_eq!(Conversation::of(&group, 5), Some(Conversation::Group(9)));
        assert_eq!(Conversation::of(&pb::StoredMessage::default(), 1), None);
    }

    #[test]
    fn a_conversation_crosses_the_wire_and_json_unchanged() {
        for conversation in [Conversation::User(7), Conversation::Group(u64::MAX)] {
            let wire = conversation.to_ref();
            assert_eq!(Conversation::from_ref(Some(&wire)), Some(conversation));
            let map = BTreeMap::from([(conversation, 3u64)]);
            let line = serde_json::to_string(&map).unwrap();
            let back: BTreeMap<Conversation, u64> = serde_json::from_str(&line).unwrap();
            assert_eq!(back, map);
        }
        assert_eq!(Conversation::from_ref(None), None);
        assert!("chat:1".parse::<Conversation>().is_err());
        assert!("user:x".parse::<Conversation>().is_err());
    }
}
