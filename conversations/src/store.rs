//! The MongoDB handle: collections, connecting, the indexes the design relies
//! on, and the refusal to run over the older per-user layout.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use prometheus_client::metrics::counter::Counter;

use crate::error::ConvError;
use crate::members::field as member_field;
use crate::message::field;
use crate::writer::KnownConversations;

/// One document per message.
pub const MESSAGES: &str = "chat_messages";
/// One document per conversation: its head (highest stored seq).
pub const HEADS: &str = "chat_heads";
/// One document per (user, conversation): read position and visible range.
pub const MEMBERS: &str = "chat_members";
/// Collections of the per-user inbox layout this one replaced.
const OLD_COLLECTIONS: [&str; 2] = ["messages", "cursors"];

/// Name of the unique index that fences seq allocation.
pub(crate) const CONV_SEQ_INDEX: &str = "conv_seq";
/// Name of the unique index that makes stores idempotent.
pub(crate) const CONV_MSG_INDEX: &str = "conv_msg";

/// Field of a head document.
pub(crate) const HEAD: &str = "head";

/// Conversations in one MongoDB database. Cheap to clone; clones share the
/// connection pool and the writer's caches.
#[derive(Debug, Clone)]
pub struct ConversationStore {
    pub(crate) database: Database,
    pub(crate) messages: Collection<Document>,
    pub(crate) heads: Collection<Document>,
    pub(crate) members: Collection<Document>,
    pub(crate) known: Arc<KnownConversations>,
    /// Messages given to store that were already stored (redeliveries absorbed).
    pub(crate) already_stored: Counter,
}

impl ConversationStore {
    /// Connects to `url` and uses `database`. The connection is lazy: call
    /// [`ConversationStore::prepare`] to prove the server answers.
    pub async fn connect(url: &str, database: &str) -> Result<Self, ConvError> {
        let mut options = ClientOptions::parse(url).await?;
        options
            .app_name
            .get_or_insert_with(|| "fishchat-conversations".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options)?;
        Ok(Self::new(&client.database(database)))
    }

    /// Uses `database` through an existing client.
    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            messages: database.collection(MESSAGES),
            heads: database.collection(HEADS),
            members: database.collection(MEMBERS),
            known: Arc::default(),
            already_stored: Counter::default(),
        }
    }

    /// Counts, in every clone of this store, the messages given to store
    /// that were already stored: redeliveries the idempotent insert absorbed.
    pub fn already_stored(&self) -> Counter {
        self.already_stored.clone()
    }

    /// Asks the server whether it answers (a `ping`), for health checks.
    pub async fn ping(&self) -> Result<(), ConvError> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Refuses a database of the older layout, then creates the indexes
    /// (idempotent; call once at startup). Seq allocation and idempotent
    /// stores are only correct once these exist.
    pub async fn prepare(&self) -> Result<(), ConvError> {
        let names = self.database.list_collection_names().await?;
        let old: Vec<&str> = OLD_COLLECTIONS
            .into_iter()
            .filter(|old| names.iter().any(|name| name == old))
            .collect();
        if !old.is_empty() {
            return Err(ConvError::OldLayout {
                database: self.database.name().to_owned(),
                collections: old.join(", "),
            });
        }
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        let messages = [
            IndexModel::builder()
                .keys(doc! { field::CONV: 1, field::SEQ: 1 })
                .options(unique(CONV_SEQ_INDEX))
                .build(),
            IndexModel::builder()
                .keys(doc! { field::CONV: 1, field::MSG: 1 })
                .options(unique(CONV_MSG_INDEX))
                .build(),
        ];
        self.messages.create_indexes(messages).await?;
        let member = IndexModel::builder()
            .keys(doc! { member_field::USER: 1, member_field::CONV: 1 })
            .options(unique("user_conv"))
            .build();
        self.members.create_index(member).await?;
        Ok(())
    }
}
