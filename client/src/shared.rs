//! What the background task, the [`Client`](crate::Client) handles and the
//! [`Events`](crate::Events) stream share: the conversation table, and how far
//! the application has taken each conversation, which is what the state file
//! keeps (so messages handed over but never read from [`Events`](crate::Events)
//! come again after a restart instead of being skipped).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::conversation::Conversation;
use crate::state::{SavedConversations, StateFile};
use crate::table::Table;

/// How far the application has taken each conversation.
#[derive(Debug, Default)]
struct Taken {
    seqs: BTreeMap<Conversation, u64>,
    /// Bumped by every change, so a save knows whether a later change raced it.
    version: u64,
    saved_version: u64,
}

/// Shared between the task, the handles and the events stream.
#[derive(Debug)]
pub(crate) struct Shared {
    table: Mutex<Table>,
    taken: Mutex<Taken>,
    state: Option<StateFile>,
    /// One write of the state file at a time (they share a temporary file).
    saving: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Resumes from `saved` (what the state file held), saving to `state`.
    pub(crate) fn new(saved: &SavedConversations, state: Option<StateFile>) -> Self {
        let taken = Taken {
            seqs: saved.iter().map(|(c, saved)| (*c, saved.seq)).collect(),
            ..Taken::default()
        };
        Self {
            table: Mutex::new(Table::from_saved(saved)),
            taken: Mutex::new(taken),
            state,
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// The conversation table. Never held across an await.
    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere cannot leave the table half-updated in a way that
        // matters more than stopping would: every update is a few assignments.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn taken(&self) -> MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The application has taken `conversation` up to `seq`.
    pub(crate) fn took(&self, conversation: Conversation, seq: u64) {
        if self.state.is_none() {
            return;
        }
        let mut taken = self.taken();
        let last = taken.seqs.entry(conversation).or_default();
        if seq > *last {
            *last = seq;
            taken.version += 1;
        }
    }

    /// Something else the state file keeps (a read position) changed.
    pub(crate) fn touch(&self) {
        if self.state.is_some() {
            self.taken().version += 1;
        }
    }

    /// Writes the state file if anything changed since the last write; a
    /// failure is logged (the next save tries again).
    pub(crate) async fn save(&self) {
        let Some(state) = &self.state else {
            return;
        };
        let _one_at_a_time = self.saving.lock().await;
        let (version, seqs) = {
            let taken = self.taken();
            if taken.version == taken.saved_version {
                return;
            }
            (taken.version, taken.seqs.clone())
        };
        let saved = self.table().saved(&seqs);
        match state.store(&saved).await {
            Ok(()) => {
                let mut taken = self.taken();
                taken.saved_version = taken.saved_version.max(version);
            }
            Err(error) => tracing::warn!(%error, "cannot save what was received"),
        }
    }
}
