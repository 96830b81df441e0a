//! Checks of request fields, before anything touches the store.
//!
//! Every refusal is an `INVALID_ARGUMENT` carrying the client error code, so
//! the access node can hand it to the client as is.

use fishchat_codec::{ErrorCode, pb};
use fishchat_conversations::ConvKey;
use fishchat_rpc::status::error_status;
use tonic::Status;

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

/// A group id must be set.
pub fn group(group_id: u64) -> Result<u64, Status> {
    if group_id == 0 {
        return Err(invalid("group_id is required"));
    }
    Ok(group_id)
}

/// The conversation `user` names: a peer user or a group, with a non-zero id.
pub fn conversation(
    user: u64,
    conversation: Option<&pb::ConversationRef>,
) -> Result<ConvKey, Status> {
    use pb::conversation_ref::Id;
    match conversation.and_then(|c| c.id) {
        Some(Id::UserId(0) | Id::GroupId(0)) => Err(invalid("the conversation's id must not be 0")),
        Some(id) => ConvKey::named_by(user, &pb::ConversationRef { id: Some(id) })
            .ok_or_else(|| invalid("a conversation is required")),
        None => Err(invalid("a conversation (user_id or group_id) is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fishchat_rpc::status::error_code;
    use pb::conversation_ref::Id;

    fn named(id: Option<Id>) -> Result<ConvKey, Status> {
        conversation(5, Some(&pb::ConversationRef { id }))
    }

    #[test]
    fn missing_fields_are_invalid_arguments() {
        assert!(user(7).is_ok());
        let refused = [
            user(0).map(drop),
            group(0).map(drop),
            named(None).map(drop),
            named(Some(Id::GroupId(0))).map(drop),
            named(Some(Id::UserId(0))).map(drop),
            conversation(5, None).map(drop),
        ];
        for result in refused {
            let status = result.expect_err("accepted");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(error_code(&status), ErrorCode::InvalidArgument);
        }
        assert_eq!(named(Some(Id::UserId(3))).unwrap(), ConvKey::direct(3, 5));
    }
}
