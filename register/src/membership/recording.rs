//! A membership log in memory that records every call, for tests: it can
//! fail on demand and hold `joined` calls open, so a test can look at
//! register while the log is being told.

use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{LogError, MembershipLog};
use crate::model::{GroupId, UserId};

/// One recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `joined(user, group)` succeeded.
    Joined {
        /// The user.
        user: UserId,
        /// The group.
        group: GroupId,
    },
    /// `left(user, group)` succeeded.
    Left {
        /// The user.
        user: UserId,
        /// The group.
        group: GroupId,
    },
}

#[derive(Debug, Default)]
struct State {
    changes: Vec<Change>,
    epochs: Vec<u64>,
    fail_joined: bool,
    left_failures: u32,
}

/// Records successful calls in order; failing ones record nothing.
#[derive(Debug)]
pub struct RecordingLog {
    state: Mutex<State>,
    held: watch::Sender<bool>,
}

impl Default for RecordingLog {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            held: watch::Sender::new(false),
        }
    }
}

/// While alive, `joined` calls are recorded and then wait; dropping it lets them return.
#[derive(Debug)]
pub struct Hold<'a> {
    held: &'a watch::Sender<bool>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.held.send_replace(false);
    }
}

impl RecordingLog {
    /// Every successful call so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.state().changes.clone()
    }

    /// The epoch of each successful call so far, in order.
    pub fn epochs(&self) -> Vec<u64> {
        self.state().epochs.clone()
    }

    /// Makes every `joined` call fail (`true`) or succeed again (`false`).
    pub fn fail_joined(&self, fail: bool) {
        self.state().fail_joined = fail;
    }

    /// Makes the next `times` calls of `left` fail.
    pub fn fail_left(&self, times: u32) {
        self.state().left_failures = times;
    }

    /// Holds `joined` calls open (after recording them) until the hold is dropped.
    pub fn hold_joined(&self) -> Hold<'_> {
        self.held.send_replace(true);
        Hold { held: &self.held }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left consistent data: every change is one push.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MembershipLog for RecordingLog {
    fn joined(
        &self,
        user: UserId,
        group: GroupId,
        epoch: u64,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        async move {
            {
                let mut state = self.state();
                if state.fail_joined {
                    return Err(LogError::new("joined: failing on purpose"));
                }
                state.changes.push(Change::Joined { user, group });
                state.epochs.push(epoch);
            }
            let mut held = self.held.subscribe();
            // The sender lives in self, so waiting cannot fail.
            let _ = held.wait_for(|held| !held).await;
            Ok(())
        }
        .boxed()
    }

    fn left(
        &self,
        user: UserId,
        group: GroupId,
        epoch: u64,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        let mut state = self.state();
        let result = if state.left_failures > 0 {
            state.left_failures -= 1;
            Err(LogError::new("left: failing on purpose"))
        } else {
            state.changes.push(Change::Left { user, group });
            state.epochs.push(epoch);
            Ok(())
        };
        futures::future::ready(result).boxed()
    }
}
