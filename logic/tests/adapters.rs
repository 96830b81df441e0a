//! logic's Redis and Kafka adapters against the real servers.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use fishchat_e2e::{kafka_admin, kafka_config, redis_url, unique_name, wait_until};
use fishchat_logic::adapters::kafka::{KafkaConfig, KafkaPublisher};
use fishchat_logic::adapters::redis::{IDS_PER_MS, RedisDedup, RedisIds};
use fishchat_logic::ports::{Accepted, Claim, Dedup, IdSource, Kind, Publisher};
use fishchat_rpc::events::{ChatEvent, chat_event::Conversation};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use redis::aio::ConnectionManager;

async fn manager() -> ConnectionManager {
    // Fails loudly, with the start hint, when Redis is down.
    fishchat_e2e::redis().await;
    let client = redis::Client::open(redis_url()).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_of_one_client_id_agree_on_the_first() {
    let prefix = format!("{}:", unique_name("logic-dedup"));
    let dedup = RedisDedup::new(manager().await, &prefix, 60);
    let claims = (0..16).map(|i| {
        let dedup = dedup.clone();
        tokio::spawn(async move {
            let candidate = Accepted {
                server_msg_id: 1000 + i,
                timestamp_ms: 5,
                fingerprint: 9,
            };
            claim_one(&dedup, 42, "cmid-1", candidate).await
        })
    });
    let winners: HashSet<Accepted> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let other = Accepted {
        server_msg_id: 7,
        timestamp_ms: 1,
        fingerprint: 3,
    };
    assert_eq!(claim_one(&dedup, 43, "cmid-1", other).await, other);
}

async fn claim_one(
    dedup: &RedisDedup,
    sender: u64,
    client_msg_id: &str,
    candidate: Accepted,
) -> Accepted {
    let claim = Claim {
        sender,
        client_msg_id,
        candidate,
    };
    dedup.claim(&[claim]).await.remove(0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_claims_is_settled_in_order() {
    let prefix = format!("{}:", unique_name("logic-dedup-batch"));
    let dedup = RedisDedup::new(manager().await, &prefix, 60);
    let accepted = |id| Accepted {
        server_msg_id: id,
        timestamp_ms: 5,
        fingerprint: id,
    };
    let earlier = claim_one(&dedup, 1, "old", accepted(1)).await;
    let claim = |sender, client_msg_id, id| Claim {
        sender,
        client_msg_id,
        candidate: accepted(id),
    };
    let got: Vec<Accepted> = dedup
        .claim(&[
            claim(1, "new", 10),
            claim(1, "old", 11),
            claim(1, "new", 12),
            claim(2, "new", 13),
        ])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, vec![accepted(10), earlier, accepted(10), accepted(13)]);
    assert!(dedup.claim(&[]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_id_sources_never_hand_out_the_same_id() {
    let prefix = format!("{}:", unique_name("logic-ids"));
    let conn = manager().await;
    let nodes = [
        std::sync::Arc::new(RedisIds::new(conn.clone(), &prefix, 100)),
        std::sync::Arc::new(RedisIds::new(conn, &prefix, 100)),
    ];
    let takers = (0..8).map(|i| {
        let ids = nodes[i % 2].clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..500 {
                got.push(ids.next_id().await.unwrap());
            }
            got
        })
    });
    let mut all = Vec::new();
    for got in futures::future::join_all(takers).await {
        all.extend(got.unwrap());
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 4000);
    assert!(!unique.contains(&0));
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_stay_above_every_earlier_id_when_redis_loses_the_counter() {
    let prefix = format!("{}:", unique_name("logic-ids-lost"));
    let mut conn = manager().await;
    let ids = RedisIds::new(conn.clone(), &prefix, 10);
    let mut before = Vec::new();
    for _ in 0..25 {
        before.push(ids.next_id().await.unwrap());
    }
    // The guarantee holds once the clock has passed the ids handed out (1024 per ms),
    // which a real Redis restart always gives: wait for that, not a fixed time.
    let highest = *before.iter().max().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the time floor to pass the ids given",
        async || {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            (now_ms * IDS_PER_MS > highest).then_some(())
        },
    )
    .await;
    // Redis restarts without the counter; a freshly started logic node asks again.
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}msg_id"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let restarted = RedisIds::new(conn, &prefix, 10);
    let after = restarted.next_id().await.unwrap();
    let highest = before.iter().max().unwrap();
    assert!(
        after > *highest,
        "id {after} reused the range up to {highest}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_reach_the_topic_in_key_order() {
    kafka_admin().await;
    let config = KafkaConfig {
        brokers: fishchat_e2e::kafka_brokers(),
        p2p_topic: unique_name("logic-p2p"),
        group_topic: unique_name("logic-group"),
        partitions: 4,
        ..KafkaConfig::default()
    };
    let publisher = KafkaPublisher::connect(config.clone()).await.unwrap();
    for i in 0..300u64 {
        let to = 1 + i % 3;
        let event = ChatEvent {
            server_msg_id: i,
            from_user_id: 99,
            conversation: Some(Conversation::ToUserId(to)),
            body: Bytes::from(format!("m{i}")),
            timestamp_ms: 1,
            client_msg_id: format!("c{i}"),
            recipients: vec![to, 99],
        };
        let key = format!("d:{to}:99");
        publisher.publish(Kind::Direct, &key, &event).await.unwrap();
    }

    let consumer: StreamConsumer = kafka_config()
        .set("group.id", unique_name("logic-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&config.p2p_topic]).unwrap();
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = 0;
    wait_until(Duration::from_secs(30), "300 events consumed", async || {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            return None;
        };
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let event = ChatEvent::decode(msg.payload().unwrap()).unwrap();
        let Some(Conversation::ToUserId(to)) = event.conversation else {
            panic!("not a direct message: {event:?}");
        };
        assert_eq!(key, format!("d:{to}:99"));
        by_key.entry(key).or_default().push(event.server_msg_id);
        seen += 1;
        (seen == 300).then_some(())
    })
    .await;
    for (key, ids) in by_key {
        assert_eq!(ids.len(), 100, "key {key}");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order"
        );
    }
}
