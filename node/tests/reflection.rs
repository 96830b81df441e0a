//! Reflection on a real socket: both versions list exactly what the port
//! serves, so a client is never told of a service it would get UNIMPLEMENTED from.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::collections::BTreeSet;

use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;
use tonic_reflection::pb::{v1, v1alpha};

const SERVED: &str = "fishchat.logic.v1.Logic";

/// Serves the routes for `SERVED` on a free port; returns a channel to it.
async fn server() -> tonic::transport::Channel {
    let (_health, routes) = fishchat_node::health_and_reflection(&[SERVED]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
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
                $version::server_reflection_client::ServerReflectionClient::new(server().await);
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
