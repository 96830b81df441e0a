//! The consume → store → push → commit loop, in two overlapping stages.
//!
//! Stage one takes records in batches (up to `max_messages`, or whatever
//! arrived within `linger` of the first one) and stores them in offset order.
//! Stage two raises each stored batch's conversation heads (which makes its
//! messages visible to SYNC_CONVERSATIONS), pushes it and then commits its
//! offsets, batch after batch. While stage two works on batch n, stage one
//! already stores batch n+1; a small queue between them bounds how far
//! storing runs ahead.
//!
//! What the order buys:
//! * **No loss**: an offset is committed only after its batch is stored (and
//!   pushed). A crash anywhere before the commit makes Kafka redeliver the
//!   batch, which the idempotent store absorbs, and which is pushed again
//!   with the seqs it already has: a push may repeat (clients drop a seq
//!   they hold), but a stored message is never left unpushed.
//! * **Order**: each consumer stores a partition's records strictly in
//!   offset order, and a conversation lives in one partition, so even two
//!   consumers briefly storing the same partition during a rebalance assign
//!   seqs in offset order (the store's fence makes the second one fail
//!   rather than fork the sequence). Frames are pushed in batch order.
//! * **No stall**: commits are asynchronous and at most every 100 ms (a
//!   failed one only means redelivery); a store failure is retried with
//!   backoff, uncommitted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error_pace::ErrorPace;
use crate::event::{self, Accepted};
use crate::kafka::{self, PipelineConsumer};
use crate::push::{self, Pusher};
use crate::store::{ConvKey, MessageStore, NewMessage, StoreError};

/// First wait before retrying a failed store.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between store retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Stored batches waiting for their push: how far storing may run ahead.
const STORED_AHEAD: usize = 2;
/// How often pushed records are committed at most. Each commit is a request
/// the broker serves and a write to its offsets topic; committing per batch
/// cost it more CPU than the messages did. A crash redelivers at most this
/// much more, which the store absorbs and clients drop by seq.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How records are grouped into batches, and the client's frame limit.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most records in one batch.
    pub max_messages: usize,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
    /// Largest PUSH frame a client accepts.
    pub max_frame_len: u32,
}

/// What the pipeline did and how long its stages took, shared with whoever
/// watches it (tests, and `GET /metrics` once registered).
#[derive(Debug)]
pub struct Stats {
    /// Records stored, pushed and handed to a commit.
    pub committed_records: Counter,
    /// Messages stored, redeliveries included.
    pub stored_messages: Counter,
    /// Records skipped because their payload did not decode.
    pub malformed: Counter,
    /// Store attempts (messages or heads) that failed and were retried.
    pub store_failures: Counter,
    /// Commits that failed at once (their batch will be redelivered and deduplicated).
    pub commit_failures: Counter,
    /// Session lookups or node pushes that failed.
    pub push_failures: Counter,
    /// Records per batch.
    pub batch_records: Histogram,
    /// Seconds storing one batch's messages took, retries included.
    pub store_seconds: Histogram,
    /// Seconds raising one batch's conversation heads took, retries included.
    pub heads_seconds: Histogram,
    /// Seconds pushing one batch to the access nodes took.
    pub push_seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        // 100 µs to about 3.3 s.
        let seconds = || Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        Self {
            committed_records: Counter::default(),
            stored_messages: Counter::default(),
            malformed: Counter::default(),
            store_failures: Counter::default(),
            commit_failures: Counter::default(),
            push_failures: Counter::default(),
            // 1 to 4,096.
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            store_seconds: seconds(),
            heads_seconds: seconds(),
            push_seconds: seconds(),
        }
    }
}

impl Stats {
    /// Registers every counter and histogram in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "committed_records",
                "Records stored, pushed and handed to a commit",
                &self.committed_records,
            ),
            (
                "stored_messages",
                "Messages stored, redeliveries included",
                &self.stored_messages,
            ),
            (
                "malformed_records",
                "Records skipped because their payload did not decode",
                &self.malformed,
            ),
            (
                "store_failures",
                "Store attempts (messages or heads) that failed and were retried",
                &self.store_failures,
            ),
            (
                "commit_failures",
                "Commits refused at once (their records are redelivered and deduplicated)",
                &self.commit_failures,
            ),
            (
                "push_failures",
                "Session lookups or access-node pushes that failed",
                &self.push_failures,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let histograms = [
            ("batch_records", "Records per batch", &self.batch_records),
            (
                "store_seconds",
                "How long storing a batch's messages took, retries included",
                &self.store_seconds,
            ),
            (
                "heads_seconds",
                "How long raising a batch's conversation heads took, retries included",
                &self.heads_seconds,
            ),
            (
                "push_seconds",
                "How long pushing a batch to the access nodes took",
                &self.push_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register(name, help, histogram.clone());
        }
    }
}

/// Why the pipeline stopped on its own.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The consumer could not be used at all.
    #[error("kafka consumer failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The consumer hit an error librdkafka cannot recover from (the broker
    /// fenced this static member, say, after a restart): it will never
    /// deliver again, so the process must end and be restarted.
    #[error("kafka consumer failed for good: {code:?}: {reason}")]
    Fatal {
        /// librdkafka's code.
        code: rdkafka::types::RDKafkaErrorCode,
        /// Its description.
        reason: String,
    },
    /// The store returned a different number of seqs than messages given.
    #[error("store returned {got} seqs for {expected} messages")]
    SeqCount {
        /// Messages given to the store.
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

/// A batch stage one stored, on its way to stage two.
struct Stored {
    messages: Vec<(Accepted, u64)>,
    next_offsets: BTreeMap<(String, i32), i64>,
    records: usize,
    started: std::time::Instant,
    store_ms: f64,
}

/// The consume → store → push → commit loop over one consumer.
pub struct Pipeline<S, P> {
    consumer: PipelineConsumer,
    store: S,
    pusher: P,
    batch: BatchConfig,
    stats: Arc<Stats>,
}

impl<S: MessageStore, P: Pusher> Pipeline<S, P> {
    /// A pipeline reading from a subscribed `consumer` with auto-commit off.
    pub fn new(consumer: PipelineConsumer, store: S, pusher: P, batch: BatchConfig) -> Self {
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
    /// the batch in hand and every stored batch (push and commit) and
    /// returns. A batch whose store is still failing at that point is left
    /// uncommitted, to be redelivered to the next consumer.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), PipelineError> {
        let (stored, to_push) = mpsc::channel(STORED_AHEAD);
        let (storing, pushing) = tokio::join!(
            self.consume(stop.clone(), stored),
            self.deliver(to_push, stop)
        );
        // The commits so far were asynchronous: the last one is made to land
        // before the consumer closes.
        kafka::close(self.consumer, pushing).await;
        tracing::info!("pipeline stopped");
        storing
    }

    /// Stage one: consume and store, handing each stored batch to stage two.
    async fn consume(
        &self,
        mut stop: watch::Receiver<bool>,
        stored: mpsc::Sender<Stored>,
    ) -> Result<(), PipelineError> {
        let mut errors = ErrorPace::default();
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                first = self.consumer.recv() => first,
            };
            let first = match first {
                Ok(message) => detach(&message),
                Err(err) => {
                    // Polling a dead consumer again would look alive and store nothing.
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        tracing::error!(?code, reason, "kafka consumer failed for good");
                        return Err(PipelineError::Fatal { code, reason });
                    }
                    tracing::warn!(%err, "kafka consumer error");
                    if let Some(pause) = errors.after_error(std::time::Instant::now()) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            };
            let batch = self.fill(first).await;
            let Some(batch) = self.store_batch(batch, &mut stop).await? else {
                return Ok(());
            };
            if stored.send(batch).await.is_err() {
                return Ok(());
            }
        }
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

    /// Decodes and stores one batch; `None` when stopped before it could be stored.
    async fn store_batch(
        &self,
        batch: Vec<Record>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Stored>, PipelineError> {
        let started = std::time::Instant::now();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut accepted: Vec<Accepted> = Vec::with_capacity(batch.len());
        for record in &batch {
            let next = next_offsets
                .entry((record.topic.clone(), record.partition))
                .or_insert(0);
            *next = (*next).max(record.offset + 1);
            match event::decode(record.payload.as_deref()) {
                Ok(decoded) => accepted.push(decoded),
                Err(err) => {
                    self.stats.malformed.inc();
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
        let messages: Vec<NewMessage> = accepted.iter().map(|a| a.message.clone()).collect();
        let Some(seqs) = self.store_with_retry(&messages, stop).await else {
            tracing::warn!(
                records = batch.len(),
                "stopping with an unstored batch; it will be redelivered"
            );
            return Ok(None);
        };
        if seqs.len() != messages.len() {
            return Err(PipelineError::SeqCount {
                expected: messages.len(),
                got: seqs.len(),
            });
        }
        self.stats.stored_messages.inc_by(messages.len() as u64);
        self.stats.batch_records.observe(batch.len() as f64);
        self.stats
            .store_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Some(Stored {
            messages: accepted.into_iter().zip(seqs).collect(),
            next_offsets,
            records: batch.len(),
            started,
            store_ms: started.elapsed().as_secs_f64() * 1e3,
        }))
    }

    /// Stores `messages`, retrying with backoff; `None` if `stop` turns true first.
    async fn store_with_retry(
        &self,
        messages: &[NewMessage],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<u64>> {
        if messages.is_empty() {
            return Some(Vec::new());
        }
        let store = || self.store.store(messages);
        self.retrying("store", messages.len(), stop, store).await
    }

    /// Runs `attempt` until it succeeds, with backoff, counting each failure
    /// in `store_failures`; `None` if `stop` turns true first.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        messages: usize,
        stop: &mut watch::Receiver<bool>,
        mut attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match attempt().await {
                Ok(done) => return Some(done),
                Err(err) => {
                    self.stats.store_failures.inc();
                    tracing::error!(%err, what, messages, retry_in = ?backoff, "storing failed; batch not committed");
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

    /// Stage two: push each stored batch, then commit what was pushed, at
    /// most every [`COMMIT_INTERVAL`]; returns the offsets still to commit
    /// when the stream of batches ends.
    async fn deliver(
        &self,
        mut to_push: mpsc::Receiver<Stored>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<TopicPartitionList> {
        let mut pending = Pending::default();
        let mut last_commit = Instant::now();
        loop {
            let next = if pending.records == 0 {
                to_push.recv().await
            } else {
                match tokio::time::timeout_at(last_commit + COMMIT_INTERVAL, to_push.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.commit(&mut pending);
                        last_commit = Instant::now();
                        continue;
                    }
                }
            };
            let Some(batch) = next else {
                break;
            };
            let queued_ms = batch.started.elapsed().as_secs_f64() * 1e3 - batch.store_ms;
            let stored: Vec<(ConvKey, u64)> = batch
                .messages
                .iter()
                .map(|(accepted, seq)| (accepted.message.key(), *seq))
                .collect();
            let raising = std::time::Instant::now();
            let raise = || self.store.raise_heads(&stored);
            if self
                .retrying("heads", stored.len(), &mut stop, raise)
                .await
                .is_none()
            {
                tracing::warn!(
                    records = batch.records,
                    "stopping with a batch's heads not raised; it will be redelivered"
                );
                break;
            }
            self.stats
                .heads_seconds
                .observe(raising.elapsed().as_secs_f64());
            let pushing = std::time::Instant::now();
            let frames = push::frames(&batch.messages, self.batch.max_frame_len);
            let outcome = self.pusher.push(frames).await;
            self.stats.push_failures.inc_by(outcome.failures);
            let push_seconds = pushing.elapsed().as_secs_f64();
            self.stats.push_seconds.observe(push_seconds);
            let push_ms = push_seconds * 1e3;
            pending.add(&batch);
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit(&mut pending);
                last_commit = Instant::now();
            }
            // Stage times say where delivery latency is spent.
            tracing::debug!(
                records = batch.records,
                messages = batch.messages.len(),
                nodes = outcome.nodes_pushed,
                connections = outcome.delivered_connections,
                store_ms = batch.store_ms,
                queued_ms,
                push_ms,
                "batch stored and pushed"
            );
        }
        (pending.records > 0).then(|| {
            self.stats.committed_records.inc_by(pending.records);
            commit_list(&pending.next_offsets)
        })
    }

    /// Hands `pending` to Kafka as one asynchronous commit and empties it.
    fn commit(&self, pending: &mut Pending) {
        let list = commit_list(&pending.next_offsets);
        self.consumer.context().committing();
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) => {
                self.stats.committed_records.inc_by(pending.records);
            }
            Err(err) => {
                self.stats.commit_failures.inc();
                tracing::warn!(%err, records = pending.records, "commit failed; the records will be redelivered and deduplicated");
            }
        }
        *pending = Pending::default();
    }
}

/// Pushed records whose offsets are not committed yet.
#[derive(Debug, Default)]
struct Pending {
    next_offsets: BTreeMap<(String, i32), i64>,
    records: u64,
}

impl Pending {
    fn add(&mut self, batch: &Stored) {
        for (partition, next) in &batch.next_offsets {
            let at = self.next_offsets.entry(partition.clone()).or_insert(*next);
            *at = (*at).max(*next);
        }
        self.records += batch.records as u64;
    }
}

/// The offsets to commit: for each partition, the next record to read.
fn commit_list(next_offsets: &BTreeMap<(String, i32), i64>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in next_offsets {
        if let Err(err) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::error!(%topic, partition, %err, "cannot build commit list");
        }
    }
    list
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
