//! Delivering the inbox in order: pushes, sync rounds, the last seen seq.
//!
//! A message reaches the application only when its seq is above the last seen
//! seq. While a sync round runs, pushes are not delivered at all (they only ask
//! for one more round), so a sync page and a push never interleave out of
//! order; a push that skips ahead starts a round to fill the gap.

use std::sync::atomic::Ordering;

use fishchat_codec::pb::{self, StoredMessage};

use super::session::Session;
use super::{Driver, End, InFlight, Reply};
use crate::event::Event;

/// Messages asked for per SYNC page.
const SYNC_PAGE: u32 = 100;

/// Application syncs waiting for (or running) a collecting sync.
#[derive(Default)]
pub(super) struct AppSync {
    pub(super) collected: Vec<StoredMessage>,
    pub(super) waiters: Vec<Reply<Vec<StoredMessage>>>,
}

impl Driver {
    /// Delivers a PUSH: seen seqs are dropped, a gap starts a sync first.
    pub(super) async fn on_push(
        &mut self,
        s: &mut Session,
        messages: Vec<StoredMessage>,
    ) -> Result<(), End> {
        let mut last = self.last_seen();
        if s.sync.is_some() {
            if messages.iter().any(|m| m.seq > last) {
                s.resync = true;
            }
            return Ok(());
        }
        let mut fresh = Vec::new();
        let mut gap = false;
        for message in messages {
            if message.seq <= last {
                continue;
            }
            if message.seq != last + 1 {
                gap = true;
                break;
            }
            last = message.seq;
            fresh.push(message);
        }
        self.deliver(s, fresh, false).await?;
        if gap {
            self.start_sync(s).await?;
        }
        Ok(())
    }

    /// Starts a sync round after the last seen seq, unless one is running.
    pub(super) async fn start_sync(&mut self, s: &mut Session) -> Result<(), End> {
        if s.sync.is_some() {
            s.resync = true;
            return Ok(());
        }
        let collecting = self.app_sync.is_some();
        self.sync_page(s, collecting).await
    }

    /// Asks for the next page after the last seen seq.
    pub(super) async fn sync_page(&mut self, s: &mut Session, collecting: bool) -> Result<(), End> {
        let id = s.next_id();
        let request = pb::SyncRequest {
            after_seq: self.last_seen(),
            limit: SYNC_PAGE,
        };
        s.write(id, &request.into()).await?;
        s.pending.insert(id, InFlight::Sync);
        s.sync = Some(collecting);
        s.resync = false;
        Ok(())
    }

    /// Delivers one page; asks for the next, or ends the round.
    pub(super) async fn on_sync_page(
        &mut self,
        s: &mut Session,
        reply: pb::SyncReply,
    ) -> Result<(), End> {
        let Some(collecting) = s.sync.take() else {
            return Ok(());
        };
        let mut last = self.last_seen();
        let mut fresh = Vec::new();
        for message in reply.messages {
            // Seqs only grow; anything else was seen already or is out of order.
            if message.seq > last {
                last = message.seq;
                fresh.push(message);
            }
        }
        let progressed = !fresh.is_empty();
        self.deliver(s, fresh, collecting).await?;
        if reply.has_more && progressed {
            return self.sync_page(s, collecting).await;
        }
        if collecting {
            self.finish_app_sync(s).await?;
        }
        if s.resync || self.app_sync.is_some() {
            self.start_sync(s).await?;
        }
        Ok(())
    }

    /// Hands a collecting sync's messages to the callers still waiting.
    pub(super) async fn finish_app_sync(&mut self, s: &mut Session) -> Result<(), End> {
        let Some(app) = self.app_sync.take() else {
            return Ok(());
        };
        let alive: Vec<_> = app.waiters.into_iter().filter(|w| !w.is_closed()).collect();
        if alive.is_empty() {
            for message in app.collected {
                self.emit(Event::Message(message));
            }
        } else {
            for waiter in alive {
                let _ = waiter.send(Ok(app.collected.clone()));
            }
        }
        if self.options.auto_ack {
            s.send(
                pb::DeliveryAck {
                    up_to_seq: self.last_seen(),
                }
                .into(),
            )
            .await?;
        }
        Ok(())
    }

    /// Hands messages (already in order, above the last seen seq) to the
    /// application and records the new last seen seq.
    pub(super) async fn deliver(
        &mut self,
        s: &mut Session,
        messages: Vec<StoredMessage>,
        collecting: bool,
    ) -> Result<(), End> {
        let Some(last) = messages.last().map(|m| m.seq) else {
            return Ok(());
        };
        self.shared.last_seen.store(last, Ordering::Release);
        if collecting {
            let app = self.app_sync.get_or_insert_with(AppSync::default);
            app.collected.extend(messages);
        } else {
            for message in messages {
                self.emit(Event::Message(message));
            }
        }
        if let Some(state) = &self.state
            && let Err(error) = state.store(last).await
        {
            tracing::warn!(%error, "cannot save the last seen seq");
        }
        if self.options.auto_ack && !collecting {
            s.send(pb::DeliveryAck { up_to_seq: last }.into()).await?;
        }
        Ok(())
    }
}
