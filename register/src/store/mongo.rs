//! Accounts and groups in MongoDB.
//!
//! Collections: `users` {_id: i64, name (unique), password_hash}, `groups`
//! {_id: i64, name, owner_id, open}, `group_members` {group_id, user_id,
//! state, admin} and `counters` {_id: collection, seq} handing out ids with
//! `$inc`.
//!
//! `group_members` holds each (group, user) pair's one relation, unique on
//! the pair and indexed by user for "a user's groups": `state` is "member",
//! "requested" (a join request) or "invited"; a record without `state` was
//! written before groups had requests and invitations and is a member. One
//! record per pair makes every transition (request to member, member to
//! nothing, ...) a single conditional write, so of two racing changes of a
//! pair exactly one applies and no pair is ever both asked and a member. The counter documents are
//! created before any `$inc` because an upsert racing on a missing document
//! can answer `None` on the server we run (INFRA.md).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::{Accounts, Groups, Removable};
use crate::error::StoreError;
use crate::model::{Group, GroupId, Pending, Relation, UserId, UserRecord};

/// MongoDB's code for a write that breaks a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// How long a request waits for a reachable server before failing as unavailable
/// (the driver's default, 30 s, would hang callers far past their own deadlines).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The counter handing out user ids.
const USERS_COUNTER: &str = "users";
/// The counter handing out group ids.
const GROUPS_COUNTER: &str = "groups";
const MEMBERSHIP_COUNTER: &str = "membership_epochs";

#[derive(Debug, Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: i64,
    name: String,
    password_hash: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupDoc {
    #[serde(rename = "_id")]
    id: i64,
    name: String,
    owner_id: i64,
    /// Absent in groups made before the flag existed: anyone could join those, and still may.
    #[serde(default = "open_before_the_flag")]
    open: bool,
}

fn open_before_the_flag() -> bool {
    true
}

/// A pair's relation, as stored in `group_members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Member,
    Requested,
    Invited,
}

#[derive(Debug, Serialize, Deserialize)]
struct RelationDoc {
    group_id: i64,
    user_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<State>,
    #[serde(default)]
    admin: bool,
}

/// Users and groups in one MongoDB database.
#[derive(Debug, Clone)]
pub struct MongoStore {
    users: Collection<UserDoc>,
    groups: Collection<GroupDoc>,
    members: Collection<RelationDoc>,
    counters: Collection<Document>,
}

/// Connects a client to `url` (failing requests after a few seconds without a server).
pub async fn connect(url: &str) -> Result<Client, StoreError> {
    let mut options = ClientOptions::parse(url).await.map_err(backend)?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options
        .app_name
        .get_or_insert_with(|| "fishchat-register".to_owned());
    Client::with_options(options).map_err(backend)
}

impl MongoStore {
    /// Opens the store in `db`, creating its indexes and counters if missing.
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let store = Self {
            users: db.collection("users"),
            groups: db.collection("groups"),
            members: db.collection("group_members"),
            counters: db.collection("counters"),
        };
        let unique = || IndexOptions::builder().unique(true).build();
        store
            .users
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "name": 1 })
                    .options(unique())
                    .build(),
            )
            .await
            .map_err(backend)?;
        store
            .members
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "group_id": 1, "user_id": 1 })
                    .options(unique())
                    .build(),
            )
            .await
            .map_err(backend)?;
        store
            .members
            .create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build())
            .await
            .map_err(backend)?;
        for counter in [USERS_COUNTER, GROUPS_COUNTER, MEMBERSHIP_COUNTER] {
            match store
                .counters
                .insert_one(doc! { "_id": counter, "seq": 0_i64 })
                .await
            {
                Ok(_) => {}
                Err(err) if is_duplicate(&err) => {}
                Err(err) => return Err(backend(err)),
            }
        }
        Ok(store)
    }

    async fn next_id(&self, counter: &str) -> Result<i64, StoreError> {
        let after = self
            .counters
            .find_one_and_update(doc! { "_id": counter }, doc! { "$inc": { "seq": 1_i64 } })
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::corrupt(format!("counter {counter} is missing")))?;
        after
            .get_i64("seq")
            .map_err(|err| StoreError::corrupt(format!("counter {counter}: {err}")))
    }

    async fn insert_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError> {
        let id = self.next_id(USERS_COUNTER).await?;
        let user = UserDoc {
            id,
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
        };
        match self.users.insert_one(&user).await {
            Ok(_) => to_u64(id),
            Err(err) if is_duplicate(&err) => Err(StoreError::Duplicate),
            Err(err) => Err(backend(err)),
        }
    }

    async fn find_user(&self, filter: Document) -> Result<Option<UserRecord>, StoreError> {
        let Some(user) = self.users.find_one(filter).await.map_err(backend)? else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            id: to_u64(user.id)?,
            name: user.name,
            password_hash: user.password_hash,
        }))
    }

    async fn insert_group(&self, group: &Group) -> Result<(), StoreError> {
        let id = to_i64(group.id)?;
        let owner_id = to_i64(group.owner_id)?;
        let doc = GroupDoc {
            id,
            name: group.name.clone(),
            owner_id,
            open: group.open,
        };
        self.groups.insert_one(&doc).await.map_err(backend)?;
        let owner = RelationDoc {
            group_id: id,
            user_id: owner_id,
            state: Some(State::Member),
            admin: false,
        };
        if let Err(err) = self.members.insert_one(&owner).await {
            // A group without its owner would be unusable: undo it (best effort; on
            // failure it is an orphan nobody was told about).
            if let Err(undo) = self.groups.delete_one(doc! { "_id": id }).await {
                tracing::warn!(group_id = id, %undo, "cannot remove a half-created group");
            }
            return Err(backend(err));
        }
        Ok(())
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let found = self
            .groups
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.map(Group::try_from).transpose()
    }

    async fn relation(&self, group: GroupId, user: UserId) -> Result<Option<Relation>, StoreError> {
        let found = self
            .members
            .find_one(pair(group, user)?)
            .await
            .map_err(backend)?;
        Ok(found.map(|doc| doc.relation()))
    }

    /// Inserts a record for a pair that has none; false when it has one.
    async fn insert_relation(
        &self,
        group: GroupId,
        user: UserId,
        state: State,
    ) -> Result<bool, StoreError> {
        let doc = RelationDoc {
            group_id: to_i64(group)?,
            user_id: to_i64(user)?,
            state: Some(state),
            admin: false,
        };
        match self.members.insert_one(&doc).await {
            Ok(_) => Ok(true),
            Err(err) if is_duplicate(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        from: Option<Pending>,
    ) -> Result<bool, StoreError> {
        let Some(from) = from else {
            return self.insert_relation(group, user, State::Member).await;
        };
        let mut filter = pair(group, user)?;
        filter.insert("state", State::from(from).as_str());
        let update = doc! { "$set": { "state": State::Member.as_str(), "admin": false } };
        let result = self
            .members
            .update_one(filter, update)
            .await
            .map_err(backend)?;
        Ok(result.matched_count > 0)
    }

    async fn remove(
        &self,
        group: GroupId,
        user: UserId,
        which: Removable,
    ) -> Result<bool, StoreError> {
        let mut filter = pair(group, user)?;
        match which {
            Removable::Member => {
                filter.insert("state", is_member());
            }
            Removable::PlainMember => {
                filter.insert("state", is_member());
                filter.insert("admin", doc! { "$ne": true });
            }
            Removable::Pending(p) => {
                filter.insert("state", State::from(p).as_str());
            }
        }
        let result = self.members.delete_one(filter).await.map_err(backend)?;
        Ok(result.deleted_count > 0)
    }

    async fn set_admin(
        &self,
        group: GroupId,
        user: UserId,
        admin: bool,
    ) -> Result<bool, StoreError> {
        let mut filter = pair(group, user)?;
        filter.insert("state", is_member());
        let result = self
            .members
            .update_one(filter, doc! { "$set": { "admin": admin } })
            .await
            .map_err(backend)?;
        Ok(result.matched_count > 0)
    }

    async fn find_relations(&self, filter: Document) -> Result<Vec<RelationDoc>, StoreError> {
        self.members
            .find(filter)
            .sort(doc! { "user_id": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)
    }

    async fn members(&self, group: GroupId) -> Result<Vec<(UserId, bool)>, StoreError> {
        let found = self
            .find_relations(doc! { "group_id": to_i64(group)?, "state": is_member() })
            .await?;
        found
            .into_iter()
            .map(|m| Ok((to_u64(m.user_id)?, m.admin)))
            .collect()
    }

    async fn pending(&self, group: GroupId, pending: Pending) -> Result<Vec<UserId>, StoreError> {
        let filter = doc! { "group_id": to_i64(group)?, "state": State::from(pending).as_str() };
        let found = self.find_relations(filter).await?;
        found.into_iter().map(|m| to_u64(m.user_id)).collect()
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<Group>, StoreError> {
        let memberships = self
            .find_relations(doc! { "user_id": to_i64(user)?, "state": is_member() })
            .await?;
        let ids: Vec<i64> = memberships.into_iter().map(|m| m.group_id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<GroupDoc> = self
            .groups
            .find(doc! { "_id": { "$in": ids } })
            .sort(doc! { "_id": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        groups.into_iter().map(Group::try_from).collect()
    }
}

/// The filter of one pair's record.
fn pair(group: GroupId, user: UserId) -> Result<Document, StoreError> {
    Ok(doc! { "group_id": to_i64(group)?, "user_id": to_i64(user)? })
}

/// The `state` condition of a membership: "member", or no state at all.
fn is_member() -> Document {
    doc! { "$nin": [State::Requested.as_str(), State::Invited.as_str()] }
}

impl RelationDoc {
    fn relation(&self) -> Relation {
        match self.state {
            None | Some(State::Member) => Relation::Member { admin: self.admin },
            Some(State::Requested) => Relation::Pending(Pending::Requested),
            Some(State::Invited) => Relation::Pending(Pending::Invited),
        }
    }
}

impl From<Pending> for State {
    fn from(p: Pending) -> Self {
        match p {
            Pending::Requested => State::Requested,
            Pending::Invited => State::Invited,
        }
    }
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Member => "member",
            State::Requested => "requested",
            State::Invited => "invited",
        }
    }
}

impl TryFrom<GroupDoc> for Group {
    type Error = StoreError;

    fn try_from(doc: GroupDoc) -> Result<Self, StoreError> {
        Ok(Group {
            id: to_u64(doc.id)?,
            name: doc.name,
            owner_id: to_u64(doc.owner_id)?,
            open: doc.open,
        })
    }
}

impl Accounts for MongoStore {
    fn insert_user<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
    ) -> BoxFuture<'a, Result<UserId, StoreError>> {
        self.insert_user(name, password_hash).boxed()
    }

    fn user_by_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserRecord>, StoreError>> {
        self.find_user(doc! { "name": name }).boxed()
    }

    fn user_by_id(&self, id: UserId) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>> {
        async move {
            let Ok(id) = i64::try_from(id) else {
                return Ok(None);
            };
            self.find_user(doc! { "_id": id }).await
        }
        .boxed()
    }
}

impl Groups for MongoStore {
    fn next_group_id(&self) -> BoxFuture<'_, Result<GroupId, StoreError>> {
        async move { to_u64(self.next_id(GROUPS_COUNTER).await?) }.boxed()
    }

    fn next_membership_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move { to_u64(self.next_id(MEMBERSHIP_COUNTER).await?) }.boxed()
    }

    fn insert_group<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<(), StoreError>> {
        self.insert_group(group).boxed()
    }

    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>> {
        self.group(id).boxed()
    }

    fn relation(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<Option<Relation>, StoreError>> {
        self.relation(group, user).boxed()
    }

    fn add_pending(
        &self,
        group: GroupId,
        user: UserId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.insert_relation(group, user, pending.into()).boxed()
    }

    fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        from: Option<Pending>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.add_member(group, user, from).boxed()
    }

    fn remove(
        &self,
        group: GroupId,
        user: UserId,
        which: Removable,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.remove(group, user, which).boxed()
    }

    fn set_admin(
        &self,
        group: GroupId,
        user: UserId,
        admin: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.set_admin(group, user, admin).boxed()
    }

    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<(UserId, bool)>, StoreError>> {
        self.members(group).boxed()
    }

    fn pending(
        &self,
        group: GroupId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>> {
        self.pending(group, pending).boxed()
    }

    fn groups_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Group>, StoreError>> {
        self.groups_of(user).boxed()
    }
}

fn backend(err: mongodb::error::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

fn is_duplicate(err: &mongodb::error::Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == DUPLICATE_KEY
    )
}

/// Ids are positive i64 in MongoDB (BSON has no u64) and u64 on the wire.
fn to_u64(id: i64) -> Result<u64, StoreError> {
    u64::try_from(id).map_err(|_| StoreError::corrupt(format!("negative id {id} in MongoDB")))
}

/// The stored form of an id; ids above i64::MAX were never handed out.
fn to_i64(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::corrupt(format!("id {id} out of range")))
}
