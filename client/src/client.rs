//! The application's handle: cheap to clone, it asks the background task
//! ([`crate::driver`]) to act and waits for the answer within the request timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::pb::{self, HistoryReply, ReadReply, SendAck, StoredMessage};
use tokio::sync::{mpsc, oneshot};

use crate::conversation::{Conversation, ConversationInfo};
use crate::driver::{AppRequest, Command, Driver};
use crate::error::ClientError;
use crate::establish::establish;
use crate::event::Events;
use crate::options::ClientOptions;
use crate::shared::Shared;
use crate::state::{SavedConversations, StateFile};

/// A logged-in FishChat client; the connection lives in a background task.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    user_id: u64,
    request_timeout: Duration,
}

impl Client {
    /// Connects and logs in; a refused first login is an error (no retry loop).
    /// Catching up and later losses are handled in the background and
    /// reported as [`Events`].
    pub async fn connect(options: ClientOptions) -> Result<(Client, Events), ClientError> {
        let established = establish(&options).await?;
        let user_id = established.login.user_id;
        let state = options
            .state_file
            .clone()
            .map(|path| StateFile::new(path, user_id, &options.device_id));
        let saved = match &state {
            Some(state) => state.load().await?,
            None => SavedConversations::new(),
        };
        let shared = Arc::new(Shared::new(&saved, state));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let request_timeout = options.request_timeout;
        let driver = Driver::new(options, user_id, commands_rx, events_tx, shared.clone());
        tokio::spawn(driver.run(established));
        let client = Client {
            commands,
            shared: shared.clone(),
            user_id,
            request_timeout,
        };
        Ok((client, Events::new(events_rx, shared)))
    }

    /// The user this client acts as.
    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    /// Every conversation this client knows of, with unread counts, in
    /// [`Conversation`] order. Complete after [`Event::Synced`](crate::Event::Synced).
    pub fn conversations(&self) -> Vec<ConversationInfo> {
        self.shared.table().infos()
    }

    /// What this client knows of one conversation.
    pub fn conversation(&self, conversation: Conversation) -> Option<ConversationInfo> {
        self.shared.table().info(conversation)
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(ClientError::Timeout(self.request_timeout)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok(result)) => result,
        }
    }

    /// Sends a direct message with a fresh client_msg_id.
    pub async fn send_to_user(
        &self,
        to: u64,
        body: impl Into<Bytes>,
    ) -> Result<SendAck, ClientError> {
        self.send_to_user_with_id(new_client_msg_id(), to, body)
            .await
    }

    /// Sends a direct message with the caller's client_msg_id (resending one is safe).
    pub async fn send_to_user_with_id(
        &self,
        client_msg_id: String,
        to: u64,
        body: impl Into<Bytes>,
    ) -> Result<SendAck, ClientError> {
        let body = pb::SendToUser {
            client_msg_id,
            to_user_id: to,
            body: body.into(),
        }
        .into();
        self.request(|reply| Command::Send { body, reply }).await
    }

    /// Sends a message to a group this user is a member of.
    pub async fn send_to_group(
        &self,
        group: u64,
        body: impl Into<Bytes>,
    ) -> Result<SendAck, ClientError> {
        let body = pb::SendToGroup {
            client_msg_id: new_client_msg_id(),
            group_id: group,
            body: body.into(),
        }
        .into();
        self.request(|reply| Command::Send { body, reply }).await
    }

    /// Fetches what `conversation` has after the last message handed over
    /// (all pages) and returns it instead of emitting it as events.
    pub async fn sync(
        &self,
        conversation: Conversation,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        self.request(|reply| Command::Sync {
            conversation,
            reply,
        })
        .await
    }

    /// Messages of `conversation` before `before_seq` (0: from the newest),
    /// newest first, at most `limit` (0: the server's default); `has_more`
    /// says older ones remain. Touches neither the events nor the read position.
    pub async fn history(
        &self,
        conversation: Conversation,
        before_seq: u64,
        limit: u32,
    ) -> Result<HistoryReply, ClientError> {
        let request = pb::HistoryRequest {
            conversation: Some(conversation.into()),
            before_seq,
            limit,
        };
        self.request(|reply| Command::Request(AppRequest::History { request, reply }))
            .await
    }

    /// Marks `conversation` read up to and including `seq` on every device of
    /// this user (the server never moves it back, nor past the head); returns
    /// the position reached and what is left unread.
    pub async fn read(
        &self,
        conversation: Conversation,
        seq: u64,
    ) -> Result<ReadReply, ClientError> {
        self.request(|reply| {
            Command::Request(AppRequest::Read {
                conversation,
                seq,
                reply,
            })
        })
        .await
    }

    /// Logs out, stops reconnecting (for every clone of this handle), and
    /// saves what the application took to the state file.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            // Either answer, or the task already stopped: both mean closed.
            let _ = tokio::time::timeout(self.request_timeout, finished).await;
        }
        self.shared.save().await;
    }
}
#[cfg(test)]
mod tests;

/// A client_msg_id unique for all practical purposes: 128 random bits.
fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
