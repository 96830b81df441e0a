//! Storing messages: each once, in its conversation, at the next seq.
//!
//! # The scheme
//!
//! The seqs of a conversation are exactly `1..=max`, with no gap, because a
//! writer only ever inserts at `last + 1` where `last` is a seq it has **seen
//! exist** (one it inserted itself, or the current max read from the
//! `{conv, seq}` index; the in-memory hint that saves that read only ever
//! holds such a seq). Two unique indexes are the fence:
//!
//! * `{conv, seq}`: when writers race for the same `last + 1` (two msg_jobs
//!   briefly owning one partition during a rebalance), exactly one insert
//!   wins; the other gets a duplicate-key error, re-reads the max and tries
//!   again one higher. A second writer fails rather than forks the sequence.
//! * `{conv, msg}`: a message is stored at most once. A redelivered message
//!   (a crash before the offset commit, a rebalance) fails with a duplicate
//!   key and the store answers the seq it already has.
//!
//! A duplicate-key error does not reliably say which index it hit, so on any
//! duplicate key the writer looks the message up by `{conv, msg}`: found means
//! already stored (answer its seq), not found means the seq was taken (forget
//! the hint, re-read the max, retry).
//!
//! # Why each guarantee holds
//!
//! * **No duplicate seq**: the unique `{conv, seq}` index.
//! * **No seq going back**: an insert targets `last + 1` with `last` an
//!   existing seq; nothing is ever deleted, so the max never decreases.
//! * **No message stored twice**: the unique `{conv, msg}` index.
//! * **No reader sees N+1 before N**: N+1 is only inserted after N was seen to
//!   exist. Within one call a conversation's documents go in order through
//!   the *ordered* `insert_many`s of its lane (a large call splits its
//!   conversations into lanes stored side by side), which stop at the first
//!   failure, so a failed N never leaves N+1 behind it; documents of
//!   different conversations share a lane freely.
//! * msg_job feeds each partition's records in offset order, and Kafka keys
//!   records by conversation, so the seqs follow the order logic accepted
//!   the messages in.
//!
//! # What else a store writes
//!
//! Before the first message of a direct chat this process stores, both
//! parties get their member record (an upsert that changes nothing if it
//! exists): that is the "first message" write of the per-user state, and
//! never repeats per message. After the messages, each conversation's head
//! document is moved up to its highest stored seq with `$max`, so a head
//! never goes down, not even when an older batch is redelivered after a newer
//! one: SYNC_CONVERSATIONS compares heads without touching messages. A head
//! may lag the messages by the batch in progress, never lead them, because
//! it is only written once its messages are stored. `store` does both;
//! msg_job calls `insert` and `raise_heads` apart, raising a batch's heads in
//! its push stage (before the push and the offset commit) while the next
//! batch is already being inserted.
//!
//! Each of the two is one `update` command per batch (up to 500 statements
//! each, more in further commands), not one round trip per conversation or
//! party; the statements are unordered and independent. A statement the
//! server refuses fails the call with [`ConvError::Write`]: a member record
//! before any message is stored, a head after its messages were (it lags
//! them until the caller's retry completes the job).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use futures::{StreamExt, TryStreamExt, stream};
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::FindOneOptions;
use parking_lot::Mutex;

use crate::error::{ConvError, DUPLICATE_KEY, to_i64};
use crate::key::ConvKey;
use crate::members::{UPSERT_ATTEMPTS, party_record};
use crate::message::{NewMessage, document_without_seq, field, get_id};
use crate::store::{ConversationStore, HEAD};
use crate::upsert::{Refusal, Upsert, refused_error};

/// The most documents sent in one `insert_many`; later ones wait a round.
const MAX_BATCH: usize = 500;
/// Rounds in a row without any progress before a store gives up.
const MAX_IDLE_ROUNDS: u32 = 100;
/// Concurrent reads of max seqs.
const IN_FLIGHT: usize = 16;
/// A store call gets one lane per this many messages...
const MESSAGES_PER_LANE: usize = 64;
/// ...up to this many lanes.
const MAX_LANES: usize = 4;
/// Conversations the caches remember before starting over (which only costs re-reads).
const CAPACITY: usize = 100_000;

/// What a writer remembers between calls: per conversation the last seq
/// seen to exist (only ever confirmed seqs, so never ahead of the store), and
/// the direct chats whose member records are known to exist.
#[derive(Debug, Default)]
pub(crate) struct KnownConversations {
    last: Mutex<HashMap<ConvKey, u64>>,
    parties: Mutex<HashSet<ConvKey>>,
}

impl KnownConversations {
    fn last(&self, key: ConvKey) -> Option<u64> {
        self.last.lock().get(&key).copied()
    }

    fn saw(&self, key: ConvKey, seq: u64) {
        let mut last = self.last.lock();
        if last.len() >= CAPACITY && !last.contains_key(&key) {
            last.clear();
        }
        let entry = last.entry(key).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    fn forget(&self, key: ConvKey) {
        self.last.lock().remove(&key);
    }

    fn has_parties(&self, key: ConvKey) -> bool {
        self.parties.lock().contains(&key)
    }

    fn add_parties(&self, key: ConvKey) {
        let mut parties = self.parties.lock();
        if parties.len() >= CAPACITY {
            parties.clear();
        }
        parties.insert(key);
    }
}

/// The messages of a store call split into lanes stored concurrently, each
/// conversation wholly in one lane and in the order given: a large batch's
/// ordered inserts then run side by side instead of one after another (at
/// 5,000 msg/s a batch of a few hundred messages spent 30-150 ms in one
/// ordered insert), while within a conversation N+1 still goes in only after
/// N. Small batches keep one lane: splitting them would only add round trips.
fn lanes(pending: &[Pending]) -> Vec<Vec<usize>> {
    let count = pending
        .len()
        .div_ceil(MESSAGES_PER_LANE)
        .clamp(1, MAX_LANES);
    let mut lanes = vec![Vec::new(); count];
    for (i, p) in pending.iter().enumerate() {
        let mut hasher = std::hash::DefaultHasher::new();
        p.key.hash(&mut hasher);
        lanes[(hasher.finish() % count as u64) as usize].push(i);
    }
    lanes.retain(|lane| !lane.is_empty());
    lanes
}

/// One message of a store call, validated and turned into its document.
struct Pending {
    key: ConvKey,
    server_msg_id: i64,
    doc: Document,
}

impl ConversationStore {
    /// Stores each message in its conversation and raises the conversations'
    /// heads: [`ConversationStore::insert`], then
    /// [`ConversationStore::raise_heads`]. Returns each message's seq, in the
    /// order of `messages`.
    pub async fn store(&self, messages: &[NewMessage]) -> Result<Vec<u64>, ConvError> {
        let seqs = self.insert(messages).await?;
        self.raise_heads(
            messages
                .iter()
                .map(NewMessage::key)
                .zip(seqs.iter().copied()),
        )
        .await?;
        Ok(seqs)
    }

    /// Stores each message in its conversation and returns its seq, in the
    /// order of `messages`, without raising heads: a caller that pipelines
    /// batches raises them with [`ConversationStore::raise_heads`] before it
    /// lets anyone learn of the messages (until then SYNC_CONVERSATIONS does
    /// not list them, which is what a head lagging by the batch in progress
    /// means).
    ///
    /// Idempotent per (conversation, server_msg_id): a message already stored
    /// keeps (and returns) its first seq and nothing new is stored. New
    /// messages of one conversation get increasing seqs in the order given.
    /// On error, any prefix may have been stored: calling again with the same
    /// messages is safe and completes the job.
    pub async fn insert(&self, messages: &[NewMessage]) -> Result<Vec<u64>, ConvError> {
        let pending: Vec<Pending> = messages
            .iter()
            .map(|message| {
                Ok(Pending {
                    key: message.key(),
                    server_msg_id: to_i64(message.server_msg_id)?,
                    doc: document_without_seq(message)?,
                })
            })
            .collect::<Result<_, ConvError>>()?;
        self.ensure_parties(pending.iter().map(|p| p.key)).await?;
        let lanes = lanes(&pending);
        let settled = futures::future::try_join_all(
            lanes.into_iter().map(|lane| self.settle(&pending, lane)),
        )
        .await?;
        let mut seqs: Vec<u64> = vec![0; pending.len()];
        for (i, seq) in settled.into_iter().flatten() {
            seqs[i] = seq;
        }
        Ok(seqs)
    }

    /// Stores the messages at `lane` (indexes into `pending`), round after
    /// round until each has its seq; returns (index, seq) pairs.
    async fn settle(
        &self,
        pending: &[Pending],
        lane: Vec<usize>,
    ) -> Result<Vec<(usize, u64)>, ConvError> {
        let mut seqs: Vec<Option<u64>> = vec![None; pending.len()];
        let mut open = lane;
        let mut settled = Vec::with_capacity(open.len());
        let mut idle_rounds = 0;
        while !open.is_empty() {
            let before = open.len();
            self.round(pending, &mut seqs, &open).await?;
            open.retain(|&i| match seqs[i] {
                Some(seq) => {
                    settled.push((i, seq));
                    false
                }
                None => true,
            });
            if open.len() == before {
                idle_rounds += 1;
                if idle_rounds >= MAX_IDLE_ROUNDS {
                    return Err(ConvError::Contended {
                        conversation: pending[open[0]].key.to_string(),
                        rounds: idle_rounds,
                    });
                }
            } else {
                idle_rounds = 0;
            }
        }
        Ok(settled)
    }

    /// Makes sure both parties of each direct chat among `keys` have their
    /// member record, once per conversation per process.
    async fn ensure_parties(&self, keys: impl Iterator<Item = ConvKey>) -> Result<(), ConvError> {
        let mut missing: Vec<ConvKey> = keys
            .filter(|key| matches!(key, ConvKey::Direct { .. }) && !self.known.has_parties(*key))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let upserts: Vec<Upsert> = missing
            .iter()
            .flat_map(|&key| match key {
                ConvKey::Direct { low, high } if low == high => vec![(low, key)],
                ConvKey::Direct { low, high } => vec![(low, key), (high, key)],
                ConvKey::Group(_) => Vec::new(),
            })
            .map(|(user, key)| party_record(user, key))
            .collect::<Result<_, _>>()?;
        let refused: Vec<Refusal> = self
            .upsert_all(&self.members, &upserts)
            .await?
            .into_iter()
            // A racing upsert created the record first: exactly what was wanted.
            .filter(|r| !r.is_race())
            .collect();
        if !refused.is_empty() {
            return Err(refused_error(self.members.name(), &upserts, &refused));
        }
        missing
            .into_iter()
            .for_each(|key| self.known.add_parties(key));
        Ok(())
    }

    /// Moves each conversation's head up to the highest of its stored seqs
    /// given (never down), in one command. Safe to repeat.
    pub async fn raise_heads(
        &self,
        stored: impl Iterator<Item = (ConvKey, u64)>,
    ) -> Result<(), ConvError> {
        let mut heads: HashMap<ConvKey, u64> = HashMap::new();
        for (key, seq) in stored {
            let head = heads.entry(key).or_default();
            *head = (*head).max(seq);
        }
        if heads.is_empty() {
            return Ok(());
        }
        let mut upserts: Vec<Upsert> = heads
            .into_iter()
            .map(|(key, seq)| {
                Ok(Upsert {
                    filter: doc! { "_id": key.to_string() },
                    update: doc! { "$max": { HEAD: to_i64(seq)? } },
                })
            })
            .collect::<Result<_, ConvError>>()?;
        let mut attempt = 1;
        loop {
            let refused = self.upsert_all(&self.heads, &upserts).await?;
            if refused.is_empty() {
                return Ok(());
            }
            if attempt == UPSERT_ATTEMPTS || !refused.iter().all(Refusal::is_race) {
                return Err(refused_error(self.heads.name(), &upserts, &refused));
            }
            // Another writer created these heads between our match and our
            // insert, so our `$max` was not applied; now they exist, it will be.
            tracing::debug!(
                heads = refused.len(),
                attempt,
                "heads created concurrently; raising again"
            );
            upserts = refused
                .iter()
                .filter_map(|r| upserts.get(r.index).cloned())
                .collect();
            attempt += 1;
        }
    }

    /// One attempt at the first [`MAX_BATCH`] open messages: an ordered insert
    /// at the next seqs after the hints, then resolution of the first failure.
    async fn round(
        &self,
        pending: &[Pending],
        seqs: &mut [Option<u64>],
        open: &[usize],
    ) -> Result<(), ConvError> {
        let chunk = &open[..open.len().min(MAX_BATCH)];
        let mut next = self
            .last_seen(chunk.iter().map(|&i| pending[i].key))
            .await?;
        let mut planned = Vec::with_capacity(chunk.len());
        let mut docs = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let p = &pending[i];
            let seq = next.entry(p.key).or_default();
            *seq += 1;
            planned.push(*seq);
            let mut doc = p.doc.clone();
            doc.insert(field::SEQ, to_i64(*seq)?);
            docs.push(doc);
        }
        let failed_at = match self.messages.insert_many(docs).ordered(true).await {
            Ok(_) => None,
            Err(err) => Some(first_duplicate(err, chunk.len())?),
        };
        let stored = failed_at.unwrap_or(chunk.len());
        for (&i, &seq) in chunk[..stored].iter().zip(&planned) {
            seqs[i] = Some(seq);
            self.known.saw(pending[i].key, seq);
        }
        if let Some(at) = failed_at {
            let p = &pending[chunk[at]];
            match self.existing_seq(p).await? {
                Some(seq) => {
                    self.already_stored.inc();
                    tracing::debug!(conversation = %p.key, server_msg_id = p.server_msg_id, seq, "already stored");
                    seqs[chunk[at]] = Some(seq);
                }
                None => {
                    tracing::debug!(conversation = %p.key, seq = planned[at], "seq taken by another writer");
                    self.known.forget(p.key);
                }
            }
        }
        Ok(())
    }

    /// The last seq seen to exist in each of `keys` (0 for an empty
    /// conversation): the hint, else the current max.
    async fn last_seen(
        &self,
        keys: impl Iterator<Item = ConvKey>,
    ) -> Result<HashMap<ConvKey, u64>, ConvError> {
        let mut last = HashMap::new();
        let mut unknown = HashSet::new();
        for key in keys {
            match self.known.last(key) {
                Some(seq) => {
                    last.insert(key, seq);
                }
                None => {
                    unknown.insert(key);
                }
            }
        }
        let reads: Vec<_> = unknown
            .into_iter()
            .map(|key| async move { Ok::<_, ConvError>((key, self.max_seq(key).await?)) })
            .collect();
        let read: Vec<(ConvKey, u64)> = stream::iter(reads)
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for (key, seq) in read {
            if seq > 0 {
                self.known.saw(key, seq);
            }
            last.insert(key, seq);
        }
        Ok(last)
    }

    /// The seq of `p`'s message if its conversation already holds it.
    async fn existing_seq(&self, p: &Pending) -> Result<Option<u64>, ConvError> {
        let filter = doc! { field::CONV: p.key.to_string(), field::MSG: p.server_msg_id };
        let options = FindOneOptions::builder()
            .projection(doc! { field::SEQ: 1, "_id": 0 })
            .build();
        match self.messages.find_one(filter).with_options(options).await? {
            Some(doc) => Ok(Some(get_id(&doc, field::SEQ)?)),
            None => Ok(None),
        }
    }
}

/// The index (in a batch of `len`) of the first document an ordered insert
/// failed on with a duplicate key; every document before it was stored and
/// none after it was tried. Any other failure is returned as the error.
fn first_duplicate(err: mongodb::error::Error, len: usize) -> Result<usize, ConvError> {
    if let ErrorKind::InsertMany(e) = err.kind.as_ref() {
        let first = e
            .write_errors
            .as_ref()
            .and_then(|w| w.iter().min_by_key(|w| w.index));
        if let (Some(first), None) = (first, &e.write_concern_error)
            && first.code == DUPLICATE_KEY
            && first.index < len
        {
            return Ok(first.index);
        }
    }
    Err(err.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(keys: &[ConvKey]) -> Vec<Pending> {
        keys.iter()
            .enumerate()
            .map(|(i, &key)| Pending {
                key,
                server_msg_id: i as i64,
                doc: Document::new(),
            })
            .collect()
    }

    #[test]
    fn lanes_keep_each_conversation_whole_and_in_order() {
        let small: Vec<ConvKey> = (0..64).map(|i| ConvKey::Group(i % 7)).collect();
        assert_eq!(lanes(&pending(&small)), vec![(0..64).collect::<Vec<_>>()]);
        assert!(lanes(&[]).is_empty());

        let keys: Vec<ConvKey> = (0..1000).map(|i| ConvKey::Group(i % 37)).collect();
        let lanes = lanes(&pending(&keys));
        assert!(
            lanes.len() > 1 && lanes.len() <= MAX_LANES,
            "{}",
            lanes.len()
        );
        let mut seen = vec![false; keys.len()];
        for lane in &lanes {
            assert!(lane.windows(2).all(|w| w[0] < w[1]), "in the order given");
            for &i in lane {
                seen[i] = true;
            }
            for other in lanes.iter().filter(|other| *other != lane) {
                assert!(
                    lane.iter()
                        .all(|&i| other.iter().all(|&j| keys[i] != keys[j])),
                    "a conversation in two lanes"
                );
            }
        }
        assert!(seen.into_iter().all(|s| s), "every message in a lane");
    }

    #[test]
    fn hints_only_move_up_and_can_be_forgotten() {
        let known = KnownConversations::default();
        let key = ConvKey::Group(1);
        assert_eq!(known.last(key), None);
        known.saw(key, 5);
        known.saw(key, 3);
        assert_eq!(known.last(key), Some(5));
        known.forget(key);
        assert_eq!(known.last(key), None);
    }
}
