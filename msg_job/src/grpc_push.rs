//! [`Pusher`] over gRPC: sessions from register's `ListSessions`, then one
//! `Push` per access node carrying every delivery for its users.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::access::{Delivery, PushRequest};
use fishchat_rpc::register::ListSessionsRequest;
use fishchat_rpc::register::register_client::RegisterClient;
use futures::future::join_all;
use parking_lot::Mutex;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::push::{PushOutcome, Pusher, UserDelivery};

/// How long one session lookup or one node push may take: a stuck node must
/// not hold up the next batch for long; its users will sync.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How many users one `ListSessions` call asks about, to bound request size.
const LOOKUP_CHUNK: usize = 1000;

/// An address that cannot be used as a gRPC endpoint.
#[derive(Debug, Error)]
#[error("invalid gRPC address {addr}: {source}")]
pub struct AddrError {
    addr: String,
    source: tonic::transport::Error,
}

/// Pushes through register's session table and the access nodes' `Push` RPC.
#[derive(Debug)]
pub struct GrpcPusher {
    register: RegisterClient<Channel>,
    /// One lazily connected channel per access node push address.
    nodes: Mutex<HashMap<String, AccessClient<Channel>>>,
}

/// A lazily connecting channel to `addr` (`host:port` or a full `http://` URI).
fn channel(addr: &str) -> Result<Channel, AddrError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|source| AddrError {
        addr: addr.to_owned(),
        source,
    })?;
    Ok(endpoint
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy())
}

impl GrpcPusher {
    /// A pusher asking the register service at `register_addr` for sessions.
    pub fn new(register_addr: &str) -> Result<Self, AddrError> {
        Ok(Self {
            register: RegisterClient::new(channel(register_addr)?),
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// The cached client of the access node at `addr`.
    fn node(&self, addr: &str) -> Result<AccessClient<Channel>, AddrError> {
        let mut nodes = self.nodes.lock();
        if let Some(client) = nodes.get(addr) {
            return Ok(client.clone());
        }
        let client = AccessClient::new(channel(addr)?);
        nodes.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Push address of every node holding each user, from register; `failures` counts failed lookups.
    async fn sessions(&self, users: &[u64], failures: &mut u64) -> BTreeMap<String, Vec<u64>> {
        let mut by_node: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for chunk in users.chunks(LOOKUP_CHUNK) {
            let request = ListSessionsRequest {
                user_ids: chunk.to_vec(),
            };
            match self.register.clone().list_sessions(request).await {
                Ok(reply) => {
                    for session in reply.into_inner().sessions {
                        let users = by_node.entry(session.push_addr).or_default();
                        if !users.contains(&session.user_id) {
                            users.push(session.user_id);
                        }
                    }
                }
                Err(status) => {
                    *failures += 1;
                    tracing::warn!(users = chunk.len(), %status, "session lookup failed; users will sync");
                }
            }
        }
        by_node
    }
}

impl Pusher for GrpcPusher {
    async fn push(&self, deliveries: Vec<UserDelivery>) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        let users: Vec<u64> = deliveries.iter().map(|d| d.user_id).collect();
        let by_node = self.sessions(&users, &mut outcome.failures).await;
        let messages: HashMap<u64, &UserDelivery> =
            deliveries.iter().map(|d| (d.user_id, d)).collect();
        let calls = by_node.into_iter().map(|(addr, users)| {
            let request = PushRequest {
                deliveries: users
                    .iter()
                    .filter_map(|user| messages.get(user))
                    .map(|d| Delivery {
                        user_ids: vec![d.user_id],
                        messages: d.messages.clone(),
                    })
                    .collect(),
            };
            let client = self.node(&addr);
            async move {
                let result = match client {
                    Ok(mut client) => client.push(request).await.map_err(|s| s.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                (addr, result)
            }
        });
        for (addr, result) in join_all(calls).await {
            match result {
                Ok(reply) => {
                    outcome.nodes_pushed += 1;
                    outcome.delivered_connections +=
                        u64::from(reply.into_inner().delivered_connections);
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
