//! Announcements: after a change other services may have cached, register
//! publishes what changed (see `fishchat_rpc::channels`), so their caches
//! drop the stale entry at once. A lost announcement only delays that, so a
//! failed publish is logged and never fails the request that made the change.

use futures::future::BoxFuture;

use crate::error::StoreError;

/// Publishes ids on named channels.
pub trait Announcer: Send + Sync {
    /// Publishes the decimal `id` on `channel`.
    fn publish(&self, channel: &'static str, id: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}
