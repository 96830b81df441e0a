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
    /// The user who created it; it stays a member and cannot leave.
    pub owner_id: UserId,
    /// Whether anyone may join at once; a closed group takes join requests
    /// that the owner or an admin approves.
    pub open: bool,
}

/// What a member may do in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The creator: everything an admin may do, plus naming and removing
    /// admins; it cannot leave and cannot be removed.
    Owner,
    /// Invites, approves or rejects join requests, removes plain members.
    Admin,
    /// Sends and reads.
    Member,
}

impl Role {
    /// The role's name in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Whether this role may invite, approve, reject and remove plain members.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// One member of a group and its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub user_id: UserId,
    /// What it may do.
    pub role: Role,
}

/// A relation that is not (yet) membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The user asked to join a closed group; the owner or an admin decides.
    Requested,
    /// The owner or an admin invited the user; it becomes a member when it joins.
    Invited,
}

/// How one user stands towards one group; a (group, user) pair has at most
/// one relation, so every change of it is one atomic step on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// A member; `admin` when it was made an admin (the owner's flag is unused).
    Member {
        /// Whether the owner made it an admin.
        admin: bool,
    },
    /// Asked or invited, not a member.
    Pending(Pending),
}

/// Where a join left the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// A member now (else its join request awaits the owner or an admin).
    pub member: bool,
    /// Whether the call changed anything (false: already a member, or already asked).
    pub changed: bool,
}

/// Where an invitation left the invited user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invited {
    /// Invited; it becomes a member when it joins.
    Invited,
    /// A member: it had asked to join (the invitation approved it) or already was one.
    Member,
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
