//! Remembering group members, so a group send does not ask register every time.
//!
//! Members change, so unlike users they cannot be kept forever: the answers
//! sit in an [`AnnouncedCache`] that drops a group the moment register
//! announces a change to it (and caches nothing while that subscription is
//! down). An unknown group is not kept, because it may be created a moment later.

use std::sync::Arc;

use fishchat_announcements::AnnouncedCache;

use crate::ports::{Directory, Refusal};

/// A [`Directory`] that answers group members from the cache when it can.
pub struct CachedGroups<D> {
    inner: D,
    groups: Arc<AnnouncedCache<Vec<u64>>>,
}

impl<D> CachedGroups<D> {
    /// Answers from `groups`, filled from `inner`.
    pub fn new(inner: D, groups: Arc<AnnouncedCache<Vec<u64>>>) -> Self {
        Self { inner, groups }
    }
}

impl<D: Directory> Directory for CachedGroups<D> {
    async fn user_exists(&self, user_id: u64) -> Result<bool, Refusal> {
        self.inner.user_exists(user_id).await
    }

    async fn group_members(&self, group_id: u64) -> Result<Vec<u64>, Refusal> {
        if let Some(members) = self.groups.get(group_id) {
            return Ok(members);
        }
        let ticket = self.groups.ticket();
        let members = self.inner.group_members(group_id).await?;
        self.groups.fill(ticket, [(group_id, members.clone())]);
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use fishchat_codec::ErrorCode;
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Register {
        lookups: AtomicUsize,
        members: Mutex<Vec<u64>>,
    }

    impl Directory for &Register {
        async fn user_exists(&self, _: u64) -> Result<bool, Refusal> {
            Ok(true)
        }
        async fn group_members(&self, group_id: u64) -> Result<Vec<u64>, Refusal> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if group_id == 1 {
                Ok(self.members.lock().clone())
            } else {
                Err(Refusal::new(ErrorCode::UnknownGroup, "no group"))
            }
        }
    }

    #[tokio::test]
    async fn members_come_from_the_cache_until_the_group_is_announced() {
        let register = Register::default();
        *register.members.lock() = vec![1, 2];
        let cache = Arc::new(AnnouncedCache::new(Duration::from_secs(60), 100));
        cache.reset(true);
        let groups = CachedGroups::new(&register, Arc::clone(&cache));
        assert_eq!(groups.group_members(1).await.unwrap(), [1, 2]);
        assert_eq!(groups.group_members(1).await.unwrap(), [1, 2]);
        assert_eq!(register.lookups.load(Ordering::SeqCst), 1);
        register.members.lock().push(3);
        cache.announce(1);
        assert_eq!(groups.group_members(1).await.unwrap(), [1, 2, 3]);
        assert_eq!(register.lookups.load(Ordering::SeqCst), 2);
        for _ in 0..2 {
            assert!(groups.group_members(9).await.is_err());
        }
        assert_eq!(
            register.lookups.load(Ordering::SeqCst),
            4,
            "unknown groups are not kept"
        );
    }
}
