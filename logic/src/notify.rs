//! Telling devices that a read position moved (READ_UPDATE).
//!
//! Reads are rare next to messages, so this path asks register where the
//! users are on each read and calls their access nodes directly; it does not
//! go through Kafka. It is best effort: a device that misses an update gets
//! the position with its next SYNC_CONVERSATIONS.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::{Command, DEFAULT_MAX_FRAME_LEN, encode_frame_to_bytes, pb};
use fishchat_discovery::Dialer;
use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::access::{Delivery, PushRequest};
use fishchat_rpc::register::ListSessionsRequest;
use fishchat_rpc::register::register_client::RegisterClient;
use tonic::transport::Channel;

/// How long one access node may take to take an update.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends READ_UPDATE frames to users' connections.
#[derive(Debug)]
pub struct ReadNotifier {
    register: RegisterClient<Channel>,
    nodes: Dialer,
}

/// One update and who gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The user whose connections get it.
    pub user_id: u64,
    /// The body, with the conversation as that user names it.
    pub body: pb::ReadUpdate,
}

/// The updates a moved read position calls for: the reader's devices (the
/// reading one too: harmless, it sets the same position), and in a direct
/// chat with someone else the peer, as a read receipt.
pub fn updates(reader: u64, conversation: pb::ConversationRef, read_seq: u64) -> Vec<Update> {
    use pb::conversation_ref::Id;
    let mut out = vec![Update {
        user_id: reader,
        body: pb::ReadUpdate {
            conversation: Some(conversation),
            reader_user_id: reader,
            read_seq,
        },
    }];
    if let Some(Id::UserId(peer)) = conversation.id
        && peer != reader
    {
        out.push(Update {
            user_id: peer,
            body: pb::ReadUpdate {
                conversation: Some(pb::ConversationRef {
                    id: Some(Id::UserId(reader)),
                }),
                reader_user_id: reader,
                read_seq,
            },
        });
    }
    out
}

impl ReadNotifier {
    /// Finds users through register over `register`.
    pub fn new(register: Channel) -> Self {
        Self {
            register: RegisterClient::new(register),
            nodes: Dialer::new(),
        }
    }

    /// Delivers `updates` to every connection of their users; logs failures.
    pub async fn notify(&self, updates: Vec<Update>) {
        let users: Vec<u64> = updates.iter().map(|u| u.user_id).collect();
        let sessions = match self
            .register
            .clone()
            .list_sessions(ListSessionsRequest { user_ids: users })
            .await
        {
            Ok(reply) => reply.into_inner().sessions,
            Err(status) => {
                tracing::warn!(%status, "session lookup for a read update failed");
                return;
            }
        };
        let mut by_node: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for update in &updates {
            let frame = match encode_frame_to_bytes(
                Command::ReadUpdate,
                0,
                &update.body,
                DEFAULT_MAX_FRAME_LEN,
            ) {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::error!(%err, "a READ_UPDATE cannot be encoded");
                    continue;
                }
            };
            for session in sessions.iter().filter(|s| s.user_id == update.user_id) {
                let deliveries = by_node.entry(session.push_addr.clone()).or_default();
                if !deliveries
                    .iter()
                    .any(|d| d.user_ids == [update.user_id] && d.frame == frame)
                {
                    deliveries.push(Delivery {
                        user_ids: vec![update.user_id],
                        frame: Bytes::clone(&frame),
                    });
                }
            }
        }
        for (addr, deliveries) in by_node {
            let channel = match self.nodes.channel(&addr) {
                Ok(channel) => channel,
                Err(err) => {
                    tracing::warn!(node = %addr, %err, "an access node's address is invalid");
                    continue;
                }
            };
            let mut client = AccessClient::new(channel);
            let push = client.push(PushRequest { deliveries });
            match tokio::time::timeout(PUSH_TIMEOUT, push).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    tracing::warn!(node = %addr, %status, "read update not delivered");
                }
                Err(_) => tracing::warn!(node = %addr, "read update not taken in time"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::conversation_ref::Id;

    fn named(id: Id) -> pb::ConversationRef {
        pb::ConversationRef { id: Some(id) }
    }

    #[test]
    fn a_direct_read_tells_the_readers_devices_and_the_peer_as_it_sees_it() {
        let got = updates(1, named(Id::UserId(2)), 7);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].user_id, 1);
        assert_eq!(got[0].body.conversation, Some(named(Id::UserId(2))));
        assert_eq!(got[1].user_id, 2);
        assert_eq!(got[1].body.conversation, Some(named(Id::UserId(1))));
        assert_eq!(got[1].body.reader_user_id, 1);
        assert_eq!(
            updates(1, named(Id::GroupId(5)), 7).len(),
            1,
            "no receipts in groups"
        );
        assert_eq!(
            updates(1, named(Id::UserId(1)), 7).len(),
            1,
            "a chat with oneself"
        );
    }
}
