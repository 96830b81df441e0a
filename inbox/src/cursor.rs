//! Delivery cursors: per (user, device), the highest seq the device has acknowledged.

use mongodb::bson::doc;
use mongodb::options::{FindOneOptions, ReturnDocument};

use crate::error::{InboxError, is_duplicate_key, to_i64};
use crate::message::get_id;
use crate::store::{MongoInbox, cursor_field as field};

/// Upsert attempts before falling back to reading the cursor (concurrent
/// first acks of one device can race on the missing document).
const ACK_ATTEMPTS: u32 = 3;

impl MongoInbox {
    /// Moves the cursor of (`user`, `device`) forward to `up_to_seq` and returns
    /// the cursor after the move. An older ack leaves it where it is (`$max`),
    /// and an ack beyond the inbox's max seq is capped at the max, so a client
    /// cannot mark messages read that do not exist yet (messages are stored
    /// before they are pushed, so a real ack is never above the max).
    pub async fn ack(&self, user: u64, device: &str, up_to_seq: u64) -> Result<u64, InboxError> {
        let target = to_i64(up_to_seq.min(self.max_seq(user).await?))?;
        let filter = doc! { field::USER: to_i64(user)?, field::DEVICE: device };
        for _ in 0..ACK_ATTEMPTS {
            let updated = self
                .cursors
                .find_one_and_update(
                    filter.clone(),
                    doc! { "$max": { field::ACKED_SEQ: target } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match updated {
                Ok(Some(doc)) => return get_id(&doc, field::ACKED_SEQ),
                // A racing upsert may report nothing or a duplicate key; the
                // next attempt finds the document and applies $max to it.
                Ok(None) => continue,
                Err(err) if is_duplicate_key(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        self.cursor(user, device).await
    }

    /// The highest seq (`user`, `device`) has acknowledged; 0 before its first ack.
    pub async fn cursor(&self, user: u64, device: &str) -> Result<u64, InboxError> {
        let options = FindOneOptions::builder()
            .projection(doc! { field::ACKED_SEQ: 1, "_id": 0 })
            .build();
        let found = self
            .cursors
            .find_one(doc! { field::USER: to_i64(user)?, field::DEVICE: device })
            .with_options(options)
            .await?;
        match found {
            Some(doc) => get_id(&doc, field::ACKED_SEQ),
            None => Ok(0),
        }
    }

    /// How many messages of `user`'s inbox (`user`, `device`) has not
    /// acknowledged: `max_seq - cursor`. Seqs are exactly `1..=max` (see
    /// [`crate::writer`]), so that difference is the count of seqs above the
    /// cursor, without counting documents.
    pub async fn unread(&self, user: u64, device: &str) -> Result<u64, InboxError> {
        let max = self.max_seq(user).await?;
        let acked = self.cursor(user, device).await?;
        Ok(max.saturating_sub(acked))
    }
}
