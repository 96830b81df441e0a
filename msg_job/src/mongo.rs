//! [`MessageStore`] over MongoDB: the real store, `fishchat_conversations::ConversationStore`.

use fishchat_conversations::ConversationStore;

use crate::store::{MessageStore, NewMessage, StoreError};

impl MessageStore for ConversationStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        ConversationStore::store(self, messages)
            .await
            .map_err(|err| StoreError(err.to_string()))
    }
}
