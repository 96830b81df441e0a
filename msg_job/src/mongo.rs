//! [`InboxStore`] over MongoDB: the real store, `fishchat_inbox::MongoInbox`.

use fishchat_inbox::MongoInbox;

use crate::store::{Conversation, InboxStore, NewMessage, StoreError};

/// The inbox crate's form of a message.
fn to_inbox(message: &NewMessage) -> fishchat_inbox::NewMessage {
    fishchat_inbox::NewMessage {
        server_msg_id: message.server_msg_id,
        from_user_id: message.from_user_id,
        conversation: match message.conversation {
            Conversation::User(user) => fishchat_inbox::Conversation::ToUserId(user),
            Conversation::Group(group) => fishchat_inbox::Conversation::GroupId(group),
        },
        body: message.body.clone(),
        timestamp_ms: message.timestamp_ms,
        client_msg_id: message.client_msg_id.clone(),
    }
}

impl InboxStore for MongoInbox {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        let items: Vec<(u64, fishchat_inbox::NewMessage)> = items
            .iter()
            .map(|(inbox, message)| (*inbox, to_inbox(message)))
            .collect();
        MongoInbox::store(self, &items)
            .await
            .map_err(|err| StoreError(err.to_string()))
    }
}
