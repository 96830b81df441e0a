//! The registry over the real MongoDB and Redis: the adapters keep the
//! domain's promises on the servers we run.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{LONG_TTL, test_env, test_env_limited};
use fishchat_codec::ErrorCode;
use fishchat_register::Error;
use fishchat_register::membership::Change;
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
    let login = r.login("alice", "right", None).await.expect("login");
    assert_eq!(login.user_id, alice);
    assert!(login.token.len() >= 32, "token too short for 128 bits");
    for (name, password) in [("alice", "wrong"), ("alice", ""), ("nobody", "right")] {
        let err = r.login(name, password, None).await.expect_err("refused");
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
    let first = r.login("alice", "pw", None).await.expect("login");
    let second = r.login("alice", "pw", None).await.expect("login again");
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
    let login = r.login("alice", "pw", None).await.expect("login");
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
    let touch =
        |sessions: Vec<Session>| async move { r.touch_sessions(&sessions).await.expect("touch") };
    // No session yet (say, Redis lost it): a heartbeat records it again.
    assert_eq!(touch(vec![first.clone()]).await, [true]);
    assert_eq!(
        r.list_sessions(&[7]).await.expect("list"),
        std::slice::from_ref(&first)
    );
    assert_eq!(touch(vec![first.clone()]).await, [true]);
    let second = session(7, "phone", "access-b", 2);
    assert_eq!(
        r.record_session(&second).await.expect("new login"),
        Some(first.clone())
    );
    // In one batch, the replaced connection learns it is no longer current
    // and changes nothing; the current one and another user's are kept.
    let other = session(8, "laptop", "access-a", 3);
    assert_eq!(
        touch(vec![first, second.clone(), other.clone()]).await,
        [false, true, true]
    );
    assert_eq!(r.list_sessions(&[7]).await.expect("list"), [second]);
    assert_eq!(r.list_sessions(&[8]).await.expect("list"), [other]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_batch_of_heartbeats_larger_than_one_script_run_touches_each_in_order() {
    let env = test_env("touch-many", LONG_TTL).await;
    let r = &env.registry;
    let beats: Vec<Session> = (1..=1_200)
        .map(|user| session(user, "phone", "access-a", user))
        .collect();
    let taken = session(600, "phone", "access-b", 9_999);
    r.record_session(&taken).await.expect("record");
    let current = r.touch_sessions(&beats).await.expect("touch");
    let expected: Vec<bool> = (1..=1_200).map(|user| user != 600).collect();
    assert_eq!(current, expected);
    let users: Vec<u64> = (1..=1_200).collect();
    assert_eq!(
        r.list_sessions(&users).await.expect("list").len(),
        1_200,
        "every device has one session: 1,199 re-recorded and the one that was taken"
    );
    assert_eq!(r.list_sessions(&[600]).await.expect("list"), [taken]);
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

/// Membership changes reach the log under epochs from MongoDB's counter, each
/// larger than the last, so manager can tell a late call from a newer one.
#[tokio::test]
async fn membership_changes_are_told_under_growing_epochs() {
    let env = test_env("epochs", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let bob = r.create_user("bob", "pw").await.expect("create");
    let group = r.create_group(alice, "g", true).await.expect("group");
    for _ in 0..3 {
        r.join_group(group.id, bob).await.expect("join");
        r.leave_group(group.id, bob).await.expect("leave");
    }
    let epochs = env.log.epochs();
    assert_eq!(epochs.len(), 7, "{:?}", env.log.changes());
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

#[tokio::test]
async fn groups_members_and_user_groups() {
    let env = test_env("groups", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let bob = r.create_user("bob", "pw").await.expect("create");
    let carol = r.create_user("carol", "pw").await.expect("create");

    let friends = r.create_group(alice, "friends", true).await.expect("group");
    assert_eq!(friends.owner_id, alice);
    assert_eq!(r.group(friends.id).await.expect("group"), friends);
    assert_eq!(r.group_members(friends.id).await.expect("members"), [alice]);
    let work = r.create_group(bob, "work", false).await.expect("group");
    assert_ne!(friends.id, work.id);
    assert!(!r.group(work.id).await.expect("group").open);

    assert!(r.join_group(friends.id, carol).await.expect("join").member);
    assert!(r.join_group(friends.id, bob).await.expect("join").changed);
    assert!(
        !r.join_group(friends.id, bob)
            .await
            .expect("join twice")
            .changed
    );
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

    // A request to join a closed group is no membership.
    assert!(!r.join_group(work.id, carol).await.expect("ask").member);
    assert_eq!(r.group_members(work.id).await.expect("members"), [bob]);
    assert_eq!(
        r.join_requests(work.id, bob).await.expect("requests"),
        [carol]
    );
    assert_eq!(r.user_groups(carol).await.expect("groups").len(), 1);

    assert!(r.leave_group(friends.id, bob).await.expect("leave"));
    assert!(!r.leave_group(friends.id, bob).await.expect("leave twice"));
    assert_eq!(r.user_groups(bob).await.expect("groups"), [work]);

    let missing = friends.id + 1_000;
    for err in [
        r.join_group(missing, bob).await.expect_err("unknown group"),
        r.leave_group(missing, bob)
            .await
            .expect_err("unknown group"),
        r.group_members(missing).await.expect_err("unknown group"),
    ] {
        assert_eq!(err.code(), ErrorCode::UnknownGroup, "{err}");
    }
    for err in [
        r.join_group(friends.id, 999_999)
            .await
            .expect_err("unknown user"),
        r.create_group(999_999, "g", true)
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
        r.create_group(alice, "", true)
            .await
            .expect_err("empty")
            .code(),
        ErrorCode::InvalidArgument
    );
    env.cleanup().await;
}

#[tokio::test]
async fn records_written_before_roles_existed_read_as_members_of_open_groups() {
    let env = test_env("legacy", LONG_TTL).await;
    let r = &env.registry;
    let alice = r.create_user("alice", "pw").await.expect("create");
    let bob = r.create_user("bob", "pw").await.expect("create");
    let carol = r.create_user("carol", "pw").await.expect("create");
    let (alice_i, bob_i) = (to_i64(alice), to_i64(bob));
    env.db
        .collection::<Document>("groups")
        .insert_one(doc! { "_id": 5_000_i64, "name": "old", "owner_id": alice_i })
        .await
        .expect("insert");
    env.db
        .collection::<Document>("group_members")
        .insert_many([
            doc! { "group_id": 5_000_i64, "user_id": alice_i },
            doc! { "group_id": 5_000_i64, "user_id": bob_i },
        ])
        .await
        .expect("insert");
    assert_eq!(r.group_members(5_000).await.expect("members"), [alice, bob]);
    assert!(r.group(5_000).await.expect("group").open);
    assert!(r.join_group(5_000, carol).await.expect("join").member);
    assert!(r.leave_group(5_000, bob).await.expect("leave"));
    assert_eq!(
        r.group_members(5_000).await.expect("members"),
        [alice, carol]
    );
    env.cleanup().await;
}

fn to_i64(id: u64) -> i64 {
    i64::try_from(id).expect("a small id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_joins_approvals_and_a_withdrawal_leave_one_consistent_relation() {
    let env = test_env("group-race", LONG_TTL).await;
    let r = &env.registry;
    let owner = r.create_user("owner", "pw").await.expect("create");
    let admin = r.create_user("admin", "pw").await.expect("create");
    let open = r.create_group(owner, "open", true).await.expect("group");
    let closed = r.create_group(owner, "closed", false).await.expect("group");
    r.invite(closed.id, owner, admin).await.expect("invite");
    r.join_group(closed.id, admin).await.expect("join");
    r.set_admin(closed.id, owner, admin, true)
        .await
        .expect("admin");

    // Eight concurrent joins of an open group: one member, joined once.
    let user = r.create_user("eager", "pw").await.expect("create");
    let joins = join_all((0..8).map(|_| r.join_group(open.id, user))).await;
    let changed = joins
        .into_iter()
        .map(|j| j.expect("join"))
        .filter(|j| j.changed)
        .count();
    assert_eq!(changed, 1);
    assert_eq!(
        r.group_members(open.id).await.expect("members"),
        [owner, user]
    );

    // Approvals by two managers race the requester's withdrawal, many times:
    // the user ends up a member with no request left, or with nothing at all,
    // and the membership log's last word agrees with the members.
    for round in 0..10 {
        let user = r
            .create_user(&format!("asker-{round}"), "pw")
            .await
            .expect("create");
        assert!(!r.join_group(closed.id, user).await.expect("ask").member);
        let (a, b, left) = tokio::join!(
            r.approve(closed.id, owner, user),
            r.approve(closed.id, admin, user),
            r.leave_group(closed.id, user),
        );
        for approval in [a, b] {
            match approval {
                Ok(()) | Err(Error::NoSuchRequest { .. }) => {}
                Err(err) => panic!("round {round}: {err}"),
            }
        }
        left.expect("leave");
        let member = r
            .group_members(closed.id)
            .await
            .expect("members")
            .contains(&user);
        let requests = r.join_requests(closed.id, owner).await.expect("requests");
        assert!(
            !requests.contains(&user),
            "round {round}: a request survived"
        );
        let last = env.log.changes().into_iter().rev().find(|c| match c {
            Change::Joined { user: u, group } | Change::Left { user: u, group } => {
                *u == user && *group == closed.id
            }
        });
        let logged_member = matches!(last, Some(Change::Joined { .. }));
        assert_eq!(member, logged_member, "round {round}: log says {last:?}");
    }
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

/// A session that nobody refreshes (its access node died, or its login failed
/// after it was recorded) stops being listed after the lifetime, another
/// connection of the device may take it over, and the hash goes with it.
#[tokio::test]
async fn a_session_nobody_refreshes_expires() {
    use fishchat_register::store::Sessions;
    use fishchat_register::store::redis::RedisStore;

    const TTL: Duration = Duration::from_millis(300);
    let prefix = format!("{}:", fishchat_e2e::unique_name("fc-register-expiry"));
    let store = RedisStore::connect(&fishchat_e2e::redis_url(), &prefix)
        .await
        .expect("connect Redis store")
        .with_session_ttl(TTL);
    let dead = session(9, "phone", "access-dead", 1);
    let live = session(9, "laptop", "access-live", 2);
    assert_eq!(store.record(&dead).await.expect("record"), None);
    assert_eq!(store.record(&live).await.expect("record"), None);
    let mut redis = fishchat_e2e::redis().await;
    let key = store.sessions_key(9);
    let ttl_ms: i64 = redis.pttl(&key).await.expect("pttl");
    assert!(ttl_ms > 0 && ttl_ms <= 300, "the hash expires: {ttl_ms}");

    // Only the laptop's node refreshes; the phone's session lapses.
    fishchat_e2e::wait_until(
        Duration::from_secs(10),
        "the unrefreshed session to expire",
        async || {
            store
                .touch(std::slice::from_ref(&live))
                .await
                .expect("refresh");
            let listed = store.list(&[9]).await.expect("list");
            assert!(listed.contains(&live), "{listed:?}");
            (listed == std::slice::from_ref(&live)).then_some(())
        },
    )
    .await;
    // A heartbeat of another connection of the phone takes the lapsed session over.
    let again = session(9, "phone", "access-live", 3);
    assert_eq!(
        store
            .touch(std::slice::from_ref(&again))
            .await
            .expect("touch"),
        [fishchat_register::store::Touched::Recorded]
    );
    // Once nobody refreshes anything, the whole hash goes.
    fishchat_e2e::wait_until(
        Duration::from_secs(10),
        "the hash to go with its sessions",
        async || {
            let exists: bool = redis.exists(&key).await.expect("exists");
            (!exists).then_some(())
        },
    )
    .await;
    assert!(store.list(&[9]).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_dead_nodes_sessions_are_forgotten_and_no_other() {
    use fishchat_register::store::Sessions;
    use fishchat_register::store::redis::RedisStore;

    let prefix = format!("{}:", fishchat_e2e::unique_name("fc-register-dead-node"));
    let store = RedisStore::connect(&fishchat_e2e::redis_url(), &prefix)
        .await
        .expect("connect Redis store");
    // Users 1..=600 on the dead node: more than one round of forgetting.
    for user in 1..=600 {
        store
            .record(&session(user, "phone", "access-dead", user))
            .await
            .expect("record");
    }
    // A device that moved from the dead node to a live one keeps its session,
    // though the dead node's list still names it.
    let moved = session(7, "phone", "access-live", 70);
    store.record(&moved).await.expect("record");
    // A session the dead node ended itself is not counted again.
    assert!(
        store
            .remove(8, "phone", "access-dead", 8)
            .await
            .expect("remove")
    );
    // A heartbeat lists a session under its node too.
    let laptop = session(9, "laptop:1", "access-live", 90);
    store
        .touch(std::slice::from_ref(&laptop))
        .await
        .expect("touch");
    let mut nodes = store.nodes().await.expect("nodes");
    nodes.sort();
    assert_eq!(nodes, ["access-dead", "access-live"]);

    let users = store.forget_node("access-dead").await.expect("forget");
    let expected: Vec<u64> = (1..=600).filter(|u| *u != 7 && *u != 8).collect();
    assert_eq!(users, expected);
    assert_eq!(store.list(&[1, 600]).await.expect("list"), []);
    assert_eq!(store.list(&[7]).await.expect("list"), [moved]);
    assert_eq!(store.list(&[9]).await.expect("list"), [laptop]);
    assert_eq!(store.nodes().await.expect("nodes"), ["access-live"]);
    // Forgetting again finds nothing; the live node's sessions go when it does.
    assert!(
        store
            .forget_node("access-dead")
            .await
            .expect("forget")
            .is_empty()
    );
    assert_eq!(
        store.forget_node("access-live").await.expect("forget"),
        [7, 9]
    );
    assert!(store.nodes().await.expect("nodes").is_empty());
}

#[tokio::test]
async fn failed_logins_hold_back_their_account_and_address_and_no_one_else() {
    use std::net::IpAddr;

    let limits = fishchat_register::LoginLimits {
        failures_per_account: 3,
        account_window: Duration::from_secs(60),
        failures_per_address: 5,
        address_window: Duration::from_secs(60),
    };
    let env = test_env_limited("login-limits", LONG_TTL, limits).await;
    let r = &env.registry;
    for name in ["victim", "bystander", "owner"] {
        r.create_user(name, "right").await.expect("create");
    }
    let [a, b, c, d, e]: [IpAddr; 5] = [1, 2, 3, 4, 5].map(|i| IpAddr::from([10, 0, 0, i]));
    let too_many = |result: Result<_, Error>| match result {
        Err(Error::TooManyAttempts { retry_after }) => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
            assert_eq!(
                Error::TooManyAttempts { retry_after }.code(),
                ErrorCode::TooManyRequests
            );
            true
        }
        _ => false,
    };

    // Three wrong passwords from three addresses: the account is held back,
    // even with the right password, from anywhere.
    for from in [a, b, c] {
        let err = r
            .login("victim", "wrong", Some(from))
            .await
            .expect_err("wrong");
        assert!(matches!(err, Error::BadCredentials), "{err}");
    }
    assert!(too_many(r.login("victim", "right", Some(d)).await));
    assert!(too_many(r.login("victim", "right", None).await));
    // Others log in from the same addresses.
    r.login("bystander", "right", Some(a))
        .await
        .expect("unaffected");

    // Five failures from one address over names that do not exist: that
    // address is held back for every account, others are not.
    for i in 0..5 {
        let name = format!("nobody-{i}");
        let err = r.login(&name, "guess", Some(e)).await.expect_err("unknown");
        assert!(matches!(err, Error::BadCredentials), "{err}");
    }
    assert!(too_many(r.login("bystander", "right", Some(e)).await));
    r.login("bystander", "right", Some(d))
        .await
        .expect("another address");

    // A success clears the account's count: two failures, a success, two
    // more failures, and the owner still gets in.
    for _ in 0..2 {
        r.login("owner", "wrong", Some(d)).await.expect_err("wrong");
    }
    r.login("owner", "right", Some(d)).await.expect("in");
    for _ in 0..2 {
        r.login("owner", "wrong", Some(d)).await.expect_err("wrong");
    }
    r.login("owner", "right", Some(d)).await.expect("in again");
    env.cleanup().await;
}
