//! Reading an inbox: sync after a seq, the max seq, history of one conversation.

use fishchat_codec::pb;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::{FindOneOptions, FindOptions};

use crate::error::{InboxError, to_i64};
use crate::message::{Peer, field, get_id, to_stored_message};
use crate::store::MongoInbox;

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

impl MongoInbox {
    /// Messages of `user`'s inbox with seq > `after_seq`, ascending, at most
    /// [`page_limit`]`(limit)`; `has_more` says to sync again after the last one.
    pub async fn sync(&self, user: u64, after_seq: u64, limit: u32) -> Result<Page, InboxError> {
        // A seq above the stored range simply has nothing after it.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let filter = doc! { field::INBOX: to_i64(user)?, field::SEQ: { "$gt": after } };
        self.page(filter, 1, limit).await
    }

    /// The highest seq in `user`'s inbox; 0 when it is empty. Since seqs are
    /// `1..=max` without gaps, this is also the number of messages.
    pub async fn max_seq(&self, user: u64) -> Result<u64, InboxError> {
        let options = FindOneOptions::builder()
            .sort(doc! { field::SEQ: -1 })
            .projection(doc! { field::SEQ: 1, "_id": 0 })
            .build();
        let newest = self
            .messages
            .find_one(doc! { field::INBOX: to_i64(user)? })
            .with_options(options)
            .await?;
        match newest {
            Some(doc) => get_id(&doc, field::SEQ),
            None => Ok(0),
        }
    }

    /// Messages of one conversation in `user`'s inbox (direct messages with a
    /// user, both directions, or one group), newest first, only those with
    /// seq < `before_seq` (0: from the newest); `has_more` says to ask again
    /// with the last returned seq as `before_seq`.
    pub async fn history(
        &self,
        user: u64,
        peer: Peer,
        before_seq: u64,
        limit: u32,
    ) -> Result<Page, InboxError> {
        let mut filter = doc! { field::INBOX: to_i64(user)?, field::CHAT: peer.chat_key() };
        if before_seq > 0 {
            let before = i64::try_from(before_seq).unwrap_or(i64::MAX);
            filter.insert(field::SEQ, doc! { "$lt": before });
        }
        self.page(filter, -1, limit).await
    }

    /// Up to `limit` (capped) messages matching `filter`, ordered by seq in
    /// `direction`; one extra document is read to learn whether more follow.
    async fn page(&self, filter: Document, direction: i32, limit: u32) -> Result<Page, InboxError> {
        let limit = page_limit(limit);
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
