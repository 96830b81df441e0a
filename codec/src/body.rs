//! Which body each command carries.
//!
//! One table (the macro call below) maps every command to its message type,
//! so decoding by command, the command of a body, and encoding cannot
//! disagree with each other.

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use thiserror::Error;

use crate::encode::{EncodeError, encode_frame};
use crate::frame::Frame;
use crate::pb::{self, Command, ErrorCode};

/// Why a frame's body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// The body is not a valid encoding of the command's message.
    #[error("{command:?} body does not decode: {reason}")]
    Malformed {
        /// The command whose body failed.
        command: Command,
        /// What the protobuf decoder said.
        reason: String,
    },
    /// The command has no body type (only `COMMAND_UNSPECIFIED`).
    #[error("command {0:?} carries no body")]
    NoBody(Command),
}

impl BodyError {
    /// The error code to report to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::Malformed { .. } => ErrorCode::BadBody,
            BodyError::NoBody(_) => ErrorCode::UnknownCommand,
        }
    }
}

macro_rules! bodies {
    ($($variant:ident($ty:ty) = $command:ident,)*) => {
        /// A decoded frame body, one variant per command.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Body {
            $(
                #[doc = concat!("The body of `", stringify!($command), "`.")]
                $variant($ty),
            )*
        }

        impl Body {
            /// The command that carries this body.
            pub fn command(&self) -> Command {
                match self {
                    $(Body::$variant(_) => Command::$command,)*
                }
            }

            /// Decodes `body` as the message `command` carries.
            pub fn decode(command: Command, body: Bytes) -> Result<Body, BodyError> {
                let malformed = |err: prost::DecodeError| BodyError::Malformed {
                    command,
                    reason: err.to_string(),
                };
                match command {
                    $(Command::$command => <$ty>::decode(body).map(Body::$variant).map_err(malformed),)*
                    Command::Unspecified => Err(BodyError::NoBody(command)),
                }
            }

            /// Appends this body as a whole frame to `dst`.
            pub fn encode(
                &self,
                request_id: u32,
                max_frame_len: u32,
                dst: &mut BytesMut,
            ) -> Result<(), EncodeError> {
                match self {
                    $(Body::$variant(msg) => encode_frame(Command::$command, request_id, msg, max_frame_len, dst),)*
                }
            }
        }

        $(
            impl From<$ty> for Body {
                fn from(msg: $ty) -> Body {
                    Body::$variant(msg)
                }
            }
        )*
    };
}

bodies! {
    Login(pb::LoginRequest) = Login,
    LoginReply(pb::LoginReply) = LoginReply,
    Ping(pb::Ping) = Ping,
    Pong(pb::Pong) = Pong,
    SendToUser(pb::SendToUser) = SendToUser,
    SendToGroup(pb::SendToGroup) = SendToGroup,
    SendAck(pb::SendAck) = SendAck,
    Push(pb::Push) = Push,
    Sync(pb::SyncRequest) = Sync,
    SyncReply(pb::SyncReply) = SyncReply,
    Logout(pb::Logout) = Logout,
    Kick(pb::Kick) = Kick,
    Error(pb::Error) = Error,
    GatewayLookup(pb::GatewayLookup) = GatewayLookup,
    GatewayReply(pb::GatewayReply) = GatewayReply,
    SyncConversations(pb::SyncConversationsRequest) = SyncConversations,
    SyncConversationsReply(pb::SyncConversationsReply) = SyncConversationsReply,
    History(pb::HistoryRequest) = History,
    HistoryReply(pb::HistoryReply) = HistoryReply,
    Read(pb::ReadRequest) = Read,
    ReadReply(pb::ReadReply) = ReadReply,
    ReadUpdate(pb::ReadUpdate) = ReadUpdate,
}

impl Frame {
    /// Decodes this frame's body as the message its command names.
    pub fn body(&self) -> Result<Body, BodyError> {
        Body::decode(self.header.command, self.body.clone())
    }
}
