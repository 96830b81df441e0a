//! Users and login tokens made in bulk before the flood, through the register
//! HTTP API, and cached so a rerun against the same deployment skips it.
//!
//! The flood measures the client-protocol LOGIN through the access node, so
//! the accounts and their tokens must exist beforehand: `POST /users` (an
//! existing name is reused) then `POST /login`, many at a time.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// The password every bench account gets.
const PASSWORD: &str = "fishchat-bench-password";
/// Longest one register request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One bench account with a login token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// The user name, `<prefix>-<index>`.
    pub name: String,
    /// Its user id.
    pub user_id: u64,
    /// A login token.
    pub token: String,
    /// When the token expires, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Accounts the tokio baseline accepts without register: user `i+1` logs in
/// with `tok-<i+1>`.
pub fn baseline_accounts(count: usize) -> Vec<Account> {
    (1..=count as u64)
        .map(|id| Account {
            name: format!("baseline-{id}"),
            user_id: id,
            token: format!("tok-{id}"),
            expires_at_ms: i64::MAX,
        })
        .collect()
}

/// The cache file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    register: String,
    prefix: String,
    accounts: Vec<Account>,
}

/// How the accounts of a run were obtained.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Provisioned {
    /// Taken from the cache file.
    pub cached: usize,
    /// Logged in afresh (created, or found existing).
    pub logged_in: usize,
    /// Seconds spent on the register API.
    pub secs: f64,
}

/// The register API.
#[derive(Debug, Clone)]
struct Register {
    http: reqwest::Client,
    base: String,
}

#[derive(Serialize)]
struct Credentials<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct LoginBody {
    user_id: u64,
    token: String,
    expires_at_ms: i64,
}

impl Register {
    async fn post(&self, path: &str, name: &str) -> anyhow::Result<reqwest::Response> {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&Credentials {
                name,
                password: PASSWORD,
            })
            .send()
            .await
            .with_context(|| format!("POST {}{path}", self.base))
    }

    /// Creates `name` (reusing it when it exists) and logs it in.
    async fn account(&self, name: String) -> anyhow::Result<Account> {
        let created = self.post("/users", &name).await?;
        let status = created.status();
        if !(status == StatusCode::CREATED || status == StatusCode::CONFLICT) {
            bail!(
                "POST /users {name}: {status} {}",
                created.text().await.unwrap_or_default()
            );
        }
        let login = self.post("/login", &name).await?;
        let status = login.status();
        if !status.is_success() {
            bail!(
                "POST /login {name}: {status} {} (an existing user with another password?)",
                login.text().await.unwrap_or_default()
            );
        }
        let body: LoginBody = login
            .json()
            .await
            .with_context(|| format!("POST /login {name}: reply"))?;
        Ok(Account {
            name,
            user_id: body.user_id,
            token: body.token,
            expires_at_ms: body.expires_at_ms,
        })
    }
}

/// What [`accounts`] needs.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Register's HTTP base URL.
    pub register: &'a str,
    /// User name prefix.
    pub prefix: &'a str,
    /// Accounts wanted.
    pub count: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long a cached token must stay valid to be reused.
    pub valid_for: Duration,
    /// Ignore the cache.
    pub fresh: bool,
}

/// The accounts `<prefix>-0 .. <prefix>-<count-1>`, from `cache` where still
/// valid, from the register API otherwise; the cache is rewritten, and a line
/// says where the accounts came from.
pub async fn accounts(
    plan: &Plan<'_>,
    cache_path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<(Vec<Account>, Provisioned)> {
    let register = plan.register.trim_end_matches('/').to_owned();
    let mut cache = if plan.fresh {
        Cache::default()
    } else {
        load(cache_path)
    };
    if cache.register != register || cache.prefix != plan.prefix {
        cache = Cache {
            register: register.clone(),
            prefix: plan.prefix.to_owned(),
            accounts: Vec::new(),
        };
    }
    let valid_until =
        now_ms().saturating_add(i64::try_from(plan.valid_for.as_millis()).unwrap_or(i64::MAX));
    let mut slots: Vec<Option<Account>> = (0..plan.count)
        .map(|i| {
            cache
                .accounts
                .get(i)
                .filter(|a| a.expires_at_ms > valid_until && a.name == name(plan.prefix, i))
                .cloned()
        })
        .collect();
    let missing: Vec<usize> = (0..plan.count).filter(|&i| slots[i].is_none()).collect();
    let cached = plan.count - missing.len();
    bar.set_length(plan.count as u64);
    bar.set_position(cached as u64);

    let api = Register {
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("HTTP client")?,
        base: register.clone(),
    };
    let started = std::time::Instant::now();
    let made: Vec<(usize, Account)> = stream::iter(missing.iter().copied())
        .map(|i| {
            let api = api.clone();
            let name = name(plan.prefix, i);
            async move {
                let account = api.account(name).await?;
                bar.inc(1);
                anyhow::Ok((i, account))
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .try_collect()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    for (i, account) in made {
        slots[i] = Some(account);
    }
    let accounts: Vec<Account> = slots.into_iter().flatten().collect();
    // Keep cached accounts beyond this run's count for a larger rerun.
    let mut kept = accounts.clone();
    kept.extend(cache.accounts.into_iter().skip(plan.count));
    save(
        cache_path,
        &Cache {
            register,
            prefix: plan.prefix.to_owned(),
            accounts: kept,
        },
    )?;
    eprintln!(
        "accounts: {cached} cached, {} logged in through {} in {secs:.1} s",
        missing.len(),
        plan.register
    );
    Ok((
        accounts,
        Provisioned {
            cached,
            logged_in: missing.len(),
            secs,
        },
    ))
}

/// The name of account `i`.
fn name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The cache, or an empty one when it is missing or unreadable (it is only a shortcut).
fn load(path: &Path) -> Cache {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save(path: &Path, cache: &Cache) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec(cache)?)
        .with_context(|| format!("write {}", path.display()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_corrupt_cache_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        assert!(load(&path).accounts.is_empty());
        std::fs::write(&path, b"{not json").expect("write");
        assert!(load(&path).accounts.is_empty());
    }

    #[test]
    fn a_saved_cache_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("tokens.json");
        let cache = Cache {
            register: "http://r".into(),
            prefix: "p".into(),
            accounts: vec![Account {
                name: name("p", 0),
                user_id: 7,
                token: "t".into(),
                expires_at_ms: 9,
            }],
        };
        save(&path, &cache).expect("save");
        let back = load(&path);
        assert_eq!(back.register, "http://r");
        assert_eq!(back.accounts.len(), 1);
        assert_eq!(back.accounts[0].name, "p-0");
    }
}
