//! The records the register hands out and stores.

/// A user's id: allocated by the register, never reused.
pub type UserId = u64;

/// A group's id: allocated by the register, never reused.
pub type GroupId = u64;

/// A user as others may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The unique login name.
    pub name: String,
}

/// A user as stored, with the argon2 hash (PHC string) of the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id.
    pub id: UserId,
    /// The unique login name.
    pub name: String,
    /// The argon2 PHC string; never the password itself.
    pub password_hash: String,
}

/// A chat group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's id.
    pub id: GroupId,
    /// A display name (not unique).
    pub name: String,
    /// The user who created it.
    pub owner_id: UserId,
}

/// Where one device of a user is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The connected user.
    pub user_id: UserId,
    /// The device, chosen by the client; one session per (user, device).
    pub device_id: String,
    /// The access node holding the connection, as registered in etcd.
    pub access_node_id: String,
    /// The access node's push RPC address.
    pub push_addr: String,
    /// The connection's id on that node (unique per node run).
    pub conn_id: u64,
}

impl Session {
    /// Whether `self` and `other` name the same connection of the same device.
    pub fn same_connection(&self, other: &Session) -> bool {
        self.user_id == other.user_id
            && self.device_id == other.device_id
            && self.access_node_id == other.access_node_id
            && self.conn_id == other.conn_id
    }
}

/// What a login token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    /// The user the token logs in as.
    pub user_id: UserId,
    /// When the token stops being accepted, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user who logged in.
    pub user_id: UserId,
    /// The new token (hex, 256 random bits).
    pub token: String,
    /// When the token expires, in Unix milliseconds.
    pub expires_at_ms: i64,
}
