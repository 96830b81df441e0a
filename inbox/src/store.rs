//! The MongoDB handle: collections, connecting, and the indexes the design relies on.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::error::InboxError;
use crate::message::field;
use crate::seq_cache::SeqCache;

/// Collection of message documents (one per inbox and message).
pub const MESSAGES: &str = "messages";
/// Collection of delivery cursors (one per user and device).
pub const CURSORS: &str = "cursors";

/// Name of the unique index that makes seq allocation race-safe.
pub(crate) const INBOX_SEQ_INDEX: &str = "inbox_seq";
/// Name of the unique index that makes stores idempotent.
pub(crate) const INBOX_MSG_INDEX: &str = "inbox_server_msg_id";

/// Field names of a cursor document.
pub(crate) mod cursor_field {
    pub const USER: &str = "user";
    pub const DEVICE: &str = "device";
    pub const ACKED_SEQ: &str = "acked_seq";
}

/// Inboxes and cursors in one MongoDB database. Cheap to clone; clones share
/// the connection pool and the seq cache.
#[derive(Debug, Clone)]
pub struct MongoInbox {
    pub(crate) messages: Collection<Document>,
    pub(crate) cursors: Collection<Document>,
    pub(crate) seqs: std::sync::Arc<SeqCache>,
}

impl MongoInbox {
    /// Connects to `url` and uses `database`. The connection is lazy: call
    /// [`MongoInbox::ensure_indexes`] to prove the server answers.
    pub async fn connect(url: &str, database: &str) -> Result<Self, InboxError> {
        let mut options = ClientOptions::parse(url).await?;
        options
            .app_name
            .get_or_insert_with(|| "fishchat-inbox".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options)?;
        Ok(Self::new(&client.database(database)))
    }

    /// Uses `database` through an existing client.
    pub fn new(database: &Database) -> Self {
        Self {
            messages: database.collection(MESSAGES),
            cursors: database.collection(CURSORS),
            seqs: std::sync::Arc::new(SeqCache::default()),
        }
    }

    /// Creates the indexes (idempotent; call once at startup). Seq allocation
    /// and idempotent stores are only correct once these exist.
    pub async fn ensure_indexes(&self) -> Result<(), InboxError> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        let messages = [
            IndexModel::builder()
                .keys(doc! { field::INBOX: 1, field::SEQ: 1 })
                .options(unique(INBOX_SEQ_INDEX))
                .build(),
            IndexModel::builder()
                .keys(doc! { field::INBOX: 1, field::SERVER_MSG_ID: 1 })
                .options(unique(INBOX_MSG_INDEX))
                .build(),
            IndexModel::builder()
                .keys(doc! { field::INBOX: 1, field::CHAT: 1, field::SEQ: 1 })
                .options(
                    IndexOptions::builder()
                        .name("inbox_chat_seq".to_owned())
                        .build(),
                )
                .build(),
        ];
        self.messages.create_indexes(messages).await?;
        let cursor = IndexModel::builder()
            .keys(doc! { cursor_field::USER: 1, cursor_field::DEVICE: 1 })
            .options(unique("user_device"))
            .build();
        self.cursors.create_index(cursor).await?;
        Ok(())
    }
}
