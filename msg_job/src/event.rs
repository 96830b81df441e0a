//! Kafka payloads in: a `ChatEvent` becomes the message to store and the
//! users to push it to.

use fishchat_rpc::events::{ChatEvent, chat_event};
use prost::Message;
use thiserror::Error;

use crate::store::{NewMessage, Target};

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

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// What to store.
    pub message: NewMessage,
    /// Whom to push it to once stored (deduplicated, in logic's order).
    pub recipients: Vec<u64>,
}

/// Decodes a payload.
pub fn decode(payload: Option<&[u8]>) -> Result<Accepted, EventError> {
    let event = ChatEvent::decode(payload.ok_or(EventError::Empty)?)?;
    let target = match event.conversation {
        Some(chat_event::Conversation::ToUserId(user)) => Target::ToUserId(user),
        Some(chat_event::Conversation::GroupId(group)) => Target::GroupId(group),
        None => return Err(EventError::NoConversation(event.server_msg_id)),
    };
    let target_id = match target {
        Target::ToUserId(id) | Target::GroupId(id) => id,
    };
    let ids = [event.server_msg_id, event.from_user_id, target_id];
    if let Some(id) = ids.into_iter().find(|id| *id > MAX_ID) {
        return Err(EventError::IdOutOfRange {
            server_msg_id: event.server_msg_id,
            id,
        });
    }
    let mut recipients = event.recipients;
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|user| seen.insert(*user));
    Ok(Accepted {
        message: NewMessage {
            server_msg_id: event.server_msg_id,
            from_user_id: event.from_user_id,
            target,
            body: event.body,
            timestamp_ms: event.timestamp_ms,
            client_msg_id: event.client_msg_id,
        },
        recipients,
    })
}

/// Encodes a message as logic would produce it, for producers in tests and tools.
pub fn encode(message: &NewMessage, recipients: &[u64]) -> Vec<u8> {
    ChatEvent {
        server_msg_id: message.server_msg_id,
        from_user_id: message.from_user_id,
        conversation: Some(match message.target {
            Target::ToUserId(user) => chat_event::Conversation::ToUserId(user),
            Target::GroupId(group) => chat_event::Conversation::GroupId(group),
        }),
        body: message.body.clone(),
        timestamp_ms: message.timestamp_ms,
        client_msg_id: message.client_msg_id.clone(),
        recipients: recipients.to_vec(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let message = NewMessage {
            server_msg_id: 7,
            from_user_id: 1,
            target: Target::GroupId(9),
            body: bytes::Bytes::from_static(b"x"),
            timestamp_ms: 5,
            client_msg_id: "c".into(),
        };
        let accepted = decode(Some(&encode(&message, &[3, 4, 3]))).unwrap();
        assert_eq!(accepted.message, message);
        assert_eq!(accepted.recipients, [3, 4]);
        assert!(matches!(decode(None), Err(EventError::Empty)));
        assert!(matches!(
            decode(Some(b"\xff\xff\xff")),
            Err(EventError::Decode(_))
        ));
        let mut huge = message.clone();
        huge.from_user_id = 1 << 63;
        assert!(matches!(
            decode(Some(&encode(&huge, &[3]))),
            Err(EventError::IdOutOfRange { id, .. }) if id == 1 << 63
        ));
        let no_conversation = ChatEvent {
            server_msg_id: 1,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            decode(Some(&no_conversation)),
            Err(EventError::NoConversation(1))
        ));
    }
}
