//! The HTTP JSON API end to end on an ephemeral port, over the real backends:
//! every group rule, the membership log's order, and the announcements.

mod common;

use std::time::Duration;

use common::api::{Api, User};
use common::{LONG_TTL, TestEnv, test_env};
use fishchat_register::membership::Change;
use fishchat_register::model::Session;
use fishchat_rpc::channels;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

async fn start(test: &str) -> (TestEnv, Api) {
    let env = test_env(test, LONG_TTL).await;
    let api = Api::start(env.registry.clone()).await;
    (env, api)
}

async fn finish(env: TestEnv, api: Api) {
    api.stop().await;
    env.cleanup().await;
}

fn roles(members: &[(u64, &str)]) -> Vec<(u64, String)> {
    members
        .iter()
        .map(|(id, r)| (*id, (*r).to_owned()))
        .collect()
}

async fn join(api: &Api, user: &User, group: u64) -> common::api::Reply {
    api.call("POST /groups/{id}/join", &[&group], Some(&user.token), None)
        .await
}

async fn leave(api: &Api, user: &User, group: u64) -> common::api::Reply {
    api.call(
        "POST /groups/{id}/leave",
        &[&group],
        Some(&user.token),
        None,
    )
    .await
}

#[tokio::test]
async fn accounts_tokens_and_lookup_by_name() {
    let (env, api) = start("http-accounts").await;
    let alice = api.user("alice").await;
    let taken = api
        .call(
            "POST /users",
            &[],
            None,
            Some(json!({"name": "alice", "password": "x"})),
        )
        .await;
    taken.expect(StatusCode::CONFLICT, Some("NAME_TAKEN"));
    let empty = api
        .call(
            "POST /users",
            &[],
            None,
            Some(json!({"name": "", "password": "x"})),
        )
        .await;
    empty.expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    let broken = api.raw("POST /users", None, "{not json").await;
    broken.expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    let wrong = api
        .call(
            "POST /login",
            &[],
            None,
            Some(json!({"name": "alice", "password": "wrong"})),
        )
        .await;
    wrong.expect(StatusCode::UNAUTHORIZED, Some("BAD_CREDENTIALS"));

    let found = api
        .call("GET /users/{name}", &[&"alice"], Some(&alice.token), None)
        .await;
    assert_eq!(
        *found.expect(StatusCode::OK, None),
        json!({"user_id": alice.id, "name": "alice"})
    );
    // A name with a space and a slash, percent-encoded in the path.
    let odd = api.user("a b/c").await;
    let found = api
        .call(
            "GET /users/{name}",
            &[&"a%20b%2Fc"],
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(found.expect(StatusCode::OK, None)["user_id"], odd.id);
    api.call("GET /users/{name}", &[&"nobody"], Some(&alice.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_USER"));
    api.call("GET /users/{name}", &[&"alice"], None, None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("NOT_LOGGED_IN"));
    api.call("GET /users/{name}", &[&"alice"], Some("nonsense"), None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("BAD_TOKEN"));

    api.call("POST /logout", &[], Some(&alice.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    api.call("GET /me/groups", &[], Some(&alice.token), None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("BAD_TOKEN"));
    finish(env, api).await;
}

#[tokio::test]
async fn an_open_group_admits_at_once_and_its_owner_cannot_leave() {
    let (env, api) = start("http-open").await;
    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let group = api.group(&owner, "open", true).await;
    let got = api
        .call("GET /groups/{id}", &[&group], Some(&bob.token), None)
        .await;
    assert_eq!(
        *got.expect(StatusCode::OK, None),
        json!({"group_id": group, "name": "open", "owner_id": owner.id, "open": true})
    );
    // A group of one member, its owner.
    assert_eq!(
        api.members(&owner, group).await,
        roles(&[(owner.id, "owner")])
    );

    for _ in 0..2 {
        let joined = join(&api, &bob, group).await;
        assert_eq!(
            *joined.expect(StatusCode::OK, None),
            json!({"status": "member"})
        );
    }
    assert_eq!(
        api.members(&bob, group).await,
        roles(&[(owner.id, "owner"), (bob.id, "member")])
    );
    let mine = api
        .call("GET /me/groups", &[], Some(&bob.token), None)
        .await;
    assert_eq!(
        mine.expect(StatusCode::OK, None)["groups"][0]["group_id"],
        group
    );

    for changed in [true, false] {
        let left = leave(&api, &bob, group).await;
        assert_eq!(
            *left.expect(StatusCode::OK, None),
            json!({"changed": changed})
        );
    }
    leave(&api, &owner, group)
        .await
        .expect(StatusCode::CONFLICT, Some("OWNER_CANNOT_LEAVE"));
    // Joining again after leaving follows the same rules.
    join(&api, &bob, group).await.expect(StatusCode::OK, None);

    api.call(
        "GET /groups/{id}",
        &[&(group + 1000)],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    join(&api, &bob, group + 1000)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call("POST /groups/{id}/join", &[&"abc"], Some(&bob.token), None)
        .await
        .expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    finish(env, api).await;
}

#[tokio::test]
async fn a_closed_group_takes_requests_that_the_owner_or_an_admin_decides() {
    let (env, api) = start("http-closed").await;
    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let group = api.group(&owner, "closed", false).await;

    for _ in 0..2 {
        let asked = join(&api, &bob, group).await;
        assert_eq!(
            *asked.expect(StatusCode::ACCEPTED, None),
            json!({"status": "pending"})
        );
    }
    // A requester is not a member: it cannot see the members.
    api.call(
        "GET /groups/{id}/members",
        &[&group],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("NOT_GROUP_MEMBER"));
    api.call(
        "GET /groups/{id}/requests",
        &[&group],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    let requests = api
        .call(
            "GET /groups/{id}/requests",
            &[&group],
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(
        *requests.expect(StatusCode::OK, None),
        json!({"user_ids": [bob.id]})
    );
    api.call(
        "POST /groups/{id}/requests/{user_id}/approve",
        &[&group, &bob.id],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    let approved = api
        .call(
            "POST /groups/{id}/requests/{user_id}/approve",
            &[&group, &bob.id],
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(
        *approved.expect(StatusCode::OK, None),
        json!({"status": "member"})
    );
    assert_eq!(
        api.members(&bob, group).await,
        roles(&[(owner.id, "owner"), (bob.id, "member")])
    );

    // An admin decides too: Bob, made admin, rejects Carol.
    api.call(
        "POST /groups/{id}/admins",
        &[&group],
        Some(&owner.token),
        Some(json!({"user_id": bob.id})),
    )
    .await
    .expect(StatusCode::OK, None);
    join(&api, &carol, group)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let reject = "POST /groups/{id}/requests/{user_id}/reject";
    api.call(reject, &[&group, &carol.id], Some(&bob.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    api.call(reject, &[&group, &carol.id], Some(&bob.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NO_SUCH_REQUEST"));
    api.call(
        "POST /groups/{id}/requests/{user_id}/approve",
        &[&group, &carol.id],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("NO_SUCH_REQUEST"));
    api.call(
        "GET /groups/{id}/members",
        &[&group],
        Some(&carol.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("NOT_GROUP_MEMBER"));

    // Withdrawing a request is leaving; asking again goes through the rules again.
    join(&api, &carol, group)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let left = leave(&api, &carol, group).await;
    assert_eq!(*left.expect(StatusCode::OK, None), json!({"changed": true}));
    let requests = api
        .call(
            "GET /groups/{id}/requests",
            &[&group],
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        *requests.expect(StatusCode::OK, None),
        json!({"user_ids": []})
    );
    finish(env, api).await;
}

#[tokio::test]
async fn invitations_admit_on_join_and_approve_a_requester() {
    let (env, api) = start("http-invite").await;
    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let group = api.group(&owner, "closed", false).await;
    let invite = |by: &User, user: u64| {
        let token = by.token.clone();
        let api = &api;
        async move {
            api.call(
                "POST /groups/{id}/invite",
                &[&group],
                Some(&token),
                Some(json!({"user_id": user})),
            )
            .await
        }
    };

    let invited = invite(&owner, bob.id).await;
    assert_eq!(
        *invited.expect(StatusCode::OK, None),
        json!({"status": "invited"})
    );
    assert_eq!(
        *join(&api, &bob, group).await.expect(StatusCode::OK, None),
        json!({"status": "member"})
    );
    let again = invite(&owner, bob.id).await;
    assert_eq!(
        *again.expect(StatusCode::OK, None),
        json!({"status": "member"})
    );

    // Carol asked first: the invitation approves her.
    join(&api, &carol, group)
        .await
        .expect(StatusCode::ACCEPTED, None);
    invite(&bob, carol.id)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    let approved = invite(&owner, carol.id).await;
    assert_eq!(
        *approved.expect(StatusCode::OK, None),
        json!({"status": "member"})
    );
    assert_eq!(
        api.members(&carol, group).await,
        roles(&[
            (owner.id, "owner"),
            (bob.id, "member"),
            (carol.id, "member")
        ])
    );
    invite(&owner, carol.id + 1000)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_USER"));
    api.call(
        "POST /groups/{id}/invite",
        &[&(group + 1000)],
        Some(&owner.token),
        Some(json!({"user_id": bob.id})),
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    finish(env, api).await;
}

#[tokio::test]
async fn the_owner_removes_anyone_an_admin_only_plain_members() {
    let (env, api) = start("http-remove").await;
    let owner = api.user("owner").await;
    let admin = api.user("admin").await;
    let second_admin = api.user("second").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let group = api.group(&owner, "g", true).await;
    for user in [&admin, &second_admin, &bob, &carol] {
        join(&api, user, group).await.expect(StatusCode::OK, None);
    }
    let make_admin = |by: &User, user: u64| {
        let token = by.token.clone();
        let api = &api;
        async move {
            api.call(
                "POST /groups/{id}/admins",
                &[&group],
                Some(&token),
                Some(json!({"user_id": user})),
            )
            .await
        }
    };
    let made = make_admin(&owner, admin.id).await;
    assert_eq!(
        *made.expect(StatusCode::OK, None),
        json!({"user_id": admin.id, "role": "admin"})
    );
    make_admin(&owner, second_admin.id)
        .await
        .expect(StatusCode::OK, None);
    make_admin(&admin, bob.id)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    let outsider = api.user("outsider").await;
    make_admin(&owner, outsider.id)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"));

    let remove = "DELETE /groups/{id}/members/{user_id}";
    for (by, target) in [
        (&admin, second_admin.id),
        (&admin, owner.id),
        (&owner, owner.id),
        (&bob, carol.id),
        (&outsider, carol.id),
    ] {
        api.call(remove, &[&group, &target], Some(&by.token), None)
            .await
            .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    }
    api.call(remove, &[&group, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    api.call(remove, &[&group, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"));
    api.call(
        remove,
        &[&group, &second_admin.id],
        Some(&owner.token),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT, None);
    // Only the owner demotes; demoted, the former admin removes nobody.
    api.call(
        "DELETE /groups/{id}/admins/{user_id}",
        &[&group, &admin.id],
        Some(&admin.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(
        "DELETE /groups/{id}/admins/{user_id}",
        &[&group, &admin.id],
        Some(&owner.token),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT, None);
    api.call(remove, &[&group, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    assert_eq!(
        api.members(&carol, group).await,
        roles(&[
            (owner.id, "owner"),
            (admin.id, "member"),
            (carol.id, "member")
        ])
    );
    // A removed member sees the members no more, and may join again.
    api.call(
        "GET /groups/{id}/members",
        &[&group],
        Some(&bob.token),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, Some("NOT_GROUP_MEMBER"));
    join(&api, &bob, group).await.expect(StatusCode::OK, None);
    finish(env, api).await;
}

#[tokio::test]
async fn the_log_hears_of_a_join_before_the_member_is_visible() {
    let (env, api) = start("http-log-order").await;
    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let group = api.group(&owner, "g", true).await;
    let joined = Change::Joined {
        user: bob.id,
        group,
    };

    let hold = env.log.hold_joined();
    let joining = join(&api, &bob, group);
    let check = async {
        fishchat_e2e::wait_until(Duration::from_secs(10), "joined to be logged", async || {
            env.log.changes().contains(&joined).then_some(())
        })
        .await;
        // The log knows; register does not show the member yet.
        assert_eq!(
            api.members(&owner, group).await,
            roles(&[(owner.id, "owner")])
        );
        drop(hold);
    };
    let (reply, ()) = tokio::join!(joining, check);
    reply.expect(StatusCode::OK, None);
    assert_eq!(
        api.members(&owner, group).await,
        roles(&[(owner.id, "owner"), (bob.id, "member")])
    );

    leave(&api, &bob, group).await.expect(StatusCode::OK, None);
    let changes = env.log.changes();
    assert_eq!(
        changes,
        [
            Change::Joined {
                user: owner.id,
                group
            },
            joined,
            Change::Left {
                user: bob.id,
                group
            },
        ]
    );
    finish(env, api).await;
}

#[tokio::test]
async fn a_failing_log_fails_joins_with_503_and_changes_nothing() {
    let (env, api) = start("http-log-down").await;
    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let open = api.group(&owner, "open", true).await;
    let closed = api.group(&owner, "closed", false).await;
    join(&api, &carol, closed)
        .await
        .expect(StatusCode::ACCEPTED, None);

    env.log.fail_joined(true);
    join(&api, &bob, open)
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"));
    api.call(
        "POST /groups/{id}/requests/{user_id}/approve",
        &[&closed, &carol.id],
        Some(&owner.token),
        None,
    )
    .await
    .expect(StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"));
    api.call(
        "POST /groups",
        &[],
        Some(&bob.token),
        Some(json!({"name": "new"})),
    )
    .await
    .expect(StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"));

    assert_eq!(
        api.members(&owner, open).await,
        roles(&[(owner.id, "owner")])
    );
    assert_eq!(
        api.members(&owner, closed).await,
        roles(&[(owner.id, "owner")])
    );
    let requests = api
        .call(
            "GET /groups/{id}/requests",
            &[&closed],
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(
        *requests.expect(StatusCode::OK, None),
        json!({"user_ids": [carol.id]}),
        "the request survives a failed approval"
    );
    let mine = api
        .call("GET /me/groups", &[], Some(&bob.token), None)
        .await;
    assert_eq!(*mine.expect(StatusCode::OK, None), json!({"groups": []}));
    let logged_bob = env
        .log
        .changes()
        .iter()
        .any(|c| matches!(c, Change::Joined { user, .. } if *user == bob.id));
    assert!(!logged_bob, "{:?}", env.log.changes());

    env.log.fail_joined(false);
    join(&api, &bob, open).await.expect(StatusCode::OK, None);
    finish(env, api).await;
}

/// Waits for the first of `ids` announced on a channel's `messages` and
/// returns it; other ids (other tests share the channel) are skipped.
async fn first_of(
    messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
    ids: &[u64],
) -> u64 {
    let wait = async {
        while let Some(msg) = messages.next().await {
            let payload: String = msg.get_payload().expect("a text payload");
            if let Some(id) = ids.iter().find(|id| id.to_string() == payload) {
                return *id;
            }
        }
        panic!("the subscription ended");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("none of {ids:?} announced within 10 s"))
}

async fn next_id(messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin), id: u64) {
    first_of(messages, &[id]).await;
}

#[tokio::test]
async fn member_and_session_changes_are_announced() {
    let (env, api) = start("http-announce").await;
    env.spread_ids().await;
    let client = redis::Client::open(fishchat_e2e::redis_url()).expect("redis url");
    let mut groups = client.get_async_pubsub().await.expect("subscribe");
    groups.subscribe(channels::GROUPS).await.expect("subscribe");
    let mut sessions = client.get_async_pubsub().await.expect("subscribe");
    sessions
        .subscribe(channels::SESSIONS)
        .await
        .expect("subscribe");
    let mut groups = groups.into_on_message();
    let mut sessions = sessions.into_on_message();

    let owner = api.user("owner").await;
    let bob = api.user("bob").await;
    let open = api.group(&owner, "open", true).await;
    next_id(&mut groups, open).await;
    join(&api, &bob, open).await.expect(StatusCode::OK, None);
    next_id(&mut groups, open).await;
    leave(&api, &bob, open).await.expect(StatusCode::OK, None);
    next_id(&mut groups, open).await;

    // A join request changes no membership: the next announcement of ours
    // is the later join of the open group, not the closed one.
    let closed = api.group(&owner, "closed", false).await;
    next_id(&mut groups, closed).await;
    join(&api, &bob, closed)
        .await
        .expect(StatusCode::ACCEPTED, None);
    join(&api, &bob, open).await.expect(StatusCode::OK, None);
    assert_eq!(first_of(&mut groups, &[closed, open]).await, open);

    let session = Session {
        user_id: bob.id,
        device_id: "phone".into(),
        access_node_id: "access-a".into(),
        push_addr: "127.0.0.1:7001".into(),
        conn_id: 1,
    };
    env.registry.record_session(&session).await.expect("record");
    next_id(&mut sessions, bob.id).await;
    env.registry
        .remove_session(bob.id, "phone", "access-a", 1)
        .await
        .expect("remove");
    next_id(&mut sessions, bob.id).await;
    // A heartbeat of a session Redis lost records it again.
    env.registry
        .touch_sessions(std::slice::from_ref(&session))
        .await
        .expect("touch");
    next_id(&mut sessions, bob.id).await;
    drop((groups, sessions));
    finish(env, api).await;
}
