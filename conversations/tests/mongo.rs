//! The conversation store against a real MongoDB-protocol server
//! (`FISHCHAT_MONGO`): seq allocation under concurrency, idempotent
//! redelivery, one document per message whatever the audience, visibility by
//! membership, read positions and SYNC_CONVERSATIONS, heads and member
//! records written one command per batch with every refusal reported. Each
//! test uses its own database and drops it at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::pb::{self, conversation_ref};
use fishchat_conversations::{
    ConvError, ConvKey, ConversationStore, HEADS, MAX_PAGE, MEMBERS, MESSAGES, NewMessage, Target,
    WriteProblem,
};
use fishchat_e2e::unique_name;
use mongodb::bson::{Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{Acknowledgment, ClientOptions, DatabaseOptions, WriteConcern};
use mongodb::{Client, Database};

/// A fresh database prepared for conversations, and a store over it.
async fn fresh() -> (Database, ConversationStore) {
    let db = fishchat_e2e::mongo()
        .await
        .database(&unique_name("conv-test"));
    let store = ConversationStore::new(&db);
    store.prepare().await.expect("prepare");
    (db, store)
}

/// A second, independent client (its own pool and caches) on the same database.
async fn second_writer(db: &Database) -> ConversationStore {
    ConversationStore::new(&fishchat_e2e::mongo().await.database(db.name()))
}

/// Commands a client sent, as (command name, collection), counted.
type Sent = Arc<Mutex<BTreeMap<(String, String), usize>>>;

/// A store over `db` through a client of its own that counts the commands it sends.
async fn counting_writer(db: &Database) -> (ConversationStore, Sent) {
    let sent = Sent::default();
    let mut options = ClientOptions::parse(fishchat_e2e::mongo_url())
        .await
        .expect("mongo url");
    let seen = sent.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            let collection = started
                .command
                .get_str(&started.command_name)
                .unwrap_or_default()
                .to_owned();
            *seen
                .lock()
                .expect("counter")
                .entry((started.command_name, collection))
                .or_default() += 1;
        }
    }));
    let client = Client::with_options(options).expect("client");
    (ConversationStore::new(&client.database(db.name())), sent)
}

/// The commands counted since the last call, which forgets them.
fn take(sent: &Sent) -> BTreeMap<(String, String), usize> {
    std::mem::take(&mut *sent.lock().expect("counter"))
}

/// Expected command counts: (command name, collection, count).
fn commands(expected: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    expected
        .iter()
        .map(|&(command, collection, n)| ((command.to_owned(), collection.to_owned()), n))
        .collect()
}

/// Every head document: conversation key → head.
async fn heads(db: &Database) -> HashMap<String, i64> {
    let mut cursor = db
        .collection::<Document>(HEADS)
        .find(doc! {})
        .await
        .expect("find heads");
    let mut out = HashMap::new();
    while cursor.advance().await.expect("next head") {
        let head = cursor.deserialize_current().expect("head document");
        out.insert(
            head.get_str("_id").expect("_id").to_owned(),
            head.get_i64("head").expect("head"),
        );
    }
    out
}

fn direct(id: u64, from: u64, to: u64) -> NewMessage {
    NewMessage {
        server_msg_id: id,
        from_user_id: from,
        target: Target::ToUserId(to),
        body: Bytes::from(format!("body {id}")),
        timestamp_ms: 1_700_000_000_000 + id as i64,
        client_msg_id: format!("c-{id}"),
    }
}

fn group(id: u64, from: u64, group_id: u64) -> NewMessage {
    NewMessage {
        target: Target::GroupId(group_id),
        ..direct(id, from, 0)
    }
}

fn peer(user: u64) -> pb::ConversationRef {
    pb::ConversationRef {
        id: Some(conversation_ref::Id::UserId(user)),
    }
}

/// Every message `user` sees in `key`, by syncing page after page.
async fn all_messages(
    store: &ConversationStore,
    user: u64,
    key: ConvKey,
) -> Vec<pb::StoredMessage> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.sync(user, key, after, MAX_PAGE).await.expect("sync");
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
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let ids: Vec<u64> = (0..125).map(|i| 1 + writer * 125 + i).collect();
            let mut seqs = Vec::new();
            // Batches of varying sizes, so single and multi-document inserts race.
            for chunk in ids.chunks(1 + writer as usize * 3) {
                let messages: Vec<NewMessage> = chunk.iter().map(|&id| group(id, 1, 7)).collect();
                seqs.extend(store.store(&messages).await.expect("store"));
            }
            seqs
        }));
    }
    let mut seqs = BTreeSet::new();
    for task in tasks {
        for seq in task.await.expect("writer") {
            assert!(seqs.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(seqs, (1..=1000).collect());
    first.joined(1, 7, 1).await.expect("join");
    let stored = all_messages(&first, 1, ConvKey::Group(7)).await;
    assert!(
        stored.is_empty(),
        "a member sees only what follows its join"
    );
    assert_eq!(first.max_seq(ConvKey::Group(7)).await.unwrap(), 1000);
    assert_eq!(first.head(ConvKey::Group(7)).await.unwrap(), 1000);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_redelivered_batch_gets_its_first_seqs_and_stores_nothing_new() {
    let (db, store) = fresh().await;
    let batch = [direct(1, 1, 2), direct(2, 2, 1), direct(3, 1, 2)];
    assert_eq!(store.store(&batch).await.unwrap(), [1, 2, 3]);
    // A crash before the commit: the same records, partly, again, and then more.
    let again = [direct(2, 2, 1), direct(3, 1, 2), direct(4, 1, 2)];
    assert_eq!(store.store(&again).await.unwrap(), [2, 3, 4]);
    let count = db
        .collection::<mongodb::bson::Document>(fishchat_conversations::MESSAGES)
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(count, 4);
    let seen_by_2: Vec<u64> = all_messages(&store, 2, ConvKey::direct(1, 2))
        .await
        .iter()
        .map(|m| m.server_msg_id)
        .collect();
    assert_eq!(seen_by_2, [1, 2, 3, 4]);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_message_is_one_document_whatever_the_audience_and_both_parties_get_a_record() {
    let (db, store) = fresh().await;
    for user in 1..=1000 {
        store.joined(user, 9, 1).await.unwrap();
    }
    store
        .store(&[group(1, 5, 9), direct(2, 5, 6)])
        .await
        .unwrap();
    let messages = db.collection::<mongodb::bson::Document>(fishchat_conversations::MESSAGES);
    assert_eq!(messages.count_documents(doc! {}).await.unwrap(), 2);
    let members = db.collection::<mongodb::bson::Document>(fishchat_conversations::MEMBERS);
    assert_eq!(
        members
            .count_documents(doc! { "conv": "d:5:6" })
            .await
            .unwrap(),
        2
    );
    for user in [5, 6] {
        let summaries = store
            .sync_conversations(user, &pb::SyncConversationsRequest::default())
            .await
            .unwrap();
        let direct = summaries
            .conversations
            .iter()
            .find(|s| {
                matches!(
                    s.conversation.as_ref().and_then(|c| c.id),
                    Some(conversation_ref::Id::UserId(_))
                )
            })
            .expect("the direct chat is listed");
        assert_eq!(direct.head_seq, 1);
        assert_eq!(direct.messages[0].server_msg_id, 2);
    }
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn members_see_from_their_join_to_their_leave() {
    let (db, store) = fresh().await;
    let key = ConvKey::Group(3);
    store.joined(1, 3, 1).await.unwrap();
    store
        .store(&[group(1, 1, 3), group(2, 1, 3)])
        .await
        .unwrap();
    assert_eq!(store.joined(2, 3, 2).await.unwrap(), 2, "joins after seq 2");
    store
        .store(&[group(3, 1, 3), group(4, 2, 3)])
        .await
        .unwrap();
    assert_eq!(store.left(2, 3, 3).await.unwrap(), 4);
    assert_eq!(
        store.left(2, 3, 3).await.unwrap(),
        4,
        "leaving twice changes nothing"
    );
    store.store(&[group(5, 1, 3)]).await.unwrap();
    let seqs = |page: Vec<pb::StoredMessage>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(all_messages(&store, 1, key).await), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(all_messages(&store, 2, key).await), [3, 4]);
    let history = store.history(2, key, 0, 10).await.unwrap();
    assert_eq!(seqs(history.messages), [4, 3]);
    assert!(matches!(
        store.sync(3, key, 0, 10).await,
        Err(ConvError::NotMember { user: 3, group: 3 })
    ));
    let page = store.history(1, key, 5, 2).await.unwrap();
    assert_eq!((seqs(page.messages), page.has_more), (vec![4, 3], true));
    // Joining again shows only what follows the new join.
    store.joined(2, 3, 4).await.unwrap();
    store.store(&[group(6, 1, 3)]).await.unwrap();
    assert_eq!(seqs(all_messages(&store, 2, key).await), [6]);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_late_membership_change_never_undoes_a_newer_one() {
    let (db, store) = fresh().await;
    let key = ConvKey::Group(4);
    store.joined(1, 4, 1).await.unwrap();
    store.joined(2, 4, 2).await.unwrap();
    store.store(&[group(1, 1, 4)]).await.unwrap();
    // User 2 left (epoch 3) and joined again (epoch 4), but manager hears the
    // join first and the leave late, as a retried call would arrive.
    assert_eq!(store.joined(2, 4, 4).await.unwrap(), 0, "still a member");
    assert_eq!(
        store.left(2, 4, 3).await.unwrap(),
        0,
        "the late leave is ignored"
    );
    store.store(&[group(2, 1, 4)]).await.unwrap();
    let seqs = |page: Vec<pb::StoredMessage>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(all_messages(&store, 2, key).await), [1, 2]);
    // A leave heard late, after the leave and join that followed it: ignored too.
    assert_eq!(store.left(2, 4, 5).await.unwrap(), 2);
    assert_eq!(
        store.joined(2, 4, 7).await.unwrap(),
        2,
        "joins again after seq 2"
    );
    assert_eq!(store.left(2, 4, 6).await.unwrap(), 0, "older than the join");
    assert_eq!(
        store.joined(2, 4, 5).await.unwrap(),
        2,
        "an old join changes nothing"
    );
    store.store(&[group(3, 1, 4)]).await.unwrap();
    assert_eq!(seqs(all_messages(&store, 2, key).await), [3]);
    // A late join after a newer leave changes nothing either.
    assert_eq!(store.left(2, 4, 9).await.unwrap(), 3);
    assert_eq!(store.joined(2, 4, 8).await.unwrap(), 2);
    store.store(&[group(4, 1, 4)]).await.unwrap();
    assert_eq!(seqs(all_messages(&store, 2, key).await), [3]);
    db.drop().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_positions_move_forward_only_and_unread_stays_exact_under_concurrent_sends() {
    let (db, store) = fresh().await;
    let key = ConvKey::direct(1, 2);
    store.store(&[direct(1, 1, 2)]).await.unwrap();
    let read = store.read(2, key, 1).await.unwrap();
    assert_eq!((read.read_seq, read.unread, read.moved), (1, 0, true));
    let again = store.read(2, key, 1).await.unwrap();
    assert!(!again.moved);
    let capped = store.read(2, key, 99).await.unwrap();
    assert_eq!(capped.read_seq, 1, "never past the head");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for id in 2..=200 {
                store.store(&[direct(id, 1, 2)]).await.unwrap();
            }
        })
    };
    let mut last = 1;
    while !writer.is_finished() {
        let outcome = store.read(2, key, last + 3).await.unwrap();
        assert!(
            outcome.read_seq >= last,
            "went back from {last} to {}",
            outcome.read_seq
        );
        last = outcome.read_seq;
    }
    writer.await.unwrap();
    let back = store.read(2, key, 5).await.unwrap();
    assert_eq!(back.read_seq, last, "an older read leaves the position");
    assert_eq!(back.unread, 200 - last);
    db.drop().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_conversations_returns_exactly_the_changed_ones_of_1000() {
    let (db, store) = fresh().await;
    let user = 1;
    let batch: Vec<NewMessage> = (0..1000).map(|i| direct(i + 1, 1000 + i, user)).collect();
    store.store(&batch).await.unwrap();
    let known: Vec<pb::KnownConversation> = (0..1000)
        .map(|i| pb::KnownConversation {
            conversation: Some(peer(1000 + i)),
            seq: 1,
            read_seq: 0,
        })
        .collect();
    let changed: Vec<u64> = (0..10).map(|i| 1000 + i * 97).collect();
    let news: Vec<NewMessage> = changed
        .iter()
        .enumerate()
        .flat_map(|(n, &from)| (0..3).map(move |k| direct(5000 + n as u64 * 10 + k, from, user)))
        .collect();
    store.store(&news).await.unwrap();
    let request = pb::SyncConversationsRequest {
        known,
        newest: 2,
        ..Default::default()
    };
    let reply = store.sync_conversations(user, &request).await.unwrap();
    assert!(!reply.has_more);
    let peers: Vec<u64> = reply
        .conversations
        .iter()
        .map(|s| match s.conversation.as_ref().and_then(|c| c.id) {
            Some(conversation_ref::Id::UserId(peer)) => peer,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(peers, changed);
    for summary in &reply.conversations {
        assert_eq!(
            (summary.head_seq, summary.unread, summary.read_seq),
            (4, 4, 0)
        );
        let seqs: Vec<u64> = summary.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [3, 4]);
        assert!(summary.has_gap, "seq 2 was left out");
    }
    // Paging walks the same set.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .sync_conversations(
                user,
                &pb::SyncConversationsRequest {
                    limit: 3,
                    after,
                    ..request.clone()
                },
            )
            .await
            .unwrap();
        after = page.conversations.last().and_then(|s| s.conversation);
        paged.extend(page.conversations);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(paged, reply.conversations);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_database_of_the_older_layout_is_refused_with_how_to_reset() {
    let db = fishchat_e2e::mongo()
        .await
        .database(&unique_name("conv-old"));
    db.collection::<mongodb::bson::Document>("messages")
        .insert_one(doc! { "inbox": 1_i64, "seq": 1_i64 })
        .await
        .unwrap();
    let err = ConversationStore::new(&db).prepare().await.unwrap_err();
    assert!(matches!(err, ConvError::OldLayout { .. }), "{err}");
    assert!(err.to_string().contains("scripts/stack purge"), "{err}");
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_batch_costs_one_update_command_per_collection_not_one_per_conversation() {
    let (db, _) = fresh().await;
    let (store, sent) = counting_writer(&db).await;
    let batch = [
        direct(1, 1, 2),
        direct(2, 3, 4),
        group(3, 1, 5),
        direct(4, 2, 1),
        group(5, 1, 6),
    ];
    assert_eq!(store.store(&batch).await.unwrap(), [1, 1, 1, 2, 1]);
    assert_eq!(
        take(&sent),
        commands(&[
            ("find", MESSAGES, 4),
            ("insert", MESSAGES, 1),
            ("update", MEMBERS, 1),
            ("update", HEADS, 1),
        ]),
        "the max seqs of conversations new to this writer are read once"
    );
    let again = [
        direct(6, 1, 2),
        group(7, 1, 5),
        direct(8, 4, 3),
        group(9, 1, 6),
    ];
    assert_eq!(store.store(&again).await.unwrap(), [3, 2, 2, 2]);
    assert_eq!(
        take(&sent),
        commands(&[("insert", MESSAGES, 1), ("update", HEADS, 1)]),
        "known conversations cost no read and no member write"
    );
    // 1,200 conversations: head statements are split 500 to a command, and the
    // messages go in four lanes of about 300, one insert each, side by side.
    let wide: Vec<NewMessage> = (0..1200).map(|i| group(100 + i, 1, 1000 + i)).collect();
    store.store(&wide).await.unwrap();
    let counted = take(&sent);
    assert_eq!(
        counted.get(&("update".to_owned(), HEADS.to_owned())),
        Some(&3)
    );
    assert_eq!(
        counted.get(&("insert".to_owned(), MESSAGES.to_owned())),
        Some(&4)
    );
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn heads_of_many_conversations_in_one_store_end_at_their_highest_seq() {
    let (db, store) = fresh().await;
    // 400 groups and 300 direct chats, 1 to 4 messages each, interleaved: 700
    // heads and 600 member records, more than one command of each.
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut batch = Vec::new();
    let mut id = 0;
    for round in 0..4 {
        for conv in 0..700u64 {
            if conv % 4 < round {
                continue;
            }
            id += 1;
            let message = if conv < 400 {
                group(id, 1, conv)
            } else {
                direct(id, conv, 10_000 + conv)
            };
            *expected.entry(message.key().to_string()).or_default() += 1;
            batch.push(message);
        }
    }
    let seqs = store.store(&batch).await.unwrap();
    for (message, seq) in batch.iter().zip(&seqs) {
        assert!(*seq as i64 <= expected[&message.key().to_string()]);
    }
    assert_eq!(heads(&db).await, expected);
    let members = db.collection::<Document>(MEMBERS);
    assert_eq!(members.count_documents(doc! {}).await.unwrap(), 600);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn heads_never_go_down_when_an_older_batch_is_redelivered() {
    let (db, store) = fresh().await;
    let older = [group(1, 1, 7), direct(2, 1, 2), group(3, 2, 7)];
    let newer = [group(4, 1, 7), direct(5, 2, 1), group(6, 1, 7)];
    assert_eq!(store.store(&older).await.unwrap(), [1, 1, 2]);
    assert_eq!(store.store(&newer).await.unwrap(), [3, 2, 4]);
    let expected = HashMap::from([("g:7".to_owned(), 4), ("d:1:2".to_owned(), 2)]);
    assert_eq!(heads(&db).await, expected);
    // The same writer, and one restarted with empty caches, get the older batch again.
    assert_eq!(store.store(&older).await.unwrap(), [1, 1, 2]);
    assert_eq!(heads(&db).await, expected);
    let restarted = second_writer(&db).await;
    assert_eq!(restarted.store(&older).await.unwrap(), [1, 1, 2]);
    assert_eq!(heads(&db).await, expected);
    assert_eq!(restarted.head(ConvKey::Group(7)).await.unwrap(), 4);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_refused_head_fails_the_store_and_the_head_never_leads_its_messages() {
    let (db, store) = fresh().await;
    // The server refuses head documents of group 13 only.
    db.create_collection(HEADS)
        .validator(doc! { "_id": { "$ne": "g:13" } })
        .await
        .expect("create heads with a validator");
    let batch = [group(1, 1, 12), group(2, 1, 13), group(3, 1, 14)];
    let err = store.store(&batch).await.unwrap_err();
    match &err {
        ConvError::Write {
            collection,
            problem:
                WriteProblem::Refused {
                    statements: 3,
                    refused: 1,
                    filter,
                    code: 121,
                    ..
                },
        } if collection == HEADS && filter.contains("g:13") => {}
        other => panic!("not the refused head: {other:?}"),
    }
    assert!(err.to_string().contains("1 of 3 upserts refused"), "{err}");
    // The other statements were applied; the refused head lags its message.
    assert_eq!(
        heads(&db).await,
        HashMap::from([("g:12".to_owned(), 1), ("g:14".to_owned(), 1)])
    );
    assert_eq!(store.max_seq(ConvKey::Group(13)).await.unwrap(), 1);
    // Once the server accepts it, the caller's retry completes the job.
    db.run_command(doc! { "collMod": HEADS, "validator": {} })
        .await
        .expect("drop the validator");
    assert_eq!(store.store(&batch).await.unwrap(), [1, 1, 1]);
    assert_eq!(store.head(ConvKey::Group(13)).await.unwrap(), 1);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_refused_member_record_fails_the_store_before_its_messages() {
    let (db, store) = fresh().await;
    db.run_command(doc! { "collMod": MEMBERS, "validator": { "user": { "$ne": 66_i64 } } })
        .await
        .expect("refuse records of user 66");
    let err = store
        .store(&[direct(1, 65, 66), direct(2, 1, 2)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConvError::Write { collection, problem: WriteProblem::Refused { statements: 4, refused: 1, code: 121, .. } }
                if collection == MEMBERS
        ),
        "{err:?}"
    );
    let messages = db.collection::<Document>(MESSAGES);
    assert_eq!(messages.count_documents(doc! {}).await.unwrap(), 0);
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn a_duplicate_key_on_a_head_is_retried_as_a_race_then_reported() {
    let (db, _) = fresh().await;
    // Two heads of the same value collide on this index, which no race would resolve.
    db.collection::<Document>(HEADS)
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "head": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .expect("unique head index");
    let (store, sent) = counting_writer(&db).await;
    let err = store
        .store(&[group(1, 1, 21), group(2, 1, 22)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConvError::Write { collection, problem: WriteProblem::Refused { statements: 1, refused: 1, code: 11000, .. } }
                if collection == HEADS
        ),
        "{err:?}"
    );
    assert_eq!(
        take(&sent).get(&("update".to_owned(), HEADS.to_owned())),
        Some(&3),
        "one command, then two retries of the refused statement"
    );
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn the_write_concern_goes_with_the_command_and_its_failure_is_an_error() {
    let (db, _) = fresh().await;
    // One server cannot acknowledge w: 2: it runs the statements and says so in
    // writeConcernError, which only reaches the reply if the concern was sent.
    let concern = WriteConcern::builder()
        .w(Acknowledgment::Nodes(2))
        .w_timeout(Duration::from_millis(100))
        .build();
    let options = DatabaseOptions::builder().write_concern(concern).build();
    let store = ConversationStore::new(
        &fishchat_e2e::mongo()
            .await
            .database_with_options(db.name(), options),
    );
    let err = store.store(&[direct(1, 1, 2)]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ConvError::Write { collection, problem: WriteProblem::Concern { .. } }
                if collection == MEMBERS
        ),
        "{err:?}"
    );
    db.drop().await.expect("drop");
}
