//! The packed-segment layout, built only to be measured against the one the
//! system uses (one document per message, `fishchat-conversations`).
//!
//! A stored batch becomes one document per Kafka partition it touches, holding
//! that partition's messages of the batch: `{_id, m: [{c, k, u, s, f, t, b,
//! ts, cm}, ...]}`. `c` is the conversation, `k` the conversation and the seq in one string
//! (`d:1:2#00000000000000000007`, the seq zero-padded so that string order is
//! seq order) and `u` the conversation and the server message id; then the
//! seq, sender, recipient, body, timestamp and client id. The fences are the
//! message layout's, as unique multikey indexes on `m.k` (no seq twice) and
//! `m.u` (no message twice). They are single keys because SecantusDB keys a
//! compound index over two fields of one array by every pairing of the
//! array's values, not element by element: a unique `(m.c, m.s)` refused a
//! segment whose conversation A had seq 2 because an earlier segment held A
//! at seq 1 beside B at seq 2. Segment ids grow in insert order, so a
//! conversation's segments in id order hold its seqs in order: a page reads
//! them through a third index, `(m.c, _id)`.
//!
//! What a production writer would need and this one lacks: recovery from a
//! fence (re-reading heads and finding which messages were already stored),
//! because the bench is the only writer and knows every head.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use fishchat_codec::pb;
use fishchat_conversations::{ConvKey, NewMessage, Target};
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

/// The segments' collection.
const SEGMENTS: &str = "chat_segments";

/// Segments in one database, and the heads this writer has given out.
pub struct Segments {
    segments: Collection<Document>,
    partitions: u64,
    next_id: i64,
    heads: HashMap<ConvKey, u64>,
}

impl Segments {
    /// Creates the fence indexes in `database`.
    pub async fn prepare(database: &Database, partitions: u64) -> anyhow::Result<Self> {
        let segments = database.collection::<Document>(SEGMENTS);
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        segments
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "m.k": 1 })
                    .options(unique("conv_seq"))
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "m.c": 1, "_id": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("conv_segment".to_owned())
                            .build(),
                    )
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "m.u": 1 })
                    .options(unique("conv_msg"))
                    .build(),
            ])
            .await
            .context("create the segment indexes")?;
        Ok(Self {
            segments,
            partitions: partitions.max(1),
            next_id: 0,
            heads: HashMap::new(),
        })
    }

    /// Stores `batch` as one segment per partition and returns each message's
    /// seq, in the order of `batch`.
    pub async fn insert(&mut self, batch: &[NewMessage]) -> anyhow::Result<Vec<u64>> {
        let mut seqs = Vec::with_capacity(batch.len());
        let mut by_partition: BTreeMap<u64, Vec<Bson>> = BTreeMap::new();
        for message in batch {
            let key = message.key();
            let head = self.heads.entry(key).or_default();
            *head += 1;
            seqs.push(*head);
            let partition = partition_of(key, self.partitions);
            by_partition
                .entry(partition)
                .or_default()
                .push(Bson::Document(entry(message, key, *head)?));
        }
        let documents: Vec<Document> = by_partition
            .into_values()
            .map(|entries| {
                self.next_id += 1;
                doc! { "_id": self.next_id, "m": entries }
            })
            .collect();
        self.segments
            .insert_many(documents)
            .await
            .context("insert segments")?;
        Ok(seqs)
    }

    /// Up to `limit` messages of `key` after `after` (ascending) or before
    /// `before` (descending), as SYNC and HISTORY page, and whether more follow.
    pub async fn page(
        &self,
        key: ConvKey,
        range: Range,
        limit: usize,
    ) -> anyhow::Result<(Vec<pb::StoredMessage>, bool)> {
        // The segment holding the page's first message, found by the fence
        // index with an exact key: SecantusDB bounds an index scan on a
        // multikey field by one side of a range only, also inside
        // `$elemMatch`, so a range over `m.k` would read most of the index.
        let first = match range {
            Range::After(after) => after.saturating_add(1),
            Range::Before(before) => before.saturating_sub(1),
        };
        let anchor = self
            .segments
            .find_one(doc! { "m.k": seq_key(key, first) })
            .projection(doc! { "_id": 1 })
            .await
            .context("find the first segment")?;
        let Some(anchor) = anchor else {
            return Ok((Vec::new(), false));
        };
        let anchor = anchor.get_i64("_id").context("segment id")?;
        let conv = key.to_string();
        let (ids, direction) = match range {
            Range::After(_) => (doc! { "$gte": anchor }, 1),
            Range::Before(_) => (doc! { "$lte": anchor }, -1),
        };
        // No hint: SecantusDB picks `(m.c, _id)` itself, and ran the same plan
        // ten times slower when it was named (15 ms against 1.2 ms a page).
        // Each segment found holds at least one of the conversation's messages
        // on the page's side, so limit + 1 segments always hold enough to fill
        // the page and tell whether more follow.
        let mut cursor = self
            .segments
            .find(doc! { "m.c": &conv, "_id": ids })
            .sort(doc! { "_id": direction })
            .limit(i64::try_from(limit)? + 1)
            .await
            .context("find segments")?;
        let mut messages = Vec::new();
        while let Some(segment) = cursor.try_next().await.context("read segments")? {
            for entry in segment.get_array("m").context("segment without m")? {
                let Bson::Document(entry) = entry else {
                    anyhow::bail!("segment entry is not a document");
                };
                if entry.get_str("c").context("entry without c")? != conv {
                    continue;
                }
                let message = stored(entry)?;
                let wanted = match range {
                    Range::After(after) => message.seq > after,
                    Range::Before(before) => message.seq < before,
                };
                if wanted {
                    messages.push(message);
                }
            }
        }
        match range {
            Range::After(_) => messages.sort_unstable_by_key(|m| m.seq),
            Range::Before(_) => messages.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq)),
        }
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        Ok((messages, has_more))
    }
}

/// Which side of a seq a page reads.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// Seqs above this one, ascending (SYNC).
    After(u64),
    /// Seqs below this one, descending (HISTORY).
    Before(u64),
}

/// The partition a conversation's records go to, as a keyed producer would
/// spread them (any stable hash serves the measurement).
fn partition_of(key: ConvKey, partitions: u64) -> u64 {
    let text = key.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % partitions
}

/// `key` and `seq` as one string whose order, within a conversation, is seq order.
fn seq_key(key: ConvKey, seq: u64) -> String {
    format!("{key}#{seq:020}")
}

fn to_i64(value: u64) -> anyhow::Result<i64> {
    i64::try_from(value).context("id of 2^63 or above")
}

fn entry(message: &NewMessage, key: ConvKey, seq: u64) -> anyhow::Result<Document> {
    let Target::ToUserId(to) = message.target else {
        anyhow::bail!("the layout bench writes direct messages only");
    };
    Ok(doc! {
        "c": key.to_string(),
        "k": seq_key(key, seq),
        "u": format!("{key}#{:020}", message.server_msg_id),
        "s": to_i64(seq)?,
        "f": to_i64(message.from_user_id)?,
        "t": to_i64(to)?,
        "b": Binary { subtype: BinarySubtype::Generic, bytes: message.body.to_vec() },
        "ts": message.timestamp_ms,
        "cm": &message.client_msg_id,
    })
}

fn stored(entry: &Document) -> anyhow::Result<pb::StoredMessage> {
    let id = |name: &str| -> anyhow::Result<u64> {
        let value = entry
            .get_i64(name)
            .with_context(|| format!("entry without {name}"))?;
        u64::try_from(value).with_context(|| format!("negative {name}"))
    };
    Ok(pb::StoredMessage {
        seq: id("s")?,
        server_msg_id: entry
            .get_str("u")
            .ok()
            .and_then(|u| u.rsplit_once('#'))
            .and_then(|(_, id)| id.parse().ok())
            .context("entry without a valid u")?,
        from_user_id: id("f")?,
        conversation: Some(Target::ToUserId(id("t")?)),
        body: entry
            .get_binary_generic("b")
            .context("entry without b")?
            .clone()
            .into(),
        timestamp_ms: entry.get_i64("ts").context("entry without ts")?,
        client_msg_id: entry.get_str("cm").context("entry without cm")?.to_owned(),
    })
}
