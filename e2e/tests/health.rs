//! Health follows the servers a service needs: register, whose Redis and
//! MongoDB connections go through relays the test cuts, reports NOT_SERVING
//! while either server is away and SERVING once it is back, without a restart.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::net::SocketAddr;
use std::time::Duration;

use fishchat_e2e::relay::Relay;
use fishchat_e2e::services::{ServiceProcess, bin_dir, free_port, wait_status};
use fishchat_e2e::{etcd_endpoint, mongo_url, redis_url, unique_name};
use tonic_health::pb::health_check_response::ServingStatus;

/// A check every 5 s, each allowed 2 s, and a driver that may take a few
/// seconds to reconnect.
const DEADLINE: Duration = Duration::from_secs(40);
const SERVICE: &str = "fishchat.register.v1.Register";

/// The `host:port` of a server URL such as `redis://127.0.0.1:6379` or
/// `mongodb://127.0.0.1:27017/?directConnection=true`.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap()
}

/// Waits until register reports `want`, overall and by its service name.
async fn until(addr: SocketAddr, want: ServingStatus) {
    for service in ["", SERVICE] {
        wait_status(&addr.to_string(), service, want, DEADLINE).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_stops_serving_while_redis_or_mongodb_is_away_and_serves_again_when_back() {
    let (redis_url, mongo_url) = (redis_url(), mongo_url());
    let mut redis = Relay::start(host_port(&redis_url)).await;
    let mut mongo = Relay::start(host_port(&mongo_url)).await;
    let name = unique_name("health-follows");
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let vars = [
        ("ETCD_NAMESPACE", format!("/{name}")),
        ("REGISTER_GRPC_LISTEN", grpc.to_string()),
        ("REGISTER_HTTP_LISTEN", format!("127.0.0.1:{}", free_port())),
        (
            "REGISTER_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "REGISTER_REDIS_URL",
            redis_url.replace(host_port(&redis_url), &redis.addr().to_string()),
        ),
        ("REGISTER_KEY_PREFIX", format!("{name}:")),
        (
            "REGISTER_MONGO_URL",
            mongo_url.replace(host_port(&mongo_url), &mongo.addr().to_string()),
        ),
        ("REGISTER_DATABASE", name.replace('-', "_")),
        (
            "REGISTER_ETCD_ENDPOINTS",
            format!("[\"{}\"]", etcd_endpoint()),
        ),
        // Never called here: nobody joins a group.
        (
            "REGISTER_MANAGER_ADDR",
            format!("http://127.0.0.1:{}", free_port()),
        ),
    ];
    let env = vars
        .into_iter()
        .map(|(key, value)| (format!("FISHCHAT_{key}"), value))
        .collect();
    let log_dir = bin_dir().join("e2e-logs").join(&name);
    eprintln!("register's log in {}", log_dir.display());
    let _register = ServiceProcess::start("fishchat-register", env, &log_dir);

    until(grpc, ServingStatus::Serving).await;
    redis.cut();
    until(grpc, ServingStatus::NotServing).await;
    redis.restore().await;
    until(grpc, ServingStatus::Serving).await;
    mongo.cut();
    until(grpc, ServingStatus::NotServing).await;
    mongo.restore().await;
    until(grpc, ServingStatus::Serving).await;
}
