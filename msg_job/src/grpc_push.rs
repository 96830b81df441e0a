//! [`Pusher`] over gRPC: where each recipient is connected (cached, kept
//! correct by register's session announcements), then one `Push` per access
//! node per batch carrying each frame once with the users on that node who
//! get it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fishchat_announcements::AnnouncedCache;
use fishchat_discovery::{Dialer, DiscoveryError, endpoint_for};
use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::access::{Delivery, PushRequest};
use fishchat_rpc::register::ListSessionsRequest;
use fishchat_rpc::register::register_client::RegisterClient;
use futures::future::join_all;
use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::push::{Outgoing, PushOutcome, Pusher};

/// How long one session lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one node push may take: a stuck node must not hold up the
/// batch for long; its users will sync.
const PUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node that failed a push is skipped, so a dead or stuck node
/// costs one timeout per this interval rather than one per batch.
const NODE_COOL_DOWN: Duration = Duration::from_secs(1);

/// How many users one `ListSessions` call asks about, to bound request size.
const LOOKUP_CHUNK: usize = 1000;

/// Largest push request, well under gRPC's default 4 MiB message limit.
const PUSH_REQUEST_BUDGET: usize = 1 << 20;

/// Tag and length prefixes of a delivery, at most.
const FIELD_OVERHEAD: usize = 16;

/// Where each user is connected: the push addresses of its access nodes
/// (empty when offline).
pub type SessionCache = AnnouncedCache<Vec<String>>;

/// How long a cached location is trusted without an announcement: the
/// backstop for sessions that vanish unannounced (an access node that died).
pub const SESSION_TTL: Duration = Duration::from_secs(30);

/// Users whose location the cache holds at most.
pub const SESSION_CAPACITY: usize = 1_000_000;

/// Pushes through register's session table and the access nodes' `Push` RPC.
#[derive(Debug)]
pub struct GrpcPusher {
    register: RegisterClient<Channel>,
    sessions: Arc<SessionCache>,
    nodes: Dialer,
    /// Nodes that failed a push, skipped until the instant given.
    cooling: Mutex<HashMap<String, Instant>>,
}

impl GrpcPusher {
    /// A pusher asking the register service at `register_addr` for sessions
    /// it does not find in `sessions`.
    pub fn new(register_addr: &str, sessions: Arc<SessionCache>) -> Result<Self, DiscoveryError> {
        let register = endpoint_for(register_addr)?
            .timeout(LOOKUP_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            register: RegisterClient::new(register),
            sessions,
            nodes: Dialer::new(),
            cooling: Mutex::new(HashMap::new()),
        })
    }

    /// The client of the node at `addr`, unless it is cooling down.
    fn node(&self, addr: &str) -> Result<Option<AccessClient<Channel>>, DiscoveryError> {
        {
            let mut cooling = self.cooling.lock();
            match cooling.get(addr) {
                Some(&until) if Instant::now() < until => return Ok(None),
                Some(_) => {
                    cooling.remove(addr);
                }
                None => {}
            }
        }
        Ok(Some(AccessClient::new(self.nodes.channel(addr)?)))
    }

    fn cool_down(&self, addr: &str) {
        self.cooling
            .lock()
            .insert(addr.to_owned(), Instant::now() + NODE_COOL_DOWN);
    }

    /// The users on each node, from the cache and, for users it misses,
    /// register; `failures` counts failed lookups.
    async fn locate(&self, users: Vec<u64>, failures: &mut u64) -> BTreeMap<String, Vec<u64>> {
        let (hits, misses) = self.sessions.get_many(users);
        let mut located = hits;
        for chunk in misses.chunks(LOOKUP_CHUNK) {
            let ticket = self.sessions.ticket();
            let request = ListSessionsRequest {
                user_ids: chunk.to_vec(),
            };
            match self.register.clone().list_sessions(request).await {
                Ok(reply) => {
                    let mut found: HashMap<u64, Vec<String>> =
                        chunk.iter().map(|&user| (user, Vec::new())).collect();
                    for session in reply.into_inner().sessions {
                        let addrs = found.entry(session.user_id).or_default();
                        if !addrs.contains(&session.push_addr) {
                            addrs.push(session.push_addr);
                        }
                    }
                    let found: Vec<(u64, Vec<String>)> = found.into_iter().collect();
                    self.sessions.fill(ticket, found.iter().cloned());
                    located.extend(found);
                }
                Err(status) => {
                    *failures += 1;
                    tracing::warn!(users = chunk.len(), %status, "session lookup failed; users will sync");
                }
            }
        }
        let mut by_node: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (user, addrs) in located {
            for addr in addrs {
                by_node.entry(addr).or_default().push(user);
            }
        }
        by_node
    }

    /// Pushes `requests` to the node at `addr`, one after another so its users
    /// see frames in order; returns the connections reached.
    async fn push_node(&self, addr: &str, requests: Vec<PushRequest>) -> Result<u64, String> {
        let Some(mut client) = self.node(addr).map_err(|err| err.to_string())? else {
            return Err("cooling down after a failure".to_owned());
        };
        let mut delivered = 0;
        for request in requests {
            let failure = match tokio::time::timeout(PUSH_TIMEOUT, client.push(request)).await {
                Ok(Ok(reply)) => {
                    delivered += u64::from(reply.into_inner().delivered_connections);
                    continue;
                }
                Ok(Err(status)) => status.to_string(),
                Err(_) => format!("no answer within {PUSH_TIMEOUT:?}"),
            };
            self.cool_down(addr);
            return Err(failure);
        }
        Ok(delivered)
    }
}

impl Pusher for GrpcPusher {
    async fn push(&self, frames: Vec<Outgoing>) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        let users: Vec<u64> = frames
            .iter()
            .flat_map(|f| f.recipients.iter().copied())
            .collect::<HashSet<u64>>()
            .into_iter()
            .collect();
        let by_node = self.locate(users, &mut outcome.failures).await;
        let calls = by_node.into_iter().map(|(addr, users)| {
            let on_node: HashSet<u64> = users.into_iter().collect();
            let requests = requests(frames.iter().filter_map(|f| {
                let user_ids: Vec<u64> = f
                    .recipients
                    .iter()
                    .copied()
                    .filter(|u| on_node.contains(u))
                    .collect();
                (!user_ids.is_empty()).then(|| (f.frame.clone(), user_ids))
            }));
            async move {
                let result = self.push_node(&addr, requests).await;
                (addr, result)
            }
        });
        for (addr, result) in join_all(calls).await {
            match result {
                Ok(delivered) => {
                    outcome.nodes_pushed += 1;
                    outcome.delivered_connections += delivered;
                }
                Err(err) => {
                    outcome.failures += 1;
                    tracing::warn!(node = %addr, %err, "push failed; its users will sync");
                }
            }
        }
        outcome
    }
}

/// Deliveries packed into requests of at most [`PUSH_REQUEST_BUDGET`] bytes, in order.
fn requests(deliveries: impl Iterator<Item = (Bytes, Vec<u64>)>) -> Vec<PushRequest> {
    let mut requests = Vec::new();
    let mut current = PushRequest::default();
    let mut size = 0;
    for (frame, user_ids) in deliveries {
        let len = frame.len() + user_ids.len() * 10 + FIELD_OVERHEAD;
        if size + len > PUSH_REQUEST_BUDGET && !current.deliveries.is_empty() {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.deliveries.push(Delivery { user_ids, frame });
    }
    if !current.deliveries.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn large_pushes_are_cut_into_requests_under_the_budget_in_order() {
        let deliveries: Vec<(Bytes, Vec<u64>)> = (0..40u8)
            .map(|i| (Bytes::from(vec![i; 60_000]), vec![u64::from(i)]))
            .collect();
        let requests = requests(deliveries.into_iter());
        assert!(requests.len() >= 3, "{} requests", requests.len());
        for request in &requests {
            assert!(request.encoded_len() <= PUSH_REQUEST_BUDGET);
        }
        let order: Vec<u64> = requests
            .iter()
            .flat_map(|r| &r.deliveries)
            .map(|d| d.user_ids[0])
            .collect();
        assert_eq!(order, (0..40).collect::<Vec<_>>());
    }
}
