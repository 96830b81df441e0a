//! Internal gRPC contracts between FishChat services.
//!
//! Each module is one service's surface: its tonic client, its server trait,
//! and its messages. Messages of the client protocol that cross services
//! (`StoredMessage`, `SendAck`, `SyncReply`, ...) are the codec's own types.

pub mod status;

/// register: accounts, tokens, sessions, groups.
#[allow(missing_docs)]
pub mod register {
    tonic::include_proto!("fishchat.register.v1");
}

/// logic: the access tier's upstream for everything a connection asks.
#[allow(missing_docs)]
pub mod logic {
    tonic::include_proto!("fishchat.logic.v1");
}

/// manager: the read side of conversations, read positions, membership records.
#[allow(missing_docs)]
pub mod manager {
    tonic::include_proto!("fishchat.manager.v1");
}

/// access: pushes and kicks delivered to an access node.
#[allow(missing_docs)]
pub mod access {
    tonic::include_proto!("fishchat.access.v1");
}

/// Kafka payloads between logic and msg_job.
#[allow(missing_docs)]
pub mod events {
    tonic::include_proto!("fishchat.events.v1");
}

/// Encoded file descriptors of every contract, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fishchat_descriptor");

/// Redis pub/sub channels on which register announces changes, so services
/// that cache what register knows drop stale entries at once instead of
/// asking register on every message. A subscriber that loses its connection
/// may have missed announcements and must drop its whole cache.
pub mod channels {
    /// Carries the decimal id of a user whose sessions changed (login, logout,
    /// a session re-recorded by a heartbeat).
    pub const SESSIONS: &str = "fishchat:sessions";
    /// Carries the decimal id of a group whose members changed.
    pub const GROUPS: &str = "fishchat:groups";
}
