//! [`InboxStore`] over MongoDB: the real store, `fishchat_inbox::MongoInbox`.

use fishchat_inbox::MongoInbox;

use crate::store::{InboxStore, NewMessage, StoreError};

impl InboxStore for MongoInbox {
    async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, StoreError> {
        MongoInbox::store(self, items)
            .await
            .map_err(|err| StoreError(err.to_string()))
    }
}
