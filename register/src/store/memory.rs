//! In-memory stand-ins for the storage traits, for unit tests of the domain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::{Accounts, Groups, Sessions, Tokens};
use crate::error::StoreError;
use crate::model::{Group, GroupId, Session, TokenRecord, UserId, UserRecord};

/// Every store in one struct, behind one lock.
#[derive(Default)]
pub(crate) struct Memory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: BTreeMap<UserId, UserRecord>,
    groups: BTreeMap<GroupId, Group>,
    members: BTreeSet<(GroupId, UserId)>,
    tokens: HashMap<String, TokenRecord>,
    sessions: BTreeMap<(UserId, String), Session>,
    next_id: u64,
}

impl Memory {
    fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T, StoreError>> {
        futures::future::ready(Ok(value)).boxed()
    }
}

impl Accounts for Memory {
    fn insert_user<'a>(
        &'a self,
        name: &'a str,
        password_hash: &'a str,
    ) -> BoxFuture<'a, Result<UserId, StoreError>> {
        let mut inner = self.inner.lock();
        if inner.users.values().any(|u| u.name == name) {
            return futures::future::ready(Err(StoreError::Duplicate)).boxed();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let record = UserRecord {
            id,
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
        };
        inner.users.insert(id, record);
        Self::ready(id)
    }

    fn user_by_name<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserRecord>, StoreError>> {
        let found = self
            .inner
            .lock()
            .users
            .values()
            .find(|u| u.name == name)
            .cloned();
        Self::ready(found)
    }

    fn user_by_id(&self, id: UserId) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>> {
        Self::ready(self.inner.lock().users.get(&id).cloned())
    }
}

impl Groups for Memory {
    fn create_group<'a>(
        &'a self,
        owner: UserId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Group, StoreError>> {
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let group = Group {
            id: inner.next_id,
            name: name.to_owned(),
            owner_id: owner,
        };
        inner.groups.insert(group.id, group.clone());
        inner.members.insert((group.id, owner));
        Self::ready(group)
    }

    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>> {
        Self::ready(self.inner.lock().groups.get(&id).cloned())
    }

    fn add_member(&self, group: GroupId, user: UserId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Self::ready(self.inner.lock().members.insert((group, user)))
    }

    fn remove_member(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Self::ready(self.inner.lock().members.remove(&(group, user)))
    }

    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>> {
        let inner = self.inner.lock();
        let members = inner
            .members
            .iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, u)| *u)
            .collect();
        Self::ready(members)
    }

    fn groups_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Group>, StoreError>> {
        let inner = self.inner.lock();
        let groups = inner
            .members
            .iter()
            .filter(|(_, u)| *u == user)
            .filter_map(|(g, _)| inner.groups.get(g).cloned())
            .collect();
        Self::ready(groups)
    }
}

impl Tokens for Memory {
    fn put<'a>(
        &'a self,
        token: &'a str,
        record: TokenRecord,
        _keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.lock().tokens.insert(token.to_owned(), record);
        Self::ready(())
    }

    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Self::ready(self.inner.lock().tokens.get(token).copied())
    }

    fn delete<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Self::ready(self.inner.lock().tokens.remove(token).is_some())
    }
}

impl Sessions for Memory {
    fn record<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let key = (session.user_id, session.device_id.clone());
        Self::ready(self.inner.lock().sessions.insert(key, session.clone()))
    }

    fn remove<'a>(
        &'a self,
        user: UserId,
        device: &'a str,
        node: &'a str,
        conn_id: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let key = (user, device.to_owned());
        let matches = inner
            .sessions
            .get(&key)
            .is_some_and(|s| s.access_node_id == node && s.conn_id == conn_id);
        if matches {
            inner.sessions.remove(&key);
        }
        Self::ready(matches)
    }

    fn touch<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let key = (session.user_id, session.device_id.clone());
        let current = inner
            .sessions
            .get(&key)
            .is_none_or(|s| s.same_connection(session));
        if current {
            inner.sessions.insert(key, session.clone());
        }
        Self::ready(current)
    }

    fn list<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        let inner = self.inner.lock();
        let sessions = inner
            .sessions
            .values()
            .filter(|s| users.contains(&s.user_id))
            .cloned()
            .collect();
        Self::ready(sessions)
    }
}
