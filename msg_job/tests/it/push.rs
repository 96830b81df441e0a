//! Pushes after storing, through a fake register and fake access nodes served
//! over real gRPC on ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fishchat_e2e::{unique_name, wait_until};
use fishchat_msg_job::grpc_push::GrpcPusher;
use fishchat_msg_job::{Conversation, MemoryInbox, event};
use fishchat_rpc::access::access_server::{Access, AccessServer};
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use fishchat_rpc::register::register_server::{Register, RegisterServer};
use fishchat_rpc::register::*;
use parking_lot::Mutex;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::common::{DEADLINE, direct, p2p_record, produce, start, topics};

/// An access node that records what it is pushed, after checking each pushed
/// message is already in the store with that seq.
#[derive(Clone)]
struct FakeAccess {
    store: Arc<MemoryInbox>,
    pushes: Arc<Mutex<Vec<PushRequest>>>,
    pushed_before_stored: Arc<Mutex<Vec<(u64, u64)>>>,
}

#[tonic::async_trait]
impl Access for FakeAccess {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        for delivery in &request.deliveries {
            for user in &delivery.user_ids {
                let stored = self.store.messages(*user);
                for m in &delivery.messages {
                    let in_store = usize::try_from(m.seq)
                        .ok()
                        .and_then(|seq| stored.get(seq.wrapping_sub(1)))
                        .is_some_and(|s| s.server_msg_id == m.server_msg_id);
                    if !in_store {
                        self.pushed_before_stored.lock().push((*user, m.seq));
                    }
                }
            }
        }
        let users = request
            .deliveries
            .iter()
            .map(|d| d.user_ids.len())
            .sum::<usize>();
        self.pushes.lock().push(request);
        Ok(Response::new(PushReply {
            absent_user_ids: Vec::new(),
            delivered_connections: u32::try_from(users).unwrap_or(u32::MAX),
        }))
    }

    async fn kick(&self, _: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        Err(Status::unimplemented("not used by msg_job"))
    }
}

/// A register whose only working call is `ListSessions`, over a fixed table.
struct FakeRegister {
    sessions: Vec<Session>,
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
    async fn touch_session(
        &self,
        _: Request<Session>,
    ) -> Result<Response<TouchSessionReply>, Status> {
        unused()
    }
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsReply>, Status> {
        let users = request.into_inner().user_ids;
        let sessions = self
            .sessions
            .iter()
            .filter(|s| users.contains(&s.user_id))
            .cloned()
            .collect();
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

/// Binds an ephemeral loopback port for a test server.
fn ephemeral() -> (TcpIncoming, SocketAddr) {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    (incoming, addr)
}

fn session(user_id: u64, push_addr: String, conn_id: u64) -> Session {
    Session {
        user_id,
        device_id: format!("d{conn_id}"),
        access_node_id: "fake-access".into(),
        push_addr,
        conn_id,
    }
}

/// Users 1 and 2 (two devices) are online on a fake node, user 3 on a dead one:
/// the live node gets each user's stored messages with their seqs, in order,
/// grouped in one request per batch; the dead node is counted, and nothing blocks the commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_are_pushed_with_their_seqs() {
    let store = Arc::new(MemoryInbox::new());
    let access = FakeAccess {
        store: Arc::clone(&store),
        pushes: Arc::default(),
        pushed_before_stored: Arc::default(),
    };
    let (incoming, access_addr) = ephemeral();
    tokio::spawn(
        Server::builder()
            .add_service(AccessServer::new(access.clone()))
            .serve_with_incoming(incoming),
    );
    // A port that was bound and released: nothing answers there.
    let dead_addr = ephemeral().1;
    let register = FakeRegister {
        sessions: vec![
            session(1, access_addr.to_string(), 11),
            session(2, format!("http://{access_addr}"), 21),
            session(2, format!("http://{access_addr}"), 22),
            session(3, dead_addr.to_string(), 31),
        ],
    };
    let (incoming, register_addr) = ephemeral();
    tokio::spawn(
        Server::builder()
            .add_service(RegisterServer::new(register))
            .serve_with_incoming(incoming),
    );

    let topics = topics("mj-push", 1, 2).await;
    let mut records: Vec<_> = (1..=20_u64)
        .map(|id| p2p_record(&topics[0], &direct(id, 3, 1 + id % 2)))
        .collect();
    let mut group_message = direct(21, 3, 0);
    group_message.conversation = Conversation::GroupId(7);
    records.push((
        topics[0].clone(),
        7,
        event::encode(&group_message, &[1, 2, 3, 4]),
    ));
    produce(&records).await;

    let pusher = GrpcPusher::new(&format!("http://{register_addr}")).expect("pusher");
    let group_id = unique_name("mj-push");
    let running = start(&group_id, &topics, Arc::clone(&store), pusher, 100);
    let pushed = async || {
        let pushes = access.pushes.lock();
        let mut per_user: std::collections::BTreeMap<u64, Vec<(u64, u64)>> = Default::default();
        for request in pushes.iter() {
            for delivery in &request.deliveries {
                for user in &delivery.user_ids {
                    per_user
                        .entry(*user)
                        .or_default()
                        .extend(delivery.messages.iter().map(|m| (m.seq, m.server_msg_id)));
                }
            }
        }
        (per_user.values().map(Vec::len).sum::<usize>() == 22).then_some(per_user)
    };
    let per_user = wait_until(DEADLINE, "11 pushes to each of users 1 and 2", pushed).await;
    let stats = Arc::clone(&running.stats);
    running.wait_committed(21).await;
    running.stop().await;

    assert!(
        access.pushed_before_stored.lock().is_empty(),
        "pushed before stored"
    );
    for user in [1_u64, 2] {
        let got = &per_user[&user];
        let stored: Vec<(u64, u64)> = store
            .messages(user)
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.server_msg_id))
            .collect();
        assert_eq!(got, &stored, "user {user} got other pushes than its inbox");
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
    assert!(!per_user.contains_key(&3) && !per_user.contains_key(&4));
    // Each batch went to the live node as one request carrying both users.
    assert!(access.pushes.lock().iter().all(|r| r.deliveries.len() <= 2));
    assert!(
        stats.push_failures.load(Ordering::SeqCst) >= 1,
        "the dead node was not counted"
    );
}
