//! The gateway in-process against a real etcd, with fake access nodes
//! registered through the discovery crate.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fishchat_codec::pb::{self, ErrorCode};
use fishchat_codec::{Body, DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use fishchat_discovery::{NodeInfo, Registration, Resolver};
use fishchat_e2e::{etcd_endpoint, unique_name, wait_until};
use fishchat_gateway::{Config, Gateway, server::SERVICE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(2);
const SOON: Duration = Duration::from_secs(5);
/// Deadline for one reply (or the close that should follow an error).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// A gateway serving in this process.
struct Running {
    tcp: SocketAddr,
    http: SocketAddr,
    grpc: SocketAddr,
    node_id: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), fishchat_gateway::GatewayError>>,
}

impl Running {
    async fn start(access_service: &str, idle_timeout_secs: u64) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = Config {
            listen: loopback,
            http_listen: loopback,
            grpc_listen: loopback,
            metrics_listen: loopback,
            etcd_endpoints: vec![etcd_endpoint()],
            node_id: Some(unique_name("gw")),
            idle_timeout_secs,
            access_service: access_service.to_owned(),
            lease_ttl_secs: TTL.as_secs(),
            ..Config::default()
        };
        let gateway = Gateway::bind(config).await.expect("gateway starts");
        let (stop, stopped) = oneshot::channel::<()>();
        Self {
            tcp: gateway.tcp_addr(),
            http: gateway.http_addr(),
            grpc: gateway.grpc_addr(),
            node_id: gateway.node_id(),
            stop,
            task: tokio::spawn(gateway.serve(async {
                let _ = stopped.await;
            })),
        }
    }

    async fn shut_down(self) {
        self.stop.send(()).expect("gateway already stopped");
        self.task
            .await
            .expect("gateway task panicked")
            .expect("gateway failed");
    }

    async fn http_lookup(&self) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("http://{}/lookup", self.http))
            .await
            .expect("HTTP lookup");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }
}

/// A client-protocol connection to the gateway.
struct Conn {
    stream: TcpStream,
    input: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect to gateway"),
            input: BytesMut::new(),
        }
    }

    async fn send(&mut self, body: Body, request_id: u32) {
        let mut out = BytesMut::new();
        body.encode(request_id, DEFAULT_MAX_FRAME_LEN, &mut out)
            .expect("encode");
        self.stream.write_all(&out).await.expect("send frame");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send bytes");
    }

    /// The next frame, or `None` once the gateway has closed the connection.
    async fn recv(&mut self) -> Option<(u32, Body)> {
        let decoder = FrameDecoder::default();
        loop {
            if let Some(frame) = decoder
                .decode(&mut self.input)
                .expect("gateway sent a bad frame")
            {
                let body = frame.body().expect("gateway sent a bad body");
                return Some((frame.header.request_id, body));
            }
            let read = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.input))
                .await
                .expect("no reply from the gateway in time");
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                // A reset after the error frame is a close too.
                Err(_) => return None,
            }
        }
    }

    async fn lookup(&mut self, request_id: u32) -> Body {
        self.send(Body::GatewayLookup(pb::GatewayLookup {}), request_id)
            .await;
        let (id, body) = self
            .recv()
            .await
            .expect("gateway closed instead of replying");
        assert_eq!(id, request_id, "reply carries another request id");
        body
    }

    async fn expect_error_then_close(&mut self, code: ErrorCode) {
        match self.recv().await {
            Some((_, Body::Error(err))) => assert_eq!(err.code, code as i32, "{err:?}"),
            other => panic!("expected ERROR {code:?}, got {other:?}"),
        }
        assert!(
            self.recv().await.is_none(),
            "connection left open after the error"
        );
    }
}

fn reply(addr: &str, node_id: &str) -> Body {
    Body::GatewayReply(pb::GatewayReply {
        access_addr: addr.to_owned(),
        node_id: node_id.to_owned(),
    })
}

async fn access_node(service: &str, id: &str, addr: &str, load: u64) -> Registration {
    let info = NodeInfo {
        load,
        ..NodeInfo::new(service, id)
            .with_addr("client", addr)
            .with_addr("push", "127.0.0.1:1")
    };
    Registration::start_with_ttl(&[etcd_endpoint()], info, TTL)
        .await
        .expect("register a fake access node")
}

#[tokio::test]
async fn lookups_follow_the_lighter_access_node() {
    let access = unique_name("access");
    let gateway = Running::start(&access, 30).await;
    // Far apart, so that the clients the gateway counts as sent between
    // reports (each lookup here) do not close the gap.
    let five = access_node(&access, "five", "127.0.0.1:9005", 5_000).await;
    let three = access_node(&access, "three", "127.0.0.1:9003", 3).await;

    wait_until(SOON, "HTTP lookup to pick the lighter node", async || {
        let (status, body) = gateway.http_lookup().await;
        (status == 200 && body["node_id"] == "three").then_some(())
    })
    .await;
    let (_, body) = gateway.http_lookup().await;
    assert_eq!(
        body,
        serde_json::json!({"access_addr": "127.0.0.1:9003", "node_id": "three"})
    );
    // Several lookups on one connection, each answered under its request id.
    let mut conn = Conn::open(gateway.tcp).await;
    assert_eq!(conn.lookup(1).await, reply("127.0.0.1:9003", "three"));
    assert_eq!(conn.lookup(2).await, reply("127.0.0.1:9003", "three"));

    three.set_load(9_000);
    wait_until(
        SOON,
        "TCP lookup to pick the node now lighter",
        async || (conn.lookup(3).await == reply("127.0.0.1:9005", "five")).then_some(()),
    )
    .await;
    let (status, body) = gateway.http_lookup().await;
    assert_eq!((status, &body["node_id"]), (200, &"five".into()));

    five.deregister().await.unwrap();
    three.deregister().await.unwrap();
    wait_until(
        SOON,
        "TCP lookup to report UNAVAILABLE",
        async || match conn.lookup(4).await {
            Body::Error(err) if err.code == ErrorCode::Unavailable as i32 => Some(()),
            _ => None,
        },
    )
    .await;
    // The refusal is per request: the connection stays usable.
    assert!(matches!(conn.lookup(5).await, Body::Error(_)));
    let (status, body) = gateway.http_lookup().await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "UNAVAILABLE");
    assert!(body["message"].is_string());
    gateway.shut_down().await;
}

#[tokio::test]
async fn malformed_input_gets_an_error_then_a_close_and_others_still_work() {
    let access = unique_name("access");
    let gateway = Running::start(&access, 30).await;
    let node = access_node(&access, "only", "127.0.0.1:9100", 0).await;

    // An HTTP request on the framed port: its first four bytes claim a huge frame.
    let mut garbage = Conn::open(gateway.tcp).await;
    garbage.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    garbage
        .expect_error_then_close(ErrorCode::FrameTooLarge)
        .await;

    // A well-sized frame with a bad version.
    let mut bad_version = Conn::open(gateway.tcp).await;
    let mut bytes = BytesMut::new();
    bytes.put_u32(8);
    bytes.put_slice(&[9, 0, 0, 15, 0, 0, 0, 1]);
    bad_version.send_raw(&bytes).await;
    bad_version
        .expect_error_then_close(ErrorCode::BadFrame)
        .await;

    // A bad header followed by more bytes than one read takes: the error must
    // still arrive (no reset from closing on unread bytes).
    let mut flood = Conn::open(gateway.tcp).await;
    let mut bytes = BytesMut::new();
    bytes.put_u32(8);
    bytes.put_slice(&[1, 0x80, 0, 15, 0, 0, 0, 1]);
    bytes.put_slice(&[0xAB; 32 * 1024]);
    flood.send_raw(&bytes).await;
    flood.expect_error_then_close(ErrorCode::BadFrame).await;

    // A valid frame of a command the gateway does not serve.
    let mut ping = Conn::open(gateway.tcp).await;
    ping.send(Body::Ping(pb::Ping { client_time_ms: 1 }), 6)
        .await;
    ping.expect_error_then_close(ErrorCode::UnknownCommand)
        .await;

    // A lookup whose body does not decode.
    let mut bad_body = Conn::open(gateway.tcp).await;
    let mut bytes = BytesMut::new();
    bytes.put_u32(10);
    bytes.put_slice(&[1, 0, 0, 15, 0, 0, 0, 8, 0x0a, 0x05]);
    bad_body.send_raw(&bytes).await;
    bad_body.expect_error_then_close(ErrorCode::BadBody).await;

    let mut good = Conn::open(gateway.tcp).await;
    wait_until(
        SOON,
        "a lookup on a fresh connection to succeed",
        async || (good.lookup(1).await == reply("127.0.0.1:9100", "only")).then_some(()),
    )
    .await;
    node.deregister().await.unwrap();
    gateway.shut_down().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let gateway = Running::start(&unique_name("access"), 1).await;
    let mut conn = Conn::open(gateway.tcp).await;
    assert!(matches!(conn.lookup(1).await, Body::Error(_)));
    // Silence for longer than the 1 s idle timeout ends the connection.
    assert!(conn.recv().await.is_none());
    gateway.shut_down().await;
}

#[tokio::test]
async fn gateway_registers_itself_answers_health_and_leaves_on_stop() {
    let gateway = Running::start(&unique_name("access"), 30).await;
    let resolver = Resolver::start(&[etcd_endpoint()], SERVICE).await.unwrap();
    let me = wait_until(SOON, "the gateway to be registered", async || {
        resolver.node(&gateway.node_id)
    })
    .await;
    assert_eq!(me.addr("tcp"), Some(gateway.tcp.to_string().as_str()));
    assert_eq!(me.addr("http"), Some(gateway.http.to_string().as_str()));
    assert_eq!(me.addr("grpc"), Some(gateway.grpc.to_string().as_str()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(
        status.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let healthz = reqwest::get(format!("http://{}/healthz", gateway.http))
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    let (node_id, tcp) = (gateway.node_id.clone(), gateway.tcp);
    gateway.shut_down().await;
    // Deregistered on the way out, not left to expire.
    wait_until(
        Duration::from_secs(1),
        "the gateway to leave etcd",
        async || resolver.node(&node_id).is_none().then_some(()),
    )
    .await;
    assert!(
        TcpStream::connect(tcp).await.is_err(),
        "still accepting after stop"
    );
}
