//! The registry over the real MongoDB and Redis: the adapters keep the
//! domain's promises on the servers we run.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{LONG_TTL, test_env};
use fishchat_codec::ErrorCode;
use fishchat_register::Error;
use fishchat_register::model::Session;
use futures::future::join_all;
use mongodb::bson::{Document, doc};
use redis::AsyncCommands;

#[tokio::test]
async fn duplicate_names_are_refused_and_only_a_hash_is_stored() {
    let env = test_env("users", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "s3cret-pw").await.expect("create");
    let err = r
        .create_user("alice", "other")
        .await
        .expect_err("a taken name must be refused");
    assert!(matches!(err, Error::NameTaken(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    let bob = r.create_user("bob", "pw").await.expect("create");
    assert_ne!(alice, bob);

    let raw = env
        .db
        .collection::<Document>("users")
        .find_one(doc! { "name": "alice" })
        .await
        .expect("find")
        .expect("alice stored");
    let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "name", "password_hash"], "{raw}");
    assert_eq!(
        raw.get_i64("_id").expect("_id"),
        i64::try_from(alice).expect("id")
    );
    let hash = raw.get_str("password_hash").expect("hash");
    assert!(
        hash.starts_with("$argon2id$"),
        "not an argon2id PHC string: {hash}"
    );
    assert!(
        !raw.to_string().contains("s3cret-pw"),
        "clear password stored: {raw}"
    );
    assert_eq!(r.get_user(alice).await.expect("get").name, "alice");
    assert!(matches!(
        r.get_user(987_654).await,
        Err(Error::UnknownUser(987_654))
    ));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_distinct_ids() {
    let env = test_env("ids", LONG_TTL).await;
    let names: Vec<String> = (0..16).map(|i| format!("user-{i}")).collect();
    let ids = join_all(names.iter().map(|n| env.registry.create_user(n, "pw"))).await;
    let ids: HashSet<u64> = ids.into_iter().map(|id| id.expect("create")).collect();
    assert_eq!(ids.len(), names.len(), "ids handed out twice: {ids:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn login_checks_the_password() {
    let env = test_env("login", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "right").await.expect("create");
    let login = r.login("alice", "right").await.expect("login");
    assert_eq!(login.user_id, alice);
    assert!(login.token.len() >= 32, "token too short for 128 bits");
    for (name, password) in [("alice", "wrong"), ("alice", ""), ("nobody", "right")] {
        let err = r.login(name, password).await.expect_err("refused");
        assert!(
            matches!(err, Error::BadCredentials),
            "{name}/{password}: {err}"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn tokens_verify_until_revoked() {
    let env = test_env("tokens", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let first = r.login("alice", "pw").await.expect("login");
    let second = r.login("alice", "pw").await.expect("login again");
    assert_ne!(first.token, second.token);
    assert_eq!(
        r.verify_token(&first.token).await.expect("verify").user_id,
        alice
    );

    let mut conn = fishchat_e2e::redis().await;
    let pttl: i64 = conn
        .pttl(env.redis.token_key(&first.token))
        .await
        .expect("PTTL");
    // Only a digest of the token is stored: Redis's data holds no live token.
    let keys: Vec<String> = conn.keys(format!("{}*", env.prefix)).await.expect("KEYS");
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| !k.contains(&first.token) && !k.contains(&second.token)),
        "a raw token is in a key: {keys:?}"
    );
    let kept = LONG_TTL + Duration::from_secs(60);
    assert!(
        pttl > 0 && pttl <= i64::try_from(kept.as_millis()).expect("ms"),
        "token key must expire after ttl + grace, PTTL {pttl}"
    );

    r.revoke_token(&first.token).await.expect("revoke");
    assert!(matches!(
        r.verify_token(&first.token).await,
        Err(Error::BadToken)
    ));
    assert_eq!(
        r.verify_token(&second.token)
            .await
            .expect("other token")
            .user_id,
        alice,
        "revoking one token leaves the others"
    );
    assert!(matches!(
        r.verify_token(&"0".repeat(64)).await,
        Err(Error::BadToken)
    ));
    env.cleanup().await;
}

#[tokio::test]
async fn an_expired_token_is_reported_as_expired() {
    let env = test_env("expiry", Duration::from_millis(800)).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let login = r.login("alice", "pw").await.expect("login");
    assert_eq!(
        r.verify_token(&login.token).await.expect("fresh").user_id,
        alice
    );
    fishchat_e2e::wait_until(
        Duration::from_secs(5),
        "the token to expire",
        async || match r.verify_token(&login.token).await {
            Ok(_) => None,
            Err(Error::TokenExpired) => Some(()),
            Err(err) => panic!("an expired token must be TOKEN_EXPIRED, got {err}"),
        },
    )
    .await;
    r.revoke_token(&login.token).await.expect("revoke");
    assert!(matches!(
        r.verify_token(&login.token).await,
        Err(Error::BadToken)
    ));
    env.cleanup().await;
}

fn session(user: u64, device: &str, node: &str, conn_id: u64) -> Session {
    Session {
        user_id: user,
        device_id: device.into(),
        access_node_id: node.into(),
        push_addr: format!("{node}.local:7001"),
        conn_id,
    }
}

#[tokio::test]
async fn heartbeats_keep_the_current_connection_and_flag_a_replaced_one() {
    let env = test_env("touch", LONG_TTL).await;
    let r = &env.registry;
    let first = session(7, "phone", "access-a", 1);
    // No session yet (say, Redis lost it): a heartbeat records it again.
    assert!(r.touch_session(&first).await.expect("touch"));
    assert_eq!(
        r.list_sessions(&[7]).await.expect("list"),
        std::slice::from_ref(&first)
    );
    assert!(r.touch_session(&first).await.expect("touch again"));
    let second = session(7, "phone", "access-b", 2);
    assert_eq!(
        r.record_session(&second).await.expect("new login"),
        Some(first.clone())
    );
    // The replaced connection learns it is no longer current and changes nothing.
    assert!(!r.touch_session(&first).await.expect("stale touch"));
    assert!(r.touch_session(&second).await.expect("current touch"));
    assert_eq!(r.list_sessions(&[7]).await.expect("list"), [second]);
    env.cleanup().await;
}

#[tokio::test]
async fn sessions_replace_remove_only_when_matching_and_list() {
    let env = test_env("sessions", LONG_TTL).await;
    let r = &env.registry;
    let phone1 = session(1, "phone", "access-a", 10);
    assert_eq!(r.record_session(&phone1).await.expect("record"), None);
    // The same device logs in again on another node: the old connection is returned to kick.
    let phone2 = session(1, "phone", "access-b", u64::MAX);
    assert_eq!(
        r.record_session(&phone2).await.expect("replace"),
        Some(phone1.clone())
    );
    // A late close of the old connection must not remove the new login.
    assert!(
        !r.remove_session(1, "phone", "access-a", 10)
            .await
            .expect("remove")
    );
    assert!(
        !r.remove_session(1, "phone", "access-b", 10)
            .await
            .expect("remove")
    );
    let laptop = session(1, "laptop", "access-a", 11);
    let other = session(2, "phone", "access-a", 12);
    r.record_session(&laptop).await.expect("record");
    r.record_session(&other).await.expect("record");

    let mut listed = r.list_sessions(&[1, 2, 3]).await.expect("list");
    listed.sort_by(|a, b| (a.user_id, &a.device_id).cmp(&(b.user_id, &b.device_id)));
    assert_eq!(listed, [laptop.clone(), phone2.clone(), other.clone()]);
    assert!(r.list_sessions(&[]).await.expect("empty").is_empty());

    assert!(
        r.remove_session(1, "phone", "access-b", u64::MAX)
            .await
            .expect("remove")
    );
    assert!(
        !r.remove_session(1, "phone", "access-b", u64::MAX)
            .await
            .expect("again")
    );
    assert_eq!(r.list_sessions(&[1]).await.expect("list"), [laptop]);
    env.cleanup().await;
}

#[tokio::test]
async fn groups_members_and_user_groups() {
    let env = test_env("groups", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let bob = r.create_user("bob", "pw").await.expect("create");
    let carol = r.create_user("carol", "pw").await.expect("create");

    let friends = r.create_group(alice, "friends").await.expect("group");
    assert_eq!(friends.owner_id, alice);
    assert_eq!(r.group_members(friends.id).await.expect("members"), [alice]);
    let work = r.create_group(bob, "work").await.expect("group");
    assert_ne!(friends.id, work.id);

    assert!(r.join_group(friends.id, carol).await.expect("join"));
    assert!(r.join_group(friends.id, bob).await.expect("join"));
    assert!(!r.join_group(friends.id, bob).await.expect("join twice"));
    assert_eq!(
        r.group_members(friends.id).await.expect("members"),
        [alice, bob, carol]
    );
    let bobs: Vec<u64> = r
        .user_groups(bob)
        .await
        .expect("groups")
        .iter()
        .map(|g| g.id)
        .collect();
    let mut expected = vec![friends.id, work.id];
    expected.sort_unstable();
    assert_eq!(bobs, expected);

    assert!(r.quit_group(friends.id, bob).await.expect("quit"));
    assert!(!r.quit_group(friends.id, bob).await.expect("quit twice"));
    assert_eq!(r.user_groups(bob).await.expect("groups"), [work]);
    assert!(r.user_groups(carol).await.expect("groups").len() == 1);

    let missing = friends.id + 1_000;
    for err in [
        r.join_group(missing, bob).await.expect_err("unknown group"),
        r.quit_group(missing, bob).await.expect_err("unknown group"),
        r.group_members(missing).await.expect_err("unknown group"),
    ] {
        assert_eq!(err.code(), ErrorCode::UnknownGroup, "{err}");
    }
    for err in [
        r.join_group(friends.id, 999_999)
            .await
            .expect_err("unknown user"),
        r.create_group(999_999, "g")
            .await
            .expect_err("unknown user"),
        r.user_groups(999_999).await.expect_err("unknown user"),
        r.join_group(friends.id, u64::MAX)
            .await
            .expect_err("unknown user"),
    ] {
        assert_eq!(err.code(), ErrorCode::UnknownUser, "{err}");
    }
    assert_eq!(
        r.create_group(alice, "").await.expect_err("empty").code(),
        ErrorCode::InvalidArgument
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_logins_of_one_device_replace_each_other_exactly_once() {
    let env = test_env("race", LONG_TTL).await;
    let r = &env.registry;
    let attempts: Vec<Session> = (1..=12)
        .map(|c| session(7, "phone", "access-a", c))
        .collect();
    let replies = join_all(attempts.iter().map(|s| r.record_session(s))).await;
    let replaced: Vec<u64> = replies
        .into_iter()
        .filter_map(|reply| reply.expect("record").map(|old| old.conn_id))
        .collect();
    // The records happen one after another: every connection but the last one
    // stored is handed back exactly once, to be kicked.
    let listed = r.list_sessions(&[7]).await.expect("list");
    assert_eq!(listed.len(), 1);
    let survivor = listed[0].conn_id;
    let mut kicked = replaced.clone();
    kicked.sort_unstable();
    let expected: Vec<u64> = (1..=12).filter(|c| *c != survivor).collect();
    assert_eq!(
        kicked, expected,
        "replaced: {replaced:?}, survivor {survivor}"
    );
    env.cleanup().await;
}
