//! Groups: creating, joining and leaving, invitations, join requests,
//! members and admins. Who may do what is the registry's business
//! (`crate::registry`); these handlers only translate.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::extract::{Body, Caller, Params};
use super::{ApiError, Shared};
use crate::model::{Group, GroupId, Invited, Member, UserId};

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    open: bool,
}

#[derive(Deserialize)]
pub struct Target {
    user_id: UserId,
}

#[derive(Serialize)]
pub struct GroupBody {
    group_id: GroupId,
    name: String,
    owner_id: UserId,
    open: bool,
}

impl From<Group> for GroupBody {
    fn from(g: Group) -> Self {
        GroupBody {
            group_id: g.id,
            name: g.name,
            owner_id: g.owner_id,
            open: g.open,
        }
    }
}

/// Where a join, an invitation or an approval left the user.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Member,
    Pending,
    Invited,
}

#[derive(Serialize)]
pub struct StatusBody {
    status: Status,
}

#[derive(Serialize)]
pub struct ChangedBody {
    changed: bool,
}

#[derive(Serialize)]
pub struct UserIdsBody {
    user_ids: Vec<UserId>,
}

#[derive(Serialize)]
pub struct MemberBody {
    user_id: UserId,
    role: &'static str,
}

impl From<Member> for MemberBody {
    fn from(m: Member) -> Self {
        MemberBody {
            user_id: m.user_id,
            role: m.role.as_str(),
        }
    }
}

#[derive(Serialize)]
pub struct MembersBody {
    members: Vec<MemberBody>,
}

#[derive(Serialize)]
pub struct GroupsBody {
    groups: Vec<GroupBody>,
}

fn status(status: Status) -> Json<StatusBody> {
    Json(StatusBody { status })
}

pub async fn create(
    State(registry): State<Shared>,
    caller: Caller,
    Body(g): Body<NewGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let group = registry
        .create_group(caller.user_id, &g.name, g.open)
        .await?;
    Ok((StatusCode::CREATED, Json(GroupBody::from(group))))
}

pub async fn get(
    State(registry): State<Shared>,
    _caller: Caller,
    Params(id): Params<GroupId>,
) -> Result<Json<GroupBody>, ApiError> {
    Ok(Json(registry.group(id).await?.into()))
}

pub async fn join(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
) -> Result<impl IntoResponse, ApiError> {
    let joined = registry.join_group(id, caller.user_id).await?;
    Ok(if joined.member {
        (StatusCode::OK, status(Status::Member))
    } else {
        (StatusCode::ACCEPTED, status(Status::Pending))
    })
}

pub async fn leave(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
) -> Result<Json<ChangedBody>, ApiError> {
    let changed = registry.leave_group(id, caller.user_id).await?;
    Ok(Json(ChangedBody { changed }))
}

pub async fn invite(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
    Body(target): Body<Target>,
) -> Result<Json<StatusBody>, ApiError> {
    let invited = registry.invite(id, caller.user_id, target.user_id).await?;
    Ok(status(match invited {
        Invited::Invited => Status::Invited,
        Invited::Member => Status::Member,
    }))
}

pub async fn requests(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
) -> Result<Json<UserIdsBody>, ApiError> {
    let user_ids = registry.join_requests(id, caller.user_id).await?;
    Ok(Json(UserIdsBody { user_ids }))
}

pub async fn approve(
    State(registry): State<Shared>,
    caller: Caller,
    Params((id, user)): Params<(GroupId, UserId)>,
) -> Result<Json<StatusBody>, ApiError> {
    registry.approve(id, caller.user_id, user).await?;
    Ok(status(Status::Member))
}

pub async fn reject(
    State(registry): State<Shared>,
    caller: Caller,
    Params((id, user)): Params<(GroupId, UserId)>,
) -> Result<StatusCode, ApiError> {
    registry.reject(id, caller.user_id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn members(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
) -> Result<Json<MembersBody>, ApiError> {
    let members = registry.members_for(id, caller.user_id).await?;
    Ok(Json(MembersBody {
        members: members.into_iter().map(MemberBody::from).collect(),
    }))
}

pub async fn remove_member(
    State(registry): State<Shared>,
    caller: Caller,
    Params((id, user)): Params<(GroupId, UserId)>,
) -> Result<StatusCode, ApiError> {
    registry.remove_member(id, caller.user_id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_admin(
    State(registry): State<Shared>,
    caller: Caller,
    Params(id): Params<GroupId>,
    Body(target): Body<Target>,
) -> Result<Json<MemberBody>, ApiError> {
    let role = registry
        .set_admin(id, caller.user_id, target.user_id, true)
        .await?;
    Ok(Json(MemberBody {
        user_id: target.user_id,
        role: role.as_str(),
    }))
}

pub async fn remove_admin(
    State(registry): State<Shared>,
    caller: Caller,
    Params((id, user)): Params<(GroupId, UserId)>,
) -> Result<StatusCode, ApiError> {
    registry.set_admin(id, caller.user_id, user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mine(
    State(registry): State<Shared>,
    caller: Caller,
) -> Result<Json<GroupsBody>, ApiError> {
    let groups = registry.user_groups(caller.user_id).await?;
    Ok(Json(GroupsBody {
        groups: groups.into_iter().map(GroupBody::from).collect(),
    }))
}
