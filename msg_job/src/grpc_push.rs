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
use prost::Message;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::push::{PushOutcome, Pusher, UserDelivery};

/// How long one session lookup or one node push may take: a stuck node must
/// not hold up the next batch for long; its users will sync.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How many users one `ListSessions` call asks about, to bound request size.
const LOOKUP_CHUNK: usize = 1000;

/// Largest push request, well under gRPC's default 4 MiB message limit.
const PUSH_REQUEST_BUDGET: usize = 1 << 20;

/// Tag and length prefix of an embedded message, at most.
const FIELD_OVERHEAD: usize = 8;

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
        let calls =
            by_node.into_iter().map(|(addr, users)| {
                let requests =
                    requests(users.iter().filter_map(|user| messages.get(user)).map(|d| {
                        Delivery {
                            user_ids: vec![d.user_id],
                            messages: d.messages.clone(),
                        }
                    }));
                let client = self.node(&addr);
                // One node's requests go one after another, so its users see their messages in order.
                async move {
                    let mut client = match client {
                        Ok(client) => client,
                        Err(err) => return (addr, Err(err.to_string())),
                    };
                    let mut delivered = 0;
                    for request in requests {
                        match client.push(request).await {
                            Ok(reply) => {
                                delivered += u64::from(reply.into_inner().delivered_connections)
                            }
                            Err(status) => return (addr, Err(status.to_string())),
                        }
                    }
                    (addr, Ok(delivered))
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

/// Deliveries packed into requests of at most [`PUSH_REQUEST_BUDGET`] bytes,
/// in order; a delivery too large alone is split between its messages.
fn requests(deliveries: impl Iterator<Item = Delivery>) -> Vec<PushRequest> {
    let mut requests = Vec::new();
    let mut current = PushRequest::default();
    let mut size = 0;
    for part in deliveries.flat_map(split) {
        let len = part.encoded_len() + FIELD_OVERHEAD;
        if size + len > PUSH_REQUEST_BUDGET && !current.deliveries.is_empty() {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.deliveries.push(part);
    }
    if !current.deliveries.is_empty() {
        requests.push(current);
    }
    requests
}

/// One delivery as parts of at most [`PUSH_REQUEST_BUDGET`] bytes each (a
/// single message always fits: bodies are capped far below it).
fn split(delivery: Delivery) -> Vec<Delivery> {
    let mut parts = Vec::new();
    let mut messages = Vec::new();
    let mut size = 0;
    for message in delivery.messages {
        let len = message.encoded_len() + FIELD_OVERHEAD;
        if size + len > PUSH_REQUEST_BUDGET && !messages.is_empty() {
            parts.push(Delivery {
                user_ids: delivery.user_ids.clone(),
                messages: std::mem::take(&mut messages),
            });
            size = 0;
        }
        size += len;
        messages.push(message);
    }
    if !messages.is_empty() {
        parts.push(Delivery {
            user_ids: delivery.user_ids,
            messages,
        });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_codec::pb::StoredMessage;

    fn delivery(user: u64, count: u64, size: usize) -> Delivery {
        Delivery {
            user_ids: vec![user],
            messages: (1..=count)
                .map(|seq| StoredMessage {
                    seq,
                    body: vec![b'x'; size].into(),
                    ..StoredMessage::default()
                })
                .collect(),
        }
    }

    #[test]
    fn large_pushes_are_cut_into_requests_under_the_budget_in_order() {
        let deliveries = vec![
            delivery(1, 3, 10),
            delivery(2, 40, 100_000),
            delivery(3, 2, 10),
        ];
        let requests = requests(deliveries.into_iter());
        assert!(requests.len() >= 4, "{} requests", requests.len());
        for request in &requests {
            assert!(request.encoded_len() <= PUSH_REQUEST_BUDGET + 100_100);
        }
        let order: Vec<(u64, u64)> = requests
            .iter()
            .flat_map(|r| &r.deliveries)
            .flat_map(|d| d.messages.iter().map(|m| (d.user_ids[0], m.seq)))
            .collect();
        let expected: Vec<(u64, u64)> = (1..=3)
            .map(|s| (1, s))
            .chain((1..=40).map(|s| (2, s)))
            .chain((1..=2).map(|s| (3, s)))
            .collect();
        assert_eq!(order, expected);
    }
}
