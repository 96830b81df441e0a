//! Balanced and direct channels over real gRPC servers found through a real etcd.

use std::net::SocketAddr;
use std::time::Duration;

use fishchat_discovery::{Dialer, NodeInfo, Registration, Resolver};
use fishchat_e2e::{etcd_endpoint, unique_name, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TTL: Duration = Duration::from_secs(2);
const SOON: Duration = Duration::from_secs(5);
/// Deadline of one health call: a call that hangs on a dead node fails the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A tonic health server on a free loopback port, stopped through `stop`.
struct HealthServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HealthServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("health server failed");
        });
        Self { addr, stop, task }
    }

    async fn shut_down(self) {
        self.stop.send(()).expect("server already stopped");
        self.task.await.expect("server task panicked");
    }
}

async fn check(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(resp)) => Err(format!("unexpected status {:?}", resp.get_ref().status)),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

async fn register(service: &str, id: &str, server: &HealthServer) -> Registration {
    let info = NodeInfo::new(service, id).with_addr("grpc", server.addr.to_string());
    Registration::start_with_ttl(&[etcd_endpoint()], info, TTL)
        .await
        .expect("register in etcd")
}

#[tokio::test]
async fn balanced_channel_keeps_answering_when_a_node_dies() {
    let service = unique_name("svc");
    let a = HealthServer::start().await;
    let b = HealthServer::start().await;
    let reg_a = register(&service, "a", &a).await;
    let reg_b = register(&service, "b", &b).await;

    let resolver = Resolver::start(&[etcd_endpoint()], &service).await.unwrap();
    let channel = resolver.balanced_channel("grpc");
    wait_until(SOON, "both nodes to be resolved", async || {
        (resolver.nodes().len() == 2).then_some(())
    })
    .await;
    for i in 0..10 {
        check(channel.clone())
            .await
            .unwrap_or_else(|err| panic!("call {i} with two nodes failed: {err}"));
    }

    // Node a stops serving and leaves the registry.
    a.shut_down().await;
    reg_a.deregister().await.unwrap();
    wait_until(SOON, "node a to leave the resolver", async || {
        (resolver.node("a").is_none()).then_some(())
    })
    .await;
    for i in 0..20 {
        check(channel.clone())
            .await
            .unwrap_or_else(|err| panic!("call {i} after node a died failed: {err}"));
    }

    // A node that joins later is used too: with b gone, calls reach the newcomer.
    let c = HealthServer::start().await;
    let reg_c = register(&service, "c", &c).await;
    b.shut_down().await;
    reg_b.deregister().await.unwrap();
    wait_until(SOON, "only node c to be resolved", async || {
        (resolver.node("b").is_none() && resolver.node("c").is_some()).then_some(())
    })
    .await;
    for i in 0..10 {
        check(channel.clone())
            .await
            .unwrap_or_else(|err| panic!("call {i} to the newcomer failed: {err}"));
    }
    reg_c.deregister().await.unwrap();
    c.shut_down().await;
}

#[tokio::test]
async fn dialer_reaches_one_resolved_node_by_address() {
    let service = unique_name("svc");
    let server = HealthServer::start().await;
    let reg = register(&service, "only", &server).await;
    let resolver = Resolver::start(&[etcd_endpoint()], &service).await.unwrap();
    let addr = resolver
        .node("only")
        .and_then(|n| n.addr("grpc").map(str::to_owned))
        .expect("node resolved with its grpc address");

    let dialer = Dialer::new();
    check(dialer.channel(&addr).unwrap()).await.unwrap();
    check(dialer.channel(&addr).unwrap()).await.unwrap();
    assert_eq!(dialer.len(), 1);
    reg.deregister().await.unwrap();
    server.shut_down().await;
}
