//! The consume → store → push → commit loop.
//!
//! Records are taken in batches (up to `max_messages`, or whatever arrived
//! within `linger` of the first one), stored in offset order, pushed, then
//! committed synchronously. A failed store is retried with backoff and
//! nothing is committed meanwhile; a crash anywhere before the commit makes
//! Kafka redeliver the batch, which the idempotent store absorbs. Because each
//! consumer stores a partition's records strictly in order, even two consumers
//! briefly storing the same partition during a rebalance assign seqs in
//! offset order: whoever first stores record n has already stored n-1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fishchat_codec::pb::StoredMessage;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::event;
use crate::push::{Pusher, UserDelivery};
use crate::store::{InboxStore, NewMessage};

/// First wait before retrying a failed store.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between store retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pause after a consumer error, so a broken connection is not polled in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// How records are grouped into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most records in one batch.
    pub max_messages: usize,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
}

/// Counters of what the pipeline did, shared with whoever wants to watch it.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records whose batch was stored and committed.
    pub committed_records: AtomicU64,
    /// (inbox, message) items stored, redeliveries included.
    pub stored_items: AtomicU64,
    /// Records skipped because their payload did not decode.
    pub malformed: AtomicU64,
    /// Store attempts that failed and were retried.
    pub store_failures: AtomicU64,
    /// Commits that failed (their batch will be redelivered and deduplicated).
    pub commit_failures: AtomicU64,
    /// Session lookups or node pushes that failed.
    pub push_failures: AtomicU64,
}

/// Why the pipeline stopped on its own.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The consumer could not be used at all.
    #[error("kafka consumer failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The store returned a different number of seqs than items given.
    #[error("store returned {got} seqs for {expected} items")]
    SeqCount {
        /// Items given to the store.
        expected: usize,
        /// Seqs it returned.
        got: usize,
    },
}

/// One consumed record, detached from the consumer's buffer.
#[derive(Debug)]
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

/// The consume → store → push → commit loop over one consumer.
pub struct Pipeline<S, P> {
    consumer: StreamConsumer,
    store: S,
    pusher: P,
    batch: BatchConfig,
    stats: Arc<Stats>,
}

impl<S: InboxStore, P: Pusher> Pipeline<S, P> {
    /// A pipeline reading from a subscribed `consumer` with auto-commit off.
    pub fn new(consumer: StreamConsumer, store: S, pusher: P, batch: BatchConfig) -> Self {
        Self {
            consumer,
            store,
            pusher,
            batch,
            stats: Arc::default(),
        }
    }

    /// The pipeline's counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `stop` turns true (or its sender is dropped): then finishes
    /// the batch in hand (store and commit) and returns. A batch whose store
    /// is still failing at that point is left uncommitted, to be redelivered
    /// to the next consumer.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), PipelineError> {
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                first = self.consumer.recv() => first,
            };
            let first = match first {
                Ok(message) => detach(&message),
                Err(err) => {
                    tracing::warn!(%err, "kafka consumer error");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                }
            };
            let batch = self.fill(first).await;
            if !self.process(batch, &mut stop).await? {
                break;
            }
        }
        tracing::info!("pipeline stopped");
        Ok(())
    }

    /// Adds records to a batch until it is full or `linger` has passed since `first`.
    async fn fill(&self, first: Record) -> Vec<Record> {
        let deadline = Instant::now() + self.batch.linger;
        let mut batch = vec![first];
        while batch.len() < self.batch.max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(message)) => batch.push(detach(&message)),
                Ok(Err(err)) => {
                    tracing::warn!(%err, "kafka consumer error");
                    break;
                }
            }
        }
        batch
    }

    /// Stores, pushes and commits one batch; false when stopped before it could be stored.
    ///
    /// The push comes before the commit so that a crash between them redelivers the batch
    /// and pushes it again (with the seqs the store already gave it): a push may be repeated,
    /// which clients absorb by seq, but a stored message is never left unpushed.
    async fn process(
        &self,
        batch: Vec<Record>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, PipelineError> {
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut items: Vec<(u64, NewMessage)> = Vec::new();
        for record in &batch {
            let next = next_offsets
                .entry((record.topic.clone(), record.partition))
                .or_insert(0);
            *next = (*next).max(record.offset + 1);
            match event::decode(record.payload.as_deref()) {
                Ok(decoded) => items.extend(decoded),
                Err(err) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic = %record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        %err,
                        "skipping malformed event"
                    );
                }
            }
        }
        // Stage times go in the batch's debug line: they say where delivery latency is spent.
        let started = std::time::Instant::now();
        let Some(seqs) = self.store_with_retry(&items, stop).await else {
            tracing::warn!(
                records = batch.len(),
                "stopping with an unstored batch; it will be redelivered"
            );
            return Ok(false);
        };
        if seqs.len() != items.len() {
            return Err(PipelineError::SeqCount {
                expected: items.len(),
                got: seqs.len(),
            });
        }
        self.stats
            .stored_items
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let stored = started.elapsed();
        let outcome = self.pusher.push(deliveries(&items, &seqs)).await;
        let pushed = started.elapsed();
        self.stats
            .push_failures
            .fetch_add(outcome.failures, Ordering::Relaxed);
        self.commit(&next_offsets, batch.len());
        let committed = started.elapsed();
        tracing::debug!(
            records = batch.len(),
            items = items.len(),
            nodes = outcome.nodes_pushed,
            connections = outcome.delivered_connections,
            store_ms = stored.as_secs_f64() * 1e3,
            push_ms = (pushed - stored).as_secs_f64() * 1e3,
            commit_ms = (committed - pushed).as_secs_f64() * 1e3,
            "batch stored, pushed and committed"
        );
        Ok(true)
    }

    /// Stores `items`, retrying with backoff; `None` if `stop` turns true first.
    async fn store_with_retry(
        &self,
        items: &[(u64, NewMessage)],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<u64>> {
        if items.is_empty() {
            return Some(Vec::new());
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.store.store(items).await {
                Ok(seqs) => return Some(seqs),
                Err(err) => {
                    self.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%err, items = items.len(), retry_in = ?backoff, "store failed; batch not committed");
                }
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Commits `next_offsets` synchronously; a failure only means redelivery.
    ///
    /// The call blocks this worker thread for one broker round trip.
    fn commit(&self, next_offsets: &BTreeMap<(String, i32), i64>, records: usize) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in next_offsets {
            if let Err(err) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::error!(%topic, partition, %err, "cannot build commit list");
            }
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                self.stats
                    .committed_records
                    .fetch_add(records as u64, Ordering::Relaxed);
            }
            Err(err) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%err, records, "commit failed; the batch will be redelivered and deduplicated");
            }
        }
    }
}

/// Copies what the pipeline needs out of a borrowed Kafka message.
fn detach<M: Message>(message: &M) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        payload: message.payload().map(<[u8]>::to_vec),
    }
}

/// Groups stored items per inbox owner, each user's messages in seq order.
fn deliveries(items: &[(u64, NewMessage)], seqs: &[u64]) -> Vec<UserDelivery> {
    let mut by_user: BTreeMap<u64, Vec<StoredMessage>> = BTreeMap::new();
    for ((inbox, message), seq) in items.iter().zip(seqs) {
        by_user
            .entry(*inbox)
            .or_default()
            .push(event::stored(message, *seq));
    }
    by_user
        .into_iter()
        .map(|(user_id, mut messages)| {
            messages.sort_by_key(|m| m.seq);
            messages.dedup_by_key(|m| m.seq);
            UserDelivery { user_id, messages }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Conversation;

    #[test]
    fn deliveries_group_per_user_in_seq_order() {
        let msg = |id| NewMessage {
            server_msg_id: id,
            from_user_id: 1,
            conversation: Conversation::GroupId(5),
            body: bytes::Bytes::new(),
            timestamp_ms: 0,
            client_msg_id: String::new(),
        };
        let items = [(2, msg(10)), (3, msg(10)), (2, msg(11)), (2, msg(10))];
        let got = deliveries(&items, &[4, 1, 5, 4]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].user_id, 2);
        let seqs: Vec<u64> = got[0].messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(got[1].messages[0].server_msg_id, 10);
    }
}
