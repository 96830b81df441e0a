//! The gateway's one decision: which access node a client should use.
//!
//! Loads come from the nodes' reports in etcd, up to a report interval old.
//! Sending every client to the least-loaded node by those figures makes a
//! herd: after a drain, thousands of clients arrive within one interval and
//! all land on whichever node looked emptiest. Two things prevent it: the
//! gateway adds the clients it sent to a node since that node's last report
//! to the reported load, and it compares two nodes drawn at random rather
//! than all of them (power of two choices), so gateways that cannot see each
//! other's counts do not all pick the same node either.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fishchat_discovery::{NodeInfo, Nodes};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

/// The name under which access nodes register the address clients connect to.
pub const CLIENT_ADDR: &str = "client";

/// How long the gateway counts the clients it sent to a node whose report has
/// not changed: a report stuck at one value (an idle node, or clients leaving
/// as fast as they come) must not make the count grow for ever.
const COUNT_FOR: Duration = Duration::from_secs(10);

/// Where to send a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `host:port` of the access node's client listener.
    pub access_addr: String,
    /// The access node's id in etcd.
    pub node_id: String,
}

/// Clients sent to one node since its load was last seen to change.
#[derive(Debug, Clone, Copy)]
struct Sent {
    reported: u64,
    since: Instant,
    clients: u64,
}

/// The live access nodes, as a resolver keeps them, and what this gateway
/// sent to them since their last reports. Clones share the counts.
#[derive(Debug, Clone)]
pub struct Directory {
    nodes: watch::Receiver<Arc<Nodes>>,
    sent: Arc<Mutex<HashMap<String, Sent>>>,
    routed: Family<Vec<(&'static str, String)>, Counter>,
}

impl Directory {
    /// A directory over the nodes published on `nodes` (see `Resolver::subscribe`).
    pub fn new(nodes: watch::Receiver<Arc<Nodes>>) -> Self {
        Self {
            nodes,
            sent: Arc::default(),
            routed: Family::default(),
        }
    }

    /// Registers `lookups`: answered lookups by the access node chosen, and
    /// those with no node to offer (`node=""`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "lookups",
            "Lookups by the access node chosen (node=\"\" when none was live)",
            self.routed.clone(),
        );
    }

    /// A live access node with a client address, the less loaded of two
    /// drawn at random (of the only one or two, the less loaded), if any;
    /// counted by the node chosen.
    pub fn lookup(&self) -> Option<Route> {
        let route = self.pick();
        let node = route.as_ref().map_or(String::new(), |r| r.node_id.clone());
        self.routed.get_or_create(&vec![("node", node)]).inc();
        route
    }

    fn pick(&self) -> Option<Route> {
        let nodes = self.nodes.borrow();
        let now = Instant::now();
        let mut sent = self.sent.lock();
        let candidates: Vec<(&NodeInfo, u64)> = nodes
            .iter()
            .filter(|node| node.addr(CLIENT_ADDR).is_some())
            .map(|node| {
                let counted = sent
                    .get(&node.node_id)
                    .filter(|s| s.reported == node.load && now - s.since < COUNT_FOR)
                    .map_or(0, |s| s.clients);
                (node, node.load.saturating_add(counted))
            })
            .collect();
        let node = choose(&candidates, &mut rand::rng())?;
        let entry = sent.entry(node.node_id.clone()).or_insert(Sent {
            reported: node.load,
            since: now,
            clients: 0,
        });
        if entry.reported != node.load || now - entry.since >= COUNT_FOR {
            *entry = Sent {
                reported: node.load,
                since: now,
                clients: 0,
            };
        }
        entry.clients += 1;
        if sent.len() > 2 * candidates.len() {
            sent.retain(|id, _| nodes.iter().any(|node| &node.node_id == id));
        }
        Some(Route {
            access_addr: node.addr(CLIENT_ADDR)?.to_owned(),
            node_id: node.node_id.clone(),
        })
    }
}

/// Power of two choices over `(node, estimated load)`: of two distinct
/// candidates drawn at random, the less loaded (a tie: either). With one or
/// two candidates, the less loaded.
fn choose<'a>(candidates: &[(&'a NodeInfo, u64)], rng: &mut impl Rng) -> Option<&'a NodeInfo> {
    let (first, second) = match candidates.len() {
        0 => return None,
        1 => return Some(candidates[0].0),
        2 => (0, 1),
        n => {
            let first = rng.random_range(0..n);
            let second = (first + rng.random_range(1..n)) % n;
            (first, second)
        }
    };
    let (a, b) = (candidates[first], candidates[second]);
    let pick = match a.1.cmp(&b.1) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if rng.random_bool(0.5) => a,
        std::cmp::Ordering::Equal => b,
    };
    Some(pick.0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fishchat_discovery::NodeInfo;

    use super::*;

    fn access(id: &str, load: u64, client: Option<&str>) -> NodeInfo {
        let mut info = NodeInfo::new("access", id).with_addr("push", "127.0.0.1:1");
        if let Some(addr) = client {
            info = info.with_addr(CLIENT_ADDR, addr);
        }
        NodeInfo { load, ..info }
    }

    fn directory(nodes: Vec<NodeInfo>) -> (watch::Sender<Arc<Nodes>>, Directory) {
        let (tx, rx) = watch::channel(Arc::new(nodes.into_iter().collect()));
        (tx, Directory::new(rx))
    }

    /// How many of `lookups` went to each node.
    fn spread(directory: &Directory, lookups: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..lookups {
            *counts
                .entry(directory.lookup().unwrap().node_id)
                .or_default() += 1;
        }
        counts
    }

    #[test]
    fn only_nodes_with_a_client_address_are_chosen_and_none_without_any() {
        let (tx, directory) = directory(vec![
            access("a", 5, Some("10.0.0.1:9000")),
            access("c", 0, None),
        ]);
        assert_eq!(
            directory.lookup(),
            Some(Route {
                access_addr: "10.0.0.1:9000".into(),
                node_id: "a".into()
            })
        );
        tx.send_replace(Arc::new([access("c", 0, None)].into_iter().collect()));
        assert_eq!(directory.lookup(), None);
    }

    #[test]
    fn clients_sent_since_the_last_report_count_so_an_empty_node_is_not_flooded() {
        let (tx, directory) = directory(vec![
            access("a", 0, Some("10.0.0.1:9000")),
            access("b", 10, Some("10.0.0.2:9000")),
        ]);
        // The first ten fill the gap; after that the two take turns.
        let counts = spread(&directory, 30);
        assert_eq!(counts["a"], 20, "{counts:?}");
        assert_eq!(counts["b"], 10, "{counts:?}");
        // A new report replaces what was counted.
        tx.send_replace(Arc::new(
            [
                access("a", 100, Some("10.0.0.1:9000")),
                access("b", 0, Some("10.0.0.2:9000")),
            ]
            .into_iter()
            .collect(),
        ));
        assert_eq!(spread(&directory, 50)["b"], 50);
    }

    #[test]
    fn a_burst_over_many_equal_nodes_is_spread_evenly() {
        let nodes = (0..8)
            .map(|i| access(&format!("n{i}"), 1_000, Some("10.0.0.1:9000")))
            .collect();
        let (_tx, directory) = directory(nodes);
        let counts = spread(&directory, 8_000);
        let (min, max) = (counts.values().min(), counts.values().max());
        assert_eq!(counts.len(), 8);
        assert!(
            max.unwrap() - min.unwrap() <= 20,
            "two choices keep the gap small: {counts:?}"
        );
    }

    #[test]
    fn two_choices_never_pick_the_most_loaded_of_three() {
        let (a, b, c) = (
            access("a", 1, Some("x:1")),
            access("b", 2, Some("x:2")),
            access("c", 3, Some("x:3")),
        );
        let candidates = [(&a, 1), (&b, 2), (&c, 3)];
        let mut rng = rand::rng();
        for _ in 0..1_000 {
            let node = choose(&candidates, &mut rng).unwrap();
            assert_ne!(node.node_id, "c");
        }
        assert!(choose(&[], &mut rng).is_none());
    }
}
