//! How messages and acks look on the terminal and to scripts.

use fishchat_client::{SendAck, StoredMessage};
use fishchat_codec::pb::stored_message::Conversation;
use serde_json::{Value, json};

use super::names::Names;

/// A message as one JSON object (the body as UTF-8 text, lossily).
pub fn message_json(message: &StoredMessage) -> Value {
    let mut value = json!({
        "seq": message.seq,
        "server_msg_id": message.server_msg_id,
        "from": message.from_user_id,
        "client_msg_id": message.client_msg_id,
        "timestamp_ms": message.timestamp_ms,
        "text": String::from_utf8_lossy(&message.body),
    });
    match message.conversation {
        Some(Conversation::ToUserId(to)) => value["to"] = to.into(),
        Some(Conversation::GroupId(group)) => value["group"] = group.into(),
        None => {}
    }
    value
}

/// A send's ack as one JSON object.
pub fn ack_json(ack: &SendAck) -> Value {
    json!({
        "client_msg_id": ack.client_msg_id,
        "server_msg_id": ack.server_msg_id,
        "seq": ack.seq,
        "timestamp_ms": ack.timestamp_ms,
    })
}

/// A message as one line for people: `[seq 12] alice -> bob: hi`.
pub fn message_line(message: &StoredMessage, names: &Names) -> String {
    let from = names.name_of(message.from_user_id);
    let to = match message.conversation {
        Some(Conversation::ToUserId(to)) => names.name_of(to),
        Some(Conversation::GroupId(group)) => format!("group {group}"),
        None => "?".to_owned(),
    };
    format!(
        "[seq {}] {from} -> {to}: {}",
        message.seq,
        String::from_utf8_lossy(&message.body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: Conversation) -> StoredMessage {
        StoredMessage {
            seq: 3,
            server_msg_id: 40,
            from_user_id: 1,
            conversation: Some(conversation),
            body: b"hi \xff".to_vec().into(),
            timestamp_ms: 5,
            client_msg_id: "c".into(),
        }
    }

    #[test]
    fn messages_render_for_scripts_and_people() {
        let direct = message(Conversation::ToUserId(2));
        let json = message_json(&direct);
        assert_eq!(json["to"], 2);
        assert_eq!(json["text"], "hi \u{fffd}");
        assert!(json.get("group").is_none());
        let group = message(Conversation::GroupId(9));
        assert_eq!(message_json(&group)["group"], 9);
        let names = Names::new(vec![(1, "alice".into())]);
        assert_eq!(
            message_line(&direct, &names),
            "[seq 3] alice -> user 2: hi \u{fffd}"
        );
        assert_eq!(
            message_line(&group, &names),
            "[seq 3] alice -> group 9: hi \u{fffd}"
        );
    }
}
