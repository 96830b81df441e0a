//! Checks of request fields, before anything touches the store.
//!
//! Every refusal is an `INVALID_ARGUMENT` carrying the client error code, so
//! the access node can hand it to the client as is.

use fishchat_codec::ErrorCode;
use fishchat_inbox::Peer;
use fishchat_rpc::manager::history_request;
use fishchat_rpc::status::error_status;
use tonic::Status;

/// The longest device id accepted (clients choose it; it is stored per cursor).
pub const MAX_DEVICE_ID_LEN: usize = 128;

fn invalid(message: impl Into<String>) -> Status {
    error_status(ErrorCode::InvalidArgument, message)
}

/// A user id must be set (0 is "missing" in proto3).
pub fn user(user_id: u64) -> Result<u64, Status> {
    if user_id == 0 {
        return Err(invalid("user_id is required"));
    }
    Ok(user_id)
}

/// A device id must be non-empty and at most [`MAX_DEVICE_ID_LEN`] bytes.
pub fn device(device_id: &str) -> Result<&str, Status> {
    if device_id.is_empty() {
        return Err(invalid("device_id is required"));
    }
    if device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(invalid(format!(
            "device_id is longer than {MAX_DEVICE_ID_LEN} bytes"
        )));
    }
    Ok(device_id)
}

/// A history request must name a user or a group, with a non-zero id.
pub fn peer(peer: Option<history_request::Peer>) -> Result<Peer, Status> {
    match peer {
        Some(history_request::Peer::PeerUserId(id)) if id != 0 => Ok(Peer::User(id)),
        Some(history_request::Peer::GroupId(id)) if id != 0 => Ok(Peer::Group(id)),
        Some(_) => Err(invalid("the peer id must not be 0")),
        None => Err(invalid("peer_user_id or group_id is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_rpc::status::error_code;

    #[test]
    fn missing_fields_are_invalid_arguments() {
        assert!(user(7).is_ok());
        let refused = [
            user(0).map(drop),
            device("").map(drop),
            device(&"d".repeat(MAX_DEVICE_ID_LEN + 1)).map(drop),
            peer(None).map(drop),
            peer(Some(history_request::Peer::GroupId(0))).map(drop),
        ];
        for result in refused {
            let status = result.expect_err("accepted");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(error_code(&status), ErrorCode::InvalidArgument);
        }
        assert_eq!(
            peer(Some(history_request::Peer::PeerUserId(3))).unwrap(),
            Peer::User(3)
        );
    }
}
