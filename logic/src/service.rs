//! The gRPC surface of logic: thin translations between the contract in
//! `rpc/proto/logic.proto` and the domain.

use std::sync::Arc;

use fishchat_codec::ErrorCode;
use fishchat_codec::pb::{self, SendAck};
use fishchat_rpc::logic::logic_server::Logic;
use fishchat_rpc::logic::{
    HeartbeatBatch, HeartbeatReplies, HistoryRequest, LoginReply, LoginRequest, LogoutReply,
    LogoutRequest, Origin, ReadRequest, SendAcks, SendBatch, SyncConversationsRequest, SyncRequest,
    outgoing,
};
use fishchat_rpc::manager::manager_client::ManagerClient;
use fishchat_rpc::register::register_client::RegisterClient;
use fishchat_rpc::status::error_status;
use fishchat_rpc::{manager, register};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::chat::{Chat, Outgoing};
use crate::notify::{ReadNotifier, updates};
use crate::ports::{Accepted, Dedup, Directory, IdSource, Publisher, Refusal};

/// Longest device id a client may log in with.
const MAX_DEVICE_ID: usize = 64;

/// Serves `fishchat.logic.v1.Logic`.
pub struct LogicService<D, U, I, P> {
    chat: Chat<D, U, I, P>,
    register: RegisterClient<Channel>,
    manager: ManagerClient<Channel>,
    notifier: Arc<ReadNotifier>,
}

impl<D, U, I, P> LogicService<D, U, I, P> {
    /// The service over the send path and the register and manager services.
    pub fn new(chat: Chat<D, U, I, P>, register: Channel, manager: Channel) -> Self {
        Self {
            chat,
            notifier: Arc::new(ReadNotifier::new(register.clone())),
            register: RegisterClient::new(register),
            manager: ManagerClient::new(manager),
        }
    }
}

fn ack(client_msg_id: String, result: Result<Accepted, Refusal>) -> SendAck {
    match result {
        Ok(accepted) => SendAck {
            client_msg_id,
            server_msg_id: accepted.server_msg_id,
            seq: 0,
            timestamp_ms: accepted.timestamp_ms,
            error: None,
        },
        Err(refusal) => SendAck {
            client_msg_id,
            error: Some(pb::Error {
                code: refusal.code as i32,
                message: refusal.message,
            }),
            ..SendAck::default()
        },
    }
}

fn session(user_id: u64, device_id: String, origin: Origin) -> register::Session {
    register::Session {
        user_id,
        device_id,
        access_node_id: origin.access_node_id,
        push_addr: origin.push_addr,
        conn_id: origin.conn_id,
    }
}

#[tonic::async_trait]
impl<D, U, I, P> Logic for LogicService<D, U, I, P>
where
    D: Directory + 'static,
    U: Dedup + 'static,
    I: IdSource + 'static,
    P: Publisher + 'static,
{
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginReply>, Status> {
        let LoginRequest {
            token,
            device_id,
            origin,
        } = request.into_inner();
        if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID {
            return Err(error_status(
                ErrorCode::InvalidArgument,
                format!("device_id must be 1 to {MAX_DEVICE_ID} bytes"),
            ));
        }
        let user_id = self
            .register
            .clone()
            .verify_token(register::VerifyTokenRequest { token })
            .await?
            .into_inner()
            .user_id;
        let replaced = self
            .register
            .clone()
            .record_session(session(
                user_id,
                device_id.clone(),
                origin.unwrap_or_default(),
            ))
            .await?
            .into_inner()
            .replaced;
        Ok(Response::new(LoginReply {
            user_id,
            replaced: replaced.map(|s| Origin {
                access_node_id: s.access_node_id,
                push_addr: s.push_addr,
                conn_id: s.conn_id,
            }),
        }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutReply>, Status> {
        let LogoutRequest {
            user_id,
            device_id,
            origin,
        } = request.into_inner();
        let origin = origin.unwrap_or_default();
        self.register
            .clone()
            .remove_session(register::RemoveSessionRequest {
                user_id,
                device_id,
                access_node_id: origin.access_node_id,
                conn_id: origin.conn_id,
            })
            .await?;
        Ok(Response::new(LogoutReply {}))
    }

    async fn heartbeats(
        &self,
        request: Request<HeartbeatBatch>,
    ) -> Result<Response<HeartbeatReplies>, Status> {
        let HeartbeatBatch {
            access_node_id,
            push_addr,
            beats,
        } = request.into_inner();
        let count = beats.len();
        let sessions = beats
            .into_iter()
            .map(|beat| register::Session {
                user_id: beat.user_id,
                device_id: beat.device_id,
                access_node_id: access_node_id.clone(),
                push_addr: push_addr.clone(),
                conn_id: beat.conn_id,
            })
            .collect();
        let current = self
            .register
            .clone()
            .touch_sessions(register::TouchSessionsRequest { sessions })
            .await?
            .into_inner()
            .current;
        if current.len() != count {
            return Err(Status::internal(format!(
                "register answered {} heartbeats of {count}",
                current.len()
            )));
        }
        Ok(Response::new(HeartbeatReplies { current }))
    }

    async fn send(&self, request: Request<SendBatch>) -> Result<Response<SendAcks>, Status> {
        let SendBatch { sends } = request.into_inner();
        let outgoing: Vec<Option<Outgoing<'_>>> = sends
            .iter()
            .map(|send| match &send.message {
                Some(outgoing::Message::ToUser(message)) => Some(Outgoing::ToUser {
                    from: send.from_user_id,
                    message,
                }),
                Some(outgoing::Message::ToGroup(message)) => Some(Outgoing::ToGroup {
                    from: send.from_user_id,
                    message,
                }),
                None => None,
            })
            .collect();
        let valid: Vec<Outgoing<'_>> = outgoing.iter().flatten().copied().collect();
        let mut results = self.chat.send(&valid).await.into_iter();
        let acks = outgoing
            .iter()
            .map(|send| match send {
                Some(send) => {
                    let result = results.next().unwrap_or_else(|| {
                        Err(Refusal::new(ErrorCode::Internal, "a send lost its result"))
                    });
                    ack(send.client_msg_id().to_owned(), result)
                }
                None => ack(
                    String::new(),
                    Err(Refusal::new(
                        ErrorCode::InvalidArgument,
                        "a send names neither a user nor a group",
                    )),
                ),
            })
            .collect();
        Ok(Response::new(SendAcks { acks }))
    }

    async fn sync_conversations(
        &self,
        request: Request<SyncConversationsRequest>,
    ) -> Result<Response<pb::SyncConversationsReply>, Status> {
        let SyncConversationsRequest { user_id, request } = request.into_inner();
        self.manager
            .clone()
            .sync_conversations(manager::SyncConversationsRequest { user_id, request })
            .await
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        let SyncRequest { user_id, request } = request.into_inner();
        self.manager
            .clone()
            .sync(manager::SyncRequest { user_id, request })
            .await
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let HistoryRequest { user_id, request } = request.into_inner();
        self.manager
            .clone()
            .history(manager::HistoryRequest { user_id, request })
            .await
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<pb::ReadReply>, Status> {
        let ReadRequest { user_id, request } = request.into_inner();
        let conversation = request.as_ref().and_then(|r| r.conversation);
        let read = self
            .manager
            .clone()
            .read(manager::ReadRequest { user_id, request })
            .await?
            .into_inner();
        let reply = read.reply.unwrap_or_default();
        if read.moved
            && let Some(conversation) = conversation
        {
            // The reader has its answer at once; the other devices hear shortly after.
            let notifier = Arc::clone(&self.notifier);
            let updates = updates(user_id, conversation, reply.read_seq);
            tokio::spawn(async move { notifier.notify(updates).await });
        }
        Ok(Response::new(reply))
    }
}
