//! MongoDB smoke tests: FishChat stores users and message history in MongoDB and hands out
//! per-conversation sequence numbers with `$inc`. These check, on the real server, the three
//! properties that design leans on: unique indexes reject duplicates with the standard error code,
//! filtered and sorted reads come back in order, and concurrent `$inc`s never hand out the same
//! number twice.

use std::collections::HashSet;

use fishchat_e2e::{mongo, unique_name};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Database, IndexModel};

/// MongoDB's code for a write that breaks a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// A fresh database for one test, so runs and parallel tests never see each other's data.
async fn fresh_database(test: &str) -> Database {
    mongo()
        .await
        .database(&unique_name(&format!("fc-e2e-{test}")))
}

/// The server's error code when `err` is a plain write error.
fn write_error_code(err: &Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        _ => None,
    }
}

#[tokio::test]
async fn unique_index_rejects_duplicate_insert() {
    let db = fresh_database("unique").await;
    let users = db.collection::<Document>("users");
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! { "uid": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .expect("create unique index");

    users
        .insert_one(doc! { "uid": "alice", "name": "Alice" })
        .await
        .expect("first insert");
    let err = users
        .insert_one(doc! { "uid": "alice", "name": "Alice again" })
        .await
        .expect_err("a duplicate uid must be rejected");
    assert_eq!(
        write_error_code(&err),
        Some(DUPLICATE_KEY),
        "expected a duplicate-key write error, got {err}"
    );
    users
        .insert_one(doc! { "uid": "bob", "name": "Bob" })
        .await
        .expect("a different uid is accepted");
    assert_eq!(
        users.count_documents(doc! {}).await.expect("count"),
        2,
        "the rejected insert must not have been stored"
    );

    db.drop().await.expect("drop database");
}

#[tokio::test]
async fn find_with_filter_sort_and_limit_returns_documents_in_order() {
    let db = fresh_database("find").await;
    let messages = db.collection::<Document>("messages");
    // Two conversations, inserted out of order so sorting is the server's work, not ours.
    let mut docs = Vec::new();
    for seq in [7_i64, 2, 9, 4, 0, 8, 1, 6, 3, 5] {
        docs.push(doc! { "conv": "c1", "seq": seq, "body": format!("c1 message {seq}") });
        docs.push(doc! { "conv": "c2", "seq": seq, "body": format!("c2 message {seq}") });
    }
    messages.insert_many(docs).await.expect("insert messages");

    let newest_after_2: Vec<Document> = messages
        .find(doc! { "conv": "c1", "seq": { "$gt": 2_i64 } })
        .sort(doc! { "seq": -1 })
        .limit(4)
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read cursor");
    let seqs: Vec<i64> = newest_after_2
        .iter()
        .map(|d| d.get_i64("seq").expect("seq"))
        .collect();
    assert_eq!(seqs, [9, 8, 7, 6], "filter + descending sort + limit");
    for d in &newest_after_2 {
        assert_eq!(d.get_str("conv").expect("conv"), "c1", "filter leaked {d}");
    }

    let oldest: Vec<Document> = messages
        .find(doc! { "conv": "c2" })
        .sort(doc! { "seq": 1 })
        .limit(3)
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read cursor");
    let bodies: Vec<&str> = oldest
        .iter()
        .map(|d| d.get_str("body").expect("body"))
        .collect();
    assert_eq!(
        bodies,
        ["c2 message 0", "c2 message 1", "c2 message 2"],
        "ascending sort + limit"
    );

    db.drop().await.expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inc_hands_out_distinct_values() {
    const WRITERS: i64 = 8;
    const INCREMENTS: i64 = 50;

    let db = fresh_database("inc").await;
    let counters = db.collection::<Document>("counters");
    // The counter exists before the race: an upsert racing on a missing document is not what
    // this test is about (and SecantusDB can answer `None` to some callers in that case).
    counters
        .insert_one(doc! { "_id": "conv-1", "seq": 0_i64 })
        .await
        .expect("create counter");

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let counters = counters.clone();
        writers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..INCREMENTS {
                let after = counters
                    .find_one_and_update(
                        doc! { "_id": "conv-1" },
                        doc! { "$inc": { "seq": 1_i64 } },
                    )
                    .return_document(ReturnDocument::After)
                    .await
                    .expect("find_one_and_update")
                    .expect("the counter document exists");
                got.push(after.get_i64("seq").expect("seq"));
            }
            got
        }));
    }
    let mut handed_out = HashSet::new();
    for writer in writers {
        for value in writer.await.expect("writer task") {
            assert!(handed_out.insert(value), "value {value} handed out twice");
        }
    }
    let total = WRITERS * INCREMENTS;
    assert_eq!(
        handed_out,
        (1..=total).collect::<HashSet<_>>(),
        "callers must see exactly 1..={total}"
    );
    let stored = counters
        .find_one(doc! { "_id": "conv-1" })
        .await
        .expect("find counter")
        .expect("counter still exists");
    assert_eq!(stored.get_i64("seq").expect("seq"), total);

    db.drop().await.expect("drop database");
}
