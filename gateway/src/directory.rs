//! The gateway's one decision: which access node a client should use.

use std::sync::Arc;

use fishchat_discovery::Nodes;
use serde::Serialize;
use tokio::sync::watch;

/// The name under which access nodes register the address clients connect to.
pub const CLIENT_ADDR: &str = "client";

/// Where to send a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `host:port` of the access node's client listener.
    pub access_addr: String,
    /// The access node's id in etcd.
    pub node_id: String,
}

/// The live access nodes, as a resolver keeps them.
#[derive(Debug, Clone)]
pub struct Directory {
    nodes: watch::Receiver<Arc<Nodes>>,
}

impl Directory {
    /// A directory over the nodes published on `nodes` (see `Resolver::subscribe`).
    pub fn new(nodes: watch::Receiver<Arc<Nodes>>) -> Self {
        Self { nodes }
    }

    /// The least-loaded live access node that has a client address, if any.
    pub fn lookup(&self) -> Option<Route> {
        let nodes = self.nodes.borrow();
        let node = nodes.least_loaded_with(CLIENT_ADDR)?;
        Some(Route {
            access_addr: node.addr(CLIENT_ADDR)?.to_owned(),
            node_id: node.node_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use fishchat_discovery::NodeInfo;

    use super::*;

    fn access(id: &str, load: u64, client: Option<&str>) -> NodeInfo {
        let mut info = NodeInfo::new("access", id).with_addr("push", "127.0.0.1:1");
        if let Some(addr) = client {
            info = info.with_addr(CLIENT_ADDR, addr);
        }
        NodeInfo { load, ..info }
    }

    #[test]
    fn picks_the_least_loaded_node_with_a_client_address() {
        let (tx, rx) = watch::channel(Arc::new(
            [
                access("a", 5, Some("10.0.0.1:9000")),
                access("b", 3, Some("10.0.0.2:9000")),
                access("c", 0, None),
            ]
            .into_iter()
            .collect(),
        ));
        let directory = Directory::new(rx);
        assert_eq!(
            directory.lookup(),
            Some(Route {
                access_addr: "10.0.0.2:9000".into(),
                node_id: "b".into()
            })
        );
        tx.send_replace(Arc::new([access("c", 0, None)].into_iter().collect()));
        assert_eq!(directory.lookup(), None);
    }
}
