//! How a membership change reaches the world outside register: the
//! membership log (manager) and the announcements on Redis.
//!
//! The log hears of every change in a fixed order: `joined` before the
//! member becomes visible ([`Registry::admit`]), `left` after it stopped
//! being one ([`Registry::member_gone`]). Each call carries an epoch from a
//! counter, taken before its change is made: a change made after another
//! was seen in the store has the larger epoch, so the log can ignore a call
//! that arrives late (a retried `left` after the user joined again).

use std::sync::Arc;
use std::time::Duration;

use fishchat_rpc::channels;

use super::Registry;
use crate::error::Error;
use crate::membership::MembershipLog;
use crate::model::{GroupId, Pending, Relation, UserId};
use crate::store::Groups;

/// The waits before each retry of a `left` that failed.
const LEFT_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

impl Registry {
    /// Makes `user` a member of `group` from the relation `from` (`None`: from
    /// none), telling the membership log first: a member is never visible
    /// (to message routing, to readers) before the log knows it, so it never
    /// misses a message. When the log fails nothing changes here.
    ///
    /// False when the pair's relation changed meanwhile; the caller reads it
    /// again. The `joined` already told is then undone with `left`, unless
    /// the user is a member anyway (another request made it one; a repeated
    /// `joined` is harmless).
    pub(super) async fn admit(
        &self,
        group: GroupId,
        user: UserId,
        from: Option<Pending>,
    ) -> Result<bool, Error> {
        self.tell_joined(user, group).await?;
        let added = self.stores.groups.add_member(group, user, from).await;
        let member_now = match added {
            Ok(true) => true,
            // A failed write may still have applied: only the record can tell.
            Ok(false) | Err(_) => matches!(
                self.stores.groups.relation(group, user).await,
                Ok(Some(Relation::Member { .. }))
            ),
        };
        if !member_now {
            self.tell_left(user, group).await;
            return added.map_err(Error::from);
        }
        if let Ok(false) = added {
            // Another request made it a member, and announced it.
            return Ok(false);
        }
        tracing::info!(group_id = group, user_id = user, "member joined");
        self.announce(channels::GROUPS, group).await;
        Ok(true)
    }

    /// Tells the log `user` is about to join `group`, under a fresh epoch.
    pub(super) async fn tell_joined(&self, user: UserId, group: GroupId) -> Result<(), Error> {
        let epoch = self.stores.groups.next_membership_epoch().await?;
        self.outbound
            .membership
            .joined(user, group, epoch)
            .await
            .map_err(|err| {
                tracing::warn!(user_id = user, group_id = group, %err, "membership log refused a join");
                Error::LogUnavailable(err)
            })
    }

    /// After `user` stopped being a member: announce it and tell the log.
    ///
    /// The membership is removed first and the log told after, the opposite
    /// of a join, so that leaving and removal never depend on manager being
    /// up: a removed user stops receiving the group's messages at once. The
    /// cost of a `left` that fails is that manager may still let the former
    /// member read messages sent until it is recorded, hence the retries.
    ///
    /// `epoch` was taken before the membership was removed, so it is below
    /// the epoch of any later join of the pair.
    pub(super) async fn member_gone(&self, group: GroupId, user: UserId, epoch: u64) {
        self.announce(channels::GROUPS, group).await;
        self.tell_left_at(user, group, epoch).await;
    }

    /// Undoes a `joined` already told, under a fresh epoch (above that join's).
    pub(super) async fn tell_left(&self, user: UserId, group: GroupId) {
        match self.stores.groups.next_membership_epoch().await {
            Ok(epoch) => self.tell_left_at(user, group, epoch).await,
            Err(err) => tracing::error!(
                user_id = user,
                group_id = group,
                %err,
                "no epoch to undo a join with: manager still counts the user as a member"
            ),
        }
    }

    /// Tells the log `user` left `group` in change `epoch`; on failure keeps
    /// retrying in the background with backoff, so the caller's reply does
    /// not wait on an unreachable manager.
    async fn tell_left_at(&self, user: UserId, group: GroupId, epoch: u64) {
        let Err(err) = self.outbound.membership.left(user, group, epoch).await else {
            return;
        };
        tracing::warn!(user_id = user, group_id = group, %err, "membership log: left failed; retrying");
        let log = Arc::clone(&self.outbound.membership);
        let groups = Arc::clone(&self.stores.groups);
        tokio::spawn(retry_left(log, groups, user, group, epoch));
    }
}

/// Retries `left` until it succeeds, the delays run out, or the user is a
/// member again: then its later `joined` was recorded (and its newer epoch
/// makes the log ignore this `left` anyway).
async fn retry_left(
    log: Arc<dyn MembershipLog>,
    groups: Arc<dyn Groups>,
    user: UserId,
    group: GroupId,
    epoch: u64,
) {
    for delay in LEFT_RETRY_DELAYS {
        tokio::time::sleep(delay).await;
        if let Ok(Some(Relation::Member { .. })) = groups.relation(group, user).await {
            tracing::info!(
                user_id = user,
                group_id = group,
                "member again; no longer retrying left"
            );
            return;
        }
        match log.left(user, group, epoch).await {
            Ok(()) => {
                tracing::info!(
                    user_id = user,
                    group_id = group,
                    "membership log: left recorded after a retry"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(user_id = user, group_id = group, %err, "membership log: left failed again");
            }
        }
    }
    tracing::error!(
        user_id = user,
        group_id = group,
        "membership log never recorded a leave: manager still counts the user as a member"
    );
}

#[cfg(test)]
mod tests {
    use super::super::fixture::with_group;
    use super::*;
    use crate::membership::Change;
    use fishchat_codec::ErrorCode;

    #[tokio::test]
    async fn the_log_hears_joined_before_and_left_after_and_changes_are_announced() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        r.join_group(group.id, u.bob).await.expect("join");
        r.leave_group(group.id, u.bob).await.expect("leave");
        let log = f.log.changes();
        assert_eq!(
            log[log.len() - 2..],
            [
                Change::Joined {
                    user: u.bob,
                    group: group.id
                },
                Change::Left {
                    user: u.bob,
                    group: group.id
                }
            ]
        );
        assert_eq!(
            log[0],
            Change::Joined {
                user: u.owner,
                group: group.id
            },
            "the owner is logged as the group's first member"
        );
        let groups: Vec<_> = f
            .memory
            .announcements()
            .into_iter()
            .filter(|(channel, _)| *channel == channels::GROUPS)
            .collect();
        // Creation, the admin's join, Bob's join and leave.
        assert_eq!(groups, vec![(channels::GROUPS, group.id); 4]);
    }

    #[tokio::test]
    async fn each_change_of_a_pair_is_told_under_a_larger_epoch() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        r.join_group(group.id, u.bob).await.expect("join");
        r.leave_group(group.id, u.bob).await.expect("leave");
        r.join_group(group.id, u.bob).await.expect("join again");
        r.remove_member(group.id, u.owner, u.bob)
            .await
            .expect("removed");
        let epochs = f.log.epochs();
        let bobs: Vec<u64> = f
            .log
            .changes()
            .iter()
            .zip(&epochs)
            .filter(|(change, _)| {
                matches!(change, Change::Joined { user, .. } | Change::Left { user, .. } if *user == u.bob)
            })
            .map(|(_, epoch)| *epoch)
            .collect();
        assert_eq!(bobs.len(), 4, "{:?}", f.log.changes());
        assert!(bobs.windows(2).all(|w| w[0] < w[1]), "{bobs:?}");
    }

    #[tokio::test]
    async fn a_failing_log_fails_the_join_and_changes_nothing() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        f.log.fail_joined(true);
        let err = r.join_group(group.id, u.bob).await.expect_err("log down");
        assert!(matches!(err, Error::LogUnavailable(_)), "{err}");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(r.create_group(u.bob, "x", true).await.is_err());
        assert_eq!(
            r.group_members(group.id).await.expect("members"),
            [u.owner, u.admin]
        );
        assert!(r.user_groups(u.bob).await.expect("groups").is_empty());
        f.log.fail_joined(false);
        assert!(r.join_group(group.id, u.bob).await.expect("join").member);
    }

    #[tokio::test]
    async fn a_failed_left_is_retried_after_the_member_is_out() {
        let (f, u, group) = with_group(true).await;
        let r = &f.registry;
        r.join_group(group.id, u.bob).await.expect("join");
        f.log.fail_left(2);
        assert!(r.leave_group(group.id, u.bob).await.expect("leave"));
        assert_eq!(
            r.group_members(group.id).await.expect("members"),
            [u.owner, u.admin]
        );
        let left = Change::Left {
            user: u.bob,
            group: group.id,
        };
        fishchat_e2e::wait_until(Duration::from_secs(5), "the retried left", async || {
            f.log.changes().contains(&left).then_some(())
        })
        .await;
    }
}
