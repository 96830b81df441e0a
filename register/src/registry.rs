//! The register's rules, over storage it reaches only through the traits of
//! [`crate::store`] and the outside world through [`MembershipLog`] and
//! [`Announcer`]. Both surfaces (gRPC and HTTP) call these methods and
//! nothing else. Accounts, tokens and sessions are here; groups in `groups`,
//! and how their changes are told and announced in `changes`.

mod changes;
mod groups;
mod login_limits;

pub use login_limits::LoginLimits;

use std::sync::Arc;
use std::time::Duration;

use fishchat_rpc::channels;
use tokio::sync::OnceCell;

use crate::announce::Announcer;
use crate::error::{Error, StoreError};
use crate::membership::MembershipLog;
use crate::metrics::Metrics;
use crate::model::{Group, GroupId, Login, Session, TokenRecord, User, UserId};
use crate::password::Passwords;
use crate::store::{Accounts, Attempts, Groups, Sessions, Tokens, Touched};
use crate::token;

/// Longest user or group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest password, in bytes (argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Longest device id, access node id or push address, in bytes.
pub const MAX_SESSION_FIELD_BYTES: usize = 256;
/// Most users one ListSessions may ask about.
pub const MAX_LIST_USERS: usize = 10_000;
/// Most sessions one heartbeat call may touch.
pub const MAX_TOUCH_SESSIONS: usize = 10_000;

/// What the decoy hash hashes; nothing can log in with it, as no user has it.
const DECOY_PASSWORD: &str = "decoy: no account has this hash";

/// The storage adapters the registry works over.
#[derive(Clone)]
pub struct Stores {
    /// User accounts (MongoDB).
    pub accounts: Arc<dyn Accounts>,
    /// Groups and members (MongoDB).
    pub groups: Arc<dyn Groups>,
    /// Login tokens (Redis).
    pub tokens: Arc<dyn Tokens>,
    /// Sessions (Redis).
    pub sessions: Arc<dyn Sessions>,
    /// Counts of failed logins (Redis).
    pub attempts: Arc<dyn Attempts>,
}

/// Where the registry tells others what changed.
#[derive(Clone)]
pub struct Outbound {
    /// Who joined and left which group (manager).
    pub membership: Arc<dyn MembershipLog>,
    /// Announcements of changed sessions and groups (Redis pub/sub).
    pub announcer: Arc<dyn Announcer>,
}

/// How long tokens live.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    /// How long a new token is accepted.
    pub ttl: Duration,
    /// How long after expiry a token is still told apart as EXPIRED (not BAD_TOKEN).
    pub grace: Duration,
}

/// Accounts, tokens, sessions and groups.
pub struct Registry {
    stores: Stores,
    outbound: Outbound,
    tokens: TokenPolicy,
    passwords: Passwords,
    login_limits: LoginLimits,
    metrics: Metrics,
    /// A hash to verify against when the name is unknown, so a failed login
    /// takes as long whether or not the name exists.
    decoy_hash: OnceCell<String>,
}

impl Registry {
    /// A registry over `stores`, telling `outbound` what changed.
    pub fn new(
        stores: Stores,
        outbound: Outbound,
        tokens: TokenPolicy,
        passwords: Passwords,
    ) -> Self {
        Self {
            stores,
            outbound,
            tokens,
            passwords,
            login_limits: LoginLimits::default(),
            metrics: Metrics::default(),
            decoy_hash: OnceCell::new(),
        }
    }

    /// Creates an account; the password is kept only as an argon2 hash.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<UserId, Error> {
        check_name("user name", name)?;
        check_password(password)?;
        let hash = self.passwords.hash(password.to_owned()).await?;
        match self.stores.accounts.insert_user(name, &hash).await {
            Ok(user_id) => {
                tracing::info!(user_id, name, "user created");
                Ok(user_id)
            }
            Err(StoreError::Duplicate) => Err(Error::NameTaken(name.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces the default limits on failed logins.
    pub fn with_login_limits(self, login_limits: LoginLimits) -> Self {
        Self {
            login_limits,
            ..self
        }
    }

    /// Counts logins, session changes and password hashing in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self {
            passwords: self.passwords.clone().with_metrics(metrics.clone()),
            metrics,
            ..self
        }
    }

    /// Checks a name and password and issues a new token. `source` is the
    /// client's address when the caller is a client (not another service);
    /// an account or address with too many recent failures is refused
    /// before any hashing (see [`LoginLimits`]).
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Login, Error> {
        let result = self.try_login(name, password, source).await;
        self.metrics.login(&result);
        result
    }

    async fn try_login(
        &self,
        name: &str,
        password: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Login, Error> {
        if name.is_empty() || password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::BadCredentials);
        }
        let limits = self.login_limits;
        let mut keys = vec![login_limits::account_key(name)];
        let mut maxima = vec![limits.failures_per_account];
        if let Some(source) = source {
            keys.push(login_limits::address_key(source));
            maxima.push(limits.failures_per_address);
        }
        let counts = self.stores.attempts.counts(&keys).await?;
        if let Some(retry_after) = login_limits::refusal(&counts, &maxima) {
            tracing::info!(
                name,
                ?source,
                ?retry_after,
                "login refused: too many failures"
            );
            return Err(Error::TooManyAttempts { retry_after });
        }
        let result = self.check_password(name, password).await;
        match &result {
            Err(Error::BadCredentials) => {
                self.stores
                    .attempts
                    .count(&keys[..1], limits.account_window)
                    .await?;
                self.stores
                    .attempts
                    .count(&keys[1..], limits.address_window)
                    .await?;
            }
            Ok(_) if counts.first().is_some_and(|(count, _)| *count > 0) => {
                self.stores.attempts.clear(&keys[0]).await?;
            }
            _ => {}
        }
        let user = result?;
        let token = token::new_token()?;
        let record = token::record_for(user, token::now_ms(), self.tokens.ttl);
        let keep = self.tokens.ttl.saturating_add(self.tokens.grace);
        self.stores.tokens.put(&token, record, keep).await?;
        tracing::info!(user_id = user, "logged in");
        Ok(Login {
            user_id: user,
            token,
            expires_at_ms: record.expires_at_ms,
        })
    }

    /// The user `name` names, if `password` is theirs; the same work whether
    /// or not the name exists.
    async fn check_password(&self, name: &str, password: &str) -> Result<UserId, Error> {
        let user = self.stores.accounts.user_by_name(name).await?;
        let Some(user) = user else {
            let decoy = self
                .decoy_hash
                .get_or_try_init(|| self.passwords.hash(DECOY_PASSWORD.to_owned()))
                .await?;
            self.passwords
                .verify(password.to_owned(), decoy.clone())
                .await?;
            return Err(Error::BadCredentials);
        };
        let good = self
            .passwords
            .verify(password.to_owned(), user.password_hash)
            .await?;
        if !good {
            tracing::info!(user_id = user.id, "login refused: wrong password");
            return Err(Error::BadCredentials);
        }
        Ok(user.id)
    }

    /// What a token stands for: BAD_TOKEN when unknown or revoked, TOKEN_EXPIRED when expired.
    pub async fn verify_token(&self, token: &str) -> Result<TokenRecord, Error> {
        if token.is_empty() || token.len() > token::MAX_TOKEN_LEN {
            return Err(Error::BadToken);
        }
        let record = self
            .stores
            .tokens
            .get(token)
            .await?
            .ok_or(Error::BadToken)?;
        token::check(record, token::now_ms())?;
        Ok(record)
    }

    /// Revokes a token at once; revoking an unknown token is not an error.
    pub async fn revoke_token(&self, token: &str) -> Result<(), Error> {
        if token.is_empty() || token.len() > token::MAX_TOKEN_LEN {
            return Ok(());
        }
        if self.stores.tokens.delete(token).await? {
            tracing::info!("token revoked");
        }
        Ok(())
    }

    /// A user by id.
    pub async fn get_user(&self, id: UserId) -> Result<User, Error> {
        let user = self
            .stores
            .accounts
            .user_by_id(id)
            .await?
            .ok_or(Error::UnknownUser(id))?;
        Ok(User {
            id: user.id,
            name: user.name,
        })
    }

    /// A user by name.
    pub async fn user_by_name(&self, name: &str) -> Result<User, Error> {
        let user = self
            .stores
            .accounts
            .user_by_name(name)
            .await?
            .ok_or_else(|| Error::UnknownUserName(name.to_owned()))?;
        Ok(User {
            id: user.id,
            name: user.name,
        })
    }

    /// Records a session and returns the one it replaced (another connection
    /// of the same user and device), which the caller should kick.
    pub async fn record_session(&self, session: &Session) -> Result<Option<Session>, Error> {
        check_session(session)?;
        let replaced = self.stores.sessions.record(session).await?;
        self.announce(channels::SESSIONS, session.user_id).await;
        // Recording the same connection twice (a retried call) replaces nothing.
        let replaced = replaced.filter(|old| !old.same_connection(session));
        self.metrics.sessions("recorded", 1);
        if replaced.is_some() {
            self.metrics.sessions("replaced", 1);
        }
        tracing::debug!(
            user_id = session.user_id,
            device_id = session.device_id,
            node = session.access_node_id,
            conn_id = session.conn_id,
            replaced = replaced.is_some(),
            "session recorded"
        );
        Ok(replaced)
    }

    /// Connections' heartbeats: for each, true while it holds its device's
    /// session (re-recording it if the device has none), false once another
    /// connection replaced it.
    pub async fn touch_sessions(&self, sessions: &[Session]) -> Result<Vec<bool>, Error> {
        if sessions.len() > MAX_TOUCH_SESSIONS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_TOUCH_SESSIONS} sessions per call"
            )));
        }
        sessions.iter().try_for_each(check_session)?;
        let touched = self.stores.sessions.touch(sessions).await?;
        for (session, _) in sessions
            .iter()
            .zip(&touched)
            .filter(|(_, touched)| **touched == Touched::Recorded)
        {
            self.announce(channels::SESSIONS, session.user_id).await;
        }
        Ok(touched
            .into_iter()
            .map(|t| t != Touched::Replaced)
            .collect())
    }

    /// Removes a session if it still names `node` and `conn_id`; true when it did.
    pub async fn remove_session(
        &self,
        user: UserId,
        device: &str,
        node: &str,
        conn_id: u64,
    ) -> Result<bool, Error> {
        check_field("device_id", device)?;
        check_field("access_node_id", node)?;
        let removed = self
            .stores
            .sessions
            .remove(user, device, node, conn_id)
            .await?;
        if removed {
            self.metrics.sessions("removed", 1);
            self.announce(channels::SESSIONS, user).await;
        }
        Ok(removed)
    }

    /// The access nodes that recorded sessions not yet forgotten.
    pub async fn session_nodes(&self) -> Result<Vec<String>, Error> {
        Ok(self.stores.sessions.nodes().await?)
    }

    /// Deletes every session still naming `node` (an access node that is
    /// gone), announcing each user who had one; how many users that was.
    pub async fn forget_node(&self, node: &str) -> Result<usize, Error> {
        let users = self.stores.sessions.forget_node(node).await?;
        self.metrics
            .sessions("swept", u64::try_from(users.len()).unwrap_or(u64::MAX));
        for user in &users {
            self.announce(channels::SESSIONS, *user).await;
        }
        Ok(users.len())
    }

    /// Every session of `users`.
    pub async fn list_sessions(&self, users: &[UserId]) -> Result<Vec<Session>, Error> {
        if users.len() > MAX_LIST_USERS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_LIST_USERS} users per call"
            )));
        }
        Ok(self.stores.sessions.list(users).await?)
    }

    /// Publishes `id` on `channel`; a failure is logged, never returned (see `crate::announce`).
    async fn announce(&self, channel: &'static str, id: u64) {
        if let Err(err) = self.outbound.announcer.publish(channel, id).await {
            tracing::warn!(channel, id, %err, "announcement lost; caches elsewhere stay stale");
        }
    }

    async fn existing_user(&self, id: UserId) -> Result<(), Error> {
        match self.stores.accounts.user_by_id(id).await? {
            Some(_) => Ok(()),
            None => Err(Error::UnknownUser(id)),
        }
    }

    async fn existing_group(&self, id: GroupId) -> Result<Group, Error> {
        self.stores
            .groups
            .group(id)
            .await?
            .ok_or(Error::UnknownGroup(id))
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("the {what} is empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "the {what} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(Error::InvalidArgument(format!(
            "the {what} has control characters or surrounding spaces"
        )));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), Error> {
    if password.is_empty() {
        return Err(Error::InvalidArgument("the password is empty".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What every recorded or touched session must carry.
fn check_session(session: &Session) -> Result<(), Error> {
    if session.user_id == 0 {
        return Err(Error::InvalidArgument("user_id is missing".into()));
    }
    check_field("device_id", &session.device_id)?;
    check_field("access_node_id", &session.access_node_id)?;
    check_field("push_addr", &session.push_addr)
}

fn check_field(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > MAX_SESSION_FIELD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what} must have 1 to {MAX_SESSION_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A registry over the in-memory stores, for the unit tests of its modules.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::membership::RecordingLog;
    use crate::store::memory::Memory;

    /// A registry, its stores (which also record announcements) and its membership log.
    pub(crate) struct Fixture {
        pub(crate) registry: Registry,
        pub(crate) memory: Arc<Memory>,
        pub(crate) log: Arc<RecordingLog>,
    }

    pub(crate) fn fixture(ttl: Duration) -> Fixture {
        let memory = Arc::new(Memory::default());
        let log = Arc::new(RecordingLog::default());
        let stores = Stores {
            accounts: memory.clone(),
            groups: memory.clone(),
            tokens: memory.clone(),
            sessions: memory.clone(),
            attempts: memory.clone(),
        };
        let outbound = Outbound {
            membership: log.clone(),
            announcer: memory.clone(),
        };
        let params = argon2::Params::new(1024, 1, 1, None).expect("valid params");
        let registry = Registry::new(
            stores,
            outbound,
            TokenPolicy {
                ttl,
                grace: Duration::from_secs(60),
            },
            Passwords::with_params(params),
        );
        Fixture {
            registry,
            memory,
            log,
        }
    }

    /// The users of [`with_group`].
    pub(crate) struct Users {
        pub(crate) owner: UserId,
        pub(crate) admin: UserId,
        pub(crate) bob: UserId,
        pub(crate) carol: UserId,
    }

    /// A fixture with four users and a group (`open` or not) of the owner and an admin.
    pub(crate) async fn with_group(open: bool) -> (Fixture, Users, Group) {
        let f = fixture(Duration::from_secs(60));
        let r = &f.registry;
        let mut ids = Vec::new();
        for name in ["owner", "admin", "bob", "carol"] {
            ids.push(r.create_user(name, "pw").await.expect("create"));
        }
        let users = Users {
            owner: ids[0],
            admin: ids[1],
            bob: ids[2],
            carol: ids[3],
        };
        let group = r.create_group(users.owner, "g", open).await.expect("group");
        r.invite(group.id, users.owner, users.admin)
            .await
            .expect("invite");
        r.join_group(group.id, users.admin).await.expect("join");
        r.set_admin(group.id, users.owner, users.admin, true)
            .await
            .expect("admin");
        (f, users, group)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::fixture;
    use super::*;
    use fishchat_codec::ErrorCode;

    fn registry(ttl: Duration) -> Registry {
        fixture(ttl).registry
    }

    fn session(user: UserId, device: &str, conn: u64) -> Session {
        Session {
            user_id: user,
            device_id: device.into(),
            access_node_id: "access-1".into(),
            push_addr: "127.0.0.1:7001".into(),
            conn_id: conn,
        }
    }

    #[tokio::test]
    async fn names_and_passwords_are_validated() {
        let r = registry(Duration::from_secs(60));
        for (name, password) in [
            ("", "pw"),
            ("   ", "pw"),
            (" alice", "pw"),
            ("al\nice", "pw"),
            ("alice", ""),
        ] {
            let err = r.create_user(name, password).await.expect_err(name);
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{name:?}: {err}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(matches!(
            r.create_user(&long, "pw").await,
            Err(Error::InvalidArgument(_))
        ));
        let long_pw = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            r.create_user("alice", &long_pw).await,
            Err(Error::InvalidArgument(_))
        ));
        r.create_user(&"é".repeat(MAX_NAME_CHARS), "pw")
            .await
            .expect("64 two-byte characters are fine");
    }

    #[tokio::test]
    async fn login_issues_tokens_that_verify_and_revoke() {
        let r = registry(Duration::from_secs(60));
        let id = r.create_user("alice", "pw").await.expect("create");
        assert!(matches!(
            r.create_user("alice", "other").await,
            Err(Error::NameTaken(_))
        ));
        assert!(matches!(
            r.login("alice", "nope", None).await,
            Err(Error::BadCredentials)
        ));
        assert!(matches!(
            r.login("bob", "pw", None).await,
            Err(Error::BadCredentials)
        ));
        let login = r.login("alice", "pw", None).await.expect("login");
        assert_eq!(login.user_id, id);
        let record = r.verify_token(&login.token).await.expect("verify");
        assert_eq!(
            (record.user_id, record.expires_at_ms),
            (id, login.expires_at_ms)
        );
        r.revoke_token(&login.token).await.expect("revoke");
        assert!(matches!(
            r.verify_token(&login.token).await,
            Err(Error::BadToken)
        ));
        assert!(matches!(r.verify_token("").await, Err(Error::BadToken)));
        assert!(matches!(
            r.verify_token(&"f".repeat(1000)).await,
            Err(Error::BadToken)
        ));
    }

    #[tokio::test]
    async fn an_expired_token_is_told_apart() {
        let r = registry(Duration::from_millis(1));
        r.create_user("alice", "pw").await.expect("create");
        let login = r.login("alice", "pw", None).await.expect("login");
        fishchat_e2e::wait_until(Duration::from_secs(2), "the token to expire", async || {
            matches!(r.verify_token(&login.token).await, Err(Error::TokenExpired)).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn sessions_replace_and_remove_only_when_matching() {
        let r = registry(Duration::from_secs(60));
        let first = session(1, "phone", 10);
        assert_eq!(r.record_session(&first).await.expect("record"), None);
        assert_eq!(
            r.record_session(&first).await.expect("re-record"),
            None,
            "the same connection replaces nothing"
        );
        let second = session(1, "phone", 11);
        assert_eq!(
            r.record_session(&second).await.expect("record"),
            Some(first)
        );
        assert!(
            !r.remove_session(1, "phone", "access-1", 10)
                .await
                .expect("remove")
        );
        assert!(
            r.remove_session(1, "phone", "access-1", 11)
                .await
                .expect("remove")
        );
        assert!(r.list_sessions(&[1]).await.expect("list").is_empty());
        let bad = session(0, "phone", 1);
        assert!(matches!(
            r.record_session(&bad).await,
            Err(Error::InvalidArgument(_))
        ));
        let too_many = vec![1; MAX_LIST_USERS + 1];
        assert!(matches!(
            r.list_sessions(&too_many).await,
            Err(Error::InvalidArgument(_))
        ));
        let too_many = vec![session(1, "phone", 1); MAX_TOUCH_SESSIONS + 1];
        assert!(matches!(
            r.touch_sessions(&too_many).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            r.touch_sessions(&[session(1, "phone", 1), bad]).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn session_changes_are_announced_and_heartbeats_are_not() {
        let f = fixture(Duration::from_secs(60));
        let r = &f.registry;
        let first = session(7, "phone", 10);
        r.record_session(&first).await.expect("record");
        assert_eq!(
            r.touch_sessions(std::slice::from_ref(&first))
                .await
                .expect("heartbeat"),
            [true]
        );
        assert!(
            !r.remove_session(7, "phone", "access-1", 99)
                .await
                .expect("remove another connection")
        );
        assert!(
            r.remove_session(7, "phone", "access-1", 10)
                .await
                .expect("remove")
        );
        // Lost from Redis: the next heartbeat records the session again, and
        // a later one in the same batch for the same device is the replaced one.
        let beats = [session(8, "laptop", 11), session(8, "laptop", 12)];
        assert_eq!(
            r.touch_sessions(&beats).await.expect("heartbeats"),
            [true, false]
        );
        let sessions = channels::SESSIONS;
        assert_eq!(
            f.memory.announcements(),
            [(sessions, 7), (sessions, 7), (sessions, 8)],
            "a record, a removal and a re-recording heartbeat; not the plain heartbeat, the failed removal nor the replaced one"
        );
    }

    #[tokio::test]
    async fn users_are_found_by_name() {
        let r = registry(Duration::from_secs(60));
        let alice = r.create_user("alice", "pw").await.expect("create");
        let found = r.user_by_name("alice").await.expect("found");
        assert_eq!((found.id, found.name.as_str()), (alice, "alice"));
        assert!(matches!(
            r.user_by_name("bob").await,
            Err(Error::UnknownUserName(name)) if name == "bob"
        ));
    }
}
