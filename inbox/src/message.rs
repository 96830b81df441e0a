//! Messages as the API takes and returns them, and as MongoDB stores them.
//!
//! One document per (inbox, message) in the `messages` collection:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `inbox` | i64 | the user whose inbox holds this copy |
//! | `seq` | i64 | position in that inbox: 1, 2, 3, ... with no gaps |
//! | `server_msg_id` | i64 | the message's id, the same in every inbox it lands in |
//! | `from_user_id` | i64 | the authenticated sender |
//! | `to_user_id` or `group_id` | i64 | where it was sent (exactly one of the two) |
//! | `chat` | string | the conversation as this inbox's owner sees it: `u:<peer>` or `g:<group>` |
//! | `body` | binary | the opaque client payload |
//! | `timestamp_ms` | i64 | when logic accepted it |
//! | `client_msg_id` | string | the sender's own id of the message |
//!
//! `chat` exists because a direct message's conversation differs per side: in
//! the recipient's inbox it is the sender, in the sender's inbox the recipient.
//! Storing the peer lets one index serve history for both sides.

use bytes::Bytes;
use fishchat_codec::pb;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, Document, doc};

use crate::error::{InboxError, to_i64};

pub use fishchat_codec::pb::stored_message::Conversation;

/// Field names of a message document.
pub(crate) mod field {
    pub const INBOX: &str = "inbox";
    pub const SEQ: &str = "seq";
    pub const SERVER_MSG_ID: &str = "server_msg_id";
    pub const FROM_USER_ID: &str = "from_user_id";
    pub const TO_USER_ID: &str = "to_user_id";
    pub const GROUP_ID: &str = "group_id";
    pub const CHAT: &str = "chat";
    pub const BODY: &str = "body";
    pub const TIMESTAMP_MS: &str = "timestamp_ms";
    pub const CLIENT_MSG_ID: &str = "client_msg_id";
}

/// A message to store into an inbox; the inbox assigns its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The server's id of the message (below 2^63); stores are idempotent on it per inbox.
    pub server_msg_id: u64,
    /// The authenticated sender.
    pub from_user_id: u64,
    /// Where it was sent: a user (direct) or a group.
    pub conversation: Conversation,
    /// The opaque client payload.
    pub body: Bytes,
    /// When logic accepted the message, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The sender's client_msg_id.
    pub client_msg_id: String,
}

/// The other side of a conversation, as seen from one inbox: whom history is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Direct messages exchanged with this user (both directions).
    User(u64),
    /// Messages of this group.
    Group(u64),
}

impl Peer {
    /// The `chat` key of this conversation.
    pub(crate) fn chat_key(self) -> String {
        match self {
            Peer::User(id) => format!("u:{id}"),
            Peer::Group(id) => format!("g:{id}"),
        }
    }
}

/// The peer of `message` from the point of view of `inbox`.
fn peer_in(inbox: u64, message: &NewMessage) -> Peer {
    match message.conversation {
        Conversation::GroupId(group) => Peer::Group(group),
        Conversation::ToUserId(to) if inbox == message.from_user_id => Peer::User(to),
        Conversation::ToUserId(_) => Peer::User(message.from_user_id),
    }
}

/// The document of `message` in `inbox`, without its `seq` (the writer sets it per attempt).
pub(crate) fn document_without_seq(
    inbox: u64,
    message: &NewMessage,
) -> Result<Document, InboxError> {
    let (conv_field, conv_id) = match message.conversation {
        Conversation::ToUserId(id) => (field::TO_USER_ID, id),
        Conversation::GroupId(id) => (field::GROUP_ID, id),
    };
    let mut doc = doc! {
        field::INBOX: to_i64(inbox)?,
        field::SERVER_MSG_ID: to_i64(message.server_msg_id)?,
        field::FROM_USER_ID: to_i64(message.from_user_id)?,
    };
    doc.insert(conv_field, to_i64(conv_id)?);
    doc.insert(field::CHAT, peer_in(inbox, message).chat_key());
    doc.insert(
        field::BODY,
        Binary {
            subtype: BinarySubtype::Generic,
            bytes: message.body.to_vec(),
        },
    );
    doc.insert(field::TIMESTAMP_MS, message.timestamp_ms);
    doc.insert(field::CLIENT_MSG_ID, message.client_msg_id.as_str());
    Ok(doc)
}

/// Reads an id field stored as i64 (older writers or shells may have used i32).
pub(crate) fn get_id(doc: &Document, name: &str) -> Result<u64, InboxError> {
    let value = match doc.get(name) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        other => return Err(InboxError::Corrupt(format!("field {name}: {other:?}"))),
    };
    u64::try_from(value).map_err(|_| InboxError::Corrupt(format!("field {name}: negative {value}")))
}

/// The client-protocol form of a stored document.
pub(crate) fn to_stored_message(doc: &Document) -> Result<pb::StoredMessage, InboxError> {
    let conversation = if doc.contains_key(field::GROUP_ID) {
        Conversation::GroupId(get_id(doc, field::GROUP_ID)?)
    } else {
        Conversation::ToUserId(get_id(doc, field::TO_USER_ID)?)
    };
    let body = match doc.get(field::BODY) {
        Some(Bson::Binary(b)) => Bytes::from(b.bytes.clone()),
        other => return Err(InboxError::Corrupt(format!("field body: {other:?}"))),
    };
    let timestamp_ms = match doc.get(field::TIMESTAMP_MS) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        other => {
            return Err(InboxError::Corrupt(format!(
                "field timestamp_ms: {other:?}"
            )));
        }
    };
    let client_msg_id = doc
        .get_str(field::CLIENT_MSG_ID)
        .map_err(|e| InboxError::Corrupt(format!("field client_msg_id: {e}")))?
        .to_owned();
    Ok(pb::StoredMessage {
        seq: get_id(doc, field::SEQ)?,
        server_msg_id: get_id(doc, field::SERVER_MSG_ID)?,
        from_user_id: get_id(doc, field::FROM_USER_ID)?,
        conversation: Some(conversation),
        body,
        timestamp_ms,
        client_msg_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(from: u64, to: u64) -> NewMessage {
        NewMessage {
            server_msg_id: 9,
            from_user_id: from,
            conversation: Conversation::ToUserId(to),
            body: Bytes::from_static(b"hi"),
            timestamp_ms: 1_700_000_000_000,
            client_msg_id: "c-1".into(),
        }
    }

    #[test]
    fn a_direct_message_files_under_the_peer_on_both_sides() {
        let m = direct(1, 2);
        assert_eq!(peer_in(2, &m), Peer::User(1));
        assert_eq!(peer_in(1, &m), Peer::User(2));
        assert_eq!(peer_in(1, &direct(1, 1)), Peer::User(1));
    }

    #[test]
    fn documents_round_trip() {
        let m = direct(1, 2);
        let mut doc = document_without_seq(2, &m).unwrap();
        doc.insert(field::SEQ, 7_i64);
        let back = to_stored_message(&doc).unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.server_msg_id, 9);
        assert_eq!(back.conversation, Some(Conversation::ToUserId(2)));
        assert_eq!(back.body, m.body);
        assert_eq!(back.client_msg_id, "c-1");
        assert_eq!(doc.get_str(field::CHAT).unwrap(), "u:1");
    }

    #[test]
    fn ids_of_2_pow_63_and_above_are_refused() {
        let mut m = direct(1, 2);
        m.server_msg_id = 1 << 63;
        assert!(matches!(
            document_without_seq(2, &m),
            Err(InboxError::IdOutOfRange(_))
        ));
    }
}
