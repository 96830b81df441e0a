//! `docs/http-api.md` against the server: its route table must list exactly
//! the router's routes, and a scenario that exercises every route must see
//! every status the page lists for it, every error code the page names, and
//! nothing the page does not mention.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::api::{Api, User};
use common::{LONG_TTL, test_env};
use fishchat_register::http;
use fishchat_register::model::TokenRecord;
use fishchat_register::store::Tokens;
use reqwest::StatusCode;
use serde_json::json;

const DOC: &str = include_str!("../../docs/http-api.md");

/// Statuses any route may answer beyond its row (the page's Errors table,
/// less the two that only a path or method outside the table gets).
const ANY_ROUTE: [u16; 4] = [400, 401, 500, 503];
/// What a path or method that is no route gets.
const NO_ROUTE: [u16; 2] = [404, 405];
/// What the scenario cannot make the server do.
const NOT_PROVOKED_STATUS: u16 = 500;
const NOT_PROVOKED_CODE: &str = "INTERNAL";

/// What the page says.
#[derive(Debug, Default)]
struct Doc {
    /// (method, path) → the statuses of its row.
    routes: BTreeMap<(String, String), BTreeSet<u16>>,
    /// The statuses of the Errors table.
    general: BTreeSet<u16>,
    /// The codes of the Errors section.
    codes: BTreeSet<String>,
}

fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

fn parse(doc: &str) -> Doc {
    let mut parsed = Doc::default();
    let mut section = "";
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title;
            continue;
        }
        if !line.starts_with('|') {
            continue;
        }
        let cells = cells(line);
        match section {
            "Routes" if ["GET", "POST", "DELETE"].contains(&cells[0]) => {
                let path = cells[1].trim_matches('`').to_owned();
                let statuses = cells[cells.len() - 1]
                    .split(',')
                    .map(|s| s.trim().parse().expect("a status number"))
                    .collect();
                let old = parsed.routes.insert((cells[0].to_owned(), path), statuses);
                assert!(old.is_none(), "a route listed twice: {line}");
            }
            "Errors" => {
                if let Ok(status) = cells[0].parse::<u16>() {
                    parsed.general.insert(status);
                } else if let Some(code) = cells[0].strip_prefix('`') {
                    parsed.codes.insert(code.trim_end_matches('`').to_owned());
                }
            }
            _ => {}
        }
    }
    parsed
}

#[test]
fn the_page_lists_exactly_the_routers_routes() {
    let doc = parse(DOC);
    let documented: BTreeSet<(String, String)> = doc.routes.keys().cloned().collect();
    let served: BTreeSet<(String, String)> = http::routes()
        .into_iter()
        .map(|(verb, path)| (verb.as_str().to_owned(), path.to_owned()))
        .collect();
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented, not served"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served, not documented"
    );
    let general: BTreeSet<u16> = ANY_ROUTE.into_iter().chain(NO_ROUTE).collect();
    assert_eq!(doc.general, general, "the Errors table");
}

/// Calls every route, making each status of the page happen at least once.
async fn scenario(api: &Api, env: &common::TestEnv) {
    let created =
        |reply: common::api::Reply, status: StatusCode| reply.expect(status, None).clone();
    let owner = api.user("owner").await;
    let admin = api.user("admin").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let outsider = api.user("outsider").await;
    let missing = 1_000_000_u64;

    // Accounts and tokens.
    let credentials =
        |name: &str, password: &str| Some(json!({"name": name, "password": password}));
    api.call("POST /users", &[], None, credentials("owner", "x"))
        .await
        .expect(StatusCode::CONFLICT, Some("NAME_TAKEN"));
    api.call("POST /users", &[], None, credentials(" x", "x"))
        .await
        .expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    api.raw("POST /users", None, "{not json")
        .await
        .expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    api.call("POST /login", &[], None, credentials("owner", "wrong"))
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("BAD_CREDENTIALS"));
    api.user("guessed").await;
    for _ in 0..10 {
        api.call("POST /login", &[], None, credentials("guessed", "guess"))
            .await
            .expect(StatusCode::UNAUTHORIZED, Some("BAD_CREDENTIALS"));
    }
    // Ten failures hold the account back, even with the right password.
    let refused = api
        .call("POST /login", &[], None, credentials("guessed", "pw"))
        .await;
    refused.expect(StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_ATTEMPTS"));
    assert!(
        refused.retry_after.is_some_and(|s| (1..=900).contains(&s)),
        "{refused:?}"
    );
    let spare = api.user("spare").await;
    api.call("POST /logout", &[], Some(&spare.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    api.call("GET /users/{name}", &[&"bob"], Some(&owner.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call("GET /users/{name}", &[&"nobody"], Some(&owner.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_USER"));

    // Every route but the two public ones wants a token: none, a bad one, an expired one.
    for (verb, path) in http::routes() {
        let route = format!("{} {path}", verb.as_str());
        if route == "POST /users" || route == "POST /login" {
            continue;
        }
        let params = path.matches('{').count();
        let ones: Vec<&dyn ToString> = vec![&1_u64 as &dyn ToString; params];
        api.call(&route, &ones, None, None)
            .await
            .expect(StatusCode::UNAUTHORIZED, Some("NOT_LOGGED_IN"));
    }
    api.call("GET /me/groups", &[], Some(&spare.token), None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("BAD_TOKEN"));
    let expired = "e".repeat(64);
    let record = TokenRecord {
        user_id: owner.id,
        expires_at_ms: 1,
    };
    env.redis
        .put(&expired, record, Duration::from_secs(60))
        .await
        .expect("plant an expired token");
    api.call("GET /me/groups", &[], Some(&expired), None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("TOKEN_EXPIRED"));

    // Paths and methods that are no route.
    api.call("GET /nothing", &[], Some(&owner.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NO_SUCH_ROUTE"));
    api.call("GET /users", &[], Some(&owner.token), None)
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"));

    // Groups: one closed, one open.
    let group = |name: &str, open: bool| Some(json!({"name": name, "open": open}));
    api.call("POST /groups", &[], Some(&owner.token), group("", false))
        .await
        .expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    let closed = created(
        api.call(
            "POST /groups",
            &[],
            Some(&owner.token),
            group("closed", false),
        )
        .await,
        StatusCode::CREATED,
    )["group_id"]
        .as_u64()
        .expect("group_id");
    let open = api.group(&owner, "open", true).await;
    api.call("GET /groups/{id}", &[&closed], Some(&bob.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call("GET /groups/{id}", &[&missing], Some(&bob.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call("GET /me/groups", &[], Some(&owner.token), None)
        .await
        .expect(StatusCode::OK, None);

    // Joining and leaving.
    let join = "POST /groups/{id}/join";
    api.call(join, &[&open], Some(&bob.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call(join, &[&closed], Some(&bob.token), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    api.call(join, &[&missing], Some(&bob.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(join, &[&"x"], Some(&bob.token), None)
        .await
        .expect(StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"));
    env.log.fail_joined(true);
    api.call(join, &[&open], Some(&carol.token), None)
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"));
    env.log.fail_joined(false);
    let leave = "POST /groups/{id}/leave";
    api.call(leave, &[&open], Some(&bob.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call(leave, &[&open], Some(&owner.token), None)
        .await
        .expect(StatusCode::CONFLICT, Some("OWNER_CANNOT_LEAVE"));
    api.call(leave, &[&missing], Some(&bob.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));

    // Invitations; the admin joins the closed group by one and is made admin.
    let invite = "POST /groups/{id}/invite";
    let target = |user: &User| Some(json!({"user_id": user.id}));
    api.call(invite, &[&closed], Some(&owner.token), target(&admin))
        .await
        .expect(StatusCode::OK, None);
    api.call(invite, &[&closed], Some(&outsider.token), target(&carol))
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(invite, &[&missing], Some(&owner.token), target(&carol))
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(
        invite,
        &[&closed],
        Some(&owner.token),
        Some(json!({"user_id": missing})),
    )
    .await
    .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_USER"));
    api.call(join, &[&closed], Some(&admin.token), None)
        .await
        .expect(StatusCode::OK, None);
    let admins = "POST /groups/{id}/admins";
    api.call(admins, &[&closed], Some(&owner.token), target(&admin))
        .await
        .expect(StatusCode::OK, None);
    api.call(admins, &[&closed], Some(&admin.token), target(&admin))
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(admins, &[&closed], Some(&owner.token), target(&outsider))
        .await
        .expect(StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"));
    api.call(admins, &[&missing], Some(&owner.token), target(&admin))
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));

    // Join requests: Bob's (filed above) is approved, Carol's rejected.
    let requests = "GET /groups/{id}/requests";
    api.call(requests, &[&closed], Some(&admin.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call(requests, &[&closed], Some(&bob.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(requests, &[&missing], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    let approve = "POST /groups/{id}/requests/{user_id}/approve";
    api.call(approve, &[&closed, &bob.id], Some(&outsider.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(approve, &[&closed, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NO_SUCH_REQUEST"));
    api.call(approve, &[&missing, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(approve, &[&closed, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call(join, &[&closed], Some(&carol.token), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let reject = "POST /groups/{id}/requests/{user_id}/reject";
    api.call(reject, &[&closed, &carol.id], Some(&bob.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(reject, &[&missing, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(reject, &[&closed, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    api.call(reject, &[&closed, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NO_SUCH_REQUEST"));

    // Members.
    let members = "GET /groups/{id}/members";
    api.call(members, &[&closed], Some(&bob.token), None)
        .await
        .expect(StatusCode::OK, None);
    api.call(members, &[&closed], Some(&carol.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("NOT_GROUP_MEMBER"));
    api.call(members, &[&missing], Some(&bob.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    let remove = "DELETE /groups/{id}/members/{user_id}";
    api.call(remove, &[&closed, &owner.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(remove, &[&closed, &carol.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"));
    api.call(remove, &[&missing, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(remove, &[&closed, &bob.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
    let demote = "DELETE /groups/{id}/admins/{user_id}";
    api.call(demote, &[&closed, &admin.id], Some(&admin.token), None)
        .await
        .expect(StatusCode::FORBIDDEN, Some("FORBIDDEN"));
    api.call(demote, &[&closed, &bob.id], Some(&owner.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"));
    api.call(demote, &[&missing, &admin.id], Some(&owner.token), None)
        .await
        .expect(StatusCode::NOT_FOUND, Some("UNKNOWN_GROUP"));
    api.call(demote, &[&closed, &admin.id], Some(&owner.token), None)
        .await
        .expect(StatusCode::NO_CONTENT, None);
}

#[tokio::test]
async fn every_documented_status_and_code_happens_and_nothing_else() {
    let env = test_env("http-doc", LONG_TTL).await;
    let api = Api::start(env.registry.clone()).await;
    scenario(&api, &env).await;
    let seen = api.seen();
    let codes = api.codes();
    api.stop().await;
    env.cleanup().await;

    let doc = parse(DOC);
    let mut problems = Vec::new();
    for ((method, path), statuses) in &doc.routes {
        for status in statuses {
            if !seen.contains(&(method.clone(), path.clone(), *status)) {
                problems.push(format!(
                    "documented, never seen: {method} {path} → {status}"
                ));
            }
        }
    }
    for (method, path, status) in &seen {
        let allowed = match doc.routes.get(&(method.clone(), path.clone())) {
            Some(row) => row.contains(status) || ANY_ROUTE.contains(status),
            None => NO_ROUTE.contains(status),
        };
        if !allowed {
            problems.push(format!("seen, not documented: {method} {path} → {status}"));
        }
    }
    let seen_statuses: BTreeSet<u16> = seen.iter().map(|(_, _, s)| *s).collect();
    for status in &doc.general {
        if *status != NOT_PROVOKED_STATUS && !seen_statuses.contains(status) {
            problems.push(format!("a general status never seen: {status}"));
        }
    }
    for code in doc.codes.difference(&codes) {
        if code != NOT_PROVOKED_CODE {
            problems.push(format!("a documented code never seen: {code}"));
        }
    }
    for code in codes.difference(&doc.codes) {
        problems.push(format!("a code not documented: {code}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_parser_reads_the_tables() {
    let doc = parse(
        "## Routes\n| Method | Path | Statuses |\n|---|---|---|\n| GET | `/a/{id}` | 200, 404 |\n\
         ## Errors\n| Status | Meaning |\n| 400 | bad |\n| Code | Status |\n| `X` | 400 |\n",
    );
    let row = doc.routes.get(&("GET".to_owned(), "/a/{id}".to_owned()));
    assert_eq!(row, Some(&BTreeSet::from([200, 404])));
    assert_eq!(doc.general, BTreeSet::from([400]));
    assert_eq!(doc.codes, BTreeSet::from(["X".to_owned()]));
}
