//! How messages, conversations and acks look on the terminal and to scripts.

use fishchat_client::{Conversation, ConversationInfo, SendAck, StoredMessage};
use fishchat_codec::pb::stored_message;
use serde_json::{Value, json};

use super::names::Names;

/// A message as one JSON object (the body as UTF-8 text, lossily):
/// `{"conversation":"u:1002","seq":17,"from":1002,"to":1001,...}`.
pub fn message_json(conversation: Conversation, message: &StoredMessage) -> Value {
    let mut value = json!({
        "conversation": conversation.to_string(),
        "seq": message.seq,
        "server_msg_id": message.server_msg_id,
        "from": message.from_user_id,
        "client_msg_id": message.client_msg_id,
        "timestamp_ms": message.timestamp_ms,
        "text": String::from_utf8_lossy(&message.body),
    });
    match message.conversation {
        Some(stored_message::Conversation::ToUserId(to)) => value["to"] = to.into(),
        Some(stored_message::Conversation::GroupId(group)) => value["group"] = group.into(),
        None => {}
    }
    value
}

/// A send's ack as one JSON object.
pub fn ack_json(ack: &SendAck) -> Value {
    json!({
        "client_msg_id": ack.client_msg_id,
        "server_msg_id": ack.server_msg_id,
        "timestamp_ms": ack.timestamp_ms,
    })
}

/// A conversation for people: `bob (u:1002)` or `g:5`.
pub fn conversation_name(conversation: Conversation, names: &Names) -> String {
    match conversation {
        Conversation::User(user) => match names.known_name(user) {
            Some(name) => format!("{name} ({conversation})"),
            None => conversation.to_string(),
        },
        Conversation::Group(_) => conversation.to_string(),
    }
}

/// A message as one line for people: `[u:1002 #12] bob: hi`.
pub fn message_line(conversation: Conversation, message: &StoredMessage, names: &Names) -> String {
    format!(
        "[{conversation} #{}] {}: {}",
        message.seq,
        names.name_of(message.from_user_id),
        String::from_utf8_lossy(&message.body)
    )
}

/// One row of `/list`: `* bob (u:1002)  3 unread  (last #17)`.
pub fn conversation_row(info: &ConversationInfo, names: &Names, open: bool) -> String {
    format!(
        "{} {}  {} unread  (last #{})",
        if open { '*' } else { ' ' },
        conversation_name(info.conversation, names),
        info.unread,
        info.head_seq
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: stored_message::Conversation) -> StoredMessage {
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
        let direct = message(stored_message::Conversation::ToUserId(2));
        let json = message_json(Conversation::User(2), &direct);
        assert_eq!(json["conversation"], "u:2");
        assert_eq!(json["to"], 2);
        assert_eq!(json["text"], "hi \u{fffd}");
        assert!(json.get("group").is_none());
        let group = message(stored_message::Conversation::GroupId(9));
        let json = message_json(Conversation::Group(9), &group);
        assert_eq!(
            (json["conversation"].as_str(), json["group"].as_u64()),
            (Some("g:9"), Some(9))
        );
        let names = Names::new(vec![(1, "alice".into())]);
        assert_eq!(
            message_line(Conversation::User(2), &direct, &names),
            "[u:2 #3] alice: hi \u{fffd}"
        );
        assert_eq!(
            message_line(Conversation::Group(9), &group, &names),
            "[g:9 #3] alice: hi \u{fffd}"
        );
    }

    #[test]
    fn conversations_are_named_where_the_name_is_known() {
        let names = Names::new(vec![(1, "alice".into())]);
        let info = ConversationInfo {
            conversation: Conversation::User(1),
            seq: 17,
            head_seq: 17,
            read_seq: 14,
            unread: 3,
        };
        assert_eq!(
            conversation_row(&info, &names, true),
            "* alice (u:1)  3 unread  (last #17)"
        );
        assert_eq!(conversation_name(Conversation::User(2), &names), "u:2");
        assert_eq!(conversation_name(Conversation::Group(5), &names), "g:5");
    }
}
