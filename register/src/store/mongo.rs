//! Accounts and groups in MongoDB.
//!
//! Collections: `users` {_id: i64, name (unique), password_hash}, `groups`
//! {_id: i64, name, owner_id}, `group_members` {group_id, user_id} (unique on
//! the pair, indexed by user for "a user's groups") and `counters` {_id:
//! collection, seq} handing out ids with `$inc`. The counter documents are
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

use super::{Accounts, Groups};
use crate::error::StoreError;
use crate::model::{Group, GroupId, UserId, UserRecord};

/// MongoDB's code for a write that breaks a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// How long a request waits for a reachable server before failing as unavailable
/// (the driver's default, 30 s, would hang callers far past their own deadlines).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The counter handing out user ids.
const USERS_COUNTER: &str = "users";
/// The counter handing out group ids.
const GROUPS_COUNTER: &str = "groups";

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
}

#[derive(Debug, Serialize, Deserialize)]
struct MemberDoc {
    group_id: i64,
    user_id: i64,
}

/// Users and groups in one MongoDB database.
#[derive(Debug, Clone)]
pub struct MongoStore {
    users: Collection<UserDoc>,
    groups: Collection<GroupDoc>,
    members: Collection<MemberDoc>,
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
        for counter in [USERS_COUNTER, GROUPS_COUNTER] {
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

    async fn create_group(&self, owner: UserId, name: &str) -> Result<Group, StoreError> {
        let owner_id = to_i64(owner)?;
        let id = self.next_id(GROUPS_COUNTER).await?;
        let group = GroupDoc {
            id,
            name: name.to_owned(),
            owner_id,
        };
        self.groups.insert_one(&group).await.map_err(backend)?;
        let member = MemberDoc {
            group_id: id,
            user_id: owner_id,
        };
        if let Err(err) = self.members.insert_one(&member).await {
            // A group without its owner would be unusable: undo it (best effort; on
            // failure it is an orphan nobody was told about).
            if let Err(undo) = self.groups.delete_one(doc! { "_id": id }).await {
                tracing::warn!(group_id = id, %undo, "cannot remove a half-created group");
            }
            return Err(backend(err));
        }
        group.try_into()
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

    async fn add_member(&self, group: GroupId, user: UserId) -> Result<bool, StoreError> {
        let member = MemberDoc {
            group_id: to_i64(group)?,
            user_id: to_i64(user)?,
        };
        match self.members.insert_one(&member).await {
            Ok(_) => Ok(true),
            Err(err) if is_duplicate(&err) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn remove_member(&self, group: GroupId, user: UserId) -> Result<bool, StoreError> {
        let filter = doc! { "group_id": to_i64(group)?, "user_id": to_i64(user)? };
        let result = self.members.delete_one(filter).await.map_err(backend)?;
        Ok(result.deleted_count > 0)
    }

    async fn members(&self, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        let members: Vec<MemberDoc> = self
            .members
            .find(doc! { "group_id": to_i64(group)? })
            .sort(doc! { "user_id": 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        members.into_iter().map(|m| to_u64(m.user_id)).collect()
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<Group>, StoreError> {
        let memberships: Vec<MemberDoc> = self
            .members
            .find(doc! { "user_id": to_i64(user)? })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
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

impl TryFrom<GroupDoc> for Group {
    type Error = StoreError;

    fn try_from(doc: GroupDoc) -> Result<Self, StoreError> {
        Ok(Group {
            id: to_u64(doc.id)?,
            name: doc.name,
            owner_id: to_u64(doc.owner_id)?,
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
    fn create_group<'a>(
        &'a self,
        owner: UserId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Group, StoreError>> {
        self.create_group(owner, name).boxed()
    }

    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>> {
        self.group(id).boxed()
    }

    fn add_member(&self, group: GroupId, user: UserId) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.add_member(group, user).boxed()
    }

    fn remove_member(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.remove_member(group, user).boxed()
    }

    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>> {
        self.members(group).boxed()
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
