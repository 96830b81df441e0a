//! The `fishchat.manager.v1.Manager` gRPC surface: validate, call the store, map errors.

use fishchat_codec::{ErrorCode, pb};
use fishchat_inbox::InboxError;
use fishchat_rpc::manager::manager_server::Manager;
use fishchat_rpc::manager::{
    AckRequest, CursorReply, CursorRequest, HistoryReply, HistoryRequest, SyncRequest, UnreadReply,
};
use fishchat_rpc::status::error_status;
use tonic::{Request, Response, Status};

use crate::store::InboxReader;
use crate::validate;

/// The Manager service over an inbox store.
#[derive(Debug, Clone)]
pub struct ManagerService<I> {
    inbox: I,
}

impl<I: InboxReader> ManagerService<I> {
    /// Serves `inbox`.
    pub fn new(inbox: I) -> Self {
        Self { inbox }
    }
}

/// The status a store failure becomes: an id out of range is the caller's
/// fault, an unreachable database is worth a retry, anything else is ours.
fn store_status(err: InboxError) -> Status {
    match err {
        InboxError::IdOutOfRange(_) => error_status(ErrorCode::InvalidArgument, err.to_string()),
        InboxError::Mongo(_) | InboxError::Contended { .. } => {
            tracing::warn!(%err, "message store unavailable");
            error_status(ErrorCode::Unavailable, "message store unavailable")
        }
        InboxError::Corrupt(_) => {
            tracing::error!(%err, "message store returned a malformed document");
            error_status(ErrorCode::Internal, "message store error")
        }
    }
}

#[tonic::async_trait]
impl<I: InboxReader> Manager for ManagerService<I> {
    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let page = self
            .inbox
            .sync(user, r.after_seq, r.limit)
            .await
            .map_err(store_status)?;
        tracing::debug!(
            user,
            after_seq = r.after_seq,
            count = page.messages.len(),
            "sync"
        );
        Ok(Response::new(pb::SyncReply {
            messages: page.messages,
            has_more: page.has_more,
        }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<CursorReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let device = validate::device(&r.device_id)?;
        let acked_seq = self
            .inbox
            .ack(user, device, r.up_to_seq)
            .await
            .map_err(store_status)?;
        let max_seq = self.inbox.max_seq(user).await.map_err(store_status)?;
        tracing::debug!(user, device, acked_seq, "ack");
        Ok(Response::new(CursorReply { acked_seq, max_seq }))
    }

    async fn cursor(
        &self,
        request: Request<CursorRequest>,
    ) -> Result<Response<CursorReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let device = validate::device(&r.device_id)?;
        let acked_seq = self
            .inbox
            .cursor(user, device)
            .await
            .map_err(store_status)?;
        let max_seq = self.inbox.max_seq(user).await.map_err(store_status)?;
        Ok(Response::new(CursorReply { acked_seq, max_seq }))
    }

    async fn unread(
        &self,
        request: Request<CursorRequest>,
    ) -> Result<Response<UnreadReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let device = validate::device(&r.device_id)?;
        let count = self
            .inbox
            .unread(user, device)
            .await
            .map_err(store_status)?;
        Ok(Response::new(UnreadReply { count }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryReply>, Status> {
        let r = request.into_inner();
        let user = validate::user(r.user_id)?;
        let peer = validate::peer(r.peer)?;
        let page = self
            .inbox
            .history(user, peer, r.before_seq, r.limit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(HistoryReply {
            messages: page.messages,
            has_more: page.has_more,
        }))
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
                InboxError::IdOutOfRange(u64::MAX),
                ErrorCode::InvalidArgument,
            ),
            (
                InboxError::Contended {
                    inbox: 1,
                    rounds: 100,
                },
                ErrorCode::Unavailable,
            ),
            (InboxError::Corrupt("seq".into()), ErrorCode::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(error_code(&store_status(err)), code);
        }
    }
}
