//! The ports of [`crate::ports`] over real servers.

pub mod kafka;
pub mod redis;
pub mod register;
