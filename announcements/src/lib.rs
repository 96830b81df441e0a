//! Caches of what register knows, kept correct by its announcements.
//!
//! Asking register on every message (where is this user connected? who is
//! in this group?) costs a round trip and register's CPU per message. The
//! answers change rarely, and register announces every change on a Redis
//! channel ([`fishchat_rpc::channels`] names them). A service keeps the
//! answers in an [`AnnouncedCache`] and runs [`listen`], which drops an entry
//! the moment its id is announced.
//!
//! Two races make a naive cache wrong, and both are closed here:
//! * An announcement can arrive while a lookup of the same id is in flight:
//!   the lookup may have read the old value. A lookup therefore takes a
//!   [`Ticket`] before it asks, and [`AnnouncedCache::fill`] discards any id
//!   announced after that ticket.
//! * Announcements are lost while the subscription is down. The cache
//!   therefore caches nothing until it is subscribed, and empties itself
//!   whenever the subscription is lost or (re)made.
//!
//! Entries also expire after a time to live, a backstop for changes no one
//! announces (a session key expiring in Redis when its access node died).

mod cache;
mod listen;

pub use cache::{AnnouncedCache, Ticket};
pub use listen::listen;
