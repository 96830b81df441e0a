//! The membership log over gRPC against a stand-in manager on an ephemeral
//! port: the calls carry the user and the group, a refusal and an
//! unreachable manager are errors, and nothing waits past its deadline.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fishchat_codec::pb;
use fishchat_register::membership::{ManagerLog, MembershipLog};
use fishchat_rpc::manager::manager_server::{Manager, ManagerServer};
use fishchat_rpc::manager::{
    HistoryRequest, MembershipReply, MembershipRequest, ReadReply, ReadRequest,
    SyncConversationsRequest, SyncRequest,
};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The group whose joins the stand-in refuses.
const REFUSED_GROUP: u64 = 13;

/// One membership call: its name, user and group.
type Call = (&'static str, u64, u64, u64);

/// Records every membership call.
#[derive(Default, Clone)]
struct StandIn {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl StandIn {
    fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: &'static str, req: &MembershipRequest) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((call, req.user_id, req.group_id, req.epoch));
    }
}

#[tonic::async_trait]
impl Manager for StandIn {
    async fn sync_conversations(
        &self,
        _: Request<SyncConversationsRequest>,
    ) -> Result<Response<pb::SyncConversationsReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn sync(&self, _: Request<SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn history(
        &self,
        _: Request<HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn joined(
        &self,
        req: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let req = req.into_inner();
        if req.group_id == REFUSED_GROUP {
            return Err(Status::unavailable("refusing on purpose"));
        }
        self.record("joined", &req);
        Ok(Response::new(MembershipReply { seq: 0 }))
    }

    async fn left(
        &self,
        req: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.record("left", &req.into_inner());
        Ok(Response::new(MembershipReply { seq: 0 }))
    }
}

#[tokio::test]
async fn joined_and_left_reach_manager_and_refusals_are_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stand_in = StandIn::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ManagerServer::new(stand_in.clone()))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    let log = ManagerLog::new(&format!("http://{addr}")).expect("a valid address");
    log.joined(7, 42, 5).await.expect("joined");
    log.left(7, 42, 6).await.expect("left");
    let refused = log.joined(7, REFUSED_GROUP, 7).await.expect_err("refused");
    assert!(refused.to_string().contains("Unavailable"), "{refused}");
    assert_eq!(
        stand_in.calls(),
        [("joined", 7, 42, 5), ("left", 7, 42, 6)],
        "the epochs travel with the calls"
    );

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

#[tokio::test]
async fn an_unreachable_manager_fails_within_the_deadlines() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = ManagerLog::new(&format!("http://127.0.0.1:{port}")).expect("a valid address");
    let started = Instant::now();
    log.joined(1, 2, 1).await.expect_err("nobody listens");
    log.left(1, 2, 2).await.expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(ManagerLog::new("not a url").is_err());
}
