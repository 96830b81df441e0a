//! The gRPC surface: `fishchat.register.v1.Register`, a thin translation
//! between protobuf messages and [`Registry`] calls.
//!
//! Every refusal is built by `fishchat_rpc::status::error_status`, so callers
//! read the client-protocol code with `error_code`. Some refusals get a more
//! precise gRPC code than that function picks, keeping its metadata: a taken
//! name is `ALREADY_EXISTS`, wrong credentials `UNAUTHENTICATED`, an owner
//! that tries to leave `FAILED_PRECONDITION` (all carry `INVALID_ARGUMENT` as
//! their protocol code).

use std::sync::Arc;

use fishchat_rpc::register as pb;
use fishchat_rpc::register::register_server::{Register, RegisterServer};
use fishchat_rpc::status::error_status;
use tonic::{Code, Request, Response, Status};

use crate::error::Error;
use crate::model::{Group, Session};
use crate::registry::Registry;

/// The tonic service over a shared [`Registry`].
#[derive(Clone)]
pub struct RegisterRpc {
    registry: Arc<Registry>,
}

impl RegisterRpc {
    /// The service, ready to add to a tonic router.
    pub fn server(registry: Arc<Registry>) -> RegisterServer<Self> {
        RegisterServer::new(Self { registry })
    }
}

/// The gRPC status for a domain refusal.
pub fn to_status(err: &Error) -> Status {
    if err.is_server_side() {
        tracing::warn!(%err, "request failed");
    }
    let status = error_status(err.code(), err.client_message());
    let precise = match err {
        Error::NameTaken(_) => Code::AlreadyExists,
        Error::BadCredentials => Code::Unauthenticated,
        Error::OwnerCannotLeave(_) => Code::FailedPrecondition,
        Error::NoSuchRequest { .. } | Error::NotAMember { .. } => Code::NotFound,
        _ => return status,
    };
    Status::with_metadata(precise, status.message(), status.metadata().clone())
}

type RpcResult<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: Result<T, Error>, f: impl FnOnce(T) -> U) -> RpcResult<U> {
    result
        .map(|v| Response::new(f(v)))
        .map_err(|e| to_status(&e))
}

fn session_to_pb(s: Session) -> pb::Session {
    pb::Session {
        user_id: s.user_id,
        device_id: s.device_id,
        access_node_id: s.access_node_id,
        push_addr: s.push_addr,
        conn_id: s.conn_id,
    }
}

fn session_from_pb(s: pb::Session) -> Session {
    Session {
        user_id: s.user_id,
        device_id: s.device_id,
        access_node_id: s.access_node_id,
        push_addr: s.push_addr,
        conn_id: s.conn_id,
    }
}

fn group_to_pb(g: Group) -> pb::Group {
    pb::Group {
        group_id: g.id,
        name: g.name,
        owner_id: g.owner_id,
        open: g.open,
    }
}

#[tonic::async_trait]
impl Register for RegisterRpc {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserReply> {
        let req = req.into_inner();
        reply(
            self.registry.create_user(&req.name, &req.password).await,
            |user_id| pb::CreateUserReply { user_id },
        )
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> RpcResult<pb::LoginReply> {
        let req = req.into_inner();
        // Services call this port, not clients: no address to count.
        reply(
            self.registry.login(&req.name, &req.password, None).await,
            |l| pb::LoginReply {
                user_id: l.user_id,
                token: l.token,
                expires_at_ms: l.expires_at_ms,
            },
        )
    }

    async fn verify_token(
        &self,
        req: Request<pb::VerifyTokenRequest>,
    ) -> RpcResult<pb::VerifyTokenReply> {
        let req = req.into_inner();
        reply(self.registry.verify_token(&req.token).await, |record| {
            pb::VerifyTokenReply {
                user_id: record.user_id,
                expires_at_ms: record.expires_at_ms,
            }
        })
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> RpcResult<pb::RevokeTokenReply> {
        let req = req.into_inner();
        reply(self.registry.revoke_token(&req.token).await, |()| {
            pb::RevokeTokenReply {}
        })
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> RpcResult<pb::User> {
        let req = req.into_inner();
        reply(self.registry.get_user(req.user_id).await, |u| pb::User {
            user_id: u.id,
            name: u.name,
        })
    }

    async fn record_session(&self, req: Request<pb::Session>) -> RpcResult<pb::RecordSessionReply> {
        let session = session_from_pb(req.into_inner());
        reply(self.registry.record_session(&session).await, |replaced| {
            pb::RecordSessionReply {
                replaced: replaced.map(session_to_pb),
            }
        })
    }

    async fn touch_sessions(
        &self,
        req: Request<pb::TouchSessionsRequest>,
    ) -> RpcResult<pb::TouchSessionsReply> {
        let sessions: Vec<Session> = req
            .into_inner()
            .sessions
            .into_iter()
            .map(session_from_pb)
            .collect();
        reply(self.registry.touch_sessions(&sessions).await, |current| {
            pb::TouchSessionsReply { current }
        })
    }

    async fn remove_session(
        &self,
        req: Request<pb::RemoveSessionRequest>,
    ) -> RpcResult<pb::RemoveSessionReply> {
        let r = req.into_inner();
        reply(
            self.registry
                .remove_session(r.user_id, &r.device_id, &r.access_node_id, r.conn_id)
                .await,
            |removed| pb::RemoveSessionReply { removed },
        )
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> RpcResult<pb::ListSessionsReply> {
        let req = req.into_inner();
        reply(self.registry.list_sessions(&req.user_ids).await, |s| {
            pb::ListSessionsReply {
                sessions: s.into_iter().map(session_to_pb).collect(),
            }
        })
    }

    async fn create_group(&self, req: Request<pb::CreateGroupRequest>) -> RpcResult<pb::Group> {
        let req = req.into_inner();
        reply(
            self.registry
                .create_group(req.owner_id, &req.name, req.open)
                .await,
            group_to_pb,
        )
    }

    async fn join_group(
        &self,
        req: Request<pb::GroupMemberRequest>,
    ) -> RpcResult<pb::GroupMemberReply> {
        let req = req.into_inner();
        reply(
            self.registry.join_group(req.group_id, req.user_id).await,
            |joined| pb::GroupMemberReply {
                changed: joined.changed,
                pending: !joined.member,
            },
        )
    }

    async fn quit_group(
        &self,
        req: Request<pb::GroupMemberRequest>,
    ) -> RpcResult<pb::GroupMemberReply> {
        let req = req.into_inner();
        reply(
            self.registry.leave_group(req.group_id, req.user_id).await,
            |changed| pb::GroupMemberReply {
                changed,
                pending: false,
            },
        )
    }

    async fn group_members(
        &self,
        req: Request<pb::GroupMembersRequest>,
    ) -> RpcResult<pb::GroupMembersReply> {
        let req = req.into_inner();
        reply(
            self.registry.group_members(req.group_id).await,
            |user_ids| pb::GroupMembersReply { user_ids },
        )
    }

    async fn user_groups(
        &self,
        req: Request<pb::UserGroupsRequest>,
    ) -> RpcResult<pb::UserGroupsReply> {
        let req = req.into_inner();
        reply(self.registry.user_groups(req.user_id).await, |groups| {
            pb::UserGroupsReply {
                groups: groups.into_iter().map(group_to_pb).collect(),
            }
        })
    }
}
