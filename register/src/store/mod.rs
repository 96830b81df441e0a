//! The storage the domain needs, as small traits it owns, and their adapters.
//!
//! The traits return boxed futures so the domain can hold them as trait
//! objects (`Arc<dyn Accounts>`) and tests can swap in the in-memory
//! stand-ins. The adapters: [`mongo::MongoStore`] for accounts and groups,
//! [`redis::RedisStore`] for tokens and sessions (and the announcements of
//! `crate::announce`, on the same connection).

#[cfg(test)]
pub(crate) mod memory;
pub mod mongo;
pub mod redis;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::model::{Group, GroupId, Pending, Relation, Session, TokenRecord, UserId, UserRecord};

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

/// Which relation [`Groups::remove`] may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removable {
    /// Membership, admin or not.
    Member,
    /// Membership of a user who is not an admin.
    PlainMember,
    /// A join request or an invitation.
    Pending(Pending),
}

/// Durable groups and each (group, user) pair's [`Relation`].
///
/// Every method that changes a pair is one atomic compare-and-set on that
/// pair's single record, so concurrent requests about one pair serialize
/// there: exactly one of two racing changes from the same relation wins.
pub trait Groups: Send + Sync {
    /// A fresh group id, never handed out again (one whose creation then
    /// fails is skipped).
    fn next_group_id(&self) -> BoxFuture<'_, Result<GroupId, StoreError>>;
    /// A fresh membership epoch, larger than every one handed out before:
    /// taken before each membership change, it tells manager the changes'
    /// order (see `crate::registry`).
    fn next_membership_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Stores `group` with its owner as first member.
    fn insert_group<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The group with this id.
    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>>;
    /// How `user` stands towards `group`.
    fn relation(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<Option<Relation>, StoreError>>;
    /// Records a join request or an invitation for a pair with no relation;
    /// false when the pair has one.
    fn add_pending(
        &self,
        group: GroupId,
        user: UserId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Makes `user` a plain member: from no relation when `from` is `None`,
    /// else from exactly `from`; false when the pair's relation is not that.
    fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        from: Option<Pending>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Deletes the pair's relation if it is `which`; false when it is not.
    fn remove(
        &self,
        group: GroupId,
        user: UserId,
        which: Removable,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Sets a member's admin flag; false when `user` is not a member.
    fn set_admin(
        &self,
        group: GroupId,
        user: UserId,
        admin: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// A group's members with their admin flags, by increasing user id.
    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<(UserId, bool)>, StoreError>>;
    /// The users with a `pending` relation to `group`, by increasing id.
    fn pending(
        &self,
        group: GroupId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>>;
    /// The groups a user is a member of, by increasing id.
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

/// Counters of failed attempts in fixed windows, shared by every register
/// node (the limits they enforce would be per node otherwise).
pub trait Attempts: Send + Sync {
    /// The count under each of `keys` and how long its window has left
    /// (zero for a key with no count).
    fn counts<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(u64, Duration)>, StoreError>>;
    /// Counts one more under each of `keys`; a key's window of `window`
    /// starts with its first count.
    fn count<'a>(
        &'a self,
        keys: &'a [String],
        window: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Forgets the count under `key`.
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The session named this connection and was refreshed.
    Current,
    /// The device had no session (say, Redis lost it); this connection's was recorded.
    Recorded,
    /// Another connection holds the device; nothing changed.
    Replaced,
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
    /// Re-records each of `sessions` unless another connection holds its
    /// (user, device), each atomically; what each found, in order.
    fn touch<'a>(
        &'a self,
        sessions: &'a [Session],
    ) -> BoxFuture<'a, Result<Vec<Touched>, StoreError>>;
    /// Every session of each of `users`.
    fn list<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Result<Vec<Session>, StoreError>>;
    /// The access nodes that recorded sessions not yet forgotten.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// Deletes every session still naming `node`; the users who had one.
    fn forget_node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<UserId>, StoreError>>;
}
