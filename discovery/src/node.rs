//! What a node says about itself, where it is stored, and how to pick one.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

/// The default etcd key prefix under which every FishChat service registers.
pub const ROOT: &str = "/fishchat";

/// The environment variable that moves the key prefix, so that several
/// deployments (or test clusters) can share one etcd without seeing each other.
pub const NAMESPACE_VAR: &str = "FISHCHAT_ETCD_NAMESPACE";

/// The key prefix in force: `$FISHCHAT_ETCD_NAMESPACE`, else [`ROOT`].
pub fn namespace() -> String {
    std::env::var(NAMESPACE_VAR)
        .ok()
        .map(|ns| ns.trim_end_matches('/').to_owned())
        .filter(|ns| ns.starts_with('/') && ns.len() > 1)
        .unwrap_or_else(|| ROOT.to_owned())
}

/// The JSON value stored under a node's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id of the node within its service.
    pub node_id: String,
    /// The service the node belongs to (`access`, `logic`, ...).
    pub service: String,
    /// Named addresses (`grpc`, `client`, `push`, `http`, ...), each `host:port`.
    #[serde(default)]
    pub addrs: BTreeMap<String, String>,
    /// How busy the node is (for access nodes: live connections); lower is preferred.
    #[serde(default)]
    pub load: u64,
    /// When the node started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: u64,
}

impl NodeInfo {
    /// A node of `service` called `node_id`, started now, with no addresses and no load.
    pub fn new(service: impl Into<String>, node_id: impl Into<String>) -> Self {
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            node_id: node_id.into(),
            service: service.into(),
            addrs: BTreeMap::new(),
            load: 0,
            started_at_ms,
        }
    }

    /// Adds the address called `name`.
    pub fn with_addr(mut self, name: impl Into<String>, addr: impl Into<String>) -> Self {
        self.addrs.insert(name.into(), addr.into());
        self
    }

    /// The address called `name`, if the node has one.
    pub fn addr(&self, name: &str) -> Option<&str> {
        self.addrs.get(name).map(String::as_str)
    }

    /// The etcd key this node registers under.
    pub fn key(&self) -> String {
        node_key(&self.service, &self.node_id)
    }
}

/// `<namespace>/<service>/`: the prefix of every node key of `service`. The
/// trailing slash keeps `access` from matching `access2`.
pub fn service_prefix(service: &str) -> String {
    format!("{}/{service}/", namespace())
}

/// `<namespace>/<service>/<node_id>`: where a node registers.
pub fn node_key(service: &str, node_id: &str) -> String {
    format!("{}{node_id}", service_prefix(service))
}

/// A node id for a process whose configuration names none:
/// `<hostname>-<pid>-<random>`, unique even for restarts that reuse a pid.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The live nodes of one service, by node id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes(BTreeMap<String, NodeInfo>);

impl Nodes {
    /// The node called `node_id`, if it is live.
    pub fn get(&self, node_id: &str) -> Option<&NodeInfo> {
        self.0.get(node_id)
    }

    /// Every live node, in node-id order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.0.values()
    }

    /// How many nodes are live.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no node is live.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A node with the lowest load; ties are broken at random so that clients
    /// arriving between two load reports spread over equally loaded nodes.
    pub fn least_loaded(&self) -> Option<&NodeInfo> {
        least_loaded(self.iter())
    }

    /// Like [`least_loaded`](Self::least_loaded), among the nodes that have an
    /// address called `addr_name`.
    pub fn least_loaded_with(&self, addr_name: &str) -> Option<&NodeInfo> {
        least_loaded(self.iter().filter(|n| n.addr(addr_name).is_some()))
    }

    /// Adds or replaces a node.
    pub(crate) fn insert(&mut self, info: NodeInfo) {
        self.0.insert(info.node_id.clone(), info);
    }

    /// Removes a node; whether it was there.
    pub(crate) fn remove(&mut self, node_id: &str) -> bool {
        self.0.remove(node_id).is_some()
    }
}

impl FromIterator<NodeInfo> for Nodes {
    fn from_iter<I: IntoIterator<Item = NodeInfo>>(iter: I) -> Self {
        Nodes(iter.into_iter().map(|n| (n.node_id.clone(), n)).collect())
    }
}

fn least_loaded<'a>(nodes: impl Iterator<Item = &'a NodeInfo>) -> Option<&'a NodeInfo> {
    let mut best: Vec<&NodeInfo> = Vec::new();
    for node in nodes {
        match best.first() {
            Some(b) if node.load > b.load => {}
            Some(b) if node.load == b.load => best.push(node),
            _ => best = vec![node],
        }
    }
    best.choose(&mut rand::rng()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: u64) -> NodeInfo {
        NodeInfo {
            load,
            ..NodeInfo::new("access", id).with_addr("client", format!("{id}:1"))
        }
    }

    #[test]
    fn keys_are_namespaced_per_service() {
        assert_eq!(node_key("access", "a1"), "/fishchat/access/a1");
        assert_eq!(service_prefix("access"), "/fishchat/access/");
        assert_eq!(node("a1", 0).key(), "/fishchat/access/a1");
    }

    #[test]
    fn least_loaded_picks_the_minimum_and_spreads_ties() {
        let nodes: Nodes = [node("a", 5), node("b", 3), node("c", 3), node("d", 9)]
            .into_iter()
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let pick = nodes.least_loaded().unwrap();
            assert_eq!(pick.load, 3);
            seen.insert(pick.node_id.clone());
        }
        assert_eq!(seen.len(), 2, "ties should be spread: {seen:?}");
        assert!(Nodes::default().least_loaded().is_none());
    }

    #[test]
    fn least_loaded_with_skips_nodes_without_the_address() {
        let mut bare = node("z", 0);
        bare.addrs.clear();
        let nodes: Nodes = [bare, node("a", 7)].into_iter().collect();
        assert_eq!(nodes.least_loaded_with("client").unwrap().node_id, "a");
        assert_eq!(nodes.least_loaded().unwrap().node_id, "z");
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_optional_fields() {
        let info = node("a", 4);
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), info);
        let sparse: NodeInfo = serde_json::from_str(r#"{"node_id":"n","service":"s"}"#).unwrap();
        assert_eq!(sparse.load, 0);
        assert!(sparse.addrs.is_empty());
    }

    #[test]
    fn default_node_ids_differ() {
        let a = default_node_id();
        assert!(a.contains(&std::process::id().to_string()));
        assert_ne!(a, default_node_id());
    }
}
