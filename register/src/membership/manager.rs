//! The membership log over gRPC: manager's `Joined` and `Left`.

use std::time::Duration;

use fishchat_rpc::manager::MembershipRequest;
use fishchat_rpc::manager::manager_client::ManagerClient;
use futures::FutureExt;
use futures::future::BoxFuture;
use tonic::transport::Channel;

use super::{LogError, MembershipLog};
use crate::model::{GroupId, UserId};

/// How long connecting to manager may take before a call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take: a join waits on it, so it must fail well
/// within an HTTP client's patience rather than hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Manager's membership RPCs at one address.
#[derive(Debug, Clone)]
pub struct ManagerLog {
    client: ManagerClient<Channel>,
}

impl ManagerLog {
    /// A log calling manager at `addr` (`http://host:port`). It connects on
    /// first use and reconnects by itself, so register starts while manager
    /// is down (joins then fail with UNAVAILABLE until it is up).
    pub fn new(addr: &str) -> Result<Self, LogError> {
        // Through discovery, so the call uses the deployment's mutual TLS.
        let endpoint = fishchat_discovery::endpoint_for(addr)
            .map_err(|err| LogError::new(format!("manager address {addr:?}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        Ok(Self {
            client: ManagerClient::new(endpoint.connect_lazy()),
        })
    }
}

fn request(user: UserId, group: GroupId, epoch: u64) -> MembershipRequest {
    MembershipRequest {
        user_id: user,
        group_id: group,
        epoch,
    }
}

fn failed(call: &str, status: &tonic::Status) -> LogError {
    LogError::new(format!(
        "manager {call}: {:?}: {}",
        status.code(),
        status.message()
    ))
}

impl MembershipLog for ManagerLog {
    fn joined(
        &self,
        user: UserId,
        group: GroupId,
        epoch: u64,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        let mut client = self.client.clone();
        async move {
            client
                .joined(request(user, group, epoch))
                .await
                .map(drop)
                .map_err(|status| failed("Joined", &status))
        }
        .boxed()
    }

    fn left(
        &self,
        user: UserId,
        group: GroupId,
        epoch: u64,
    ) -> BoxFuture<'_, Result<(), LogError>> {
        let mut client = self.client.clone();
        async move {
            client
                .left(request(user, group, epoch))
                .await
                .map(drop)
                .map_err(|status| failed("Left", &status))
        }
        .boxed()
    }
}
