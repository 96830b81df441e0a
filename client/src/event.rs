//! What the background task tells the application.

use std::sync::Arc;

use fishchat_codec::KickReason;
use fishchat_codec::pb::StoredMessage;
use tokio::sync::mpsc;

use crate::conversation::Conversation;
use crate::shared::Shared;

/// Something that happened on the client's connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Logged in on an access node (after the first connect and every reconnect).
    Connected {
        /// The access node's id (or address when connecting without a gateway).
        node: String,
        /// The user the connection acts as.
        user_id: u64,
    },
    /// Caught up after a login: every conversation the server reported changed
    /// is applied, and every gap it revealed is synced, so
    /// [`Client::conversations`](crate::Client::conversations) is current.
    /// Comes at once when [`ClientOptions::catch_up`](crate::ClientOptions::catch_up) is off.
    Synced,
    /// A message, in seq order within its conversation, each seq once.
    Message {
        /// Where this user files it (a direct message under the other user,
        /// also when this user sent it from another device).
        conversation: Conversation,
        /// The message.
        message: StoredMessage,
    },
    /// This user read `conversation` up to `read_seq` on another device.
    Read {
        /// Which conversation.
        conversation: Conversation,
        /// The new read position.
        read_seq: u64,
        /// What is left unread.
        unread: u64,
    },
    /// The other user of a direct chat read it up to `read_seq` (a read receipt).
    ReadReceipt {
        /// The direct chat (named by the reader).
        conversation: Conversation,
        /// Who read.
        reader_user_id: u64,
        /// Up to where.
        read_seq: u64,
    },
    /// The connection was lost; the client reconnects unless the events end next.
    Disconnected {
        /// Why.
        error: String,
    },
    /// The server cut the connection off; after DUPLICATE_LOGIN and
    /// SESSION_REVOKED the client stops, otherwise it reconnects.
    Kicked {
        /// Why.
        reason: KickReason,
        /// The server's explanation.
        text: String,
    },
}

/// The stream of [`Event`]s of one client; it ends when the client stops.
///
/// With a state file, a message counts as received once [`recv`](Self::recv)
/// returned it: the file is written whenever the stream has nothing more
/// waiting (and by [`Client::close`](crate::Client::close)), so a restarted
/// client resumes after the last message the application took.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>, shared: Arc<Shared>) -> Self {
        Self { rx, shared }
    }

    /// The next event; `None` once the client has stopped and every event was
    /// read. Cancel-safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(_) => {
                // Nothing waiting: a good moment to record what was taken so far.
                self.shared.save().await;
                self.rx.recv().await
            }
        };
        if let Some(Event::Message {
            conversation,
            message,
        }) = &event
        {
            self.shared.took(*conversation, message.seq);
        }
        event
    }
}
