//! The inbox against a real MongoDB-protocol server (`FISHCHAT_MONGO`): seq
//! allocation under concurrency, idempotent redelivery, paging, cursors and
//! history. Each test uses its own database and drops it at the end.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use fishchat_e2e::unique_name;
use fishchat_inbox::{Conversation, MAX_PAGE, MongoInbox, NewMessage, Peer};
use mongodb::Database;

/// A fresh database with the indexes in place, and an inbox over it.
async fn fresh() -> (Database, MongoInbox) {
    let db = fishchat_e2e::mongo()
        .await
        .database(&unique_name("inbox-test"));
    let inbox = MongoInbox::new(&db);
    inbox.ensure_indexes().await.expect("create indexes");
    (db, inbox)
}

/// A second, independent client (its own pool and seq cache) on the same database.
async fn second_writer(db: &Database) -> MongoInbox {
    let other = fishchat_e2e::mongo().await.database(db.name());
    MongoInbox::new(&other)
}

fn direct(id: u64, from: u64, to: u64) -> NewMessage {
    NewMessage {
        server_msg_id: id,
        from_user_id: from,
        conversation: Conversation::ToUserId(to),
        body: Bytes::from(format!("body {id}")),
        timestamp_ms: 1_700_000_000_000 + id as i64,
        client_msg_id: format!("c-{id}"),
    }
}

fn group(id: u64, from: u64, group_id: u64) -> NewMessage {
    NewMessage {
        conversation: Conversation::GroupId(group_id),
        ..direct(id, from, 0)
    }
}

/// Every message of `user`'s inbox, by syncing page after page.
async fn all_messages(inbox: &MongoInbox, user: u64) -> Vec<fishchat_codec::pb::StoredMessage> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = inbox.sync(user, after, MAX_PAGE).await.expect("sync");
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        out.extend(page.messages);
        if !page.has_more {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_fill_seqs_1_to_1000_exactly_once() {
    let (db, first) = fresh().await;
    let second = second_writer(&db).await;
    let user = 42;
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let inbox = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let ids: Vec<u64> = (0..125).map(|i| 1 + writer * 125 + i).collect();
            let mut seqs = Vec::new();
            // Batches of varying sizes, so single and multi-document inserts race.
            for chunk in ids.chunks(1 + writer as usize * 3) {
                let items: Vec<_> = chunk
                    .iter()
                    .map(|&id| (user, direct(id, 7, user)))
                    .collect();
                seqs.extend(inbox.store(&items).await.expect("store"));
            }
            (ids, seqs)
        }));
    }
    // A client syncing while the writers run must never see a gap: every page
    // starts right after what it already has and is contiguous.
    let reader = {
        let inbox = first.clone();
        tokio::spawn(async move {
            let mut after = 0;
            while after < 1000 {
                let page = inbox.sync(user, after, 37).await.expect("sync");
                for m in &page.messages {
                    assert_eq!(m.seq, after + 1, "a reader saw a gap");
                    after = m.seq;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seq_of = HashMap::new();
    for task in tasks {
        let (ids, seqs) = task.await.expect("writer panicked");
        assert_eq!(ids.len(), seqs.len());
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs go up"
        );
        seq_of.extend(ids.into_iter().zip(seqs));
    }
    tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the reader never reached seq 1000")
        .expect("reader panicked");
    let stored = all_messages(&first, user).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    let ids: BTreeSet<u64> = stored.iter().map(|m| m.server_msg_id).collect();
    assert_eq!(ids, (1..=1000).collect());
    for m in &stored {
        assert_eq!(
            seq_of[&m.server_msg_id], m.seq,
            "reported seq matches the stored one"
        );
    }
    assert_eq!(first.max_seq(user).await.unwrap(), 1000);
    db.drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redelivery_stores_each_message_once() {
    let (db, first) = fresh().await;
    let second = second_writer(&db).await;
    let user = 5;
    let items: Vec<_> = (1..=100).map(|id| (user, direct(id, 9, user))).collect();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let inbox = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let items = items.clone();
        tasks.push(tokio::spawn(async move {
            inbox.store(&items).await.expect("store")
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("writer panicked"));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every writer got the same seqs"
    );
    assert_eq!(answers[0], (1..=100).collect::<Vec<_>>());
    assert_eq!(all_messages(&first, user).await.len(), 100);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn storing_again_returns_the_first_seq_and_adds_nothing() {
    let (db, first) = fresh().await;
    let user = 3;
    let batch: Vec<_> = (10..15).map(|id| (user, direct(id, 8, user))).collect();
    let seqs = first.store(&batch).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(first.store(&batch).await.unwrap(), seqs, "same writer");
    let second = second_writer(&db).await;
    assert_eq!(
        second.store(&batch[2..3]).await.unwrap(),
        vec![3],
        "other writer"
    );
    // Old and new mixed: the old keep their seqs, the new ones continue after the max.
    let mixed = vec![
        batch[4].clone(),
        (user, direct(20, 8, user)),
        batch[0].clone(),
    ];
    assert_eq!(second.store(&mixed).await.unwrap(), vec![5, 6, 1]);
    // The same message twice in one batch is stored once.
    let twice = vec![(user, direct(21, 8, user)), (user, direct(21, 8, user))];
    assert_eq!(first.store(&twice).await.unwrap(), vec![7, 7]);
    assert_eq!(first.max_seq(user).await.unwrap(), 7);
    assert_eq!(all_messages(&first, user).await.len(), 7);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn a_stale_hint_costs_a_retry_not_a_wrong_seq() {
    let (db, first) = fresh().await;
    let second = second_writer(&db).await;
    let user = 4;
    let batch = |ids: std::ops::Range<u64>| -> Vec<_> {
        ids.map(|id| (user, direct(id, 8, user))).collect()
    };
    assert_eq!(
        first.store(&batch(1..6)).await.unwrap(),
        vec![1, 2, 3, 4, 5]
    );
    // The second writer moves the inbox on; the first one's hint still says 5.
    assert_eq!(
        second.store(&batch(6..11)).await.unwrap(),
        vec![6, 7, 8, 9, 10]
    );
    assert_eq!(first.store(&batch(11..13)).await.unwrap(), vec![11, 12]);
    let seqs: Vec<u64> = all_messages(&first, user)
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn a_batch_keeps_its_order_per_inbox() {
    let (db, inbox) = fresh().await;
    let (alice, bob, carol) = (1, 2, 3);
    // A direct message lands in the recipient's and the sender's inbox; a
    // group message in every member's.
    let items = vec![
        (bob, direct(100, alice, bob)),
        (alice, direct(100, alice, bob)),
        (bob, direct(101, carol, bob)),
        (carol, direct(101, carol, bob)),
        (alice, group(102, carol, 9)),
        (bob, group(102, carol, 9)),
        (carol, group(102, carol, 9)),
        (bob, direct(103, alice, bob)),
        (alice, direct(103, alice, bob)),
    ];
    let seqs = inbox.store(&items).await.unwrap();
    assert_eq!(seqs, vec![1, 1, 2, 1, 2, 3, 2, 4, 3]);
    let bobs: Vec<u64> = all_messages(&inbox, bob)
        .await
        .iter()
        .map(|m| m.server_msg_id)
        .collect();
    assert_eq!(bobs, vec![100, 101, 102, 103]);
    let stored = &all_messages(&inbox, alice).await[0];
    assert_eq!(stored.from_user_id, alice);
    assert_eq!(stored.conversation, Some(Conversation::ToUserId(bob)));
    assert_eq!(stored.body, Bytes::from("body 100"));
    assert_eq!(stored.client_msg_id, "c-100");
    db.drop().await.unwrap();
}

#[tokio::test]
async fn sync_pages_without_overlap_or_gap() {
    let (db, inbox) = fresh().await;
    let user = 11;
    let items: Vec<_> = (1..=250).map(|id| (user, direct(id, 2, user))).collect();
    inbox.store(&items).await.unwrap();
    let mut after = 0;
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = inbox.sync(user, after, 100).await.unwrap();
        sizes.push((page.messages.len(), page.has_more));
        seen.extend(page.messages.iter().map(|m| m.seq));
        after = page.messages.last().map_or(after, |m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(sizes, vec![(100, true), (100, true), (50, false)]);
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());
    assert_eq!(inbox.sync(user, 250, 100).await.unwrap().messages.len(), 0);
    assert_eq!(
        inbox.sync(user, 0, 0).await.unwrap().messages.len(),
        100,
        "0 means the default"
    );
    assert_eq!(
        inbox.sync(user, u64::MAX, 10).await.unwrap().messages.len(),
        0
    );
    db.drop().await.unwrap();
}

#[tokio::test]
async fn limits_above_the_cap_are_capped() {
    let (db, inbox) = fresh().await;
    let user = 12;
    let items: Vec<_> = (1..=600).map(|id| (user, direct(id, 2, user))).collect();
    inbox.store(&items).await.unwrap();
    let page = inbox.sync(user, 0, 10_000).await.unwrap();
    assert_eq!(page.messages.len(), MAX_PAGE as usize);
    assert!(page.has_more);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn cursors_move_forward_only_and_count_unread() {
    let (db, inbox) = fresh().await;
    let user = 21;
    let items: Vec<_> = (1..=80).map(|id| (user, direct(id, 2, user))).collect();
    inbox.store(&items).await.unwrap();
    assert_eq!(inbox.cursor(user, "phone").await.unwrap(), 0);
    assert_eq!(inbox.unread(user, "phone").await.unwrap(), 80);
    assert_eq!(inbox.ack(user, "phone", 50).await.unwrap(), 50);
    assert_eq!(inbox.ack(user, "phone", 40).await.unwrap(), 50);
    assert_eq!(inbox.cursor(user, "phone").await.unwrap(), 50);
    assert_eq!(inbox.unread(user, "phone").await.unwrap(), 30);
    assert_eq!(inbox.cursor(user, "laptop").await.unwrap(), 0, "per device");
    assert_eq!(
        inbox.ack(user, "laptop", 1_000).await.unwrap(),
        80,
        "capped at the max"
    );
    assert_eq!(inbox.unread(user, "laptop").await.unwrap(), 0);
    db.drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_acks_agree() {
    let (db, inbox) = fresh().await;
    let user = 22;
    let items: Vec<_> = (1..=20).map(|id| (user, direct(id, 2, user))).collect();
    inbox.store(&items).await.unwrap();
    let tasks: Vec<_> = (1..=8)
        .map(|n| {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.ack(user, "tab", n).await.expect("ack") })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(inbox.cursor(user, "tab").await.unwrap(), 8);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn history_pages_backwards_per_conversation() {
    let (db, inbox) = fresh().await;
    let (me, friend, other) = (1, 2, 3);
    let mut items = Vec::new();
    for id in 1..=30u64 {
        let message = match id % 3 {
            0 => direct(id, me, friend),
            1 => direct(id, friend, me),
            _ => direct(id, other, me),
        };
        items.push((me, message));
        items.push((me, group(1000 + id, other, 77)));
    }
    inbox.store(&items).await.unwrap();

    let mut before = 0;
    let mut pages = Vec::new();
    let mut ids = Vec::new();
    loop {
        let page = inbox
            .history(me, Peer::User(friend), before, 8)
            .await
            .unwrap();
        pages.push((page.messages.len(), page.has_more));
        ids.extend(page.messages.iter().map(|m| m.server_msg_id));
        assert!(
            page.messages.windows(2).all(|w| w[0].seq > w[1].seq),
            "newest first"
        );
        before = page.messages.last().map_or(before, |m| m.seq);
        if !page.has_more {
            break;
        }
    }
    // Both directions with the friend: ids 1..=30 with id % 3 != 2, newest first.
    let expected: Vec<u64> = (1..=30).rev().filter(|id| id % 3 != 2).collect();
    assert_eq!(ids, expected);
    assert_eq!(pages, vec![(8, true), (8, true), (4, false)]);

    let groups = inbox.history(me, Peer::Group(77), 0, 100).await.unwrap();
    assert_eq!(groups.messages.len(), 30);
    assert!(!groups.has_more);
    assert_eq!(groups.messages[0].server_msg_id, 1030);
    let others = inbox.history(me, Peer::User(other), 0, 100).await.unwrap();
    assert_eq!(others.messages.len(), 10);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn ids_of_2_pow_63_and_above_are_refused() {
    let (db, inbox) = fresh().await;
    let err = inbox
        .store(&[(1 << 63, direct(1, 2, 3))])
        .await
        .expect_err("huge inbox id accepted");
    assert!(
        matches!(err, fishchat_inbox::InboxError::IdOutOfRange(_)),
        "{err}"
    );
    assert!(inbox.store(&[(3, direct(u64::MAX, 2, 3))]).await.is_err());
    assert!(inbox.max_seq(u64::MAX).await.is_err());
    assert_eq!(inbox.max_seq(3).await.unwrap(), 0, "nothing stored");
    db.drop().await.unwrap();
}

/// The server itself must enforce a unique index when inserts race: the whole
/// seq scheme rests on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_enforces_unique_indexes_under_racing_inserts() {
    use mongodb::bson::doc;
    let (db, _inbox) = fresh().await;
    let messages = db.collection::<mongodb::bson::Document>(fishchat_inbox::MESSAGES);
    let tasks: Vec<_> = (0..8i64)
        .map(|writer| {
            let messages = messages.clone();
            tokio::spawn(async move {
                let mut won = 0;
                for seq in 1..=200i64 {
                    let doc =
                        doc! { "inbox": 1i64, "seq": seq, "server_msg_id": writer * 1000 + seq };
                    if messages.insert_one(doc).await.is_ok() {
                        won += 1;
                    }
                }
                won
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += task.await.unwrap();
    }
    assert_eq!(won, 200, "exactly one insert per seq succeeds");
    assert_eq!(messages.count_documents(doc! {}).await.unwrap(), 200);
    db.drop().await.unwrap();
}
