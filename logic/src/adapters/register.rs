//! Users and groups from the register service.

use fishchat_codec::ErrorCode;
use fishchat_rpc::register::register_client::RegisterClient;
use fishchat_rpc::register::{GetUserRequest, GroupMembersRequest};
use fishchat_rpc::status::error_code;
use tonic::transport::Channel;

use crate::ports::{Directory, Refusal};

/// [`Directory`] over register's gRPC API.
#[derive(Clone)]
pub struct RegisterDirectory {
    client: RegisterClient<Channel>,
}

impl RegisterDirectory {
    /// Calls register over `channel` (a balanced channel over its live nodes).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: RegisterClient::new(channel),
        }
    }
}

fn refusal(status: &tonic::Status) -> Refusal {
    Refusal::new(
        error_code(status),
        format!("register: {}", status.message()),
    )
}

impl Directory for RegisterDirectory {
    async fn user_exists(&self, user_id: u64) -> Result<bool, Refusal> {
        match self
            .client
            .clone()
            .get_user(GetUserRequest { user_id })
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if error_code(&status) == ErrorCode::UnknownUser => Ok(false),
            Err(status) => Err(refusal(&status)),
        }
    }

    async fn group_members(&self, group_id: u64) -> Result<Vec<u64>, Refusal> {
        self.client
            .clone()
            .group_members(GroupMembersRequest { group_id })
            .await
            .map(|reply| reply.into_inner().user_ids)
            .map_err(|status| refusal(&status))
    }
}
