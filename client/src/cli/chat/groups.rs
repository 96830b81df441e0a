//! The group commands of `fishchat chat`, on the register service's HTTP API.
//! Each answers with the line to print.

use anyhow::Context;
use fishchat_client::register::{JoinStatus, RegisterApi, Role};

use super::super::names::Names;

/// `/groups`: the groups the user belongs to.
pub async fn mine(api: &RegisterApi, token: &str, names: &Names) -> anyhow::Result<String> {
    let groups = api.my_groups(token).await.context("listing your groups")?;
    if groups.is_empty() {
        return Ok("no groups".to_owned());
    }
    let rows: Vec<String> = groups
        .iter()
        .map(|group| {
            format!(
                "#{} {:?} (owner {}{})",
                group.group_id,
                group.name,
                names.name_of(group.owner_id),
                if group.open { ", open" } else { "" }
            )
        })
        .collect();
    Ok(rows.join("\n"))
}

/// `/create [--open] NAME`.
pub async fn create(
    api: &RegisterApi,
    token: &str,
    name: &str,
    open: bool,
) -> anyhow::Result<String> {
    let group = api
        .create_group(token, name, open)
        .await
        .with_context(|| format!("creating group {name:?}"))?;
    let joining = if group.open {
        "anyone may /join it"
    } else {
        "others /join it with your approval"
    };
    Ok(format!(
        "created group #{} {:?}; {joining}; /open #{} to chat",
        group.group_id, group.name, group.group_id
    ))
}

/// `/join GROUP_ID`: a member at once, or a request the owner or an admin must approve.
pub async fn join(api: &RegisterApi, token: &str, group_id: u64) -> anyhow::Result<String> {
    let status = api
        .join_group(token, group_id)
        .await
        .with_context(|| format!("joining group #{group_id}"))?;
    Ok(match status {
        JoinStatus::Member => {
            format!("you are a member of group #{group_id}; /open #{group_id} to chat")
        }
        JoinStatus::Pending => {
            format!("asked to join group #{group_id}; the owner or an admin must approve")
        }
    })
}

/// `/leave GROUP_ID`.
pub async fn leave(api: &RegisterApi, token: &str, group_id: u64) -> anyhow::Result<String> {
    let changed = api
        .leave_group(token, group_id)
        .await
        .with_context(|| format!("leaving group #{group_id}"))?;
    Ok(if changed {
        format!("left group #{group_id}")
    } else {
        format!("you were not a member of group #{group_id}")
    })
}

/// `/members GROUP_ID`: each member with its role.
pub async fn members(
    api: &RegisterApi,
    token: &str,
    group_id: u64,
    names: &Names,
) -> anyhow::Result<String> {
    let members = api
        .group_members(token, group_id)
        .await
        .with_context(|| format!("listing the members of group #{group_id}"))?;
    let rows: Vec<String> = members
        .iter()
        .map(|member| {
            let role = match member.role {
                Role::Owner => "owner",
                Role::Admin => "admin",
                Role::Member => "member",
            };
            format!("{} ({role})", names.name_of(member.user_id))
        })
        .collect();
    Ok(format!("group #{group_id}: {}", rows.join(", ")))
}
