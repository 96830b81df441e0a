//! Following the live nodes of a service.
//!
//! A resolver reads every key under the service's prefix, then watches from
//! the next revision, so no change between the read and the watch is missed.
//! If the watch breaks (etcd restarted, connection lost) or its revision was
//! compacted away, it reads everything again and watches anew: the mirror is
//! always a state etcd actually had, never a guess.

use std::collections::HashMap;
use std::sync::Arc;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::dialer::endpoint_for;
use crate::error::DiscoveryError;
use crate::etcd::{REQUEST_TIMEOUT, bounded, connect};
use crate::node::{NodeInfo, Nodes, service_prefix};

/// Room for endpoint changes queued towards a balanced channel.
const BALANCE_CAPACITY: usize = 64;

/// A live view of one service's nodes, kept current in the background.
#[derive(Debug)]
pub struct Resolver {
    service: String,
    nodes: watch::Receiver<Arc<Nodes>>,
    task: JoinHandle<()>,
}

impl Resolver {
    /// Reads the nodes of `service` and starts following them. Fails if etcd
    /// does not answer the first read; later outages are retried in the background.
    pub async fn start(endpoints: &[String], service: &str) -> Result<Self, DiscoveryError> {
        Self::start_at(endpoints, &service_prefix(service), service).await
    }

    /// Like [`start`](Self::start), for nodes under an explicit key `prefix`
    /// (`<namespace>/<service>/`): a tool or test watching another deployment.
    pub async fn start_at(
        endpoints: &[String],
        prefix: &str,
        service: &str,
    ) -> Result<Self, DiscoveryError> {
        let client = connect(endpoints).await?;
        let prefix = prefix.to_owned();
        let (nodes, revision) = read_all(&client, &prefix).await?;
        tracing::info!(service, nodes = nodes.len(), revision, "resolved service");
        let (tx, rx) = watch::channel(Arc::new(nodes));
        let mirror = Mirror {
            client,
            service: service.to_owned(),
            prefix,
            tx,
        };
        Ok(Self {
            service: service.to_owned(),
            nodes: rx,
            task: tokio::spawn(mirror.run(revision)),
        })
    }

    /// The service this resolver follows.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The live nodes now (a cheap shared snapshot).
    pub fn nodes(&self) -> Arc<Nodes> {
        self.nodes.borrow().clone()
    }

    /// The live node called `node_id`, if any.
    pub fn node(&self, node_id: &str) -> Option<NodeInfo> {
        self.nodes.borrow().get(node_id).cloned()
    }

    /// A live node with the lowest load (ties at random), if any.
    pub fn least_loaded(&self) -> Option<NodeInfo> {
        self.nodes.borrow().least_loaded().cloned()
    }

    /// A receiver that wakes (`changed().await`) whenever the set of nodes or
    /// any node's description changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Nodes>> {
        self.nodes.clone()
    }

    /// A channel balancing calls over every live node's address called
    /// `addr_name`: nodes are added as they register and removed as they leave
    /// or die, for as long as this resolver lives. Calls made while no node is
    /// live wait for one, so give them a deadline. Must be called inside a
    /// tokio runtime.
    pub fn balanced_channel(&self, addr_name: &str) -> Channel {
        let (channel, changes) = Channel::balance_channel(BALANCE_CAPACITY);
        tokio::spawn(feed_balancer(
            self.nodes.clone(),
            addr_name.to_owned(),
            changes,
        ));
        channel
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads every node under `prefix` and the revision of that read.
async fn read_all(client: &Client, prefix: &str) -> Result<(Nodes, i64), DiscoveryError> {
    let mut client = client.clone();
    let resp = bounded(client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let nodes = resp
        .kvs()
        .iter()
        .filter_map(|kv| parse(prefix, kv))
        .collect();
    Ok((nodes, revision))
}

/// The node stored in `kv`, or `None` (logged) if its value is not a node description.
fn parse(prefix: &str, kv: &KeyValue) -> Option<NodeInfo> {
    let key = String::from_utf8_lossy(kv.key());
    match serde_json::from_slice::<NodeInfo>(kv.value()) {
        Ok(mut info) => {
            // The key is authoritative: it is what the lease deletes.
            if let Some(id) = key.strip_prefix(prefix) {
                id.clone_into(&mut info.node_id);
            }
            Some(info)
        }
        Err(err) => {
            tracing::warn!(%key, %err, "ignoring a registration that is not a node description");
            None
        }
    }
}

/// The background task that keeps the published [`Nodes`] equal to etcd's.
struct Mirror {
    client: Client,
    service: String,
    prefix: String,
    tx: watch::Sender<Arc<Nodes>>,
}

impl Mirror {
    /// Follows changes from `revision` on, re-reading everything whenever the watch breaks.
    async fn run(self, mut revision: i64) {
        let mut backoff = Backoff::new(REQUEST_TIMEOUT);
        loop {
            let reason = match self.follow(revision, &mut backoff).await {
                Ok(reason) => reason,
                Err(err) => err.to_string(),
            };
            tracing::warn!(service = %self.service, %reason, "etcd watch broken; re-reading");
            loop {
                backoff.wait().await;
                match read_all(&self.client, &self.prefix).await {
                    Ok((nodes, rev)) => {
                        self.publish(nodes);
                        revision = rev;
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(service = %self.service, %err, "cannot read nodes from etcd")
                    }
                }
            }
        }
    }

    /// Applies watch events after `revision` until the watch ends; returns why it ended.
    async fn follow(&self, revision: i64, backoff: &mut Backoff) -> Result<String, DiscoveryError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let mut stream = bounded(client.watch(self.prefix.as_str(), Some(options))).await?;
        let mut nodes = (**self.tx.borrow()).clone();
        loop {
            let Some(resp) = stream.message().await? else {
                return Ok("watch stream closed".to_owned());
            };
            if resp.compact_revision() > 0 {
                return Ok(format!("revision compacted to {}", resp.compact_revision()));
            }
            if resp.canceled() {
                return Ok(format!("watch canceled: {}", resp.cancel_reason()));
            }
            backoff.reset();
            let mut changed = false;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match parse(&self.prefix, kv) {
                        Some(info) => {
                            nodes.insert(info);
                            changed = true;
                        }
                        None => changed |= remove(&mut nodes, &self.prefix, kv),
                    },
                    EventType::Delete => changed |= remove(&mut nodes, &self.prefix, kv),
                }
            }
            if changed {
                self.publish(nodes.clone());
            }
        }
    }

    /// Publishes `nodes` if they differ from what subscribers last saw.
    fn publish(&self, nodes: Nodes) {
        self.tx.send_if_modified(|current| {
            if **current == nodes {
                return false;
            }
            tracing::debug!(service = %self.service, nodes = nodes.len(), "nodes changed");
            *current = Arc::new(nodes);
            true
        });
    }
}

/// Removes the node whose key is `kv`'s; whether it was there.
fn remove(nodes: &mut Nodes, prefix: &str, kv: &KeyValue) -> bool {
    let key = String::from_utf8_lossy(kv.key());
    key.strip_prefix(prefix).is_some_and(|id| nodes.remove(id))
}

/// Turns node changes into balancer changes until the channel or the resolver is dropped.
async fn feed_balancer(
    mut nodes: watch::Receiver<Arc<Nodes>>,
    addr_name: String,
    changes: mpsc::Sender<Change<String, Endpoint>>,
) {
    // node id → the address its endpoint was inserted with
    let mut current: HashMap<String, String> = HashMap::new();
    loop {
        let snapshot = nodes.borrow_and_update().clone();
        let wanted: HashMap<&str, &str> = snapshot
            .iter()
            .filter_map(|n| Some((n.node_id.as_str(), n.addr(&addr_name)?)))
            .collect();
        let gone: Vec<String> = current
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            current.remove(&id);
            tracing::debug!(node = %id, addr_name, "removing node from balanced channel");
            if changes.send(Change::Remove(id)).await.is_err() {
                return;
            }
        }
        for (id, addr) in wanted {
            if current.get(id).is_some_and(|known| known == addr) {
                continue;
            }
            let endpoint = match endpoint_for(addr) {
                Ok(endpoint) => endpoint,
                Err(err) => {
                    tracing::warn!(node = %id, %err, "skipping node with a bad address");
                    continue;
                }
            };
            tracing::debug!(node = %id, addr, addr_name, "adding node to balanced channel");
            if changes
                .send(Change::Insert(id.to_owned(), endpoint))
                .await
                .is_err()
            {
                return;
            }
            current.insert(id.to_owned(), addr.to_owned());
        }
        tokio::select! {
            changed = nodes.changed() => if changed.is_err() { return },
            () = changes.closed() => return,
        }
    }
}
