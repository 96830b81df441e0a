//! Sessions do not outlive their access node. A node killed with -9 never
//! removes its sessions, and until they expire (`session_ttl_ms`) msg_job
//! would push to an address nobody answers. The node's etcd key goes with its
//! lease, so register follows the registered access nodes and deletes the
//! sessions of any node that has been missing for a grace period: long
//! enough that a node whose key blinked (a lease renewed late, etcd
//! restarting) keeps its sessions, short next to the session lifetime.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fishchat_discovery::Nodes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::Registry;

/// When each node holding sessions was first seen missing from etcd: the
/// decision, apart from the I/O that feeds it.
#[derive(Debug)]
pub struct Absences {
    grace: Duration,
    since: HashMap<String, Instant>,
}

impl Absences {
    /// Nodes count as dead once missing for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: HashMap::new(),
        }
    }

    /// Of the nodes that `recorded` sessions, those missing from `live` for
    /// at least the grace period at `now`. A node that is back, or holds no
    /// sessions any more, starts over.
    pub fn dead(
        &mut self,
        recorded: &[String],
        live: &BTreeSet<String>,
        now: Instant,
    ) -> Vec<String> {
        self.since
            .retain(|node, _| !live.contains(node) && recorded.contains(node));
        recorded
            .iter()
            .filter(|node| !live.contains(*node))
            .filter(|node| {
                let since = *self.since.entry((*node).clone()).or_insert(now);
                now.duration_since(since) >= self.grace
            })
            .cloned()
            .collect()
    }
}

/// Deletes the sessions of access nodes gone from etcd for `grace`, looking
/// whenever the registered nodes change and every half grace period, until
/// `stop` turns true.
pub async fn sweep(
    registry: Arc<Registry>,
    mut access_nodes: watch::Receiver<Arc<Nodes>>,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut absences = Absences::new(grace);
    let mut every = tokio::time::interval((grace / 2).max(Duration::from_millis(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = every.tick() => {}
            changed = access_nodes.changed() => if changed.is_err() { return },
        }
        let live: BTreeSet<String> = access_nodes
            .borrow_and_update()
            .iter()
            .map(|node| node.node_id.clone())
            .collect();
        let recorded = match registry.session_nodes().await {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::warn!(%err, "listing the nodes that hold sessions failed");
                continue;
            }
        };
        for node in absences.dead(&recorded, &live, Instant::now()) {
            match registry.forget_node(&node).await {
                Ok(users) => tracing::info!(
                    node,
                    users,
                    "forgot the sessions of an access node gone from etcd"
                ),
                Err(err) => tracing::warn!(node, %err, "forgetting a dead node's sessions failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_node_is_dead_only_after_missing_for_the_whole_grace() {
        let mut absences = Absences::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let live: BTreeSet<String> = names(&["a"]).into_iter().collect();
        let recorded = names(&["a", "b"]);
        assert!(absences.dead(&recorded, &live, t0).is_empty());
        assert!(
            absences
                .dead(&recorded, &live, t0 + Duration::from_secs(9))
                .is_empty()
        );
        assert_eq!(
            absences.dead(&recorded, &live, t0 + Duration::from_secs(10)),
            names(&["b"])
        );
    }

    #[test]
    fn a_node_that_comes_back_starts_over() {
        let mut absences = Absences::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let recorded = names(&["b"]);
        let without: BTreeSet<String> = BTreeSet::new();
        let with: BTreeSet<String> = names(&["b"]).into_iter().collect();
        assert!(absences.dead(&recorded, &without, t0).is_empty());
        assert!(
            absences
                .dead(&recorded, &with, t0 + Duration::from_secs(5))
                .is_empty()
        );
        assert!(
            absences
                .dead(&recorded, &without, t0 + Duration::from_secs(12))
                .is_empty()
        );
        assert_eq!(
            absences.dead(&recorded, &without, t0 + Duration::from_secs(22)),
            names(&["b"])
        );
    }
}
