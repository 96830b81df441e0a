//! SYNC_CONVERSATIONS: which of a user's conversations differ from what the
//! client holds, each with its head, read position, unread count and newest
//! messages.
//!
//! The client says what it holds (per conversation its last seq and read
//! position), so the answer is exact without any per-user version kept on
//! every message: the server reads the user's member records and the heads of
//! those conversations (two queries, whatever the number of conversations),
//! compares, and reads messages only for the conversations that changed.

use std::collections::HashMap;

use fishchat_codec::pb;
use futures::{StreamExt, TryStreamExt, stream};
use mongodb::bson::doc;

use crate::error::{ConvError, bound};
use crate::key::ConvKey;
use crate::members::Membership;
use crate::message::{field, get_id};
use crate::store::{ConversationStore, HEAD};

/// Newest messages per changed conversation when the client asks for 0.
pub const DEFAULT_NEWEST: u32 = 20;
/// Most newest messages per changed conversation.
pub const MAX_NEWEST: u32 = 100;
/// Conversations per page when the client asks for 0.
pub const DEFAULT_CONVERSATIONS: u32 = 100;
/// Most conversations per page.
pub const MAX_CONVERSATIONS: u32 = 500;
/// Conversations whose messages are read at once.
const IN_FLIGHT: usize = 16;

/// What the client holds of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    seq: u64,
    read_seq: u64,
}

/// One changed conversation, before its messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Changed {
    membership: Membership,
    head: u64,
    read_seq: u64,
    unread: u64,
    /// Messages after this seq are new to the client.
    from: u64,
}

/// The changed conversations of one page, and whether more follow.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    changed: Vec<Changed>,
    has_more: bool,
}

/// Compares the user's `memberships` (in key order) at `heads` with what the
/// client holds, after `after`, keeping at most `limit` changed conversations.
fn plan(
    memberships: &[Membership],
    heads: &HashMap<ConvKey, u64>,
    held: &HashMap<ConvKey, Held>,
    after: Option<ConvKey>,
    limit: usize,
) -> Plan {
    let mut changed = Vec::new();
    let candidates = memberships
        .iter()
        .filter(|m| after.is_none_or(|after| m.key > after));
    for membership in candidates {
        let conv_head = heads.get(&membership.key).copied().unwrap_or(0);
        let head = membership.head(conv_head);
        let read_seq = membership.read_seq(conv_head);
        let client = held.get(&membership.key);
        let same = client.is_some_and(|c| c.seq >= head && c.read_seq == read_seq);
        if same {
            continue;
        }
        if changed.len() == limit {
            return Plan {
                changed,
                has_more: true,
            };
        }
        let from = client.map_or(0, |c| c.seq).max(membership.joined);
        changed.push(Changed {
            membership: *membership,
            head,
            read_seq,
            unread: membership.unread(conv_head),
            from,
        });
    }
    Plan {
        changed,
        has_more: false,
    }
}

impl ConversationStore {
    /// The conversations of `user` that differ from what `request` says the
    /// client holds, paged.
    pub async fn sync_conversations(
        &self,
        user: u64,
        request: &pb::SyncConversationsRequest,
    ) -> Result<pb::SyncConversationsReply, ConvError> {
        let held: HashMap<ConvKey, Held> = request
            .known
            .iter()
            .filter_map(|known| {
                let key = ConvKey::named_by(user, known.conversation.as_ref()?)?;
                Some((
                    key,
                    Held {
                        seq: known.seq,
                        read_seq: known.read_seq,
                    },
                ))
            })
            .collect();
        let after = request
            .after
            .as_ref()
            .and_then(|after| ConvKey::named_by(user, after));
        let newest = match request.newest {
            0 => DEFAULT_NEWEST,
            n => n.min(MAX_NEWEST),
        };
        let limit = match request.limit {
            0 => DEFAULT_CONVERSATIONS,
            n => n.min(MAX_CONVERSATIONS),
        };
        let memberships = self.memberships(user).await?;
        let heads = self.heads_of(memberships.iter().map(|m| m.key)).await?;
        let plan = plan(&memberships, &heads, &held, after, limit as usize);
        // Futures built before the stream keep this future Send (rustc #102211).
        let summaries: Vec<_> = plan
            .changed
            .into_iter()
            .map(|changed| self.summary(user, changed, newest))
            .collect();
        let conversations = stream::iter(summaries)
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pb::SyncConversationsReply {
            conversations,
            has_more: plan.has_more,
        })
    }

    /// The heads of `keys` (absent: no message yet).
    async fn heads_of(
        &self,
        keys: impl Iterator<Item = ConvKey>,
    ) -> Result<HashMap<ConvKey, u64>, ConvError> {
        let ids: Vec<String> = keys.map(|key| key.to_string()).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut cursor = self.heads.find(doc! { "_id": { "$in": ids } }).await?;
        let mut heads = HashMap::new();
        while let Some(doc) = cursor.try_next().await? {
            let id = doc
                .get_str("_id")
                .map_err(|e| ConvError::Corrupt(format!("head _id: {e}")))?;
            heads.insert(ConvKey::parse(id)?, get_id(&doc, HEAD)?);
        }
        Ok(heads)
    }

    /// One changed conversation with up to `newest` of its newest messages
    /// the client lacks, ascending.
    async fn summary(
        &self,
        user: u64,
        changed: Changed,
        newest: u32,
    ) -> Result<pb::ConversationSummary, ConvError> {
        let mut messages = if changed.head > changed.from {
            let filter = doc! {
                field::CONV: changed.membership.key.to_string(),
                field::SEQ: { "$gt": bound(changed.from), "$lte": bound(changed.head) },
            };
            self.page(filter, -1, newest).await?.messages
        } else {
            Vec::new()
        };
        messages.reverse();
        let has_gap = messages.first().is_some_and(|m| m.seq > changed.from + 1);
        Ok(pb::ConversationSummary {
            conversation: Some(changed.membership.key.seen_by(user)),
            head_seq: changed.head,
            read_seq: changed.read_seq,
            unread: changed.unread,
            messages,
            has_gap,
            first_seq: changed.membership.first_seq(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u64, read: u64, joined: u64) -> Membership {
        Membership {
            key: ConvKey::Group(id),
            read,
            joined,
            left: None,
        }
    }

    #[test]
    fn only_conversations_that_differ_are_planned_in_key_order_and_paged() {
        let memberships: Vec<Membership> = (1..=5).map(|id| group(id, 0, 0)).collect();
        let heads: HashMap<ConvKey, u64> = (1..=5).map(|id| (ConvKey::Group(id), 10)).collect();
        let mut held: HashMap<ConvKey, Held> = (1..=5)
            .map(|id| {
                (
                    ConvKey::Group(id),
                    Held {
                        seq: 10,
                        read_seq: 0,
                    },
                )
            })
            .collect();
        assert_eq!(plan(&memberships, &heads, &held, None, 10).changed, []);
        held.insert(
            ConvKey::Group(2),
            Held {
                seq: 7,
                read_seq: 0,
            },
        );
        held.insert(
            ConvKey::Group(4),
            Held {
                seq: 10,
                read_seq: 3,
            },
        );
        held.remove(&ConvKey::Group(5));
        let page = plan(&memberships, &heads, &held, None, 2);
        let keys: Vec<ConvKey> = page.changed.iter().map(|c| c.membership.key).collect();
        assert_eq!(keys, [ConvKey::Group(2), ConvKey::Group(4)]);
        assert!(page.has_more);
        assert_eq!(page.changed[0].from, 7);
        let next = plan(&memberships, &heads, &held, Some(ConvKey::Group(4)), 2);
        assert_eq!(next.changed.len(), 1);
        assert_eq!(next.changed[0].from, 0, "new to the client");
        assert!(!next.has_more);
    }

    #[test]
    fn a_late_joiner_starts_after_its_join_and_a_lagging_head_is_no_change() {
        let memberships = [group(1, 0, 8)];
        let heads = HashMap::from([(ConvKey::Group(1), 10)]);
        let page = plan(&memberships, &heads, &HashMap::new(), None, 10);
        assert_eq!(page.changed[0].from, 8);
        assert_eq!(page.changed[0].unread, 2);
        let held = HashMap::from([(
            ConvKey::Group(1),
            Held {
                seq: 12,
                read_seq: 8,
            },
        )]);
        assert_eq!(plan(&memberships, &heads, &held, None, 10).changed, []);
    }
}
