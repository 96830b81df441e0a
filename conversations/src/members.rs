//! Per-user state: one record per (user, conversation), written at join,
//! at the first message of a direct chat, at leave and at read, never per
//! message.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `user` | i64 | the user |
//! | `conv` | string | the conversation's key |
//! | `read` | i64 | the read position, shared by the user's devices |
//! | `joined` | i64 | the last seq before the user joined (0 for a direct chat): it sees from the next |
//! | `left` | i64, absent while a member | the last seq a former member sees |
//! | `epoch` | i64, absent for a direct chat | the epoch of the last membership change applied (register's order) |
//!
//! Unread is `head − read`, both clamped to what the user can see: exact
//! under concurrent sends and reads, without counting documents, because seqs
//! are gapless.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::{FindOneOptions, ReturnDocument};

use crate::error::{ConvError, is_duplicate_key, to_i64};
use crate::key::ConvKey;
use crate::message::{field as message_field, get_id};
use crate::store::{ConversationStore, HEAD};
use crate::upsert::Upsert;

/// Field names of a member record.
pub(crate) mod field {
    pub const USER: &str = "user";
    pub const CONV: &str = "conv";
    pub const READ: &str = "read";
    pub const JOINED: &str = "joined";
    pub const LEFT: &str = "left";
    pub const EPOCH: &str = "epoch";
}

/// Upsert attempts before giving up on a racing first write.
pub(crate) const UPSERT_ATTEMPTS: u32 = 3;

/// The upsert that creates `user`'s record of `key` unless it exists (then it
/// changes nothing): a party to a direct chat, who sees everything.
pub(crate) fn party_record(user: u64, key: ConvKey) -> Result<Upsert, ConvError> {
    Ok(Upsert {
        filter: doc! { field::USER: to_i64(user)?, field::CONV: key.to_string() },
        update: doc! { "$setOnInsert": { field::READ: 0_i64, field::JOINED: 0_i64 } },
    })
}

/// `pair` unless its record holds a change newer than `epoch`.
fn not_newer(pair: &Document, epoch: i64) -> Document {
    let mut filter = pair.clone();
    filter.insert(
        "$or",
        vec![
            doc! { field::EPOCH: { "$lte": epoch } },
            doc! { field::EPOCH: { "$exists": false } },
        ],
    );
    filter
}

/// The epoch of the last change applied to a member record (0: none).
fn stored_epoch(doc: &Document) -> Result<i64, ConvError> {
    match doc.get(field::EPOCH) {
        None => Ok(0),
        Some(_) => doc
            .get_i64(field::EPOCH)
            .map_err(|e| ConvError::Corrupt(format!("field epoch: {e}"))),
    }
}

/// A user's standing in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The conversation.
    pub key: ConvKey,
    /// The read position as stored (may lag `joined`).
    pub read: u64,
    /// The last seq the user cannot see (it sees from `joined + 1`).
    pub joined: u64,
    /// The last seq a former member can see; `None` while a member.
    pub left: Option<u64>,
}

impl Membership {
    /// A party to a direct chat that has no record yet: sees everything.
    fn party(key: ConvKey) -> Self {
        Self {
            key,
            read: 0,
            joined: 0,
            left: None,
        }
    }

    /// The highest seq this user sees when the conversation's head is `head`.
    pub fn head(&self, head: u64) -> u64 {
        self.left
            .map_or(head, |left| left.min(head))
            .max(self.joined)
    }

    /// The first seq this user can see.
    pub fn first_seq(&self) -> u64 {
        self.joined + 1
    }

    /// The read position as the user sees it, when the conversation's head is `head`.
    pub fn read_seq(&self, head: u64) -> u64 {
        self.read.max(self.joined).min(self.head(head))
    }

    /// Messages this user has not read, when the conversation's head is `head`.
    pub fn unread(&self, head: u64) -> u64 {
        self.head(head) - self.read_seq(head)
    }

    /// The seqs this user may read: `after < seq <= upto`.
    pub(crate) fn visible(&self) -> (u64, Option<u64>) {
        (self.joined, self.left)
    }

    fn from_doc(doc: &Document) -> Result<Self, ConvError> {
        let key = doc
            .get_str(field::CONV)
            .map_err(|e| ConvError::Corrupt(format!("field conv: {e}")))?;
        let left = if doc.contains_key(field::LEFT) {
            Some(get_id(doc, field::LEFT)?)
        } else {
            None
        };
        Ok(Self {
            key: ConvKey::parse(key)?,
            read: get_id(doc, field::READ)?,
            joined: get_id(doc, field::JOINED)?,
            left,
        })
    }
}

/// What a READ did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The read position after the request.
    pub read_seq: u64,
    /// Messages still unread.
    pub unread: u64,
    /// The position moved forward.
    pub moved: bool,
}

impl ConversationStore {
    /// `user`'s standing in `key`: a party to a direct chat always has one, a
    /// group needs a record (current or former member).
    pub async fn membership(&self, user: u64, key: ConvKey) -> Result<Membership, ConvError> {
        let filter = doc! { field::USER: to_i64(user)?, field::CONV: key.to_string() };
        match self.members.find_one(filter).await? {
            Some(doc) => Membership::from_doc(&doc),
            None if key.is_party(user) => Ok(Membership::party(key)),
            None => match key {
                ConvKey::Group(group) => Err(ConvError::NotMember { user, group }),
                ConvKey::Direct { .. } => Err(ConvError::NoConversation),
            },
        }
    }

    /// Every conversation `user` has a record of, in key order.
    pub async fn memberships(&self, user: u64) -> Result<Vec<Membership>, ConvError> {
        let mut cursor = self
            .members
            .find(doc! { field::USER: to_i64(user)? })
            .await?;
        let mut out = Vec::new();
        while let Some(doc) = cursor.try_next().await? {
            out.push(Membership::from_doc(&doc)?);
        }
        out.sort_by_key(|m| m.key);
        Ok(out)
    }

    /// Records that `user` joined `group` in the change numbered `epoch`: it
    /// sees messages after the current max seq. Idempotent while a member
    /// (returns the first join's seq); a former member who joins again sees
    /// from the new join on. A change older than the last one applied to the
    /// pair is ignored (returns the current join's seq).
    pub async fn joined(&self, user: u64, group: u64, epoch: u64) -> Result<u64, ConvError> {
        let key = ConvKey::Group(group);
        let pair = doc! { field::USER: to_i64(user)?, field::CONV: key.to_string() };
        let epoch = to_i64(epoch)?;
        for _ in 0..UPSERT_ATTEMPTS {
            if let Some(doc) = self.members.find_one(pair.clone()).await? {
                let current = Membership::from_doc(&doc)?;
                if stored_epoch(&doc)? > epoch {
                    return Ok(current.joined);
                }
                if current.left.is_none() {
                    self.members
                        .update_one(
                            not_newer(&pair, epoch),
                            doc! { "$max": { field::EPOCH: epoch } },
                        )
                        .await?;
                    return Ok(current.joined);
                }
            }
            let head = to_i64(self.max_seq(key).await?)?;
            let update = doc! {
                "$set": { field::JOINED: head, field::READ: head, field::EPOCH: epoch },
                "$unset": { field::LEFT: "" },
            };
            match self
                .members
                .update_one(not_newer(&pair, epoch), update)
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(head as u64),
                // Created meanwhile, or holding a newer change: decide again.
                Err(err) if is_duplicate_key(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(self.membership(user, key).await?.joined)
    }

    /// Records that `user` left (or was removed from) `group` in the change
    /// numbered `epoch`: it keeps seeing messages up to the current max seq.
    /// Idempotent: a second call returns the first leave's seq; a user with
    /// no record gets none. A change older than the last one applied to the
    /// pair (a late leave after a newer join) is ignored.
    pub async fn left(&self, user: u64, group: u64, epoch: u64) -> Result<u64, ConvError> {
        let key = ConvKey::Group(group);
        let head = to_i64(self.max_seq(key).await?)?;
        let pair = doc! { field::USER: to_i64(user)?, field::CONV: key.to_string() };
        let epoch = to_i64(epoch)?;
        let mut filter = not_newer(&pair, epoch);
        filter.insert(field::LEFT, doc! { "$exists": false });
        let updated = self
            .members
            .find_one_and_update(
                filter,
                doc! { "$set": { field::LEFT: head, field::EPOCH: epoch } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        match updated {
            Some(doc) => get_id(&doc, field::LEFT),
            None => match self.membership(user, key).await {
                Ok(m) => Ok(m.left.unwrap_or(0)),
                Err(ConvError::NotMember { .. }) => Ok(0),
                Err(err) => Err(err),
            },
        }
    }

    /// Moves `user`'s read position of `key` forward to `seq`, capped at what
    /// the user can see; an older position leaves it where it is.
    pub async fn read(&self, user: u64, key: ConvKey, seq: u64) -> Result<ReadOutcome, ConvError> {
        let membership = self.membership(user, key).await?;
        let head = self.head(key).await?;
        let target = seq.min(membership.head(head));
        let filter = doc! { field::USER: to_i64(user)?, field::CONV: key.to_string() };
        let update = doc! {
            "$max": { field::READ: to_i64(target)? },
            "$setOnInsert": { field::JOINED: 0_i64 },
        };
        let mut before = None;
        for _ in 0..UPSERT_ATTEMPTS {
            // Only a party to a direct chat may lack a record; a group member has one.
            let upsert = matches!(key, ConvKey::Direct { .. });
            match self
                .members
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(upsert)
                .return_document(ReturnDocument::Before)
                .await
            {
                Ok(found) => {
                    before = Some(match found {
                        Some(doc) => Membership::from_doc(&doc)?,
                        None => Membership::party(key),
                    });
                    break;
                }
                Err(err) if is_duplicate_key(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        let before = before.unwrap_or(membership);
        let after = Membership {
            read: before.read.max(target),
            ..before
        };
        Ok(ReadOutcome {
            read_seq: after.read_seq(head),
            unread: after.unread(head),
            moved: after.read_seq(head) > before.read_seq(head),
        })
    }

    /// The conversation's head as its head document says (0 before its first
    /// message): never ahead of the stored messages, at most one batch behind.
    pub async fn head(&self, key: ConvKey) -> Result<u64, ConvError> {
        let found = self.heads.find_one(doc! { "_id": key.to_string() }).await?;
        match found {
            Some(doc) => get_id(&doc, HEAD),
            None => Ok(0),
        }
    }

    /// The highest stored seq of `key`, read from the messages themselves; 0 when empty.
    pub async fn max_seq(&self, key: ConvKey) -> Result<u64, ConvError> {
        let options = FindOneOptions::builder()
            .sort(doc! { message_field::SEQ: -1 })
            .projection(doc! { message_field::SEQ: 1, "_id": 0 })
            .build();
        let newest = self
            .messages
            .find_one(doc! { message_field::CONV: key.to_string() })
            .with_options(options)
            .await?;
        match newest {
            Some(doc) => get_id(&doc, message_field::SEQ),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(read: u64, joined: u64, left: Option<u64>) -> Membership {
        Membership {
            key: ConvKey::Group(1),
            read,
            joined,
            left,
        }
    }

    #[test]
    fn unread_is_head_minus_read_within_what_the_user_sees() {
        assert_eq!(member(3, 0, None).unread(10), 7);
        assert_eq!(member(0, 5, None).unread(10), 5, "joined at 5");
        assert_eq!(member(0, 5, None).first_seq(), 6);
        assert_eq!(member(2, 0, Some(6)).unread(10), 4, "left at 6");
        assert_eq!(member(2, 0, Some(6)).head(10), 6);
        assert_eq!(
            member(9, 0, None).unread(4),
            0,
            "read beyond a lagging head"
        );
        assert_eq!(
            member(0, 5, None).head(3),
            5,
            "joined after the head document"
        );
    }
}
