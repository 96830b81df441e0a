//! A fake register and fake access nodes, served over real gRPC on ephemeral
//! loopback ports, and the decoding of what the nodes were pushed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fishchat_codec::pb::{self, stored_message};
use fishchat_codec::{Body, Command, DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use fishchat_msg_job::{ConvKey, MemoryStore};
use fishchat_rpc::access::access_server::{Access, AccessServer};
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use fishchat_rpc::register::register_server::{Register, RegisterServer};
use fishchat_rpc::register::*;
use parking_lot::Mutex;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Binds an ephemeral loopback port for a test server.
fn ephemeral() -> (TcpIncoming, SocketAddr) {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    (incoming, addr)
}

/// A loopback address that was bound and released: nothing answers there.
pub fn dead_addr() -> String {
    ephemeral().1.to_string()
}

/// A loopback address that accepts connections and never says a word: a node
/// stuck below gRPC. Returns its address.
pub async fn silent_addr() -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr.to_string()
}

/// The PUSH body of one whole client frame, or why `frame` is not exactly one
/// unprompted PUSH frame.
pub fn decode_push(frame: &[u8]) -> Result<pb::Push, String> {
    let mut buf = BytesMut::from(frame);
    let decoded = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
        .decode(&mut buf)
        .map_err(|err| err.to_string())?
        .ok_or("an incomplete frame")?;
    if !buf.is_empty() {
        return Err(format!("{} bytes after the frame", buf.len()));
    }
    if decoded.header.command != Command::Push || decoded.header.request_id != 0 {
        return Err(format!("header {:?}", decoded.header));
    }
    match decoded.body() {
        Ok(Body::Push(push)) => Ok(push),
        other => Err(format!("body {other:?}")),
    }
}

/// The conversation a pushed message belongs to; `None` if it names none.
pub fn key_of(message: &pb::StoredMessage) -> Option<ConvKey> {
    let target: stored_message::Conversation = message.conversation?;
    Some(ConvKey::of_message(message.from_user_id, target))
}

/// What an access node does with a push.
#[derive(Clone)]
enum Behaviour {
    /// Answers at once, after checking each pushed message is already in the store.
    Answer(Arc<MemoryStore>),
    /// Takes the request and never answers: a stuck node.
    Hang,
}

/// An access node that records every push request it gets.
#[derive(Clone)]
pub struct FakeAccess {
    behaviour: Behaviour,
    requests: Arc<Mutex<Vec<PushRequest>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl FakeAccess {
    /// A healthy node that checks nothing is pushed before it is in `store`.
    pub fn checking(store: Arc<MemoryStore>) -> Self {
        Self {
            behaviour: Behaviour::Answer(store),
            requests: Arc::default(),
            violations: Arc::default(),
        }
    }

    /// A node that never answers a push.
    pub fn hanging() -> Self {
        Self {
            behaviour: Behaviour::Hang,
            requests: Arc::default(),
            violations: Arc::default(),
        }
    }

    /// Serves this node on an ephemeral port; returns its push address.
    pub fn serve(&self) -> String {
        let (incoming, addr) = ephemeral();
        tokio::spawn(
            Server::builder()
                .add_service(AccessServer::new(self.clone()))
                .serve_with_incoming(incoming),
        );
        addr.to_string()
    }

    /// Every push request received, in arrival order.
    pub fn requests(&self) -> Vec<PushRequest> {
        self.requests.lock().clone()
    }

    /// Frames that did not decode or carried a message not yet stored.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().clone()
    }

    /// What `user` was pushed, in arrival order: (conversation, seq, server_msg_id).
    pub fn pushed_to(&self, user: u64) -> Vec<(ConvKey, u64, u64)> {
        let mut out = Vec::new();
        for request in self.requests.lock().iter() {
            for delivery in &request.deliveries {
                if !delivery.user_ids.contains(&user) {
                    continue;
                }
                if let Ok(push) = decode_push(&delivery.frame) {
                    out.extend(
                        push.messages
                            .iter()
                            .filter_map(|m| Some((key_of(m)?, m.seq, m.server_msg_id))),
                    );
                }
            }
        }
        out
    }

    fn check(&self, store: &MemoryStore, request: &PushRequest) {
        let mut violations = self.violations.lock();
        for delivery in &request.deliveries {
            let push = match decode_push(&delivery.frame) {
                Ok(push) => push,
                Err(err) => {
                    violations.push(err);
                    continue;
                }
            };
            for message in &push.messages {
                let Some(key) = key_of(message) else {
                    violations.push(format!("seq {} names no conversation", message.seq));
                    continue;
                };
                let stored = usize::try_from(message.seq)
                    .ok()
                    .and_then(|seq| store.messages(key).get(seq.wrapping_sub(1)).cloned());
                if stored.is_none_or(|m| m.server_msg_id != message.server_msg_id) {
                    violations.push(format!("{key} seq {} pushed before stored", message.seq));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Access for FakeAccess {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        let store = match &self.behaviour {
            Behaviour::Answer(store) => Arc::clone(store),
            Behaviour::Hang => {
                self.requests.lock().push(request);
                return std::future::pending().await;
            }
        };
        self.check(&store, &request);
        let users = request
            .deliveries
            .iter()
            .map(|d| d.user_ids.len())
            .sum::<usize>();
        self.requests.lock().push(request);
        Ok(Response::new(PushReply {
            absent_user_ids: Vec::new(),
            delivered_connections: u32::try_from(users).unwrap_or(u32::MAX),
        }))
    }

    async fn kick(&self, _: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        Err(Status::unimplemented("not used by msg_job"))
    }
}

/// One session of `user_id` on the node at `push_addr`.
pub fn session(user_id: u64, push_addr: &str, conn_id: u64) -> Session {
    Session {
        user_id,
        device_id: format!("d{conn_id}"),
        access_node_id: format!("node-{push_addr}"),
        push_addr: push_addr.to_owned(),
        conn_id,
    }
}

/// A register whose only working call is `ListSessions`, over a table the
/// test may change; it records the users each call asked about.
#[derive(Clone, Default)]
pub struct FakeRegister {
    sessions: Arc<Mutex<Vec<Session>>>,
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl FakeRegister {
    /// A register answering from `sessions`.
    pub fn new(sessions: Vec<Session>) -> Self {
        Self {
            sessions: Arc::new(Mutex::new(sessions)),
            calls: Arc::default(),
        }
    }

    /// Serves it on an ephemeral port; returns its address as a URI.
    pub fn serve(&self) -> String {
        let (incoming, addr) = ephemeral();
        tokio::spawn(
            Server::builder()
                .add_service(RegisterServer::new(self.clone()))
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }

    /// Replaces the session table.
    pub fn set_sessions(&self, sessions: Vec<Session>) {
        *self.sessions.lock() = sessions;
    }

    /// The users each `ListSessions` call asked about, sorted, in call order.
    pub fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().clone()
    }
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not used by msg_job"))
}

#[tonic::async_trait]
impl Register for FakeRegister {
    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserReply>, Status> {
        unused()
    }
    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginReply>, Status> {
        unused()
    }
    async fn verify_token(
        &self,
        _: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenReply>, Status> {
        unused()
    }
    async fn revoke_token(
        &self,
        _: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenReply>, Status> {
        unused()
    }
    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        unused()
    }
    async fn record_session(
        &self,
        _: Request<Session>,
    ) -> Result<Response<RecordSessionReply>, Status> {
        unused()
    }
    async fn remove_session(
        &self,
        _: Request<RemoveSessionRequest>,
    ) -> Result<Response<RemoveSessionReply>, Status> {
        unused()
    }
    async fn touch_sessions(
        &self,
        _: Request<TouchSessionsRequest>,
    ) -> Result<Response<TouchSessionsReply>, Status> {
        unused()
    }
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsReply>, Status> {
        let mut users = request.into_inner().user_ids;
        users.sort_unstable();
        let sessions = self
            .sessions
            .lock()
            .iter()
            .filter(|s| users.binary_search(&s.user_id).is_ok())
            .cloned()
            .collect();
        self.calls.lock().push(users);
        Ok(Response::new(ListSessionsReply { sessions }))
    }
    async fn create_group(
        &self,
        _: Request<CreateGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        unused()
    }
    async fn join_group(
        &self,
        _: Request<GroupMemberRequest>,
    ) -> Result<Response<GroupMemberReply>, Status> {
        unused()
    }
    async fn quit_group(
        &self,
        _: Request<GroupMemberRequest>,
    ) -> Result<Response<GroupMemberReply>, Status> {
        unused()
    }
    async fn group_members(
        &self,
        _: Request<GroupMembersRequest>,
    ) -> Result<Response<GroupMembersReply>, Status> {
        unused()
    }
    async fn user_groups(
        &self,
        _: Request<UserGroupsRequest>,
    ) -> Result<Response<UserGroupsReply>, Status> {
        unused()
    }
}
