//! A fleet in this process: one tokio task per connection, told the phase
//! through a watch channel, its counters read straight from the atomics.
//! A run with one worker uses it directly; every worker process runs one.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use super::fleet::{Fleet, Gathered, Spec, Window};
use super::measures::Measures;
use super::member::{self, Counts, Outcome, Phase, Setup};

/// Connection tasks in this process.
pub struct Local {
    setup: Arc<Setup>,
    phase: watch::Sender<Phase>,
    tasks: Vec<(usize, JoinHandle<Outcome>)>,
}

impl Local {
    /// Starts a task per connection; they log in at once (as many at a time
    /// as the setup's login permits allow) and wait for the sending.
    pub fn start(specs: Vec<Spec>, setup: Setup) -> Local {
        let setup = Arc::new(setup);
        let (phase, phase_rx) = watch::channel(Phase::Login);
        let tasks = specs
            .into_iter()
            .map(|spec| {
                let task = member::run(setup.clone(), spec.role, spec.token, phase_rx.clone());
                (spec.role.index, tokio::spawn(task))
            })
            .collect();
        Local {
            setup,
            phase,
            tasks,
        }
    }
}

impl Fleet for Local {
    fn counts(&mut self) -> Counts {
        self.setup.shared.counts()
    }

    async fn send(&mut self, window: Window) {
        let (start, end) = window.instants();
        self.phase.send_replace(Phase::Send {
            start,
            end,
            start_us: window.start_us,
        });
    }

    async fn sync(&mut self) {
        self.phase.send_replace(Phase::Sync);
    }

    async fn collect(self, until: Instant) -> anyhow::Result<Gathered> {
        let mut measures = Measures::new()?;
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        for (index, task) in self.tasks {
            if let Some(mut outcome) = join(until, task).await {
                measures.add(&std::mem::take(&mut outcome.samples));
                outcomes.push((index, outcome));
            }
        }
        Ok(Gathered { outcomes, measures })
    }
}

/// A task's result, or None when it did not end by `until` (it is aborted).
pub async fn join<T>(until: Instant, task: JoinHandle<T>) -> Option<T> {
    let abort = task.abort_handle();
    match timeout_at(until, task).await {
        Ok(result) => result.ok(),
        Err(_) => {
            abort.abort();
            None
        }
    }
}
