//! The baseline's Push gRPC: each delivery is encoded once and the shared
//! bytes are queued on every target connection's channel.

use std::sync::Arc;

use fishchat_codec::pb::{self, Command};
use fishchat_codec::{DEFAULT_MAX_FRAME_LEN, LENGTH_LEN, encode_frame_to_bytes};
use fishchat_rpc::access::access_server::Access;
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use tonic::{Request, Response, Status};

use super::registry::Registry;

/// Serves `fishchat.access.v1.Access` over the registry.
#[derive(Debug, Clone)]
pub struct PushService {
    registry: Arc<Registry>,
}

impl PushService {
    /// The service over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[tonic::async_trait]
impl Access for PushService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let mut reply = PushReply::default();
        for delivery in request.into_inner().deliveries {
            if delivery.messages.is_empty() {
                continue;
            }
            let push = pb::Push {
                messages: delivery.messages,
            };
            let frame = encode_frame_to_bytes(Command::Push, 0, &push, DEFAULT_MAX_FRAME_LEN)
                .map_err(|err| Status::invalid_argument(err.to_string()))?
                // The codec writes the length prefix itself.
                .slice(LENGTH_LEN..);
            for user_id in delivery.user_ids {
                match self.registry.send(user_id, &frame) {
                    0 => reply.absent_user_ids.push(user_id),
                    n => reply.delivered_connections += n as u32,
                }
            }
        }
        Ok(Response::new(reply))
    }

    async fn kick(&self, _request: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        Err(Status::unimplemented(
            "the tokio baseline serves pushes only",
        ))
    }
}
