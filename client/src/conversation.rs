//! Conversations as this user sees them: a direct chat named by the peer, or a
//! group, and the short text form (`u:1002`, `g:5`) the CLI and the state file use.

use std::fmt;
use std::str::FromStr;

use fishchat_codec::pb::{self, StoredMessage, conversation_ref, stored_message};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One conversation from this user's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Conversation {
    /// A direct chat, named by the other user (a chat with oneself by one's own id).
    User(u64),
    /// A group chat.
    Group(u64),
}

impl Conversation {
    /// The conversation `message` belongs to as `viewer` sees it: a direct
    /// message is filed under the side that is not the viewer, so a message the
    /// viewer sent (from any of its devices) lands in the chat with its recipient.
    /// `None` when the message names no conversation.
    pub fn of_message(message: &StoredMessage, viewer: u64) -> Option<Self> {
        match message.conversation? {
            stored_message::Conversation::GroupId(group) => Some(Self::Group(group)),
            stored_message::Conversation::ToUserId(to) if message.from_user_id == viewer => {
                Some(Self::User(to))
            }
            stored_message::Conversation::ToUserId(_) => Some(Self::User(message.from_user_id)),
        }
    }
}

impl From<Conversation> for pb::ConversationRef {
    fn from(conversation: Conversation) -> Self {
        let id = match conversation {
            Conversation::User(user) => conversation_ref::Id::UserId(user),
            Conversation::Group(group) => conversation_ref::Id::GroupId(group),
        };
        pb::ConversationRef { id: Some(id) }
    }
}

/// A [`pb::ConversationRef`] that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the conversation reference names neither a user nor a group")]
pub struct EmptyConversationRef;

impl TryFrom<&pb::ConversationRef> for Conversation {
    type Error = EmptyConversationRef;

    fn try_from(reference: &pb::ConversationRef) -> Result<Self, Self::Error> {
        match reference.id {
            Some(conversation_ref::Id::UserId(user)) => Ok(Self::User(user)),
            Some(conversation_ref::Id::GroupId(group)) => Ok(Self::Group(group)),
            None => Err(EmptyConversationRef),
        }
    }
}

impl fmt::Display for Conversation {
    /// `u:<user id>` or `g:<group id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user) => write!(f, "u:{user}"),
            Self::Group(group) => write!(f, "g:{group}"),
        }
    }
}

/// Text that is not `u:<id>` or `g:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a conversation id (u:USER_ID or g:GROUP_ID)")]
pub struct BadConversationId(String);

impl FromStr for Conversation {
    type Err = BadConversationId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadConversationId(text.to_owned());
        let (kind, id) = text.split_once(':').ok_or_else(bad)?;
        let id = id.parse().map_err(|_| bad())?;
        match kind {
            "u" => Ok(Self::User(id)),
            "g" => Ok(Self::Group(id)),
            _ => Err(bad()),
        }
    }
}

impl From<Conversation> for String {
    fn from(conversation: Conversation) -> Self {
        conversation.to_string()
    }
}

impl TryFrom<String> for Conversation {
    type Error = BadConversationId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// What this client knows of one conversation (see [`Client::conversations`](crate::Client::conversations)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationInfo {
    /// Which conversation.
    pub conversation: Conversation,
    /// The highest seq handed to the application, with every seq before it
    /// (that this user can see) handed over too.
    pub seq: u64,
    /// The highest seq the server has (as far as this client heard).
    pub head_seq: u64,
    /// This user's read position, shared by all its devices.
    pub read_seq: u64,
    /// Messages after the read position (this user's own included until it reads them).
    pub unread: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(from: u64, to: u64) -> StoredMessage {
        StoredMessage {
            from_user_id: from,
            conversation: Some(stored_message::Conversation::ToUserId(to)),
            ..StoredMessage::default()
        }
    }

    #[test]
    fn a_direct_message_is_filed_under_the_side_that_is_not_the_viewer() {
        assert_eq!(
            Conversation::of_message(&direct(9, 1), 1),
            Some(Conversation::User(9))
        );
        assert_eq!(
            Conversation::of_message(&direct(1, 9), 1),
            Some(Conversation::User(9)),
            "sent by the viewer from another device"
        );
        assert_eq!(
            Conversation::of_message(&direct(1, 1), 1),
            Some(Conversation::User(1))
        );
        let group = StoredMessage {
            from_user_id: 1,
            conversation: Some(stored_message::Conversation::GroupId(5)),
            ..StoredMessage::default()
        };
        assert_eq!(
            Conversation::of_message(&group, 1),
            Some(Conversation::Group(5))
        );
        assert_eq!(Conversation::of_message(&StoredMessage::default(), 1), None);
    }

    #[test]
    fn the_text_form_round_trips_and_refuses_anything_else() {
        for conversation in [Conversation::User(1002), Conversation::Group(5)] {
            let text = conversation.to_string();
            assert_eq!(text.parse::<Conversation>(), Ok(conversation));
            let reference = pb::ConversationRef::from(conversation);
            assert_eq!(Conversation::try_from(&reference), Ok(conversation));
        }
        assert_eq!(Conversation::User(1002).to_string(), "u:1002");
        for bad in ["", "u", "u:", "x:1", "g:-1", "u:1:2", "1002"] {
            assert!(bad.parse::<Conversation>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Conversation::try_from(&pb::ConversationRef::default()),
            Err(EmptyConversationRef)
        );
    }
}
