//! A whole FishChat backend (register, manager, logic, msg_job) as child
//! processes on the real servers, plus a stand-in access node that records
//! what msg_job pushes to it.
//!
//! Every cluster gets its own ports, etcd namespace, Kafka topics and consumer
//! group, MongoDB database and Redis key prefix, so tests run in parallel
//! without seeing each other.
//!
//! By default everything runs on 127.0.0.1 against the servers the
//! `FISHCHAT_*` variables name; a [`Layout`] puts the services on other hosts
//! (network namespaces, see [`crate::netns`]) and names other servers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fishchat_codec::pb::{ReadUpdate, StoredMessage};
use fishchat_rpc::access::access_server::{Access, AccessServer};
use fishchat_rpc::access::{KickReply, KickRequest, PushReply, PushRequest};
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::register::register_client::RegisterClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::services::{Host, ServiceProcess, bin_dir, wait_healthy};
use crate::{etcd_endpoint, kafka_brokers, mongo_url, redis_url, unique_name};

/// How long a service may take to come up (a debug build on a busy machine).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The node id of the stand-in access node the test process serves.
pub const STAND_IN: &str = "stand-in";

/// What the stand-in access node was asked to write, per user, in arrival
/// order: the messages of PUSH frames and the bodies of READ_UPDATE frames.
#[derive(Debug, Default, Clone)]
pub struct Pushed(Arc<Mutex<Recorded>>);

#[derive(Debug, Default)]
struct Recorded {
    messages: Vec<(u64, StoredMessage)>,
    read_updates: Vec<(u64, ReadUpdate)>,
}

impl Pushed {
    /// Every (user, message) pushed so far.
    pub async fn all(&self) -> Vec<(u64, StoredMessage)> {
        self.0.lock().await.messages.clone()
    }

    /// Every (user, READ_UPDATE body) pushed so far.
    pub async fn read_updates(&self) -> Vec<(u64, ReadUpdate)> {
        self.0.lock().await.read_updates.clone()
    }
}

#[tonic::async_trait]
impl Access for Pushed {
    async fn push(
        &self,
        request: tonic::Request<PushRequest>,
    ) -> Result<tonic::Response<PushReply>, tonic::Status> {
        let mut recorded = self.0.lock().await;
        let mut delivered = 0;
        for delivery in request.into_inner().deliveries {
            let frame = decode_frame(delivery.frame)?;
            for user in &delivery.user_ids {
                delivered += 1;
                match &frame {
                    Frame::Push(messages) => recorded
                        .messages
                        .extend(messages.iter().map(|m| (*user, m.clone()))),
                    Frame::ReadUpdate(update) => recorded.read_updates.push((*user, *update)),
                    Frame::Other => {}
                }
            }
        }
        Ok(tonic::Response::new(PushReply {
            absent_user_ids: Vec::new(),
            delivered_connections: delivered,
        }))
    }

    async fn kick(
        &self,
        _request: tonic::Request<KickRequest>,
    ) -> Result<tonic::Response<KickReply>, tonic::Status> {
        Ok(tonic::Response::new(KickReply { kicked: true }))
    }
}

/// What a pushed frame carries, as far as the stand-in records it.
enum Frame {
    Push(Vec<StoredMessage>),
    ReadUpdate(ReadUpdate),
    Other,
}

/// Decodes a pushed frame; one that does not decode fails the push, as a
/// real access node would refuse it.
fn decode_frame(frame: bytes::Bytes) -> Result<Frame, tonic::Status> {
    let mut buf = bytes::BytesMut::from(&frame[..]);
    let decoded = fishchat_codec::FrameDecoder::new(fishchat_codec::DEFAULT_MAX_FRAME_LEN)
        .decode(&mut buf)
        .map_err(|err| tonic::Status::invalid_argument(err.to_string()))?
        .ok_or_else(|| tonic::Status::invalid_argument("a partial frame"))?;
    match decoded.body() {
        Ok(fishchat_codec::Body::Push(push)) => Ok(Frame::Push(push.messages)),
        Ok(fishchat_codec::Body::ReadUpdate(update)) => Ok(Frame::ReadUpdate(update)),
        Ok(_) => Ok(Frame::Other),
        Err(err) => Err(tonic::Status::invalid_argument(err.to_string())),
    }
}

/// The real servers a cluster's services use, as the services' settings
/// spell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servers {
    /// etcd, `host:port`.
    pub etcd: String,
    /// Redis, a `redis://` URL.
    pub redis: String,
    /// Kafka's bootstrap servers.
    pub kafka: String,
    /// The MongoDB-protocol server, a `mongodb://` connection string.
    pub mongo: String,
}

impl Servers {
    /// The servers `FISHCHAT_ETCD`, `FISHCHAT_REDIS`, `FISHCHAT_KAFKA` and
    /// `FISHCHAT_MONGO` name (the local stack by default).
    pub fn from_env() -> Servers {
        Servers {
            etcd: etcd_endpoint(),
            redis: redis_url(),
            kafka: kafka_brokers(),
            mongo: mongo_url(),
        }
    }

    /// Panics, with the start hint, unless every server answers.
    async fn check(&self) {
        crate::etcd_at(&self.etcd).await;
        crate::redis_at(&self.redis).await;
        crate::kafka_admin_at(&self.kafka).await;
        crate::mongo_at(&self.mongo).await;
    }
}

/// Where a cluster's processes run, and on which servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The servers.
    pub servers: Servers,
    /// The host of register, manager, logic, msg_job and the gateway.
    pub services: Host,
    /// The hosts of the access nodes, in turn: node `i` runs on
    /// `access[i % access.len()]`.
    pub access: Vec<Host>,
    /// The address of the test's own host, where the stand-in access node
    /// listens (msg_job must reach it).
    pub tests: IpAddr,
}

impl Layout {
    /// Everything on 127.0.0.1 in the test's own network namespace, on the
    /// servers of [`Servers::from_env`].
    pub fn local() -> Layout {
        let host = Host::local();
        Layout {
            servers: Servers::from_env(),
            tests: host.ip,
            access: vec![host.clone()],
            services: host,
        }
    }

    fn access_host(&self, index: usize) -> &Host {
        &self.access[index % self.access.len()]
    }
}

/// One isolated backend.
pub struct Cluster {
    /// A name unique to this cluster (database, prefix, topics derive from it).
    pub name: String,
    /// The etcd key root of this cluster's services.
    pub namespace: String,
    /// The MongoDB database of this cluster.
    pub database: String,
    /// register, started first.
    pub register: ServiceProcess,
    /// register's gRPC address.
    pub register_addr: SocketAddr,
    /// register's HTTP address (the JSON API apps and `fishchat` use).
    pub register_http: SocketAddr,
    /// manager.
    pub manager: ServiceProcess,
    /// logic nodes (tests may add a second).
    pub logic: Vec<(ServiceProcess, SocketAddr)>,
    /// msg_job.
    pub msg_job: ServiceProcess,
    /// The stand-in access node's push address.
    pub push_addr: SocketAddr,
    /// What was pushed to the stand-in access node.
    pub pushed: Pushed,
    /// Real access nodes, once added.
    pub access: Vec<AccessNode>,
    /// The gateway, once added.
    pub gateway: Option<Gateway>,
    /// Every process's metrics address, by service name, in start order.
    pub metrics: Vec<(&'static str, SocketAddr)>,
    log_dir: PathBuf,
    common: Vec<(String, String)>,
    layout: Layout,
}

fn msg_job_group(cluster: &str) -> String {
    format!("{cluster}-msg-job")
}

fn env(service: &str, key: &str, value: impl ToString) -> (String, String) {
    (format!("FISHCHAT_{service}_{key}"), value.to_string())
}

/// The `METRICS_LISTEN` setting of one more `service` process on `host`, on a
/// free port noted in `metrics`.
fn metrics_listen(
    service: &'static str,
    host: &Host,
    metrics: &mut Vec<(&'static str, SocketAddr)>,
) -> (String, String) {
    let addr = host.addr();
    metrics.push((service, addr));
    env(&service.to_uppercase(), "METRICS_LISTEN", addr)
}

impl Cluster {
    /// Starts register, manager, one logic node, msg_job and the stand-in
    /// access node, and waits until each answers its health check.
    pub async fn start(test: &str) -> Cluster {
        Self::start_with(test, &[]).await
    }

    /// Like [`start`](Self::start), with extra environment settings for every
    /// service (for example a short token lifetime).
    pub async fn start_with(test: &str, extra: &[(&str, &str)]) -> Cluster {
        Self::start_on(test, Layout::local(), extra).await
    }

    /// Like [`start_with`](Self::start_with), with the processes where
    /// `layout` puts them, on its servers.
    pub async fn start_on(test: &str, layout: Layout, extra: &[(&str, &str)]) -> Cluster {
        // Fail fast, with the start hint, when a server is down.
        layout.servers.check().await;
        let servers = &layout.servers;
        let host = &layout.services;
        let netns = host.netns.as_deref();

        let name = unique_name(test);
        let namespace = format!("/{name}");
        let database = name.replace('-', "_");
        let log_dir = bin_dir().join("e2e-logs").join(&name);
        // Captured with the test's output, so a failure says where to look.
        eprintln!("cluster {name}: service logs in {}", log_dir.display());
        let etcd = format!("[\"{}\"]", servers.etcd);
        let mut common = vec![("FISHCHAT_ETCD_NAMESPACE".to_string(), namespace.clone())];
        common.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));

        let pushed = Pushed::default();
        let push_addr = serve_access(pushed.clone(), layout.tests).await;
        register_stand_in(&servers.etcd, &namespace, push_addr).await;

        // manager first: register tells it of every group join.
        let mut metrics = Vec::new();
        let manager_addr = host.addr();
        let mut vars = common.clone();
        vars.extend([
            env("MANAGER", "GRPC_LISTEN", manager_addr),
            metrics_listen("manager", host, &mut metrics),
            env("MANAGER", "MONGO_URL", &servers.mongo),
            env("MANAGER", "DATABASE", &database),
            env("MANAGER", "ETCD_ENDPOINTS", &etcd),
        ]);
        let manager = ServiceProcess::start_in(netns, "fishchat-manager", vars, &log_dir);

        let register_addr = host.addr();
        let register_http = host.addr();
        let mut vars = common.clone();
        vars.extend([
            env("REGISTER", "GRPC_LISTEN", register_addr),
            env("REGISTER", "HTTP_LISTEN", register_http),
            metrics_listen("register", host, &mut metrics),
            env("REGISTER", "REDIS_URL", &servers.redis),
            env("REGISTER", "KEY_PREFIX", format!("{name}:")),
            env("REGISTER", "MONGO_URL", &servers.mongo),
            env("REGISTER", "DATABASE", &database),
            env("REGISTER", "ETCD_ENDPOINTS", &etcd),
            // Debug builds hash slowly; strength is not under test here.
            env("REGISTER", "ARGON2_MEMORY_KIB", 1024),
            env("REGISTER", "ARGON2_ITERATIONS", 1),
            env("REGISTER", "MANAGER_ADDR", format!("http://{manager_addr}")),
        ]);
        let register = ServiceProcess::start_in(netns, "fishchat-register", vars, &log_dir);

        let msg_job_addr = host.addr();
        let mut vars = common.clone();
        vars.extend([
            env("MSG_JOB", "GRPC_LISTEN", msg_job_addr),
            metrics_listen("msg_job", host, &mut metrics),
            // Stable across restarts: it is also the Kafka static member id.
            env("MSG_JOB", "NODE_ID", format!("{name}-msg-job-1")),
            env("MSG_JOB", "KAFKA_BROKERS", &servers.kafka),
            env("MSG_JOB", "GROUP_ID", msg_job_group(&name)),
            env("MSG_JOB", "P2P_TOPIC", format!("{name}-p2p")),
            env("MSG_JOB", "GROUP_TOPIC", format!("{name}-group")),
            env("MSG_JOB", "PARTITIONS", 4),
            env(
                "MSG_JOB",
                "REGISTER_ADDR",
                format!("http://{register_addr}"),
            ),
            env("MSG_JOB", "REDIS_URL", &servers.redis),
            env("MSG_JOB", "MONGO_URL", &servers.mongo),
            env("MSG_JOB", "DATABASE", &database),
            env("MSG_JOB", "ETCD_ENDPOINTS", &etcd),
        ]);
        let msg_job = ServiceProcess::start_in(netns, "fishchat-msg-job", vars, &log_dir);

        let mut cluster = Cluster {
            name,
            namespace,
            database,
            register,
            register_addr,
            register_http,
            manager,
            logic: Vec::new(),
            msg_job,
            push_addr,
            pushed,
            access: Vec::new(),
            gateway: None,
            metrics,
            log_dir,
            common,
            layout,
        };
        wait_healthy(&register_addr.to_string(), START_DEADLINE).await;
        wait_healthy(&manager_addr.to_string(), START_DEADLINE).await;
        wait_healthy(&msg_job_addr.to_string(), START_DEADLINE).await;
        cluster.add_logic().await;
        cluster
    }

    /// The Kafka consumer group of this cluster's msg_job.
    pub fn msg_job_group(&self) -> String {
        msg_job_group(&self.name)
    }

    /// Starts one more logic node and waits until it is healthy.
    pub async fn add_logic(&mut self) -> SocketAddr {
        let host = &self.layout.services;
        let servers = &self.layout.servers;
        let addr = host.addr();
        let mut vars = self.common.clone();
        vars.extend([
            env("LOGIC", "GRPC_LISTEN", addr),
            metrics_listen("logic", host, &mut self.metrics),
            env("LOGIC", "NODE_ID", format!("logic-{}", addr.port())),
            env("LOGIC", "ETCD_ENDPOINTS", format!("[\"{}\"]", servers.etcd)),
            env("LOGIC", "REDIS_URL", &servers.redis),
            env("LOGIC", "KEY_PREFIX", format!("{}:", self.name)),
            env("LOGIC", "KAFKA_BROKERS", &servers.kafka),
            env("LOGIC", "P2P_TOPIC", format!("{}-p2p", self.name)),
            env("LOGIC", "GROUP_TOPIC", format!("{}-group", self.name)),
            env("LOGIC", "PARTITIONS", 4),
        ]);
        let dir = self.log_dir.join(format!("logic-{}", self.logic.len()));
        let process = ServiceProcess::start_in(host.netns.as_deref(), "fishchat-logic", vars, &dir);
        wait_healthy(&addr.to_string(), START_DEADLINE).await;
        self.logic.push((process, addr));
        addr
    }

    /// Starts one more access node (with extra `FISHCHAT_ACCESS_*` settings, keys
    /// without the prefix) on its host of the [`Layout`] and waits until it is
    /// healthy; returns its index.
    pub async fn add_access(&mut self, extra: &[(&str, &str)]) -> usize {
        let index = self.access.len();
        let host = self.layout.access_host(index);
        let client = host.addr();
        let push = host.addr();
        let metrics = host.addr();
        let mut vars = self.common.clone();
        vars.extend([
            env("ACCESS", "NODE_ID", format!("{}-access-{index}", self.name)),
            env("ACCESS", "CLIENT_LISTEN", client),
            env("ACCESS", "GRPC_LISTEN", push),
            env("ACCESS", "METRICS_LISTEN", metrics),
            env(
                "ACCESS",
                "ETCD_ENDPOINTS",
                format!("[\"{}\"]", self.layout.servers.etcd),
            ),
            env("ACCESS", "LOAD_REPORT_MS", 200),
        ]);
        vars.extend(extra.iter().map(|(k, v)| env("ACCESS", k, v)));
        self.metrics.push(("access", metrics));
        let dir = self.log_dir.join(format!("access-{index}"));
        let process =
            ServiceProcess::start_in(host.netns.as_deref(), "fishchat-access", vars, &dir);
        wait_healthy(&push.to_string(), START_DEADLINE).await;
        self.access.push(AccessNode {
            process,
            client,
            push,
            metrics,
        });
        index
    }

    /// Starts the gateway and waits until it is healthy; returns its TCP address.
    pub async fn add_gateway(&mut self) -> SocketAddr {
        let host = &self.layout.services;
        let tcp = host.addr();
        let http = host.addr();
        let grpc = host.addr();
        let mut vars = self.common.clone();
        vars.extend([
            env("GATEWAY", "LISTEN", tcp),
            env("GATEWAY", "HTTP_LISTEN", http),
            env("GATEWAY", "GRPC_LISTEN", grpc),
            metrics_listen("gateway", host, &mut self.metrics),
            env(
                "GATEWAY",
                "ETCD_ENDPOINTS",
                format!("[\"{}\"]", self.layout.servers.etcd),
            ),
        ]);
        let process = ServiceProcess::start_in(
            host.netns.as_deref(),
            "fishchat-gateway",
            vars,
            &self.log_dir,
        );
        wait_healthy(&grpc.to_string(), START_DEADLINE).await;
        self.gateway = Some(Gateway { process, tcp, http });
        tcp
    }

    /// A client of the first logic node.
    pub async fn logic(&self) -> LogicClient<Channel> {
        LogicClient::new(dial(&self.logic[0].1.to_string()).await)
    }

    /// Creates a user called `name` (made unique to this cluster) and logs it
    /// in through register; returns its id and a fresh token.
    pub async fn new_user(&self, name: &str) -> (u64, String) {
        use fishchat_rpc::register::{CreateUserRequest, LoginRequest};
        let mut register = self.register().await;
        let name = format!("{name}-{}", self.name);
        let password = "pw-123456".to_string();
        let user_id = register
            .create_user(CreateUserRequest {
                name: name.clone(),
                password: password.clone(),
            })
            .await
            .expect("create a user")
            .into_inner()
            .user_id;
        let token = register
            .login(LoginRequest { name, password })
            .await
            .expect("log the user in")
            .into_inner()
            .token;
        (user_id, token)
    }

    /// A client of register.
    pub async fn register(&self) -> RegisterClient<Channel> {
        RegisterClient::new(dial(&self.register_addr.to_string()).await)
    }
}

/// A real access node of a cluster.
pub struct AccessNode {
    /// The process.
    pub process: ServiceProcess,
    /// Where clients connect.
    pub client: SocketAddr,
    /// Its gRPC (push, kick, health) address.
    pub push: SocketAddr,
    /// Its metrics HTTP address.
    pub metrics: SocketAddr,
}

/// The gateway of a cluster.
pub struct Gateway {
    /// The process.
    pub process: ServiceProcess,
    /// The TCP front door (GATEWAY_LOOKUP).
    pub tcp: SocketAddr,
    /// The HTTP front door (`GET /lookup`).
    pub http: SocketAddr,
}

/// Registers the stand-in access node in the cluster's namespace, as a real
/// node would: register deletes the sessions of access nodes missing from
/// etcd. Its lease (an hour, never renewed) outlives any test and then
/// clears the key from the shared etcd.
async fn register_stand_in(etcd: &str, namespace: &str, push_addr: SocketAddr) {
    let info = fishchat_discovery::NodeInfo::new("access", STAND_IN)
        .with_addr("push", push_addr.to_string());
    let value = serde_json::to_string(&info).expect("a node description");
    let mut etcd = crate::etcd_at(etcd).await;
    let lease = etcd
        .lease_grant(3600, None)
        .await
        .expect("a lease for the stand-in access node")
        .id();
    let options = etcd_client::PutOptions::new().with_lease(lease);
    etcd.put(
        format!("{namespace}/access/{STAND_IN}"),
        value,
        Some(options),
    )
    .await
    .expect("register the stand-in access node");
}

/// Serves the stand-in access node on an ephemeral port of `ip`.
async fn serve_access(pushed: Pushed, ip: IpAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .expect("bind the stand-in access node");
    let addr = listener.local_addr().expect("its address");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AccessServer::new(pushed))
            .serve_with_incoming(incoming),
    );
    addr
}

/// A channel to a service at `addr`, dialed as the services dial each other
/// (with the test process's mutual TLS, if it set one).
pub async fn dial(addr: &str) -> Channel {
    fishchat_discovery::endpoint_for(addr)
        .unwrap_or_else(|err| panic!("address {addr}: {err}"))
        .connect()
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"))
}
