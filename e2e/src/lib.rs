//! Shared helpers for FishChat's adapter smoke tests against real servers.
//!
//! These tests exist because mocks cannot tell us whether the behaviour FishChat relies on
//! (etcd leases, Redis expiry, Kafka group offsets, MongoDB unique indexes and atomic updates)
//! actually holds on the servers we run. They therefore talk to real etcd, Redis, a Kafka-protocol
//! broker and a MongoDB-protocol server, found through environment variables so CI and a developer
//! can point them elsewhere.
//!
//! A missing server is a broken environment, not a reason to skip: every connect helper panics with
//! a message naming the server and how to start it, and gives up after [`CONNECT_TIMEOUT`] so a
//! down server fails the run in seconds instead of hanging it.

pub mod cluster;
pub mod kafka_tool;
pub mod netns;
pub mod relay;
pub mod services;

use std::future::Future;
use std::net::SocketAddr;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fishchat_client::Connection;
use fishchat_codec::{Body, pb};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use tokio::net::TcpStream;

/// How long a connect helper waits for its server before failing the test.
///
/// Every server here answers in well under a second on loopback, so a few seconds only ever
/// elapse when the server is down; longer would just delay the failure.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// How often [`wait_until`] re-checks its condition: short enough that tests finish soon after the
/// condition holds, long enough not to hammer the server.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a failure message tells the reader to run, so a red test points straight at the fix.
const START_HINT: &str = "start it with `scripts/stack up`";

/// Reads an endpoint from `var`, falling back to the local default the stack script uses.
fn endpoint(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The etcd endpoint (`FISHCHAT_ETCD`, default `127.0.0.1:2379`).
pub fn etcd_endpoint() -> String {
    endpoint("FISHCHAT_ETCD", "127.0.0.1:2379")
}

/// The Redis URL (`FISHCHAT_REDIS`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    endpoint("FISHCHAT_REDIS", "redis://127.0.0.1:6379")
}

/// The Kafka bootstrap servers (`FISHCHAT_KAFKA`, default `127.0.0.1:9092`).
pub fn kafka_brokers() -> String {
    endpoint("FISHCHAT_KAFKA", "127.0.0.1:9092")
}

/// The MongoDB connection string (`FISHCHAT_MONGO`, default a direct connection to
/// `127.0.0.1:27017`: the test server reports itself as a one-node replica set, and a direct
/// connection avoids depending on the host name it advertises).
pub fn mongo_url() -> String {
    endpoint(
        "FISHCHAT_MONGO",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    )
}

/// Runs `attempt` under [`CONNECT_TIMEOUT`] and panics with a uniform, actionable message when the
/// server is down, refuses, or does not answer in time.
async fn must_answer<T, E, F>(server: &str, at: &str, attempt: F) -> T
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("{server} at {at} is not answering ({START_HINT}): {err}"),
        Err(_) => panic!(
            "{server} at {at} is not answering ({START_HINT}): no answer within {CONNECT_TIMEOUT:?}"
        ),
    }
}

/// Connects to etcd and proves it answers a real request.
///
/// The etcd client connects lazily through a balanced channel, so a successful `connect` says
/// nothing about the server; the `status` call is what fails when etcd is down.
pub async fn etcd() -> etcd_client::Client {
    etcd_at(&etcd_endpoint()).await
}

/// Like [`etcd`], for the etcd at `at` (`host:port`).
pub async fn etcd_at(at: &str) -> etcd_client::Client {
    must_answer("etcd", at, async {
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        let mut client = etcd_client::Client::connect([at], Some(options)).await?;
        client.status().await?;
        Ok::<_, etcd_client::Error>(client)
    })
    .await
}

/// Connects to Redis and proves it answers a `PING`.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis_at(&redis_url()).await
}

/// Like [`redis`], for the Redis at URL `at`.
pub async fn redis_at(at: &str) -> redis::aio::MultiplexedConnection {
    must_answer("redis", at, async {
        let client = redis::Client::open(at)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    })
    .await
}

/// A client configuration pointing at the Kafka broker, for producers and consumers to extend.
pub fn kafka_config() -> ClientConfig {
    kafka_config_at(&kafka_brokers())
}

/// Like [`kafka_config`], for the brokers `at`.
pub fn kafka_config_at(at: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", at)
        // A connection attempt that hangs (say, to a port that accepts but never answers) fails
        // within the connect budget instead of librdkafka's default 30 s.
        .set("socket.connection.setup.timeout.ms", "3000");
    config
}

/// Creates a Kafka admin client and proves the broker answers a metadata request.
///
/// librdkafka clients connect lazily and retry forever in the background, so only a request with a
/// timeout can tell that the broker is down.
pub async fn kafka_admin() -> AdminClient<DefaultClientContext> {
    kafka_admin_at(&kafka_brokers()).await
}

/// Like [`kafka_admin`], for the brokers `at`.
pub async fn kafka_admin_at(at: &str) -> AdminClient<DefaultClientContext> {
    let admin: AdminClient<DefaultClientContext> = kafka_config_at(at)
        .create()
        .unwrap_or_else(|err| panic!("cannot configure a Kafka admin client for {at}: {err}"));
    // The metadata call blocks its thread, so it runs off the async workers; its own timeout is
    // shorter than CONNECT_TIMEOUT so librdkafka's error, which names the cause, is reported.
    let probe_timeout = CONNECT_TIMEOUT - Duration::from_millis(500);
    must_answer("kafka", at, async {
        let (admin, answered) = tokio::task::spawn_blocking(move || {
            let answered = admin.inner().fetch_metadata(None, probe_timeout).map(drop);
            (admin, answered)
        })
        .await
        .expect("the Kafka metadata probe panicked");
        answered.map(|()| admin)
    })
    .await
}

/// How many members the broker counts in consumer `group` (DescribeGroups); 0 once the
/// group is empty or gone.
pub async fn kafka_group_members(group: &str) -> usize {
    let admin = kafka_admin().await;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let list = admin
            .inner()
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("describe group {group}: {err}"));
        list.groups().iter().map(|g| g.members().len()).sum()
    })
    .await
    .expect("the DescribeGroups call panicked")
}

/// Connects to MongoDB and proves it answers a `ping`.
///
/// The driver selects a server lazily and by default waits 30 s for one, so both the connect and
/// the server-selection timeouts are shortened and a `ping` forces the selection.
pub async fn mongo() -> mongodb::Client {
    mongo_at(&mongo_url()).await
}

/// Like [`mongo`], for the MongoDB server at connection string `at`.
pub async fn mongo_at(at: &str) -> mongodb::Client {
    must_answer("mongodb", at, async {
        let mut options = mongodb::options::ClientOptions::parse(at).await?;
        options.connect_timeout = Some(CONNECT_TIMEOUT);
        options.server_selection_timeout = Some(CONNECT_TIMEOUT - Duration::from_millis(500));
        options.app_name = Some("fishchat-e2e".to_owned());
        let client = mongodb::Client::with_options(options)?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await?;
        Ok::<_, mongodb::error::Error>(client)
    })
    .await
}

/// Re-checks `check` until it yields `Some`, and returns that value; panics naming `what` if
/// `deadline` passes first.
///
/// Servers apply expiry, replication and group membership on their own clocks, so a test must wait
/// for the outcome rather than sleep for a guessed time: polling passes as soon as the condition
/// holds and still fails, with a clear message, when it never does.
pub async fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A name no earlier or concurrent run has used, for keys, topics, groups and databases.
///
/// Servers keep leftovers of earlier (possibly crashed) runs, and nextest runs tests in parallel
/// processes; the pid, the wall-clock nanoseconds and a per-process counter keep names apart. The
/// result only uses `[a-z0-9-]` after `prefix`, which etcd, Redis, Kafka topics and MongoDB
/// database names all accept.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", process::id())
}

/// A logged-in raw connection to the access node at `addr`, holding whatever
/// the node sent after the login reply (a kick, say).
pub async fn login(addr: SocketAddr, token: &str, device: &str) -> Connection<TcpStream> {
    let mut conn = Connection::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let login: Body = pb::LoginRequest {
        token: token.into(),
        device_id: device.into(),
    }
    .into();
    conn.send(1, &login)
        .await
        .unwrap_or_else(|err| panic!("login: {err}"));
    match conn.recv().await {
        Ok((1, Body::LoginReply(_))) => conn,
        other => panic!("login: {other:?}"),
    }
}
