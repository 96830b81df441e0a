//! How a client-protocol error code crosses a gRPC hop.
//!
//! A service that refuses a request for a reason the client must see (an
//! unknown recipient, an expired token) returns a `tonic::Status` whose gRPC
//! code fits the failure and whose metadata carries the [`ErrorCode`]; the
//! access node copies that code into the ERROR or SEND_ACK frame. Without the
//! metadata, the code is derived from the gRPC code.

use fishchat_codec::ErrorCode;
use tonic::{Code, Status};

/// Metadata key holding the protocol error code's name.
pub const ERROR_CODE_KEY: &str = "x-fishchat-error";

/// A status for `code` with a human-readable `message`.
pub fn error_status(code: ErrorCode, message: impl Into<String>) -> Status {
    let grpc = match code {
        ErrorCode::UnknownUser | ErrorCode::UnknownGroup => Code::NotFound,
        ErrorCode::BadToken | ErrorCode::TokenExpired | ErrorCode::NotLoggedIn => {
            Code::Unauthenticated
        }
        ErrorCode::NotGroupMember => Code::PermissionDenied,
        ErrorCode::TooManyRequests => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
        ErrorCode::AlreadyLoggedIn | ErrorCode::ResendMismatch => Code::AlreadyExists,
        ErrorCode::BadFrame
        | ErrorCode::FrameTooLarge
        | ErrorCode::UnknownCommand
        | ErrorCode::BadBody
        | ErrorCode::EmptyBody
        | ErrorCode::BodyTooLarge
        | ErrorCode::InvalidArgument => Code::InvalidArgument,
    };
    let mut status = Status::new(grpc, message);
    if let Ok(value) = code.as_str_name().parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, value);
    }
    status
}

/// The protocol error code a status stands for.
pub fn error_code(status: &Status) -> ErrorCode {
    let named = status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_str_name);
    named.unwrap_or(match status.code() {
        Code::NotFound => ErrorCode::UnknownUser,
        Code::Unauthenticated => ErrorCode::BadToken,
        Code::PermissionDenied => ErrorCode::NotGroupMember,
        Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
        Code::ResourceExhausted => ErrorCode::TooManyRequests,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_hop() {
        for n in 1..=64 {
            let Ok(code) = ErrorCode::try_from(n) else {
                continue;
            };
            assert_eq!(error_code(&error_status(code, "x")), code);
        }
    }

    #[test]
    fn plain_statuses_map_by_grpc_code() {
        assert_eq!(
            error_code(&Status::unavailable("down")),
            ErrorCode::Unavailable
        );
        assert_eq!(error_code(&Status::unknown("?")), ErrorCode::Internal);
    }
}
