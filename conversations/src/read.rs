//! Reading a conversation: after a seq (SYNC) and before one (HISTORY), only
//! within what the reading user may see.

use fishchat_codec::pb;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::FindOptions;

use crate::error::{ConvError, bound};
use crate::key::ConvKey;
use crate::members::Membership;
use crate::message::{field, to_stored_message};
use crate::store::ConversationStore;

/// Page size when the caller asks for 0.
pub const DEFAULT_PAGE: u32 = 100;
/// The largest page; larger requests are capped to it, not refused.
pub const MAX_PAGE: u32 = 500;

/// The page size actually used for a requested `limit`: 0 means
/// [`DEFAULT_PAGE`], anything above [`MAX_PAGE`] is capped.
pub fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// One page of messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The messages, in the order the call documents.
    pub messages: Vec<pb::StoredMessage>,
    /// More messages follow the last one in that order.
    pub has_more: bool,
}

impl ConversationStore {
    /// Messages of `key` that `user` may see with seq > `after_seq`,
    /// ascending, at most [`page_limit`]`(limit)`.
    pub async fn sync(
        &self,
        user: u64,
        key: ConvKey,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page, ConvError> {
        let membership = self.membership(user, key).await?;
        self.after(&membership, after_seq, page_limit(limit)).await
    }

    /// Messages of `key` that `user` may see with seq < `before_seq` (0: from
    /// the newest), newest first, at most [`page_limit`]`(limit)`.
    pub async fn history(
        &self,
        user: u64,
        key: ConvKey,
        before_seq: u64,
        limit: u32,
    ) -> Result<Page, ConvError> {
        let membership = self.membership(user, key).await?;
        let (joined, left) = membership.visible();
        let mut seq = doc! { "$gt": bound(joined) };
        let below = match (before_seq, left) {
            (0, None) => None,
            (0, Some(left)) => Some(left.saturating_add(1)),
            (before, None) => Some(before),
            (before, Some(left)) => Some(before.min(left.saturating_add(1))),
        };
        if let Some(below) = below {
            seq.insert("$lt", bound(below));
        }
        let filter = doc! { field::CONV: key.to_string(), field::SEQ: seq };
        self.page(filter, -1, page_limit(limit)).await
    }

    /// Messages visible under `membership` with seq > `after_seq`, ascending.
    pub(crate) async fn after(
        &self,
        membership: &Membership,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page, ConvError> {
        let (joined, left) = membership.visible();
        let mut seq = doc! { "$gt": bound(after_seq.max(joined)) };
        if let Some(left) = left {
            seq.insert("$lte", bound(left));
        }
        let filter = doc! { field::CONV: membership.key.to_string(), field::SEQ: seq };
        self.page(filter, 1, limit).await
    }

    /// Up to `limit` messages matching `filter`, ordered by seq in
    /// `direction`; one extra document is read to learn whether more follow.
    pub(crate) async fn page(
        &self,
        filter: Document,
        direction: i32,
        limit: u32,
    ) -> Result<Page, ConvError> {
        let options = FindOptions::builder()
            .sort(doc! { field::SEQ: direction })
            .limit(i64::from(limit) + 1)
            .build();
        let mut cursor = self.messages.find(filter).with_options(options).await?;
        let mut messages = Vec::new();
        let mut has_more = false;
        while let Some(doc) = cursor.try_next().await? {
            if messages.len() == limit as usize {
                has_more = true;
                break;
            }
            messages.push(to_stored_message(&doc)?);
        }
        Ok(Page { messages, has_more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(page_limit(0), DEFAULT_PAGE);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(MAX_PAGE + 1), MAX_PAGE);
    }
}
