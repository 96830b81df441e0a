//! [`MessageStore`] over MongoDB: the real store, `fishchat_conversations::ConversationStore`.

use fishchat_conversations::ConversationStore;

use crate::store::{ConvKey, MessageStore, NewMessage, StoreError};

impl MessageStore for ConversationStore {
    async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, StoreError> {
        ConversationStore::insert(self, messages)
            .await
            .map_err(|err| StoreError(err.to_string()))
    }

    async fn raise_heads(&self, stored: &[(ConvKey, u64)]) -> Result<(), StoreError> {
        ConversationStore::raise_heads(self, stored.iter().copied())
            .await
            .map_err(|err| StoreError(err.to_string()))
    }
}
