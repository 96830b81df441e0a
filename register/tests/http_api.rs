//! The HTTP JSON API end to end on an ephemeral port, over the real backends.

mod common;

use std::time::Duration;

use common::{LONG_TTL, test_env};
use fishchat_register::http;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Reads a JSON body (panics with the status and text when it is not JSON).
async fn body(resp: Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{status}: {text:?}: {err}"))
}

/// Asserts an error response: its status and its `code`.
async fn assert_error(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    let b = body(resp).await;
    assert_eq!(b["code"], code, "{b}");
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
}

#[tokio::test]
async fn register_login_group_join_members() {
    let env = test_env("http", LONG_TTL).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, env.registry.clone(), async {
        let _ = stopped.await;
    }));
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = |path: &str| format!("{base}{path}");

    // Register two users; the second registration of a name is a conflict.
    let resp = http
        .post(url("/users"))
        .json(&json!({"name": "alice", "password": "pw-a"}))
        .send()
        .await
        .expect("POST /users");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let alice = body(resp).await["user_id"].as_u64().expect("user_id");
    let resp = http
        .post(url("/users"))
        .json(&json!({"name": "bob", "password": "pw-b"}))
        .send()
        .await
        .expect("POST /users");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bob = body(resp).await["user_id"].as_u64().expect("user_id");
    let resp = http
        .post(url("/users"))
        .json(&json!({"name": "alice", "password": "x"}))
        .send()
        .await
        .expect("POST /users");
    assert_error(resp, StatusCode::CONFLICT, "INVALID_ARGUMENT").await;
    let resp = http
        .post(url("/users"))
        .json(&json!({"name": "", "password": "x"}))
        .send()
        .await
        .expect("POST /users");
    assert_error(resp, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    let resp = http
        .post(url("/users"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST /users");
    assert_error(resp, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;

    // Log in both; a wrong password is refused.
    let resp = http
        .post(url("/login"))
        .json(&json!({"name": "alice", "password": "wrong"}))
        .send()
        .await
        .expect("POST /login");
    assert_error(resp, StatusCode::UNAUTHORIZED, "INVALID_ARGUMENT").await;
    let mut tokens = Vec::new();
    for (name, password, id) in [("alice", "pw-a", alice), ("bob", "pw-b", bob)] {
        let resp = http
            .post(url("/login"))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(resp.status(), StatusCode::OK);
        let b = body(resp).await;
        assert_eq!(b["user_id"].as_u64(), Some(id));
        assert!(b["expires_at_ms"].as_i64().is_some_and(|t| t > 0), "{b}");
        tokens.push(b["token"].as_str().expect("token").to_owned());
    }
    let (alice_token, bob_token) = (&tokens[0], &tokens[1]);

    // Authentication is required and checked.
    let resp = http
        .post(url("/groups"))
        .json(&json!({"name": "friends"}))
        .send()
        .await
        .expect("POST /groups");
    assert_error(resp, StatusCode::UNAUTHORIZED, "NOT_LOGGED_IN").await;
    let resp = http
        .post(url("/groups"))
        .bearer_auth("nonsense")
        .json(&json!({"name": "friends"}))
        .send()
        .await
        .expect("POST /groups");
    assert_error(resp, StatusCode::UNAUTHORIZED, "BAD_TOKEN").await;

    // Alice creates a group, Bob joins it.
    let resp = http
        .post(url("/groups"))
        .bearer_auth(alice_token)
        .json(&json!({"name": "friends"}))
        .send()
        .await
        .expect("POST /groups");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let group = body(resp).await;
    assert_eq!(group["name"], "friends");
    assert_eq!(group["owner_id"].as_u64(), Some(alice));
    let group_id = group["group_id"].as_u64().expect("group_id");

    for changed in [true, false] {
        let resp = http
            .post(url(&format!("/groups/{group_id}/join")))
            .bearer_auth(bob_token)
            .send()
            .await
            .expect("join");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(resp).await["changed"], changed);
    }
    let resp = http
        .get(url(&format!("/groups/{group_id}/members")))
        .bearer_auth(alice_token)
        .send()
        .await
        .expect("members");
    assert_eq!(resp.status(), StatusCode::OK);
    let members = body(resp).await;
    assert_eq!(members["user_ids"], json!([alice, bob]), "{members}");

    let resp = http
        .get(url("/me/groups"))
        .bearer_auth(bob_token)
        .send()
        .await
        .expect("my groups");
    let groups = body(resp).await;
    assert_eq!(
        groups["groups"][0]["group_id"].as_u64(),
        Some(group_id),
        "{groups}"
    );

    let resp = http
        .post(url(&format!("/groups/{group_id}/quit")))
        .bearer_auth(bob_token)
        .send()
        .await
        .expect("quit");
    assert_eq!(body(resp).await["changed"], true);
    let resp = http
        .get(url(&format!("/groups/{}/members", group_id + 1000)))
        .bearer_auth(alice_token)
        .send()
        .await
        .expect("members");
    assert_error(resp, StatusCode::NOT_FOUND, "UNKNOWN_GROUP").await;
    let resp = http
        .post(url("/groups/abc/join"))
        .bearer_auth(bob_token)
        .send()
        .await
        .expect("join");
    assert_error(resp, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;

    // Logging out revokes the token.
    let resp = http
        .post(url("/logout"))
        .bearer_auth(bob_token)
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .get(url("/me/groups"))
        .bearer_auth(bob_token)
        .send()
        .await
        .expect("my groups");
    assert_error(resp, StatusCode::UNAUTHORIZED, "BAD_TOKEN").await;

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    env.cleanup().await;
}
