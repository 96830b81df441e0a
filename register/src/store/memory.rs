//! In-memory stand-ins for the storage traits, for unit tests of the domain.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::{Accounts, Attempts, Groups, Removable, Sessions, Tokens, Touched};
use crate::announce::Announcer;
use crate::error::StoreError;
use crate::model::{Group, GroupId, Pending, Relation, Session, TokenRecord, UserId, UserRecord};

/// Every store in one struct, behind one lock.
#[derive(Default)]
pub(crate) struct Memory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: BTreeMap<UserId, UserRecord>,
    groups: BTreeMap<GroupId, Group>,
    relations: BTreeMap<(GroupId, UserId), Relation>,
    announcements: Vec<(&'static str, u64)>,
    tokens: HashMap<String, TokenRecord>,
    sessions: BTreeMap<(UserId, String), Session>,
    /// Counts and their windows; windows never run out here.
    attempts: HashMap<String, (u64, Duration)>,
    next_id: u64,
    next_epoch: u64,
}

impl Memory {
    /// Every announcement so far, in order.
    pub(crate) fn announcements(&self) -> Vec<(&'static str, u64)> {
        self.inner.lock().announcements.clone()
    }

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
    fn next_group_id(&self) -> BoxFuture<'_, Result<GroupId, StoreError>> {
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        Self::ready(inner.next_id)
    }

    fn next_membership_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut inner = self.inner.lock();
        inner.next_epoch += 1;
        Self::ready(inner.next_epoch)
    }

    fn insert_group<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.inner.lock();
        inner.groups.insert(group.id, group.clone());
        inner.relations.insert(
            (group.id, group.owner_id),
            Relation::Member { admin: false },
        );
        Self::ready(())
    }

    fn group(&self, id: GroupId) -> BoxFuture<'_, Result<Option<Group>, StoreError>> {
        Self::ready(self.inner.lock().groups.get(&id).cloned())
    }

    fn relation(
        &self,
        group: GroupId,
        user: UserId,
    ) -> BoxFuture<'_, Result<Option<Relation>, StoreError>> {
        Self::ready(self.inner.lock().relations.get(&(group, user)).copied())
    }

    fn add_pending(
        &self,
        group: GroupId,
        user: UserId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let added = match inner.relations.entry((group, user)) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(Relation::Pending(pending));
                true
            }
        };
        Self::ready(added)
    }

    fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        from: Option<Pending>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let current = inner.relations.get(&(group, user)).copied();
        let matches = match (current, from) {
            (None, None) => true,
            (Some(Relation::Pending(p)), Some(from)) => p == from,
            _ => false,
        };
        if matches {
            inner
                .relations
                .insert((group, user), Relation::Member { admin: false });
        }
        Self::ready(matches)
    }

    fn remove(
        &self,
        group: GroupId,
        user: UserId,
        which: Removable,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let current = inner.relations.get(&(group, user)).copied();
        let matches = match (current, which) {
            (Some(Relation::Member { .. }), Removable::Member) => true,
            (Some(Relation::Member { admin }), Removable::PlainMember) => !admin,
            (Some(Relation::Pending(p)), Removable::Pending(which)) => p == which,
            _ => false,
        };
        if matches {
            inner.relations.remove(&(group, user));
        }
        Self::ready(matches)
    }

    fn set_admin(
        &self,
        group: GroupId,
        user: UserId,
        admin: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.inner.lock();
        let member = match inner.relations.get_mut(&(group, user)) {
            Some(Relation::Member { admin: flag }) => {
                *flag = admin;
                true
            }
            _ => false,
        };
        Self::ready(member)
    }

    fn members(&self, group: GroupId) -> BoxFuture<'_, Result<Vec<(UserId, bool)>, StoreError>> {
        let inner = self.inner.lock();
        let members = inner
            .relations
            .range((group, 0)..=(group, UserId::MAX))
            .filter_map(|((_, user), relation)| match relation {
                Relation::Member { admin } => Some((*user, *admin)),
                Relation::Pending(_) => None,
            })
            .collect();
        Self::ready(members)
    }

    fn pending(
        &self,
        group: GroupId,
        pending: Pending,
    ) -> BoxFuture<'_, Result<Vec<UserId>, StoreError>> {
        let inner = self.inner.lock();
        let users = inner
            .relations
            .range((group, 0)..=(group, UserId::MAX))
            .filter(|(_, relation)| **relation == Relation::Pending(pending))
            .map(|((_, user), _)| *user)
            .collect();
        Self::ready(users)
    }

    fn groups_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Group>, StoreError>> {
        let inner = self.inner.lock();
        let groups = inner
            .relations
            .iter()
            .filter(|((_, u), relation)| *u == user && matches!(relation, Relation::Member { .. }))
            .filter_map(|((g, _), _)| inner.groups.get(g).cloned())
            .collect();
        Self::ready(groups)
    }
}

impl Announcer for Memory {
    fn publish(&self, channel: &'static str, id: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lock().announcements.push((channel, id));
        Self::ready(())
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

impl Attempts for Memory {
    fn counts<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(u64, Duration)>, StoreError>> {
        let inner = self.inner.lock();
        let counts = keys
            .iter()
            .map(|key| inner.attempts.get(key).copied().unwrap_or_default())
            .collect();
        Self::ready(counts)
    }

    fn count<'a>(
        &'a self,
        keys: &'a [String],
        window: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.inner.lock();
        for key in keys {
            inner.attempts.entry(key.clone()).or_insert((0, window)).0 += 1;
        }
        Self::ready(())
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.lock().attempts.remove(key);
        Self::ready(())
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

    fn touch<'a>(
        &'a self,
        sessions: &'a [Session],
    ) -> BoxFuture<'a, Result<Vec<Touched>, StoreError>> {
        let mut inner = self.inner.lock();
        let touched = sessions
            .iter()
            .map(|session| {
                let key = (session.user_id, session.device_id.clone());
                let touched = match inner.sessions.get(&key) {
                    None => Touched::Recorded,
                    Some(s) if s.same_connection(session) => Touched::Current,
                    Some(_) => Touched::Replaced,
                };
                if touched != Touched::Replaced {
                    inner.sessions.insert(key, session.clone());
                }
                touched
            })
            .collect();
        Self::ready(touched)
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

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let inner = self.inner.lock();
        let nodes: std::collections::BTreeSet<String> = inner
            .sessions
            .values()
            .map(|s| s.access_node_id.clone())
            .collect();
        Self::ready(nodes.into_iter().collect())
    }

    fn forget_node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<UserId>, StoreError>> {
        let mut inner = self.inner.lock();
        let mut users = Vec::new();
        inner.sessions.retain(|(user, _), s| {
            let keep = s.access_node_id != node;
            if !keep {
                users.push(*user);
            }
            keep
        });
        users.dedup();
        Self::ready(users)
    }
}
