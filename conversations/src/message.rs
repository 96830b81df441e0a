//! Messages as the API takes and returns them, and as MongoDB stores them.
//!
//! One document per message in the `chat_messages` collection, whoever and
//! however many the members are:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `conv` | string | the conversation's key ([`ConvKey`]) |
//! | `seq` | i64 | position in the conversation: 1, 2, 3, ... with no gap |
//! | `msg` | i64 | the server message id; unique within the conversation |
//! | `from` | i64 | the authenticated sender |
//! | `to` or `group` | i64 | where it was sent (exactly one of the two) |
//! | `body` | binary | the opaque client payload |
//! | `ts` | i64 | when logic accepted it, ms since the epoch |
//! | `cmid` | string | the sender's own id of the message |

use bytes::Bytes;
use fishchat_codec::pb;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, Document, doc};

use crate::error::{ConvError, to_i64};
use crate::key::ConvKey;

pub use fishchat_codec::pb::stored_message::Conversation as Target;

/// Field names of a message document.
pub(crate) mod field {
    pub const CONV: &str = "conv";
    pub const SEQ: &str = "seq";
    pub const MSG: &str = "msg";
    pub const FROM: &str = "from";
    pub const TO: &str = "to";
    pub const GROUP: &str = "group";
    pub const BODY: &str = "body";
    pub const TS: &str = "ts";
    pub const CMID: &str = "cmid";
}

/// A message to store; its conversation assigns its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The server's id of the message (below 2^63); stores are idempotent on it per conversation.
    pub server_msg_id: u64,
    /// The authenticated sender.
    pub from_user_id: u64,
    /// Where it was sent: a user (direct) or a group.
    pub target: Target,
    /// The opaque client payload.
    pub body: Bytes,
    /// When logic accepted the message, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The sender's client_msg_id.
    pub client_msg_id: String,
}

impl NewMessage {
    /// The conversation the message belongs to.
    pub fn key(&self) -> ConvKey {
        ConvKey::of_message(self.from_user_id, self.target)
    }

    /// The client-protocol form of this message stored at `seq`.
    pub fn stored(&self, seq: u64) -> pb::StoredMessage {
        pb::StoredMessage {
            seq,
            server_msg_id: self.server_msg_id,
            from_user_id: self.from_user_id,
            conversation: Some(self.target),
            body: self.body.clone(),
            timestamp_ms: self.timestamp_ms,
            client_msg_id: self.client_msg_id.clone(),
        }
    }
}

/// The document of `message`, without its `seq` (the writer sets it per attempt).
pub(crate) fn document_without_seq(message: &NewMessage) -> Result<Document, ConvError> {
    let (target_field, target_id) = match message.target {
        Target::ToUserId(id) => (field::TO, id),
        Target::GroupId(id) => (field::GROUP, id),
    };
    let mut doc = doc! {
        field::CONV: message.key().to_string(),
        field::MSG: to_i64(message.server_msg_id)?,
        field::FROM: to_i64(message.from_user_id)?,
    };
    doc.insert(target_field, to_i64(target_id)?);
    doc.insert(
        field::BODY,
        Binary {
            subtype: BinarySubtype::Generic,
            bytes: message.body.to_vec(),
        },
    );
    doc.insert(field::TS, message.timestamp_ms);
    doc.insert(field::CMID, message.client_msg_id.as_str());
    Ok(doc)
}

/// Reads a signed 64-bit field (older writers or shells may have used i32).
pub(crate) fn get_i64(doc: &Document, name: &str) -> Result<i64, ConvError> {
    match doc.get(name) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        other => Err(ConvError::Corrupt(format!("field {name}: {other:?}"))),
    }
}

/// Reads an id or seq field: a non-negative i64.
pub(crate) fn get_id(doc: &Document, name: &str) -> Result<u64, ConvError> {
    let value = get_i64(doc, name)?;
    u64::try_from(value).map_err(|_| ConvError::Corrupt(format!("field {name}: negative {value}")))
}

/// The client-protocol form of a stored document.
pub(crate) fn to_stored_message(doc: &Document) -> Result<pb::StoredMessage, ConvError> {
    let target = if doc.contains_key(field::GROUP) {
        Target::GroupId(get_id(doc, field::GROUP)?)
    } else {
        Target::ToUserId(get_id(doc, field::TO)?)
    };
    let body = match doc.get(field::BODY) {
        Some(Bson::Binary(b)) => Bytes::from(b.bytes.clone()),
        other => return Err(ConvError::Corrupt(format!("field body: {other:?}"))),
    };
    let client_msg_id = doc
        .get_str(field::CMID)
        .map_err(|e| ConvError::Corrupt(format!("field cmid: {e}")))?
        .to_owned();
    Ok(pb::StoredMessage {
        seq: get_id(doc, field::SEQ)?,
        server_msg_id: get_id(doc, field::MSG)?,
        from_user_id: get_id(doc, field::FROM)?,
        conversation: Some(target),
        body,
        timestamp_ms: get_i64(doc, field::TS)?,
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
            target: Target::ToUserId(to),
            body: Bytes::from_static(b"hi"),
            timestamp_ms: 1_700_000_000_000,
            client_msg_id: "c-1".into(),
        }
    }

    #[test]
    fn documents_round_trip_under_the_canonical_key() {
        let m = direct(5, 2);
        let mut doc = document_without_seq(&m).unwrap();
        doc.insert(field::SEQ, 7_i64);
        assert_eq!(doc.get_str(field::CONV).unwrap(), "d:2:5");
        assert_eq!(to_stored_message(&doc).unwrap(), m.stored(7));
    }

    #[test]
    fn ids_of_2_pow_63_and_above_are_refused() {
        let mut m = direct(1, 2);
        m.server_msg_id = 1 << 63;
        assert!(matches!(
            document_without_seq(&m),
            Err(ConvError::IdOutOfRange(_))
        ));
    }

    #[test]
    fn a_document_missing_fields_is_corrupt() {
        let doc = doc! { field::SEQ: 1_i64, field::TO: 2_i64 };
        assert!(matches!(
            to_stored_message(&doc),
            Err(ConvError::Corrupt(_))
        ));
    }
}
