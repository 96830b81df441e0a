//! The groups of the group scenario, made through the register HTTP API:
//! the first member of each creates it (`POST /groups`, and is its first
//! member), the others join (`POST /groups/{id}/join`).

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::json;

use crate::idle::provision::Account;
use crate::push::clock;

/// Longest one register request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Created {
    group_id: u64,
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
        .json(&json!({ "name": name }))
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
    let group_id = reply
        .json::<Created>()
        .await
        .with_context(|| format!("POST /groups {name}: reply"))?
        .group_id;
    for member in &members[1..] {
        let reply = http
            .post(format!("{base}/groups/{group_id}/join"))
            .bearer_auth(&member.token)
            .send()
            .await
            .with_context(|| format!("POST {base}/groups/{group_id}/join"))?;
        let status = reply.status();
        if !status.is_success() {
            bail!(
                "POST /groups/{group_id}/join as {}: {status} {}",
                member.name,
                reply.text().await.unwrap_or_default()
            );
        }
    }
    Ok(group_id)
}
