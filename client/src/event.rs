//! What the background task tells the application.

use fishchat_codec::KickReason;
use fishchat_codec::pb::StoredMessage;
use tokio::sync::mpsc;

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
    /// A message of this user's inbox, in seq order, each seq once.
    Message(StoredMessage),
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
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
