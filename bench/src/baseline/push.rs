//! The baseline's Push gRPC: each delivery's frame, encoded once by the
//! caller, is queued as shared bytes on every target connection's channel.

use std::sync::Arc;

use bytes::Bytes;
use fishchat_codec::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LENGTH_LEN};
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
            let frame = unprefixed(delivery.frame).map_err(Status::invalid_argument)?;
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

/// A whole client frame without its length prefix (the connection's codec
/// writes it), once the prefix is checked to match the rest: a frame that is
/// not exactly one frame would corrupt every stream it is queued on.
fn unprefixed(frame: Bytes) -> Result<Bytes, String> {
    let prefix: [u8; LENGTH_LEN] = frame
        .get(..LENGTH_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or("a delivery's frame is shorter than its length prefix")?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len < HEADER_LEN || len > DEFAULT_MAX_FRAME_LEN as usize || len != frame.len() - LENGTH_LEN {
        return Err(format!(
            "a delivery's frame of {} bytes says it has {len} after its prefix",
            frame.len()
        ));
    }
    Ok(frame.slice(LENGTH_LEN..))
}

#[cfg(test)]
mod tests {
    use fishchat_codec::encode_frame_to_bytes;
    use fishchat_codec::pb::{self, Command};

    use super::*;

    #[test]
    fn a_whole_frame_loses_its_prefix_and_anything_else_is_refused() {
        let push = pb::Push::default();
        let frame = encode_frame_to_bytes(Command::Push, 0, &push, DEFAULT_MAX_FRAME_LEN).unwrap();
        let body = unprefixed(frame.clone()).unwrap();
        assert_eq!(body.len(), frame.len() - LENGTH_LEN);
        assert_eq!(body.len(), HEADER_LEN);
        assert!(unprefixed(frame.slice(..frame.len() - 1)).is_err());
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        assert!(unprefixed(Bytes::from(two)).is_err());
        assert!(unprefixed(Bytes::new()).is_err());
    }
}
