//! The `fishchat.manager.v1.Manager` gRPC surface: validate, call the store, map errors.

use fishchat_codec::{ErrorCode, pb};
use fishchat_conversations::ConvError;
use fishchat_rpc::manager::manager_server::Manager;
use fishchat_rpc::manager::{
    HistoryRequest, MembershipReply, MembershipRequest, ReadReply, ReadRequest,
    SyncConversationsRequest, SyncRequest,
};
use fishchat_rpc::status::error_status;
use tonic::{Request, Response, Status};

use crate::store::Conversations;
use crate::validate;

/// The Manager service over a conversation store.
#[derive(Debug, Clone)]
pub struct ManagerService<C> {
    store: C,
}

impl<C: Conversations> ManagerService<C> {
    /// Serves `store`.
    pub fn new(store: C) -> Self {
        Self { store }
    }
}

/// The status a store failure becomes: an id out of range is the caller's
/// fault, a non-member's read is refused, an unreachable database is worth a
/// retry, anything else is ours.
fn store_status(err: ConvError) -> Status {
    match err {
        ConvError::IdOutOfRange(_) | ConvError::NoConversation => {
            error_status(ErrorCode::InvalidArgument, err.to_string())
        }
        ConvError::NotMember { .. } => error_status(ErrorCode::NotGroupMember, err.to_string()),
        ConvError::Mongo(_) | ConvError::Contended { .. } => {
            tracing::warn!(%err, "message store unavailable");
            error_status(ErrorCode::Unavailable, "message store unavailable")
        }
        ConvError::Corrupt(_) | ConvError::OldLayout { .. } | ConvError::Write { .. } => {
            tracing::error!(%err, "message store error");
            error_status(ErrorCode::Internal, "message store error")
        }
    }
}

#[tonic::async_trait]
impl<C: Conversations> Manager for ManagerService<C> {
    async fn sync_conversations(
        &self,
        request: Request<SyncConversationsRequest>,
    ) -> Result<Response<pb::SyncConversationsReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let request = r.request.unwrap_or_default();
        let reply = self
            .store
            .sync_conversations(user, &request)
            .await
            .map_err(store_status)?;
        tracing::debug!(
            user,
            known = request.known.len(),
            changed = reply.conversations.len(),
            "sync conversations"
        );
        Ok(Response::new(reply))
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let request = r.request.unwrap_or_default();
        let key = validate::conversation(user, request.conversation.as_ref())?;
        let page = self
            .store
            .sync(user, key, request.after_seq, request.limit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::SyncReply {
            messages: page.messages,
            has_more: page.has_more,
        }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let request = r.request.unwrap_or_default();
        let key = validate::conversation(user, request.conversation.as_ref())?;
        let page = self
            .store
            .history(user, key, request.before_seq, request.limit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::HistoryReply {
            messages: page.messages,
            has_more: page.has_more,
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let request = r.request.unwrap_or_default();
        let key = validate::conversation(user, request.conversation.as_ref())?;
        let outcome = self
            .store
            .read(user, key, request.seq)
            .await
            .map_err(store_status)?;
        tracing::debug!(user, conversation = %key, read_seq = outcome.read_seq, "read");
        Ok(Response::new(ReadReply {
            reply: Some(pb::ReadReply {
                read_seq: outcome.read_seq,
                unread: outcome.unread,
            }),
            moved: outcome.moved,
        }))
    }

    async fn joined(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let group = validate::group(r.group_id)?;
        let seq = self
            .store
            .joined(user, group, r.epoch)
            .await
            .map_err(store_status)?;
        tracing::debug!(user, group, seq, "joined");
        Ok(Response::new(MembershipReply { seq }))
    }

    async fn left(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let group = validate::group(r.group_id)?;
        let seq = self
            .store
            .left(user, group, r.epoch)
            .await
            .map_err(store_status)?;
        tracing::debug!(user, group, seq, "left");
        Ok(Response::new(MembershipReply { seq }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_rpc::status::error_code;

    #[test]
    fn store_failures_map_to_client_codes() {
        let cases = [
            (
                ConvError::IdOutOfRange(u64::MAX),
                ErrorCode::InvalidArgument,
            ),
            (
                ConvError::Contended {
                    conversation: "g:1".into(),
                    rounds: 100,
                },
                ErrorCode::Unavailable,
            ),
            (
                ConvError::NotMember { user: 1, group: 2 },
                ErrorCode::NotGroupMember,
            ),
            (ConvError::Corrupt("seq".into()), ErrorCode::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(error_code(&store_status(err)), code);
        }
    }
}
