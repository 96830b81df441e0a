//! The routes every service mounts beside its own, on a real socket:
//! reflection (both versions) lists exactly what the port serves, so a client
//! is never told of a service it would get UNIMPLEMENTED from; health follows a
//! dependency, not serving while it does not answer and serving again once it does.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fishchat_node::{Dependency, follow, health_and_reflection};
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use tonic_reflection::pb::{v1, v1alpha};

const SERVED: &str = "fishchat.logic.v1.Logic";
const DEADLINE: Duration = Duration::from_secs(10);

/// Serves the routes for `SERVED` on a free port; returns their health
/// reporter and a channel to the port.
async fn server() -> (HealthReporter, tonic::transport::Channel) {
    let (health, routes) = health_and_reflection(&[SERVED]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (health, channel)
}

fn expected(reflection: &str) -> BTreeSet<String> {
    [SERVED, "grpc.health.v1.Health", reflection]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// A test that asks reflection version `$version` (a module of
/// `tonic_reflection::pb`) to list services, expecting `$reflection` (its own
/// name) beside health and `SERVED`. The two versions' types differ only in
/// their module, hence a macro.
macro_rules! lists_only_the_services_served {
    ($test:ident, $version:ident, $reflection:literal) => {
        #[tokio::test]
        async fn $test() {
            use $version::server_reflection_request::MessageRequest;
            use $version::server_reflection_response::MessageResponse;
            let mut client =
                $version::server_reflection_client::ServerReflectionClient::new(server().await.1);
            let request = $version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = client
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let reply = replies.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
                panic!("not a service list: {reply:?}");
            };
            let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
            assert_eq!(names, expected($reflection));
        }
    };
}

lists_only_the_services_served!(
    reflection_v1_lists_only_the_services_served,
    v1,
    "grpc.reflection.v1.ServerReflection"
);
lists_only_the_services_served!(
    reflection_v1alpha_lists_only_the_services_served,
    v1alpha,
    "grpc.reflection.v1alpha.ServerReflection"
);

/// Waits until `client` reports `want` for `service`, following the health
/// service's own stream of changes; panics at the deadline.
async fn until_status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
) {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let reached = async {
        // Until the follower's first verdict the service is unknown, and
        // Watch refuses an unknown name rather than waiting for it.
        let mut statuses = loop {
            match client.watch(request.clone()).await {
                Ok(stream) => break stream.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(status) => panic!("watching {service:?}: {status}"),
            }
        };
        while let Some(reply) = statuses.message().await.unwrap() {
            if reply.status == want as i32 {
                return;
            }
        }
        panic!("{service:?}: the health stream ended before {want:?}");
    };
    tokio::time::timeout(DEADLINE, reached)
        .await
        .unwrap_or_else(|_| panic!("{service:?} never became {want:?}"));
}

#[tokio::test]
async fn a_dependency_that_stops_answering_stops_the_service_serving_until_it_is_back() {
    let (reporter, channel) = server().await;
    let up = Arc::new(AtomicBool::new(true));
    let dependency = Dependency::new("fake", up.clone(), |up| async move {
        if up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("refused")
        }
    });
    let _follower = follow(
        reporter,
        &[SERVED],
        vec![dependency],
        Duration::from_millis(50),
    );
    let mut client = HealthClient::new(channel);

    until_status(&mut client, SERVED, ServingStatus::Serving).await;
    up.store(false, Ordering::SeqCst);
    until_status(&mut client, SERVED, ServingStatus::NotServing).await;
    until_status(&mut client, "", ServingStatus::NotServing).await;
    up.store(true, Ordering::SeqCst);
    until_status(&mut client, SERVED, ServingStatus::Serving).await;
    until_status(&mut client, "", ServingStatus::Serving).await;
}
