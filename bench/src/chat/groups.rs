//! The groups of the group scenario, made through the register HTTP API:
//! the first member of each creates it open (`POST /groups` with `"open":
//! true`, and is its first member), the others join (`POST
//! /groups/{id}/join`). A join to a group that is not open only asks the
//! owner (`202 {"status":"pending"}`), which would leave the member out of
//! every delivery: the run stops there instead.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::idle::provision::Account;
use crate::push::clock;

/// Longest one register request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Created {
    group_id: u64,
    open: bool,
}

#[derive(Deserialize)]
struct Joined {
    status: String,
}

/// Makes one group per `size` consecutive accounts; returns their ids in order.
pub async fn create(
    register: &str,
    prefix: &str,
    accounts: &[Account],
    size: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<u64>> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("HTTP client")?;
    let base = register.trim_end_matches('/');
    // A new name every run: the accounts are reused, the groups are not.
    let nonce = clock::now_us();
    stream::iter(accounts.chunks(size).enumerate())
        .map(|(g, members)| {
            let http = http.clone();
            let name = format!("{prefix}-{nonce}-{g}");
            async move { one(&http, base, &name, members).await }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Creates the group `name` owned by `members[0]` and joins the others.
async fn one(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    members: &[Account],
) -> anyhow::Result<u64> {
    let Some(owner) = members.first() else {
        bail!("a group without members");
    };
    let reply = http
        .post(format!("{base}/groups"))
        .bearer_auth(&owner.token)
        .json(&json!({ "name": name, "open": true }))
        .send()
        .await
        .with_context(|| format!("POST {base}/groups"))?;
    let status = reply.status();
    if !status.is_success() {
        bail!(
            "POST /groups {name}: {status} {}",
            reply.text().await.unwrap_or_default()
        );
    }
    let created = reply
        .json::<Created>()
        .await
        .with_context(|| format!("POST /groups {name}: reply"))?;
    let group_id = created.group_id;
    ensure!(
        created.open,
        "POST /groups {name}: group {group_id} was made closed though asked open"
    );
    for member in &members[1..] {
        join(http, base, group_id, member).await?;
    }
    Ok(group_id)
}

/// Joins `member` to the open group `group_id`; anything but membership is an error.
async fn join(
    http: &reqwest::Client,
    base: &str,
    group_id: u64,
    member: &Account,
) -> anyhow::Result<()> {
    let path = format!("/groups/{group_id}/join");
    let reply = http
        .post(format!("{base}{path}"))
        .bearer_auth(&member.token)
        .send()
        .await
        .with_context(|| format!("POST {base}{path}"))?;
    let status = reply.status();
    let text = reply.text().await.unwrap_or_default();
    if status == StatusCode::ACCEPTED {
        bail!(
            "POST {path} as {}: 202 {text}: the join awaits the owner's approval, so the group \
             is not open and {} would receive nothing",
            member.name,
            member.name
        );
    }
    if !status.is_success() {
        bail!("POST {path} as {}: {status} {text}", member.name);
    }
    let joined: Joined = serde_json::from_str(&text)
        .with_context(|| format!("POST {path} as {}: reply {text:?}", member.name))?;
    ensure!(
        joined.status == "member",
        "POST {path} as {}: status {:?}, not a member",
        member.name,
        joined.status
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A register stand-in: answers `POST /groups` with an open group 5 and
    /// every join with `join` (status line and JSON body); keeps each
    /// request's first line and body.
    async fn register(join: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut first = String::new();
                    stream.read_line(&mut first).await.unwrap();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end().to_ascii_lowercase();
                        if header.is_empty() {
                            break;
                        }
                        if let Some(n) = header.strip_prefix("content-length:") {
                            length = n.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let line = format!("{} {}", first.trim_end(), String::from_utf8_lossy(&body));
                    log.lock().unwrap().push(line);
                    let (status, reply) = if first.starts_with("POST /groups ") {
                        (
                            "201 Created",
                            r#"{"group_id":5,"name":"g","owner_id":1,"open":true}"#,
                        )
                    } else {
                        join.split_once('|').unwrap()
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    stream.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        (base, seen)
    }

    fn accounts(n: u64) -> Vec<Account> {
        (1..=n)
            .map(|user_id| Account {
                name: format!("u-{user_id}"),
                user_id,
                token: format!("t{user_id}"),
                expires_at_ms: 0,
            })
            .collect()
    }

    #[tokio::test]
    async fn groups_are_made_open_and_every_other_member_joins() {
        let (base, seen) = register(r#"200 OK|{"status":"member"}"#).await;
        let ids = create(&base, "b", &accounts(3), 3, 1).await.unwrap();
        assert_eq!(ids, [5]);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("POST /groups HTTP/1.1 "), "{seen:?}");
        let body: serde_json::Value =
            serde_json::from_str(seen[0].split_once("HTTP/1.1 ").unwrap().1).unwrap();
        assert_eq!(body["open"], true);
        assert!(
            seen[1..]
                .iter()
                .all(|r| r.starts_with("POST /groups/5/join "))
        );
    }

    #[tokio::test]
    async fn a_join_left_pending_stops_the_run() {
        let (base, _) = register(r#"202 Accepted|{"status":"pending"}"#).await;
        let err = create(&base, "b", &accounts(2), 2, 1).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("202") && text.contains("approval"), "{text}");
    }
}
