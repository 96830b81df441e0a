//! Remembering which users exist, so a send does not ask register every time.
//!
//! Users are never deleted, so "this user exists" stays true once seen and can be kept
//! without expiry; "no such user" is not kept, because the user may be created a moment
//! later. Memory is bounded: past `capacity` ids the set starts over, which costs one
//! register call per user the next time each is named, nothing else.

use std::collections::HashSet;

use parking_lot::RwLock;

use crate::ports::{Directory, Refusal};

/// A [`Directory`] that answers "exists" from memory once the inner one has said it.
pub struct KnownUsers<D> {
    inner: D,
    known: RwLock<HashSet<u64>>,
    capacity: usize,
}

impl<D> KnownUsers<D> {
    /// Remembers up to `capacity` existing users (8 bytes and some table overhead each).
    pub fn new(inner: D, capacity: usize) -> Self {
        Self {
            inner,
            known: RwLock::new(HashSet::new()),
            capacity: capacity.max(1),
        }
    }
}

impl<D: Directory> Directory for KnownUsers<D> {
    async fn user_exists(&self, user_id: u64) -> Result<bool, Refusal> {
        if self.known.read().contains(&user_id) {
            return Ok(true);
        }
        let exists = self.inner.user_exists(user_id).await?;
        if exists {
            let mut known = self.known.write();
            if known.len() >= self.capacity {
                known.clear();
            }
            known.insert(user_id);
        }
        Ok(exists)
    }

    async fn group_members(&self, group_id: u64) -> Result<Vec<u64>, Refusal> {
        self.inner.group_members(group_id).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use fishchat_codec::ErrorCode;
    use parking_lot::Mutex;

    use super::*;

    /// Users 1..=3 exist; counts the lookups that reach it; `down` makes it fail.
    #[derive(Default)]
    struct Register {
        lookups: AtomicUsize,
        created: Mutex<Vec<u64>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Directory for &Register {
        async fn user_exists(&self, user_id: u64) -> Result<bool, Refusal> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(Refusal::unavailable("register", "down"));
            }
            Ok((1..=3).contains(&user_id) || self.created.lock().contains(&user_id))
        }
        async fn group_members(&self, _: u64) -> Result<Vec<u64>, Refusal> {
            Err(Refusal::new(ErrorCode::UnknownGroup, "no group"))
        }
    }

    #[tokio::test]
    async fn an_existing_user_is_asked_for_once() {
        let register = Register::default();
        let users = KnownUsers::new(&register, 100);
        for _ in 0..5 {
            assert_eq!(users.user_exists(2).await, Ok(true));
        }
        assert_eq!(register.lookups.load(Ordering::SeqCst), 1);
        // Known users answer even while register is down.
        register.down.store(true, Ordering::SeqCst);
        assert_eq!(users.user_exists(2).await, Ok(true));
        assert!(
            users.user_exists(3).await.is_err(),
            "an unknown answer was made up"
        );
    }

    #[tokio::test]
    async fn a_missing_user_is_asked_again_and_found_once_created() {
        let register = Register::default();
        let users = KnownUsers::new(&register, 100);
        assert_eq!(users.user_exists(9).await, Ok(false));
        register.created.lock().push(9);
        assert_eq!(users.user_exists(9).await, Ok(true));
        assert_eq!(users.user_exists(9).await, Ok(true));
        assert_eq!(register.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_set_starts_over_at_its_capacity() {
        let register = Register::default();
        let users = KnownUsers::new(&register, 2);
        for user in [1, 2, 3, 1] {
            assert_eq!(users.user_exists(user).await, Ok(true));
        }
        // 1 and 2 filled it; 3 cleared it; 1 was asked again.
        assert_eq!(register.lookups.load(Ordering::SeqCst), 4);
        assert_eq!(users.user_exists(3).await, Ok(true));
        assert_eq!(register.lookups.load(Ordering::SeqCst), 4);
    }
}
