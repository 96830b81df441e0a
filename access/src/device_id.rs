//! Device ids, one copy of each shared by the connections that name it.
//!
//! A logged-in connection keeps its device id for as long as it lives: its
//! session heartbeats and its logout name it. A copy of its own would be a
//! heap block of at least 32 bytes per idle connection, a quarter of its
//! budget, while most clients name their device with one of a few words
//! ("phone", "desktop"). So the node interns them: each distinct id is one
//! reference-counted string, and a connection holds a pointer to it.
//!
//! Ids that nobody holds any more are swept out as the set grows, and the
//! set has a cap, so clients that each send an id of their own cannot grow it
//! without bound: past the cap an id is simply not shared.
//!
//! The pointer is a thin one (to a boxed string): an `Arc<str>` would be 16
//! bytes in every connection record for the string's length, which the one
//! shared copy can keep instead.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;

/// Distinct ids kept for sharing at most.
const MAX_INTERNED: usize = 4096;
/// Ids the set holds before it first looks for unused ones.
const MIN_SWEEP: usize = 64;

/// A connection's device id; empty before its login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceId(Option<Shared>);

impl Deref for DeviceId {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_ref().map_or("", |id| &id.0)
    }
}

/// One shared copy of an id; hashed and compared as the string it holds, so
/// the set can be searched with a `&str`.
#[derive(Debug, Clone)]
struct Shared(Arc<Box<str>>);

impl Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        str::hash(&self.0, state);
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Shared {}

/// The node's shared device ids.
#[derive(Debug)]
pub struct DeviceIds(Mutex<Interned>);

#[derive(Debug)]
struct Interned {
    ids: HashSet<Shared>,
    /// Size at which the next sweep for unused ids runs.
    sweep_at: usize,
}

impl Default for DeviceIds {
    fn default() -> Self {
        Self(Mutex::new(Interned {
            ids: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }))
    }
}

impl DeviceIds {
    /// `id`, shared with every other holder of the same id.
    pub fn intern(&self, id: &str) -> DeviceId {
        let mut interned = self.0.lock();
        if let Some(found) = interned.ids.get(id) {
            return DeviceId(Some(found.clone()));
        }
        if interned.ids.len() >= interned.sweep_at {
            // Only the set holds these. No one can take a new reference to
            // one without this lock, so none is revived while it is dropped.
            interned.ids.retain(|id| Arc::strong_count(&id.0) > 1);
            interned.sweep_at = (2 * interned.ids.len()).max(MIN_SWEEP);
        }
        let id = Shared(Arc::new(id.into()));
        if interned.ids.len() < MAX_INTERNED {
            interned.ids.insert(id.clone());
        }
        DeviceId(Some(id))
    }

    /// Number of ids in the set, held or not yet swept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_is_one_shared_string_and_an_empty_one_is_empty() {
        let ids = DeviceIds::default();
        let a = ids.intern("phone");
        let b = ids.intern("phone");
        assert_eq!(&*a, "phone");
        assert!(std::ptr::eq(a.as_ptr(), b.as_ptr()), "one copy");
        assert_ne!(a, ids.intern("desktop"));
        assert_eq!(&*DeviceId::default(), "");
        assert_eq!(ids.len(), 2);
        assert_eq!(
            size_of::<DeviceId>(),
            8,
            "a thin pointer in each connection"
        );
    }

    #[test]
    fn ids_no_one_holds_are_swept_and_the_set_is_capped() {
        let ids = DeviceIds::default();
        let kept = ids.intern("kept");
        for i in 0..10 * MIN_SWEEP {
            ids.intern(&format!("gone-{i}"));
        }
        assert!(ids.len() <= MIN_SWEEP, "{} ids left", ids.len());
        assert!(std::ptr::eq(ids.intern("kept").as_ptr(), kept.as_ptr()));
        let held: Vec<DeviceId> = (0..MAX_INTERNED + 10)
            .map(|i| ids.intern(&format!("held-{i}")))
            .collect();
        assert_eq!(ids.len(), MAX_INTERNED, "capped");
        let last = held.last().expect("ids");
        assert_eq!(&**last, format!("held-{}", MAX_INTERNED + 9));
        assert!(
            !std::ptr::eq(ids.intern(last).as_ptr(), last.as_ptr()),
            "past the cap an id is not shared"
        );
    }
}
