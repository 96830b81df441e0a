//! Catching up and delivering in order, per conversation.
//!
//! After every login the client lists what changed (SYNC_CONVERSATIONS, with
//! what it holds, page by page), takes each summary's newest messages, and
//! SYNCs every conversation left behind (a summary with `has_gap`, or a head
//! beyond what it holds). A PUSH goes through only as the next seq of its
//! conversation; one that skips ahead waits while the gap is synced. The
//! [`Table`](crate::table::Table) decides what goes through; this module asks
//! the server and hands messages to the application.

use fishchat_codec::pb::{self, StoredMessage};

use super::session::Session;
use super::{Driver, End, InFlight, Reply, retryable};
use crate::conversation::Conversation;
use crate::error::ClientError;
use crate::event::Event;
use crate::table::Taken;

/// Messages asked for per SYNC page.
const SYNC_PAGE: u32 = 100;
/// Newest messages per changed conversation in a SYNC_CONVERSATIONS reply.
const NEWEST: u32 = 20;
/// Conversations per SYNC_CONVERSATIONS page.
const CONVERSATIONS_PAGE: u32 = 100;
/// SYNC and SYNC_CONVERSATIONS pages on the wire at once.
const MAX_SYNCS_IN_FLIGHT: usize = 4;

/// Application `sync()` calls waiting for one conversation.
#[derive(Default)]
pub(super) struct AppSync {
    /// Messages the sync brought, returned instead of emitted.
    pub(super) collected: Vec<StoredMessage>,
    pub(super) waiters: Vec<Reply<Vec<StoredMessage>>>,
}

impl Driver {
    /// Starts the listing of a fresh connection (unless told not to catch up).
    pub(super) async fn start_catching_up(&mut self, s: &mut Session) -> Result<(), End> {
        if !self.options.catch_up {
            return self.pump_syncs(s).await;
        }
        self.list_page(s, None).await
    }

    /// Asks for one page of SYNC_CONVERSATIONS.
    async fn list_page(&mut self, s: &mut Session, after: Option<Conversation>) -> Result<(), End> {
        let request = pb::SyncConversationsRequest {
            known: self.shared.table().known(),
            newest: NEWEST,
            limit: CONVERSATIONS_PAGE,
            after: after.map(Into::into),
        };
        let id = s.next_id();
        s.write(id, &request.into()).await?;
        s.pending.insert(id, InFlight::SyncConversations);
        s.listing = true;
        Ok(())
    }

    /// Applies one page of summaries; asks for the next, or ends the listing.
    pub(super) async fn on_conversations_page(
        &mut self,
        s: &mut Session,
        reply: pb::SyncConversationsReply,
    ) -> Result<(), End> {
        s.listing = false;
        let mut last = None;
        for summary in reply.conversations {
            let Some(conversation) = summary
                .conversation
                .as_ref()
                .and_then(|c| Conversation::try_from(c).ok())
            else {
                tracing::warn!("a conversation summary names no conversation; skipped");
                continue;
            };
            last = Some(conversation);
            let taken = self.shared.table().apply_summary(conversation, summary);
            self.take(s, conversation, taken);
        }
        self.shared.touch();
        match last {
            Some(last) if reply.has_more => self.list_page(s, Some(last)).await,
            _ => self.pump_syncs(s).await,
        }
    }

    /// A refused listing: a passing refusal costs the connection (the next one
    /// lists again); any other leaves the client with what pushes bring.
    pub(super) async fn on_conversations_refused(
        &mut self,
        s: &mut Session,
        error: &pb::Error,
    ) -> Result<(), End> {
        s.listing = false;
        if retryable(error.code()) {
            return Err(End::Lost(format!(
                "listing conversations refused: {:?}: {}",
                error.code(),
                error.message
            )));
        }
        tracing::warn!(code = ?error.code(), message = %error.message, "listing conversations refused");
        self.pump_syncs(s).await
    }

    /// Takes a PUSH: each message under its conversation; a gap starts a sync.
    pub(super) async fn on_push(
        &mut self,
        s: &mut Session,
        messages: Vec<StoredMessage>,
    ) -> Result<(), End> {
        for (conversation, messages) in by_conversation(messages, self.user_id) {
            let taken = self.shared.table().take_pushed(conversation, messages);
            self.take(s, conversation, taken);
        }
        self.pump_syncs(s).await
    }

    /// Hands over what the table let through and notes whether a sync is needed.
    fn take(&mut self, s: &mut Session, conversation: Conversation, taken: Taken) {
        self.deliver(conversation, taken.deliver);
        if taken.behind && !s.syncing.contains(&conversation) {
            s.wanted.insert(conversation);
        }
    }

    /// Conversations the application asked to sync go on the wanted list.
    pub(super) fn want_app_syncs(&mut self, s: &mut Session) {
        for conversation in self.app_syncs.keys() {
            if !s.syncing.contains(conversation) {
                s.wanted.insert(*conversation);
            }
        }
    }

    /// Starts wanted syncs while there is room (not during the listing, whose
    /// summaries may fill the gaps anyway); emits `Synced` once caught up.
    pub(super) async fn pump_syncs(&mut self, s: &mut Session) -> Result<(), End> {
        if s.listing {
            return Ok(());
        }
        while s.syncs_in_flight() < MAX_SYNCS_IN_FLIGHT {
            let Some(conversation) = s.wanted.pop_first() else {
                break;
            };
            let asked = self.app_syncs.contains_key(&conversation);
            let gap = self.options.catch_up && self.shared.table().behind(conversation);
            if asked || gap {
                self.sync_page(s, conversation).await?;
            }
        }
        if !s.caught_up && s.syncing.is_empty() && s.wanted.is_empty() {
            s.caught_up = true;
            self.emit(Event::Synced);
        }
        Ok(())
    }

    /// Asks for the next page of `conversation` after what the client holds.
    async fn sync_page(&mut self, s: &mut Session, conversation: Conversation) -> Result<(), End> {
        let request = pb::SyncRequest {
            after_seq: self.shared.table().held(conversation),
            limit: SYNC_PAGE,
            conversation: Some(conversation.into()),
        };
        let id = s.next_id();
        s.write(id, &request.into()).await?;
        s.pending.insert(id, InFlight::Sync(conversation));
        s.syncing.insert(conversation);
        Ok(())
    }

    /// Takes one SYNC page; asks for the next while it makes progress and the
    /// conversation is still behind.
    pub(super) async fn on_sync_page(
        &mut self,
        s: &mut Session,
        conversation: Conversation,
        reply: pb::SyncReply,
    ) -> Result<(), End> {
        let messages = only_of(conversation, reply.messages, self.user_id);
        let taken = self.shared.table().take_synced(conversation, messages);
        let progressed = !taken.deliver.is_empty();
        let behind = taken.behind;
        self.deliver(conversation, taken.deliver);
        if progressed && (reply.has_more || behind) {
            return self.sync_page(s, conversation).await;
        }
        s.syncing.remove(&conversation);
        if behind {
            // The server has nothing after what the client holds yet knows of
            // later seqs; the next push of this conversation tries again.
            tracing::warn!(%conversation, "a sync could not fill a gap");
        }
        self.finish_app_sync(conversation, Ok(())).await;
        self.pump_syncs(s).await
    }

    /// A refused SYNC: a passing refusal costs the connection; any other ends
    /// this conversation's sync (an application sync gets the error).
    pub(super) async fn on_sync_refused(
        &mut self,
        s: &mut Session,
        conversation: Conversation,
        error: &pb::Error,
    ) -> Result<(), End> {
        s.syncing.remove(&conversation);
        if retryable(error.code()) {
            return Err(End::Lost(format!(
                "sync of {conversation} refused: {:?}: {}",
                error.code(),
                error.message
            )));
        }
        tracing::warn!(%conversation, code = ?error.code(), message = %error.message, "sync refused");
        self.finish_app_sync(conversation, Err(error)).await;
        self.pump_syncs(s).await
    }

    /// Answers the application syncs of `conversation` with what they collected.
    async fn finish_app_sync(
        &mut self,
        conversation: Conversation,
        outcome: Result<(), &pb::Error>,
    ) {
        let Some(app) = self.app_syncs.remove(&conversation) else {
            return;
        };
        let alive: Vec<_> = app.waiters.into_iter().filter(|w| !w.is_closed()).collect();
        match outcome {
            Ok(()) if !alive.is_empty() => {
                if let Some(last) = app.collected.last() {
                    self.shared.took(conversation, last.seq);
                }
                for waiter in alive {
                    let _ = waiter.send(Ok(app.collected.clone()));
                }
                self.shared.save().await;
            }
            outcome => {
                if let Err(error) = outcome {
                    for waiter in alive {
                        let _ = waiter.send(Err(ClientError::refused(error)));
                    }
                }
                // Nobody takes them as a reply: they go out as events, so none is lost.
                for message in app.collected {
                    self.emit(Event::Message {
                        conversation,
                        message,
                    });
                }
            }
        }
    }

    /// Hands messages (in order, each new) to an application sync of their
    /// conversation if one is waiting, else to the events.
    fn deliver(&mut self, conversation: Conversation, messages: Vec<StoredMessage>) {
        if let Some(app) = self.app_syncs.get_mut(&conversation) {
            app.collected.extend(messages);
            return;
        }
        for message in messages {
            self.emit(Event::Message {
                conversation,
                message,
            });
        }
    }
}

/// Splits a PUSH into runs of one conversation each (a push carries one, but
/// nothing is lost if it carries more), as `viewer` files them.
fn by_conversation(
    messages: Vec<StoredMessage>,
    viewer: u64,
) -> Vec<(Conversation, Vec<StoredMessage>)> {
    let mut runs: Vec<(Conversation, Vec<StoredMessage>)> = Vec::new();
    for message in messages {
        let Some(conversation) = Conversation::of_message(&message, viewer) else {
            tracing::warn!(
                server_msg_id = message.server_msg_id,
                "a pushed message names no conversation; dropped"
            );
            continue;
        };
        match runs.last_mut() {
            Some((last, run)) if *last == conversation => run.push(message),
            _ => runs.push((conversation, vec![message])),
        }
    }
    runs
}

/// The messages of a SYNC page that belong to the conversation it asked for.
fn only_of(
    conversation: Conversation,
    messages: Vec<StoredMessage>,
    viewer: u64,
) -> Vec<StoredMessage> {
    messages
        .into_iter()
        .filter(|message| {
            let fits = Conversation::of_message(message, viewer) == Some(conversation);
            if !fits {
                tracing::warn!(%conversation, seq = message.seq, "a synced message of another conversation; dropped");
            }
            fits
        })
        .collect()
}
