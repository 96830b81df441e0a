//! The application's handle: cheap to clone, it asks the background task
//! ([`crate::driver`]) to act and waits for the answer within the request timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::pb::{self, SendAck, StoredMessage};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Command, Driver, Shared};
use crate::error::ClientError;
use crate::establish::establish;
use crate::event::Events;
use crate::options::ClientOptions;
use crate::state::StateFile;

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
    /// Later losses are repaired in the background and reported as [`Events`].
    pub async fn connect(options: ClientOptions) -> Result<(Client, Events), ClientError> {
        let established = establish(&options).await?;
        let user_id = established.login.user_id;
        let state = options
            .state_file
            .clone()
            .map(|path| StateFile::new(path, user_id, &options.device_id));
        let stored = match &state {
            Some(state) => state.load().await?,
            None => None,
        };
        let last_seen = stored.unwrap_or(0).max(established.login.last_acked_seq);
        let shared = Arc::new(Shared::default());
        shared.last_seen.store(last_seen, Ordering::Release);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let request_timeout = options.request_timeout;
        let driver = Driver::new(
            options,
            user_id,
            commands_rx,
            events_tx,
            shared.clone(),
            state,
        );
        tokio::spawn(driver.run(established));
        let client = Client {
            commands,
            shared,
            user_id,
            request_timeout,
        };
        Ok((client, Events::new(events_rx)))
    }

    /// The user this client acts as.
    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    /// The highest seq handed to the application (as an event or by [`sync`](Self::sync)).
    pub fn last_seen_seq(&self) -> u64 {
        self.shared.last_seen.load(Ordering::Acquire)
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

    /// Fetches every message after the last seen seq (all pages) and returns
    /// them instead of emitting them; the last seen seq advances past them.
    pub async fn sync(&self) -> Result<Vec<StoredMessage>, ClientError> {
        self.request(|reply| Command::Sync { reply }).await
    }

    /// Tells the server this device has every message up to `up_to_seq`.
    pub async fn ack(&self, up_to_seq: u64) -> Result<(), ClientError> {
        self.request(|reply| Command::Ack { up_to_seq, reply })
            .await
    }

    /// Logs out and stops reconnecting (for every clone of this handle).
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            // Either answer, or the task already stopped: both mean closed.
            let _ = tokio::time::timeout(self.request_timeout, finished).await;
        }
    }
}

#[cfg(test)]
mod tests;

/// A client_msg_id unique for all practical purposes: 128 random bits.
fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
