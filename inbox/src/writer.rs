//! Storing messages: seq allocation without a counter.
//!
//! # The scheme
//!
//! The seqs of an inbox are exactly `1..=max`, with no gap, because a writer
//! only ever inserts at `last + 1` where `last` is a seq it has **seen exist**
//! (one it inserted itself, or the current max read from the `{inbox, seq}`
//! index; the in-memory hint that saves that read only ever holds such a
//! seq). Two unique indexes do the rest:
//!
//! * `{inbox, seq}`: when writers race for the same `last + 1`, exactly one
//!   insert wins; the others get a duplicate-key error, re-read the max and
//!   try again one higher.
//! * `{inbox, server_msg_id}`: a message is in an inbox at most once. A
//!   redelivered message (Kafka rebalance, a crash before the offset commit,
//!   two msg_job instances briefly owning one partition) fails with a
//!   duplicate key and the store returns the seq it already has.
//!
//! A duplicate-key error does not reliably say which index it hit (the
//! message text is server-specific), so on any duplicate key the writer
//! looks the message up by `{inbox, server_msg_id}`: found means already
//! stored (answer its seq, store nothing), not found means the seq was taken
//! (forget the hint, re-read the max, retry).
//!
//! # Why each guarantee holds
//!
//! * **No duplicate seq** in an inbox: the unique `{inbox, seq}` index.
//! * **No seq going back**: an insert targets `last + 1` with `last` an
//!   existing seq, so it lands above everything this writer has seen; the
//!   unique index stops it from landing on an existing seq; nothing is ever
//!   deleted, so the max never decreases.
//! * **No message stored twice**: the unique `{inbox, server_msg_id}` index;
//!   a redelivery answers the first seq.
//! * **No reader sees N+1 before N**: N+1 is only inserted after N was seen
//!   to exist (committed), by this writer or by whoever it read the max from.
//!   Within one call, the documents of an inbox go to the server in one
//!   *ordered* `insert_many`, which stops at the first failure, so a failed
//!   N (say a redelivered message) never leaves N+1 behind it. Documents of
//!   different inboxes share that ordered batch freely: they never depend on
//!   each other, and a failure only delays the ones after it by a round.
//! * Restarts and several processes need nothing more: the only state
//!   outside MongoDB is the hint, which is never ahead of the store.
//!
//! Nothing may ever delete single messages from an inbox: a retention job
//! must keep the newest one of each inbox (or record its max elsewhere), or a
//! later writer would reuse seqs.
//!
//! # Cost
//!
//! Without contention a batch costs one `insert_many` plus, for inboxes the
//! hint does not know, one indexed `find` each (run concurrently). Each
//! conflict costs one lookup and one more round for the rest of the batch.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt, stream};
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::FindOneOptions;

use crate::error::{DUPLICATE_KEY, InboxError, to_i64};
use crate::message::{NewMessage, document_without_seq, field, get_id};
use crate::store::MongoInbox;

/// The most documents sent in one `insert_many`; later ones wait a round.
const MAX_BATCH: usize = 500;
/// Rounds in a row without any progress before a store gives up.
const MAX_IDLE_ROUNDS: u32 = 100;
/// Concurrent max-seq reads for inboxes the hint does not know.
const MAX_READS_IN_FLIGHT: usize = 16;

/// One item of a store call, validated and turned into its document.
struct Pending {
    inbox: u64,
    server_msg_id: i64,
    doc: Document,
}

impl MongoInbox {
    /// Stores each `(inbox, message)` and returns its seq in that inbox, in
    /// the order of `items`.
    ///
    /// Idempotent per `(inbox, server_msg_id)`: a message already in an inbox
    /// keeps (and returns) its first seq and nothing new is stored. New
    /// messages of one inbox get increasing seqs in the order of `items`.
    /// On error, any prefix of the items may have been stored: calling again
    /// with the same items is safe and completes the job.
    pub async fn store(&self, items: &[(u64, NewMessage)]) -> Result<Vec<u64>, InboxError> {
        let pending: Vec<Pending> = items
            .iter()
            .map(|(inbox, message)| {
                Ok(Pending {
                    inbox: *inbox,
                    server_msg_id: to_i64(message.server_msg_id)?,
                    doc: document_without_seq(*inbox, message)?,
                })
            })
            .collect::<Result<_, InboxError>>()?;
        let mut seqs: Vec<Option<u64>> = vec![None; pending.len()];
        let mut open: Vec<usize> = (0..pending.len()).collect();
        let mut idle_rounds = 0;
        while !open.is_empty() {
            let before = open.len();
            self.round(&pending, &mut seqs, &open).await?;
            open.retain(|&i| seqs[i].is_none());
            if open.len() == before {
                idle_rounds += 1;
                if idle_rounds >= MAX_IDLE_ROUNDS {
                    let inbox = pending[open[0]].inbox;
                    return Err(InboxError::Contended {
                        inbox,
                        rounds: idle_rounds,
                    });
                }
            } else {
                idle_rounds = 0;
            }
        }
        Ok(seqs.into_iter().flatten().collect())
    }

    /// One attempt at the first [`MAX_BATCH`] open items: an ordered insert at
    /// the next seqs after the hints, then resolution of the first failure.
    async fn round(
        &self,
        pending: &[Pending],
        seqs: &mut [Option<u64>],
        open: &[usize],
    ) -> Result<(), InboxError> {
        let chunk = &open[..open.len().min(MAX_BATCH)];
        let mut next = self
            .last_seen(chunk.iter().map(|&i| pending[i].inbox))
            .await?;
        let mut planned = Vec::with_capacity(chunk.len());
        let mut docs = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let p = &pending[i];
            let seq = next.entry(p.inbox).or_default();
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
            self.seqs.saw(pending[i].inbox, seq);
        }
        if let Some(at) = failed_at {
            let p = &pending[chunk[at]];
            match self.existing_seq(p).await? {
                Some(seq) => {
                    tracing::debug!(
                        inbox = p.inbox,
                        server_msg_id = p.server_msg_id,
                        seq,
                        "already stored"
                    );
                    seqs[chunk[at]] = Some(seq);
                }
                None => {
                    tracing::debug!(
                        inbox = p.inbox,
                        seq = planned[at],
                        "seq taken by another writer"
                    );
                    self.seqs.forget(p.inbox);
                }
            }
        }
        Ok(())
    }

    /// The last seq seen to exist in each of `inboxes` (0 for an empty inbox):
    /// the hint, else the current max.
    async fn last_seen(
        &self,
        inboxes: impl Iterator<Item = u64>,
    ) -> Result<HashMap<u64, u64>, InboxError> {
        let mut last = HashMap::new();
        let mut unknown = Vec::new();
        for inbox in inboxes {
            if last.contains_key(&inbox) || unknown.contains(&inbox) {
                continue;
            }
            match self.seqs.get(inbox) {
                Some(seq) => {
                    last.insert(inbox, seq);
                }
                None => unknown.push(inbox),
            }
        }
        let read: Vec<(u64, u64)> = stream::iter(unknown)
            .map(|inbox| async move { Ok::<_, InboxError>((inbox, self.max_seq(inbox).await?)) })
            .buffer_unordered(MAX_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (inbox, seq) in read {
            if seq > 0 {
                self.seqs.saw(inbox, seq);
            }
            last.insert(inbox, seq);
        }
        Ok(last)
    }

    /// The seq of `p`'s message if its inbox already holds it.
    async fn existing_seq(&self, p: &Pending) -> Result<Option<u64>, InboxError> {
        let filter = doc! {
            field::INBOX: to_i64(p.inbox)?,
            field::SERVER_MSG_ID: p.server_msg_id,
        };
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
fn first_duplicate(err: mongodb::error::Error, len: usize) -> Result<usize, InboxError> {
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
