//! Kafka payloads in and out: a `ChatEvent` becomes one [`NewMessage`] per
//! inbox, and a stored message becomes the client protocol's `StoredMessage`.

use fishchat_codec::pb::StoredMessage;
use fishchat_rpc::events::{ChatEvent, chat_event};
use prost::Message;
use thiserror::Error;

use crate::store::{Conversation, NewMessage};

/// Why a payload cannot be stored; such a record is logged and skipped.
#[derive(Debug, Error)]
pub enum EventError {
    /// The bytes are not a `ChatEvent`.
    #[error("payload is not a ChatEvent: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The record has no payload at all.
    #[error("record has no payload")]
    Empty,
    /// The event names neither a recipient user nor a group.
    #[error("event {0} has no conversation")]
    NoConversation(u64),
    /// An id is 2^63 or above: the store keeps ids as signed 64-bit values,
    /// so such an event could never be stored and would block its partition.
    #[error("event {server_msg_id} has id {id} out of range (ids must be below 2^63)")]
    IdOutOfRange {
        /// The event's id.
        server_msg_id: u64,
        /// The offending id.
        id: u64,
    },
}

/// The largest id the store can keep.
const MAX_ID: u64 = i64::MAX as u64;

/// Decodes a payload into one `(inbox, message)` per inbox it lands in, in the
/// order logic listed them (duplicates in that list are stored once).
pub fn decode(payload: Option<&[u8]>) -> Result<Vec<(u64, NewMessage)>, EventError> {
    let event = ChatEvent::decode(payload.ok_or(EventError::Empty)?)?;
    let conversation = match event.conversation {
        Some(chat_event::Conversation::ToUserId(user)) => Conversation::ToUserId(user),
        Some(chat_event::Conversation::GroupId(group)) => Conversation::GroupId(group),
        None => return Err(EventError::NoConversation(event.server_msg_id)),
    };
    let message = NewMessage {
        server_msg_id: event.server_msg_id,
        from_user_id: event.from_user_id,
        conversation,
        body: event.body,
        timestamp_ms: event.timestamp_ms,
        client_msg_id: event.client_msg_id,
    };
    let conversation_id = match conversation {
        Conversation::ToUserId(id) | Conversation::GroupId(id) => id,
    };
    let ids = [event.server_msg_id, event.from_user_id, conversation_id];
    if let Some(id) = ids
        .into_iter()
        .chain(event.inboxes.iter().copied())
        .find(|id| *id > MAX_ID)
    {
        return Err(EventError::IdOutOfRange {
            server_msg_id: event.server_msg_id,
            id,
        });
    }
    let mut inboxes = event.inboxes;
    let mut seen = std::collections::HashSet::new();
    inboxes.retain(|inbox| seen.insert(*inbox));
    Ok(inboxes
        .into_iter()
        .map(|inbox| (inbox, message.clone()))
        .collect())
}

/// Encodes a message as logic would produce it, for producers in tests and tools.
pub fn encode(message: &NewMessage, inboxes: &[u64]) -> Vec<u8> {
    ChatEvent {
        server_msg_id: message.server_msg_id,
        from_user_id: message.from_user_id,
        conversation: Some(match message.conversation {
            Conversation::ToUserId(user) => chat_event::Conversation::ToUserId(user),
            Conversation::GroupId(group) => chat_event::Conversation::GroupId(group),
        }),
        body: message.body.clone(),
        timestamp_ms: message.timestamp_ms,
        client_msg_id: message.client_msg_id.clone(),
        inboxes: inboxes.to_vec(),
    }
    .encode_to_vec()
}

/// The client-protocol form of a message stored at `seq`, as pushed to devices.
pub fn stored(message: &NewMessage, seq: u64) -> StoredMessage {
    StoredMessage {
        seq,
        server_msg_id: message.server_msg_id,
        from_user_id: message.from_user_id,
        // The inbox's conversation is the client protocol's own type.
        conversation: Some(message.conversation),
        body: message.body.clone(),
        timestamp_ms: message.timestamp_ms,
        client_msg_id: message.client_msg_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let message = NewMessage {
            server_msg_id: 7,
            from_user_id: 1,
            conversation: Conversation::GroupId(9),
            body: bytes::Bytes::from_static(b"x"),
            timestamp_ms: 5,
            client_msg_id: "c".into(),
        };
        let items = decode(Some(&encode(&message, &[3, 4, 3]))).unwrap();
        assert_eq!(items, [(3, message.clone()), (4, message.clone())]);
        assert_eq!(stored(&message, 2).seq, 2);
        assert!(matches!(decode(None), Err(EventError::Empty)));
        assert!(matches!(
            decode(Some(b"\xff\xff\xff")),
            Err(EventError::Decode(_))
        ));
        let no_conversation = ChatEvent {
            server_msg_id: 1,
            ..Default::default()
        }
        .encode_to_vec();
        let mut huge = message.clone();
        huge.from_user_id = 1 << 63;
        assert!(matches!(
            decode(Some(&encode(&huge, &[3]))),
            Err(EventError::IdOutOfRange { id, .. }) if id == 1 << 63
        ));
        assert!(matches!(
            decode(Some(&no_conversation)),
            Err(EventError::NoConversation(1))
        ));
    }
}
