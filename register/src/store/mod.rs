//! The storage the domain needs, as small traits it owns, and their adapters.
//!
//! The traits return boxed futures so the domain can hold them as trait
//! objects (`Arc<dyn Accounts>`) and tests can swap in the in-memory
//! stand-ins. The adapters: [`mongo::MongoStore`] for accounts and groups,
//! [`redis::RedisStore`] for tokens and sessions.

#[cfg(test)]
pub(crate) mod memory;
pub mod mongo;
pub mod redis;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::model::{Group, GroupId, Session, TokenRecord, UserId, UserRecord};

/// Durable user accounts.
pub trait Accounts: Send + Sync {
    /// Stores a user under a fresh id; [`StoreError::Duplicate`] when the name is taken.
    fn insert_user<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
    ) -> BoxFuture<'a, Result<UserId, StoreError>>;
    /// The user with this exact name.
    fn user_by_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserRecord>, StoreError>>;
    /// The user with this id.
    fn user_by_id(&self, id: UserId) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>>;
}

/// Durable groups and their members.
pub trait Groups: Send + Sync {
    /// Stores a group under a fresh id, with `owner` as its first member.
    fn create_group<'a>(
        &'a self,
        owner: UserId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Group, StoreError>>;
    /// The group with this id.
    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>>;
    /// Adds a member; false when already one.
    fn add_member(&self, group: GroupId, user: UserId) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Removes a member; false when not one.
    fn remove_member(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// A group's members, by increasing id.
    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>>;
    /// The groups a user belongs to, by increasing id.
    fn groups_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Group>, StoreError>>;
}

/// Expiring login tokens.
pub trait Tokens: Send + Sync {
    /// Stores `record` under `token`, kept (findable) for `keep`.
    fn put<'a>(
        &'a self,
        token: &'a str,
        record: TokenRecord,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The record of `token`, while it is kept.
    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>>;
    /// Forgets `token`; false when it was not there.
    fn delete<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// Where each user's devices are connected.
pub trait Sessions: Send + Sync {
    /// Stores `session` for its (user, device), atomically returning the one it overwrote.
    fn record<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;
    /// Deletes the (user, device) session only if it still names `node` and
    /// `conn_id`, atomically; true when it did.
    fn remove<'a>(
        &'a self,
        user: UserId,
        device: &'a str,
        node: &'a str,
        conn_id: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Re-records `session` unless another connection holds its (user,
    /// device), atomically; true when `session` is (now) the recorded one.
    fn touch<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Every session of each of `users`.
    fn list<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Result<Vec<Session>, StoreError>>;
}
