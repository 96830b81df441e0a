//! The background task that owns the connection: it logs in again after every
//! loss (through the gateway, with backoff), keeps the heartbeat, correlates
//! replies with the requests waiting for them, and resends unanswered sends
//! after a reconnect. Catching up and in-order delivery per conversation live
//! in [`catchup`]; history and read requests in [`requests`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use fishchat_codec::pb::{self, StoredMessage};
use fishchat_codec::{Body, ErrorCode, KickReason};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::Backoff;
use crate::conversation::Conversation;
use crate::error::ClientError;
use crate::establish::{Established, establish};
use crate::event::Event;
use crate::options::ClientOptions;
use crate::shared::Shared;

mod catchup;
mod requests;
mod session;

use catchup::AppSync;
pub(crate) use requests::AppRequest;
use session::Session;

/// Sends on the wire at once. The server allows 32 requests in flight; syncs
/// ([`catchup`]), history and read requests ([`requests`]) and pings need room too.
const MAX_SENDS_IN_FLIGHT: usize = 22;

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// A request from a [`Client`](crate::Client) handle.
pub(crate) enum Command {
    /// Send a SEND_TO_USER or SEND_TO_GROUP body; answer with its ack.
    Send {
        body: Body,
        reply: Reply<pb::SendAck>,
    },
    /// Sync one conversation to its head and return what it brought.
    Sync {
        conversation: Conversation,
        reply: Reply<Vec<StoredMessage>>,
    },
    /// A history or read request.
    Request(AppRequest),
    /// Log out and stop.
    Close { done: oneshot::Sender<()> },
}

/// A send not yet answered, in the order the application asked.
struct Outgoing {
    order: u64,
    body: Body,
    reply: Reply<pb::SendAck>,
}

impl Outgoing {
    fn client_msg_id(&self) -> &str {
        match &self.body {
            Body::SendToUser(send) => &send.client_msg_id,
            Body::SendToGroup(send) => &send.client_msg_id,
            _ => "",
        }
    }
}

/// Requests on the wire of the current connection.
enum InFlight {
    Send(Outgoing),
    /// A page of SYNC_CONVERSATIONS.
    SyncConversations,
    /// A page of SYNC of one conversation.
    Sync(Conversation),
    App(AppRequest),
}

/// Why a connection ended.
enum End {
    /// Lost (I/O error, silence, protocol error): reconnect.
    Lost(String),
    /// Kicked by the server.
    Kicked(KickReason, String),
    /// The application closed the client.
    Closed,
}

/// The background task.
pub(crate) struct Driver {
    options: ClientOptions,
    user_id: u64,
    commands: mpsc::UnboundedReceiver<Command>,
    retry_tx: mpsc::UnboundedSender<Outgoing>,
    retry_rx: mpsc::UnboundedReceiver<Outgoing>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
    outbox: VecDeque<Outgoing>,
    next_order: u64,
    /// History and read requests waiting for a connection (or room on it).
    requests: VecDeque<AppRequest>,
    /// Application syncs, per conversation.
    app_syncs: BTreeMap<Conversation, AppSync>,
    backoff: Backoff,
}

impl Driver {
    pub(crate) fn new(
        options: ClientOptions,
        user_id: u64,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        shared: Arc<Shared>,
    ) -> Self {
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        Self {
            options,
            user_id,
            commands,
            retry_tx,
            retry_rx,
            events,
            shared,
            outbox: VecDeque::new(),
            next_order: 0,
            requests: VecDeque::new(),
            app_syncs: BTreeMap::new(),
            backoff,
        }
    }

    fn emit(&self, event: Event) {
        // The application may have dropped its Events; the client keeps working.
        let _ = self.events.send(event);
    }

    /// Runs connections until the client is closed or cut off for good.
    pub(crate) async fn run(mut self, first: Established) {
        let mut next = Some(first);
        loop {
            let established = match next.take() {
                Some(established) => established,
                None => match self.reconnect().await {
                    Some(established) => established,
                    None => return,
                },
            };
            self.backoff.reset();
            match self.session(established).await {
                End::Closed => return,
                End::Kicked(reason, text) => {
                    tracing::info!(?reason, %text, "kicked");
                    self.emit(Event::Kicked { reason, text });
                    if matches!(
                        reason,
                        KickReason::DuplicateLogin | KickReason::SessionRevoked
                    ) {
                        return;
                    }
                }
                End::Lost(error) => {
                    tracing::info!(%error, "connection lost");
                    self.emit(Event::Disconnected { error });
                }
            }
        }
    }

    /// Waits out the backoff and connects again; `None` when the client must stop.
    async fn reconnect(&mut self) -> Option<Established> {
        loop {
            let wake = Instant::now() + self.backoff.next_delay();
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        None => return None,
                        Some(Command::Close { done }) => {
                            let _ = done.send(());
                            return None;
                        }
                        Some(command) => self.accept(command),
                    },
                    Some(out) = self.retry_rx.recv() => self.queue(out),
                }
            }
            match establish(&self.options).await {
                Ok(established) => return Some(established),
                Err(error @ ClientError::Login { .. }) => {
                    tracing::warn!(%error, "login refused; stopping");
                    self.emit(Event::Disconnected {
                        error: error.to_string(),
                    });
                    return None;
                }
                Err(error) => tracing::info!(%error, "reconnect failed"),
            }
        }
    }

    /// Takes a command; it goes on the wire at the next [`flush`](Self::flush).
    fn accept(&mut self, command: Command) {
        match command {
            Command::Send { body, reply } => {
                let order = self.next_order;
                self.next_order += 1;
                self.queue(Outgoing { order, body, reply });
            }
            Command::Sync {
                conversation,
                reply,
            } => self
                .app_syncs
                .entry(conversation)
                .or_default()
                .waiters
                .push(reply),
            Command::Request(request) => self.requests.push_back(request),
            // Handled by the callers, which know whether a connection is up.
            Command::Close { done } => {
                let _ = done.send(());
            }
        }
    }

    /// Puts a send back in order among those waiting.
    fn queue(&mut self, out: Outgoing) {
        let at = self.outbox.partition_point(|o| o.order < out.order);
        self.outbox.insert(at, out);
    }

    /// One logged-in connection, until it ends.
    async fn session(&mut self, established: Established) -> End {
        let Established { conn, node, login } = established;
        if login.user_id != self.user_id {
            return End::Lost(format!(
                "the token now logs in as user {} instead of {}",
                login.user_id, self.user_id
            ));
        }
        let mut s = Session::new(conn, login.heartbeat_interval_ms);
        self.emit(Event::Connected {
            node,
            user_id: self.user_id,
        });
        let end = self.serve(&mut s).await;
        // Requests on the wire of a lost connection go again; sends with the same client_msg_id.
        let mut interrupted = Vec::new();
        for (_, in_flight) in s.pending.drain() {
            match in_flight {
                InFlight::Send(out) => self.queue(out),
                InFlight::App(request) => interrupted.push(request),
                // The next connection catches up from scratch.
                InFlight::SyncConversations | InFlight::Sync(_) => {}
            }
        }
        for request in interrupted {
            self.requests.push_front(request);
        }
        end
    }

    async fn serve(&mut self, s: &mut Session) -> End {
        if let Err(end) = self.start_catching_up(s).await {
            return end;
        }
        if let Err(end) = self.flush(s).await {
            return end;
        }
        let mut ping = tokio::time::interval_at(Instant::now() + s.heartbeat, s.heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dead_after = s.dead_after();
        loop {
            let dead_at = s.last_rx + dead_after;
            let result = tokio::select! {
                frame = s.recv() => match frame {
                    Ok((id, body)) => self.on_frame(s, id, body).await,
                    Err(end) => Err(end),
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close { .. }) => {
                        // LOGOUT is a courtesy: the server closes either way.
                        let _ = s.send(pb::Logout {}.into()).await;
                        if let Some(Command::Close { done }) = command {
                            let _ = done.send(());
                        }
                        return End::Closed;
                    }
                    Some(command) => {
                        self.accept(command);
                        self.flush(s).await
                    }
                },
                Some(out) = self.retry_rx.recv() => {
                    self.queue(out);
                    self.flush(s).await
                }
                _ = ping.tick() => {
                    s.send(pb::Ping { client_time_ms: now_ms() }.into()).await
                }
                () = tokio::time::sleep_until(dead_at) => Err(End::Lost(format!(
                    "no frame from the server for {dead_after:?}"
                ))),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Writes what waits for a connection: history and read requests,
    /// application syncs, and sends, each up to its share of the in-flight cap.
    async fn flush(&mut self, s: &mut Session) -> Result<(), End> {
        self.flush_requests(s).await?;
        self.want_app_syncs(s);
        self.pump_syncs(s).await?;
        while s.sends_in_flight() < MAX_SENDS_IN_FLIGHT {
            let Some(out) = self.outbox.pop_front() else {
                break;
            };
            if out.reply.is_closed() {
                continue; // the caller gave up
            }
            let id = s.next_id();
            if let Err(end) = s.write(id, &out.body).await {
                self.queue(out);
                return Err(end);
            }
            s.pending.insert(id, InFlight::Send(out));
        }
        Ok(())
    }

    async fn on_frame(&mut self, s: &mut Session, id: u32, body: Body) -> Result<(), End> {
        match body {
            Body::Push(push) if id == 0 => self.on_push(s, push.messages).await,
            Body::ReadUpdate(update) if id == 0 => {
                self.on_read_update(update);
                Ok(())
            }
            Body::Kick(kick) if id == 0 => Err(End::Kicked(kick.reason(), kick.text)),
            Body::Pong(_) => Ok(()),
            Body::SendAck(ack) => match s.pending.remove(&id) {
                Some(InFlight::Send(out)) => {
                    self.on_send_ack(out, ack);
                    self.flush(s).await
                }
                other => self.unmatched(s, id, other, "SEND_ACK"),
            },
            Body::SyncConversationsReply(reply) => match s.pending.remove(&id) {
                Some(InFlight::SyncConversations) => self.on_conversations_page(s, reply).await,
                other => self.unmatched(s, id, other, "SYNC_CONVERSATIONS_REPLY"),
            },
            Body::SyncReply(reply) => match s.pending.remove(&id) {
                Some(InFlight::Sync(conversation)) => {
                    self.on_sync_page(s, conversation, reply).await
                }
                other => self.unmatched(s, id, other, "SYNC_REPLY"),
            },
            Body::HistoryReply(history) => match s.pending.remove(&id) {
                Some(InFlight::App(AppRequest::History { reply, .. })) => {
                    let _ = reply.send(Ok(history));
                    self.flush(s).await
                }
                other => self.unmatched(s, id, other, "HISTORY_REPLY"),
            },
            Body::ReadReply(read) => match s.pending.remove(&id) {
                Some(InFlight::App(AppRequest::Read {
                    conversation,
                    reply,
                    ..
                })) => {
                    self.on_read_reply(conversation, read, reply);
                    self.flush(s).await
                }
                other => self.unmatched(s, id, other, "READ_REPLY"),
            },
            Body::Error(error) => self.on_error(s, id, error).await,
            other => Err(End::Lost(
                ClientError::Protocol(format!(
                    "unexpected {:?} frame (request {id}) from the server",
                    other.command()
                ))
                .to_string(),
            )),
        }
    }

    /// A reply to no request of ours: logged and ignored (the request is put back if it was another kind).
    fn unmatched(
        &self,
        s: &mut Session,
        id: u32,
        other: Option<InFlight>,
        what: &str,
    ) -> Result<(), End> {
        if let Some(in_flight) = other {
            s.pending.insert(id, in_flight);
        }
        tracing::warn!(
            request_id = id,
            what,
            "reply to no request of this kind; ignored"
        );
        Ok(())
    }

    fn on_send_ack(&self, out: Outgoing, ack: pb::SendAck) {
        match &ack.error {
            Some(error) => self.refused(out, error),
            None => {
                let _ = out.reply.send(Ok(ack));
            }
        }
    }

    /// A refused send: retried a little later when the server says that is safe, else answered.
    fn refused(&self, out: Outgoing, error: &pb::Error) {
        if !retryable(error.code()) {
            let error = ClientError::send_refused(out.client_msg_id(), error);
            let _ = out.reply.send(Err(error));
            return;
        }
        tracing::debug!(code = ?error.code(), "send refused for now; retrying");
        let retry_tx = self.retry_tx.clone();
        let delay = self.options.backoff_initial;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The driver has stopped when this fails; the caller then sees Closed.
            let _ = retry_tx.send(out);
        });
    }

    async fn on_error(&mut self, s: &mut Session, id: u32, error: pb::Error) -> Result<(), End> {
        match s.pending.remove(&id) {
            Some(InFlight::Send(out)) => {
                self.refused(out, &error);
                self.flush(s).await
            }
            Some(InFlight::App(request)) => {
                request.fail(ClientError::refused(&error));
                self.flush(s).await
            }
            Some(InFlight::SyncConversations) => self.on_conversations_refused(s, &error).await,
            Some(InFlight::Sync(conversation)) => {
                self.on_sync_refused(s, conversation, &error).await
            }
            None if id == 0 => Err(End::Lost(format!(
                "server error: {:?}: {}",
                error.code(),
                error.message
            ))),
            None => {
                tracing::warn!(request_id = id, code = ?error.code(), message = %error.message, "request failed");
                Ok(())
            }
        }
    }
}

/// Whether the server says a refused request may simply be tried again.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::TooManyRequests | ErrorCode::Internal
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
