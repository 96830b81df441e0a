//! Groups and who may do what in them.
//!
//! - The creator is the owner and first member; it cannot leave and cannot
//!   be removed. It names and removes admins (members it trusts).
//! - Anyone joins an open group at once. Joining a closed group files a join
//!   request, which the owner or an admin approves or rejects; a user the
//!   owner or an admin invited joins at once, and inviting a user who had
//!   asked approves it. Leaving and joining again goes through the same rules.
//! - The owner removes any other member; an admin removes plain members.
//! - Only members see who the members are.
//!
//! Every change of a pair is a compare-and-set on its one record
//! (`crate::store::Groups`); a request that loses a race reads the pair
//! again and decides anew. How a change is told to the membership log and
//! announced is in `super::changes`.

use fishchat_rpc::channels;

use super::Registry;
use crate::error::Error;
use crate::model::{Group, GroupId, Invited, Joined, Member, Pending, Relation, Role, UserId};
use crate::store::Removable;

/// How many times a request reads a pair again after losing a race on it
/// before giving up with [`Error::Contended`].
const MAX_ATTEMPTS: usize = 8;

impl Registry {
    /// Creates a group owned by (and whose first member is) `owner`.
    pub async fn create_group(
        &self,
        owner: UserId,
        name: &str,
        open: bool,
    ) -> Result<Group, Error> {
        super::check_name("group name", name)?;
        self.existing_user(owner).await?;
        let id = self.stores.groups.next_group_id().await?;
        let group = Group {
            id,
            name: name.to_owned(),
            owner_id: owner,
            open,
        };
        self.tell_joined(owner, id).await?;
        if let Err(err) = self.stores.groups.insert_group(&group).await {
            self.tell_left(owner, id).await;
            return Err(err.into());
        }
        self.announce(channels::GROUPS, id).await;
        tracing::info!(group_id = id, owner_id = owner, open, "group created");
        Ok(group)
    }

    /// The group with this id.
    pub async fn group(&self, id: GroupId) -> Result<Group, Error> {
        self.existing_group(id).await
    }

    /// `user` asks to join: a member at once when the group is open or the
    /// user was invited, else a join request awaiting the owner or an admin.
    pub async fn join_group(&self, group_id: GroupId, user: UserId) -> Result<Joined, Error> {
        let group = self.existing_group(group_id).await?;
        self.existing_user(user).await?;
        for _ in 0..MAX_ATTEMPTS {
            // What the user becomes a member from: `None` is no relation at all.
            let from = match self.stores.groups.relation(group_id, user).await? {
                Some(Relation::Member { .. }) => {
                    return Ok(Joined {
                        member: true,
                        changed: false,
                    });
                }
                Some(Relation::Pending(Pending::Invited)) => Some(Pending::Invited),
                Some(Relation::Pending(Pending::Requested)) if group.open => {
                    Some(Pending::Requested)
                }
                Some(Relation::Pending(Pending::Requested)) => {
                    return Ok(Joined {
                        member: false,
                        changed: false,
                    });
                }
                None if group.open => None,
                None => {
                    let groups = &self.stores.groups;
                    if groups
                        .add_pending(group_id, user, Pending::Requested)
                        .await?
                    {
                        tracing::info!(group_id, user_id = user, "join request filed");
                        return Ok(Joined {
                            member: false,
                            changed: true,
                        });
                    }
                    continue;
                }
            };
            if self.admit(group_id, user, from).await? {
                return Ok(Joined {
                    member: true,
                    changed: true,
                });
            }
        }
        Err(Error::Contended)
    }

    /// `user` leaves: its membership, join request or invitation is gone.
    /// False when it had none. The owner cannot leave.
    pub async fn leave_group(&self, group_id: GroupId, user: UserId) -> Result<bool, Error> {
        let group = self.existing_group(group_id).await?;
        self.existing_user(user).await?;
        if group.owner_id == user {
            return Err(Error::OwnerCannotLeave(group_id));
        }
        for _ in 0..MAX_ATTEMPTS {
            let which = match self.stores.groups.relation(group_id, user).await? {
                None => return Ok(false),
                Some(Relation::Member { .. }) => Removable::Member,
                Some(Relation::Pending(p)) => Removable::Pending(p),
            };
            // Taken before the change, so below any later join's.
            let epoch = self.stores.groups.next_membership_epoch().await?;
            if self.stores.groups.remove(group_id, user, which).await? {
                if which == Removable::Member {
                    tracing::info!(group_id, user_id = user, "member left");
                    self.member_gone(group_id, user, epoch).await;
                }
                return Ok(true);
            }
        }
        Err(Error::Contended)
    }

    /// The owner or an admin (`actor`) invites `user`; a user who had asked
    /// to join becomes a member at once.
    pub async fn invite(
        &self,
        group_id: GroupId,
        actor: UserId,
        user: UserId,
    ) -> Result<Invited, Error> {
        let group = self.existing_group(group_id).await?;
        self.manager_of(&group, actor).await?;
        self.existing_user(user).await?;
        for _ in 0..MAX_ATTEMPTS {
            match self.stores.groups.relation(group_id, user).await? {
                Some(Relation::Member { .. }) => return Ok(Invited::Member),
                Some(Relation::Pending(Pending::Invited)) => return Ok(Invited::Invited),
                Some(Relation::Pending(Pending::Requested)) => {
                    if self.admit(group_id, user, Some(Pending::Requested)).await? {
                        return Ok(Invited::Member);
                    }
                }
                None => {
                    let groups = &self.stores.groups;
                    if groups.add_pending(group_id, user, Pending::Invited).await? {
                        tracing::info!(group_id, user_id = user, by = actor, "user invited");
                        return Ok(Invited::Invited);
                    }
                }
            }
        }
        Err(Error::Contended)
    }

    /// The users whose join requests await a decision; for the owner and admins.
    pub async fn join_requests(
        &self,
        group_id: GroupId,
        actor: UserId,
    ) -> Result<Vec<UserId>, Error> {
        let group = self.existing_group(group_id).await?;
        self.manager_of(&group, actor).await?;
        Ok(self
            .stores
            .groups
            .pending(group_id, Pending::Requested)
            .await?)
    }

    /// The owner or an admin approves `user`'s join request. Approving a
    /// user who is already a member (a retried or racing approval) succeeds.
    pub async fn approve(
        &self,
        group_id: GroupId,
        actor: UserId,
        user: UserId,
    ) -> Result<(), Error> {
        let group = self.existing_group(group_id).await?;
        self.manager_of(&group, actor).await?;
        for _ in 0..MAX_ATTEMPTS {
            match self.stores.groups.relation(group_id, user).await? {
                Some(Relation::Member { .. }) => return Ok(()),
                Some(Relation::Pending(Pending::Requested)) => {
                    if self.admit(group_id, user, Some(Pending::Requested)).await? {
                        return Ok(());
                    }
                }
                _ => {
                    return Err(Error::NoSuchRequest {
                        group: group_id,
                        user,
                    });
                }
            }
        }
        Err(Error::Contended)
    }

    /// The owner or an admin rejects `user`'s join request.
    pub async fn reject(
        &self,
        group_id: GroupId,
        actor: UserId,
        user: UserId,
    ) -> Result<(), Error> {
        let group = self.existing_group(group_id).await?;
        self.manager_of(&group, actor).await?;
        let removable = Removable::Pending(Pending::Requested);
        if self.stores.groups.remove(group_id, user, removable).await? {
            tracing::info!(
                group_id,
                user_id = user,
                by = actor,
                "join request rejected"
            );
            Ok(())
        } else {
            Err(Error::NoSuchRequest {
                group: group_id,
                user,
            })
        }
    }

    /// `actor` removes the member `user`: the owner any member but itself,
    /// an admin plain members only.
    pub async fn remove_member(
        &self,
        group_id: GroupId,
        actor: UserId,
        user: UserId,
    ) -> Result<(), Error> {
        let group = self.existing_group(group_id).await?;
        let actor_role = self.manager_of(&group, actor).await?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(role) = self.role(&group, user).await? else {
                return Err(Error::NotAMember {
                    group: group_id,
                    user,
                });
            };
            let which = match (actor_role, role) {
                (_, Role::Owner) => {
                    return Err(Error::Forbidden("the owner cannot be removed".into()));
                }
                (Role::Owner, _) => Removable::Member,
                (_, Role::Admin) => {
                    return Err(Error::Forbidden(
                        "an admin may remove plain members only".into(),
                    ));
                }
                // Only a plain member, so an admin promoted meanwhile stays.
                (_, Role::Member) => Removable::PlainMember,
            };
            // Taken before the change, so below any later join's.
            let epoch = self.stores.groups.next_membership_epoch().await?;
            if self.stores.groups.remove(group_id, user, which).await? {
                tracing::info!(group_id, user_id = user, by = actor, "member removed");
                self.member_gone(group_id, user, epoch).await;
                return Ok(());
            }
        }
        Err(Error::Contended)
    }

    /// The owner makes the member `user` an admin (`admin`) or a plain member
    /// again; returns its role now (the owner's stays `Owner`).
    pub async fn set_admin(
        &self,
        group_id: GroupId,
        actor: UserId,
        user: UserId,
        admin: bool,
    ) -> Result<Role, Error> {
        let group = self.existing_group(group_id).await?;
        if actor != group.owner_id {
            return Err(Error::Forbidden(
                "only the owner names and removes admins".into(),
            ));
        }
        if user == group.owner_id {
            return Ok(Role::Owner);
        }
        if !self.stores.groups.set_admin(group_id, user, admin).await? {
            return Err(Error::NotAMember {
                group: group_id,
                user,
            });
        }
        tracing::info!(group_id, user_id = user, admin, "admin flag set");
        Ok(if admin { Role::Admin } else { Role::Member })
    }

    /// A group's members and their roles, by increasing id; for members only.
    pub async fn members_for(
        &self,
        group_id: GroupId,
        caller: UserId,
    ) -> Result<Vec<Member>, Error> {
        let group = self.existing_group(group_id).await?;
        if self.role(&group, caller).await?.is_none() {
            return Err(Error::NotGroupMember(group_id));
        }
        let members = self.stores.groups.members(group_id).await?;
        Ok(members
            .into_iter()
            .map(|(user_id, admin)| Member {
                user_id,
                role: role_of(&group, user_id, admin),
            })
            .collect())
    }

    /// A group's members, by increasing id (for services: no caller check).
    pub async fn group_members(&self, group: GroupId) -> Result<Vec<UserId>, Error> {
        self.existing_group(group).await?;
        let members = self.stores.groups.members(group).await?;
        Ok(members.into_iter().map(|(user, _)| user).collect())
    }

    /// The groups `user` is a member of, by increasing id.
    pub async fn user_groups(&self, user: UserId) -> Result<Vec<Group>, Error> {
        self.existing_user(user).await?;
        Ok(self.stores.groups.groups_of(user).await?)
    }

    /// `user`'s role in `group`, if a member.
    async fn role(&self, group: &Group, user: UserId) -> Result<Option<Role>, Error> {
        Ok(match self.stores.groups.relation(group.id, user).await? {
            Some(Relation::Member { admin }) => Some(role_of(group, user, admin)),
            _ => None,
        })
    }

    /// `actor`'s role when it is the owner or an admin, else FORBIDDEN.
    async fn manager_of(&self, group: &Group, actor: UserId) -> Result<Role, Error> {
        match self.role(group, actor).await? {
            Some(role) if role.manages() => Ok(role),
            _ => Err(Error::Forbidden(format!(
                "only the owner or an admin of group {} may do this",
                group.id
            ))),
        }
    }
}

fn role_of(group: &Group, user: UserId, admin: bool) -> Role {
    if user == group.owner_id {
        Role::Owner
    } else if admin {
        Role::Admin
    } else {
        Role::Member
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::with_group;
    use super::*;
    use fishchat_codec::ErrorCode;

    fn roles(members: &[Member]) -> Vec<(UserId, Role)> {
        members.iter().map(|m| (m.user_id, m.role)).collect()
    }

    #[tokio::test]
    async fn open_groups_admit_at_once_and_closed_ones_take_requests() {
        let (f, u, closed) = with_group(false).await;
        let r = &f.registry;
        let open = r.create_group(u.owner, "open", true).await.expect("group");
        let joined = r.join_group(open.id, u.bob).await.expect("join");
        assert_eq!((joined.member, joined.changed), (true, true));
        let again = r.join_group(open.id, u.bob).await.expect("join again");
        assert_eq!((again.member, again.changed), (true, false));

        let asked = r.join_group(closed.id, u.bob).await.expect("ask");
        assert_eq!((asked.member, asked.changed), (false, true));
        let asked = r.join_group(closed.id, u.bob).await.expect("ask again");
        assert_eq!((asked.member, asked.changed), (false, false));
        assert_eq!(
            r.group_members(closed.id).await.expect("members"),
            [u.owner, u.admin]
        );
        assert_eq!(
            r.join_requests(closed.id, u.admin).await.expect("requests"),
            [u.bob]
        );
        r.approve(closed.id, u.admin, u.bob).await.expect("approve");
        r.approve(closed.id, u.admin, u.bob)
            .await
            .expect("a repeated approval");
        assert!(
            r.join_requests(closed.id, u.owner)
                .await
                .expect("requests")
                .is_empty()
        );
        assert!(matches!(
            r.approve(closed.id, u.owner, u.carol).await,
            Err(Error::NoSuchRequest { .. })
        ));
        r.join_group(closed.id, u.carol).await.expect("ask");
        r.reject(closed.id, u.owner, u.carol).await.expect("reject");
        assert!(matches!(
            r.reject(closed.id, u.owner, u.carol).await,
            Err(Error::NoSuchRequest { .. })
        ));
        assert_eq!(
            roles(&r.members_for(closed.id, u.bob).await.expect("members")),
            [
                (u.owner, Role::Owner),
                (u.admin, Role::Admin),
                (u.bob, Role::Member)
            ]
        );
        assert!(matches!(
            r.members_for(closed.id, u.carol).await,
            Err(Error::NotGroupMember(_))
        ));
    }

    #[tokio::test]
    async fn invitations_admit_on_join_and_approve_requests() {
        let (f, u, group) = with_group(false).await;
        let r = &f.registry;
        assert_eq!(
            r.invite(group.id, u.admin, u.bob).await.expect("invite"),
            Invited::Invited
        );
        assert_eq!(
            r.invite(group.id, u.admin, u.bob).await.expect("again"),
            Invited::Invited
        );
        assert!(r.join_group(group.id, u.bob).await.expect("join").member);
        assert_eq!(
            r.invite(group.id, u.owner, u.bob).await.expect("member"),
            Invited::Member
        );

        r.join_group(group.id, u.carol).await.expect("ask");
        assert_eq!(
            r.invite(group.id, u.owner, u.carol).await.expect("invite"),
            Invited::Member
        );
        assert!(matches!(
            r.invite(group.id, u.bob, u.carol).await,
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            r.invite(group.id, u.owner, 9_999).await,
            Err(Error::UnknownUser(9_999))
        ));
        assert!(matches!(
            r.join_requests(group.id, u.bob).await,
            Err(Error::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn leaving_removal_and_admins_follow_the_roles() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        r.join_group(group.id, u.bob).await.expect("join");
        r.join_group(group.id, u.carol).await.expect("join");
        let err = r
            .leave_group(group.id, u.owner)
            .await
            .expect_err("owner stays");
        assert!(matches!(err, Error::OwnerCannotLeave(_)), "{err}");
        assert!(r.leave_group(group.id, u.carol).await.expect("leave"));
        assert!(!r.leave_group(group.id, u.carol).await.expect("leave again"));
        assert!(
            r.join_group(group.id, u.carol)
                .await
                .expect("rejoin")
                .member
        );

        for (actor, target) in [(u.admin, u.owner), (u.bob, u.carol), (u.owner, u.owner)] {
            let err = r
                .remove_member(group.id, actor, target)
                .await
                .expect_err("forbidden");
            assert!(
                matches!(err, Error::Forbidden(_)),
                "{actor} removes {target}: {err}"
            );
        }
        r.set_admin(group.id, u.owner, u.bob, true)
            .await
            .expect("admin");
        assert!(matches!(
            r.remove_member(group.id, u.admin, u.bob).await,
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            r.set_admin(group.id, u.admin, u.carol, true).await,
            Err(Error::Forbidden(_))
        ));
        assert_eq!(
            r.set_admin(group.id, u.owner, u.bob, false)
                .await
                .expect("demote"),
            Role::Member
        );
        r.remove_member(group.id, u.admin, u.bob)
            .await
            .expect("admin removes a member");
        r.remove_member(group.id, u.owner, u.admin)
            .await
            .expect("owner removes an admin");
        assert!(matches!(
            r.remove_member(group.id, u.owner, u.bob).await,
            Err(Error::NotAMember { .. })
        ));
        assert!(matches!(
            r.set_admin(group.id, u.owner, u.bob, true).await,
            Err(Error::NotAMember { .. })
        ));
        assert_eq!(
            r.group_members(group.id).await.expect("members"),
            [u.owner, u.carol]
        );
    }

    #[tokio::test]
    async fn unknown_groups_and_users_are_told_apart() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        for err in [
            r.join_group(999, u.bob).await.expect_err("group"),
            r.leave_group(999, u.bob).await.expect_err("group"),
            r.group_members(999).await.expect_err("group"),
            r.group(999).await.expect_err("group"),
        ] {
            assert_eq!(err.code(), ErrorCode::UnknownGroup, "{err}");
        }
        for err in [
            r.join_group(group.id, 999).await.expect_err("user"),
            r.create_group(999, "g", false).await.expect_err("user"),
            r.user_groups(999).await.expect_err("user"),
        ] {
            assert_eq!(err.code(), ErrorCode::UnknownUser, "{err}");
        }
        assert_eq!(
            r.create_group(u.owner, "", true)
                .await
                .expect_err("name")
                .code(),
            ErrorCode::InvalidArgument
        );
    }
}
