//! The access node in-process, with a stand-in logic service: the event
//! loops' handling of logins, deadlines, bad input, backpressure, pushes,
//! slow consumers, kicks and drains. (The real services are exercised
//! end to end in `e2e/tests/chat.rs`.)
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use fishchat_access::{AccessNode, Config, Metrics, PushService};
use fishchat_codec::pb::{self, StoredMessage};
use fishchat_codec::{Body, Command, ErrorCode, FrameDecoder, KickReason, encode_frame_to_bytes};
use fishchat_e2e::wait_until;
use fishchat_rpc::access::{Delivery, PushRequest};
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::logic::logic_server::{Logic, LogicServer};
use fishchat_rpc::logic::{
    HeartbeatBatch, HeartbeatReplies, HistoryRequest, LoginReply, LoginRequest, LogoutReply,
    LogoutRequest, Origin, Outgoing, ReadRequest, SendAcks, SendBatch, SyncConversationsRequest,
    SyncRequest, outgoing,
};
use fishchat_rpc::status::error_status;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

const DEADLINE: Duration = Duration::from_secs(10);

/// Allocations and growths to at least a loop's read chunk (16 KiB), in the
/// whole process: what a read buffer pinned by a request in flight would
/// cost per read.
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = 16 * 1024;

/// The system allocator, counting [`LARGE_ALLOCATIONS`].
struct Counting;

// A counting allocator has to implement `GlobalAlloc`, an unsafe trait; each
// method only counts and forwards its arguments unchanged to `System`.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` with this layout, as the caller guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE && layout.size() < LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `realloc` is `System.realloc`'s.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The same tests over TLS on the client port.
#[path = "node/tls.rs"]
mod tls;

/// A logic service that knows tokens `tok-<user id>` and records what it is asked.
#[derive(Default)]
struct FakeLogic {
    sessions: Mutex<HashMap<(u64, String), Origin>>,
    sends: Mutex<Vec<Outgoing>>,
    /// The number of sends in each batch call, in order.
    batches: Mutex<Vec<usize>>,
    logouts: Mutex<Vec<(u64, u64)>>,
    /// When set, each batch of sends waits for a permit.
    gate: Option<Arc<Semaphore>>,
    sending: AtomicUsize,
    most_sending: AtomicUsize,
    next_id: AtomicU64,
    /// LOGINs that reached logic.
    logins: AtomicUsize,
    /// The users of each heartbeat call's beats, in order.
    heartbeats: Mutex<Vec<Vec<u64>>>,
}

/// The served handle of a [`FakeLogic`] the test keeps reading.
struct Served(Arc<FakeLogic>);

impl std::ops::Deref for Served {
    type Target = FakeLogic;
    fn deref(&self) -> &FakeLogic {
        &self.0
    }
}

#[tonic::async_trait]
impl Logic for Served {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginReply>, Status> {
        let request = request.into_inner();
        self.logins.fetch_add(1, Ordering::SeqCst);
        let user_id: u64 = request
            .token
            .strip_prefix("tok-")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| error_status(ErrorCode::BadToken, "unknown token"))?;
        let origin = request.origin.unwrap_or_default();
        let replaced = self
            .sessions
            .lock()
            .insert((user_id, request.device_id), origin);
        Ok(Response::new(LoginReply { user_id, replaced }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutReply>, Status> {
        let request = request.into_inner();
        let conn_id = request.origin.unwrap_or_default().conn_id;
        self.logouts.lock().push((request.user_id, conn_id));
        Ok(Response::new(LogoutReply {}))
    }

    /// A beat is current unless a later login of its device named another connection.
    async fn heartbeats(
        &self,
        request: Request<HeartbeatBatch>,
    ) -> Result<Response<HeartbeatReplies>, Status> {
        let beats = request.into_inner().beats;
        self.heartbeats
            .lock()
            .push(beats.iter().map(|beat| beat.user_id).collect());
        let sessions = self.sessions.lock();
        let current = beats
            .into_iter()
            .map(|beat| {
                sessions
                    .get(&(beat.user_id, beat.device_id))
                    .is_none_or(|origin| origin.conn_id == beat.conn_id)
            })
            .collect();
        Ok(Response::new(HeartbeatReplies { current }))
    }

    async fn send(&self, request: Request<SendBatch>) -> Result<Response<SendAcks>, Status> {
        let sends = request.into_inner().sends;
        let now = self.sending.fetch_add(sends.len(), Ordering::SeqCst) + sends.len();
        self.most_sending.fetch_max(now, Ordering::SeqCst);
        self.batches.lock().push(sends.len());
        self.sends.lock().extend(sends.iter().cloned());
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.sending.fetch_sub(sends.len(), Ordering::SeqCst);
        let acks = sends
            .into_iter()
            .map(|send| match send.message {
                Some(outgoing::Message::ToUser(message)) => pb::SendAck {
                    client_msg_id: message.client_msg_id,
                    server_msg_id: self.next_id.fetch_add(1, Ordering::SeqCst) + 1,
                    ..pb::SendAck::default()
                },
                _ => pb::SendAck {
                    error: Some(pb::Error {
                        code: ErrorCode::UnknownGroup as i32,
                        message: "no groups here".into(),
                    }),
                    ..pb::SendAck::default()
                },
            })
            .collect();
        Ok(Response::new(SendAcks { acks }))
    }

    async fn sync(
        &self,
        _request: Request<SyncRequest>,
    ) -> Result<Response<pb::SyncReply>, Status> {
        Ok(Response::new(pb::SyncReply::default()))
    }

    async fn sync_conversations(
        &self,
        _request: Request<SyncConversationsRequest>,
    ) -> Result<Response<pb::SyncConversationsReply>, Status> {
        Ok(Response::new(pb::SyncConversationsReply::default()))
    }

    async fn history(
        &self,
        _request: Request<HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        Ok(Response::new(pb::HistoryReply::default()))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<pb::ReadReply>, Status> {
        let seq = request.into_inner().request.unwrap_or_default().seq;
        Ok(Response::new(pb::ReadReply {
            read_seq: seq,
            unread: 0,
        }))
    }
}

/// An access node over a fake logic.
struct Harness {
    node: Option<AccessNode>,
    logic: Arc<FakeLogic>,
    metrics: Arc<Metrics>,
    push: PushService,
    addr: SocketAddr,
}

impl Harness {
    async fn start(logic: FakeLogic, tweak: impl FnOnce(&mut Config)) -> Harness {
        let logic = Arc::new(logic);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let logic_addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogicServer::new(Served(logic.clone())))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut config = Config {
            node_id: Some("test-node".into()),
            client_listen: "127.0.0.1:0".parse().unwrap(),
            loops: 1,
            ..Config::default()
        };
        tweak(&mut config);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{logic_addr}"))
            .unwrap()
            .connect_lazy();
        let metrics = Arc::new(Metrics::default());
        let node = AccessNode::start(
            &config,
            "test-node".into(),
            LogicClient::new(channel),
            metrics.clone(),
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        Harness {
            push: node.push_service(),
            addr: node.client_addr(),
            node: Some(node),
            logic,
            metrics,
        }
    }

    async fn connect(&self) -> Client {
        self.connect_from([127, 0, 0, 1]).await
    }

    /// A client whose socket is bound to `source` (any of 127.0.0.0/8).
    async fn connect_from(&self, source: [u8; 4]) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        Client {
            stream: Box::new(stream),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    async fn login(&self, user_id: u64, device: &str) -> Client {
        self.connect().await.log_in(user_id, device).await
    }

    fn connections(&self) -> i64 {
        self.metrics.connections.get()
    }

    fn kicks(&self, reason: KickReason) -> bool {
        self.metrics.kicked(reason) > 0
    }
}

/// What a test client talks over: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// A raw framed client.
struct Client {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    next_id: u32,
}

impl Client {
    /// Logs in as `user_id` (the stand-in logic's token `tok-<id>`).
    async fn log_in(mut self, user_id: u64, device: &str) -> Client {
        let reply = self
            .request(pb::LoginRequest {
                token: format!("tok-{user_id}"),
                device_id: device.into(),
            })
            .await;
        assert!(
            matches!(reply, Body::LoginReply(ref r) if r.user_id == user_id),
            "{reply:?}"
        );
        self
    }

    async fn send(&mut self, body: impl Into<Body>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        body.into().encode(id, u32::MAX, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
        id
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or None once the server closed the connection.
    async fn recv(&mut self) -> Option<(u32, Body)> {
        let decoder = FrameDecoder::new(u32::MAX);
        loop {
            if let Some(frame) = decoder.decode(&mut self.buf).unwrap() {
                return Some((frame.header.request_id, frame.body().unwrap()));
            }
            let read = tokio::time::timeout(DEADLINE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a frame or a close within the deadline");
            if matches!(read, Ok(0) | Err(_)) {
                return None;
            }
        }
    }

    async fn request(&mut self, body: impl Into<Body>) -> Body {
        let id = self.send(body).await;
        let (reply_id, body) = self.recv().await.expect("a reply");
        assert_eq!(reply_id, id, "{body:?}");
        body
    }

    /// Reads until the server closes; returns what came before.
    async fn until_closed(&mut self) -> Vec<Body> {
        let mut frames = Vec::new();
        while let Some((_, body)) = self.recv().await {
            frames.push(body);
        }
        frames
    }
}

fn error_code(body: &Body) -> Option<ErrorCode> {
    match body {
        Body::Error(e) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

fn kick_reason(body: &Body) -> Option<KickReason> {
    match body {
        Body::Kick(k) => KickReason::try_from(k.reason).ok(),
        _ => None,
    }
}

fn send_to(to_user_id: u64, id: &str) -> pb::SendToUser {
    pb::SendToUser {
        client_msg_id: id.into(),
        to_user_id,
        body: "hi".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_over_the_connections_rate_are_refused_for_now_and_the_connection_stays() {
    let h = Harness::start(FakeLogic::default(), |c| {
        c.max_sends_per_sec = 1;
        c.send_burst = 2;
    })
    .await;
    let mut client = h.login(7, "phone").await;
    let mut errors = Vec::new();
    for id in ["m1", "m2", "m3"] {
        match client.request(send_to(8, id)).await {
            Body::SendAck(ack) => errors.push(ack.error.map(|e| e.code)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        errors,
        [None, None, Some(ErrorCode::TooManyRequests as i32)],
        "the burst, then a refusal the client may retry"
    );
    assert_eq!(
        h.logic.sends.lock().len(),
        2,
        "the refused send went nowhere"
    );
    let pong = client.request(pb::Ping { client_time_ms: 1 }).await;
    assert!(matches!(pong, Body::Pong(_)), "{pong:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_devices_share_one_send_rate_and_other_users_are_unaffected() {
    let h = Harness::start(FakeLogic::default(), |c| {
        c.max_sends_per_user_per_sec = 1;
        c.user_send_burst = 3;
    })
    .await;
    let mut phone = h.login(7, "phone").await;
    let mut laptop = h.login(7, "laptop").await;
    let mut other = h.login(9, "phone").await;
    let outcome = async |client: &mut Client, id: &str| match client.request(send_to(8, id)).await {
        Body::SendAck(ack) => ack.error.map(|e| e.code),
        other => panic!("{other:?}"),
    };
    let refused = Some(ErrorCode::TooManyRequests as i32);
    assert_eq!(outcome(&mut phone, "p1").await, None);
    assert_eq!(outcome(&mut laptop, "l1").await, None);
    assert_eq!(outcome(&mut phone, "p2").await, None);
    assert_eq!(
        outcome(&mut laptop, "l2").await,
        refused,
        "the user's burst is spent"
    );
    assert_eq!(outcome(&mut phone, "p3").await, refused);
    assert_eq!(outcome(&mut other, "o1").await, None, "another user sends");
    assert_eq!(h.logic.sends.lock().len(), 4, "refused sends went nowhere");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_in_connection_acts_only_as_its_own_user() {
    let h = Harness::start(FakeLogic::default(), |_| {}).await;
    let mut client = h.login(7, "phone").await;
    let pong = client.request(pb::Ping { client_time_ms: 42 }).await;
    assert!(matches!(pong, Body::Pong(p) if p.client_time_ms == 42));
    let ack = client.request(send_to(8, "m1")).await;
    assert!(
        matches!(ack, Body::SendAck(ref a) if a.client_msg_id == "m1" && a.server_msg_id > 0),
        "{ack:?}"
    );
    let sends = h.logic.sends.lock().clone();
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0].from_user_id, 7,
        "the node names the sender, from the login"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_token_is_refused_and_the_socket_may_try_again() {
    let h = Harness::start(FakeLogic::default(), |_| {}).await;
    let mut client = h.connect().await;
    let refused = client
        .request(pb::LoginRequest {
            token: "nope".into(),
            device_id: "d".into(),
        })
        .await;
    assert_eq!(error_code(&refused), Some(ErrorCode::BadToken));
    let ok = client
        .request(pb::LoginRequest {
            token: "tok-3".into(),
            device_id: "d".into(),
        })
        .await;
    assert!(
        matches!(ok, Body::LoginReply(r) if r.user_id == 3 && r.heartbeat_interval_ms == 30_000)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_with_too_many_bad_tokens_is_refused_and_others_are_not() {
    let h = Harness::start(FakeLogic::default(), |c| {
        c.max_failed_logins_per_address = 2;
    })
    .await;
    let bad = || pb::LoginRequest {
        token: "nope".into(),
        device_id: "d".into(),
    };
    let mut guesser = h.connect_from([127, 0, 0, 7]).await;
    for _ in 0..2 {
        assert_eq!(
            error_code(&guesser.request(bad()).await),
            Some(ErrorCode::BadToken)
        );
    }
    // Even a good token is refused from there now, before logic hears of it,
    // and the socket is closed.
    let logins = h.logic.logins.load(Ordering::SeqCst);
    let good = pb::LoginRequest {
        token: "tok-3".into(),
        device_id: "d".into(),
    };
    let refused = guesser.request(good.clone()).await;
    assert_eq!(
        error_code(&refused),
        Some(ErrorCode::TooManyRequests),
        "{refused:?}"
    );
    assert!(guesser.until_closed().await.is_empty());
    assert_eq!(h.logic.logins.load(Ordering::SeqCst), logins);
    // A new connection from that address too; another address logs in.
    let mut again = h.connect_from([127, 0, 0, 7]).await;
    assert_eq!(
        error_code(&again.request(good.clone()).await),
        Some(ErrorCode::TooManyRequests)
    );
    let mut other = h.connect_from([127, 0, 0, 8]).await;
    let ok = other.request(good).await;
    assert!(
        matches!(ok, Body::LoginReply(ref r) if r.user_id == 3),
        "{ok:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_before_login_and_a_second_login_are_refused_and_closed() {
    let h = Harness::start(FakeLogic::default(), |_| {}).await;
    let mut early = h.connect().await;
    early.send(send_to(1, "m")).await;
    let frames = early.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::NotLoggedIn)]
    );

    let mut twice = h.login(4, "d").await;
    twice
        .send(pb::LoginRequest {
            token: "tok-4".into(),
            device_id: "d".into(),
        })
        .await;
    let frames = twice.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::AlreadyLoggedIn)]
    );
    assert!(h.logic.sends.lock().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_naming_a_sender_is_refused_not_forwarded() {
    let h = Harness::start(FakeLogic::default(), |_| {}).await;
    let mut client = h.login(5, "d").await;
    // A SendToUser with an extra field 15 = user 99 ("from_user_id"), which the protocol does not have.
    let mut body = BytesMut::new();
    prost::Message::encode(&send_to(6, "m"), &mut body).unwrap();
    body.put_u8(15 << 3);
    body.put_u8(99);
    let mut frame = BytesMut::new();
    frame.put_u32(8 + body.len() as u32);
    frame.put_slice(&[1, 0, 0, 5, 0, 0, 0, 9]);
    frame.put_slice(&body);
    client.raw(&frame).await;
    let frames = client.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::BadBody)]
    );
    assert!(h.logic.sends.lock().is_empty(), "nothing reached logic");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_oversize_frames_close_only_their_own_connection() {
    let h = Harness::start(FakeLogic::default(), |c| c.max_frame_len = 1024).await;
    let mut bystander = h.login(1, "d").await;

    let mut garbage = h.connect().await;
    garbage
        .raw(&[0, 0, 0, 12, 9, 9, 9, 9, 0, 0, 0, 0, 1, 2, 3, 4])
        .await;
    let frames = garbage.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::BadFrame)]
    );

    let mut oversize = h.connect().await;
    oversize.raw(&[0x7f, 0xff, 0xff, 0xff, 1, 0, 0, 3]).await;
    let frames = oversize.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::FrameTooLarge)]
    );

    let mut server_only = h.connect().await;
    server_only.send(pb::Push::default()).await;
    let frames = server_only.until_closed().await;
    assert_eq!(
        frames.iter().map(error_code).collect::<Vec<_>>(),
        [Some(ErrorCode::UnknownCommand)]
    );

    // Command 999 is defined nowhere; the ERROR still names the request.
    let mut undefined = h.connect().await;
    undefined
        .raw(&[0, 0, 0, 8, 1, 0, 0x03, 0xe7, 0, 0, 0, 24])
        .await;
    let (request_id, body) = undefined.recv().await.expect("an ERROR");
    assert_eq!(error_code(&body), Some(ErrorCode::UnknownCommand));
    assert_eq!(request_id, 24);
    assert!(undefined.until_closed().await.is_empty());

    let pong = bystander.request(pb::Ping::default()).await;
    assert!(
        matches!(pong, Body::Pong(_)),
        "the loop's other connection is unaffected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_socket_is_closed_after_the_login_deadline() {
    let h = Harness::start(FakeLogic::default(), |c| c.login_deadline_ms = 300).await;
    let mut idle = h.connect().await;
    // Pings do not buy time before login.
    idle.send(pb::Ping::default()).await;
    let frames = idle.until_closed().await;
    assert_eq!(
        frames.iter().filter_map(kick_reason).collect::<Vec<_>>(),
        [KickReason::LoginTimeout]
    );
    wait_until(DEADLINE, "the connection to be forgotten", async || {
        (h.connections() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_logged_in_socket_is_closed_and_a_pinging_one_kept() {
    let h = Harness::start(FakeLogic::default(), |c| c.heartbeat_interval_ms = 500).await;
    let mut silent = h.login(1, "d").await;
    let mut pinging = h.login(2, "d").await;
    let mut kicked = tokio::spawn(async move { silent.until_closed().await });
    // The pinging client keeps its heartbeat until the silent one is cut off.
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    let frames = loop {
        tokio::select! {
            frames = &mut kicked => break frames.unwrap(),
            _ = heartbeat.tick() => {
                let pong = pinging.request(pb::Ping::default()).await;
                assert!(matches!(pong, Body::Pong(_)));
            }
        }
    };
    assert_eq!(
        frames.iter().filter_map(kick_reason).collect::<Vec<_>>(),
        [KickReason::HeartbeatTimeout]
    );
    let pong = pinging.request(pb::Ping::default()).await;
    assert!(
        matches!(pong, Body::Pong(_)),
        "the pinging connection outlived the deadline"
    );
    wait_until(DEADLINE, "the silent session to be removed", async || {
        h.logic
            .logouts
            .lock()
            .iter()
            .any(|(user, _)| *user == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_heartbeats_go_in_a_few_batches_and_a_replaced_connection_is_kicked() {
    let h = Harness::start(FakeLogic::default(), |c| c.session_refresh_ms = 100).await;
    let mut clients = Vec::new();
    for user in 1..=40 {
        clients.push(h.login(user, "d").await);
    }
    // Pings past the refresh interval re-assert each session upstream.
    wait_until(DEADLINE, "a heartbeat of every connection", async || {
        for client in &mut clients {
            assert!(matches!(
                client.request(pb::Ping::default()).await,
                Body::Pong(_)
            ));
        }
        let calls = h.logic.heartbeats.lock();
        let users: std::collections::HashSet<u64> = calls.iter().flatten().copied().collect();
        (users.len() == 40).then_some(())
    })
    .await;
    let calls = h.logic.heartbeats.lock().len();
    assert!(
        calls <= 10,
        "40 connections' heartbeats took {calls} calls to logic"
    );
    // Another login of user 1's device elsewhere: its next heartbeat finds
    // the connection replaced, and the node closes it.
    h.logic
        .sessions
        .lock()
        .get_mut(&(1, "d".to_owned()))
        .unwrap()
        .conn_id += 1_000_000;
    let kicked = &mut clients[0];
    let reason = wait_until(DEADLINE, "user 1 to be kicked", async || {
        let ping = kicked.send(pb::Ping::default()).await;
        loop {
            match kicked.recv().await {
                Some((id, Body::Pong(_))) if id == ping => return None,
                Some((_, body)) => {
                    if let Some(reason) = kick_reason(&body) {
                        return Some(reason);
                    }
                }
                None => panic!("closed without a kick"),
            }
        }
    })
    .await;
    assert_eq!(reason, KickReason::DuplicateLogin);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_waiting_on_logic_pin_no_read_buffer() {
    let gate = Arc::new(Semaphore::new(0));
    let logic = FakeLogic {
        gate: Some(gate.clone()),
        ..FakeLogic::default()
    };
    let h = Harness::start(logic, |_| {}).await;
    let mut client = h.login(1, "d").await;
    let mut sends = vec![client.send(send_to(2, "first")).await];
    wait_until(DEADLINE, "the first send held in logic", async || {
        (!h.logic.sends.lock().is_empty()).then_some(())
    })
    .await;
    // Each round is a read of its own: a SEND, which waits behind the held
    // batch, then a PING whose PONG comes back before the next round. A
    // body that kept the loop's read chunk would make every later read
    // allocate a fresh 16 KiB one.
    let before = LARGE_ALLOCATIONS.load(Ordering::Relaxed);
    for round in 0..8 {
        sends.push(client.send(send_to(2, &format!("m{round}"))).await);
        assert!(matches!(
            client.request(pb::Ping::default()).await,
            Body::Pong(_)
        ));
    }
    let large = LARGE_ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        large, 0,
        "16 reads with up to 9 sends in flight made {large} allocations of 16 KiB or more"
    );
    gate.add_permits(100);
    let mut acked = Vec::new();
    while acked.len() < sends.len() {
        let (id, body) = client.recv().await.expect("an ack");
        assert!(matches!(body, Body::SendAck(_)), "{body:?}");
        acked.push(id);
    }
    acked.sort_unstable();
    assert_eq!(acked, sends);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_in_flight_cap_the_node_stops_reading_instead_of_buffering() {
    let gate = Arc::new(Semaphore::new(0));
    let logic = FakeLogic {
        gate: Some(gate.clone()),
        ..FakeLogic::default()
    };
    let h = Harness::start(logic, |c| c.max_in_flight = 4).await;
    let mut client = h.login(1, "d").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(client.send(send_to(2, &format!("m{i}"))).await);
    }
    // The first batch (whatever the node had read when it started) is held
    // in logic; the node reads no further while four sends are in flight.
    wait_until(DEADLINE, "the first batch upstream", async || {
        (!h.logic.sends.lock().is_empty()).then_some(())
    })
    .await;
    gate.add_permits(10);
    let mut acked = Vec::new();
    while acked.len() < 10 {
        let (id, body) = client.recv().await.expect("an ack");
        assert!(matches!(body, Body::SendAck(_)), "{body:?}");
        acked.push(id);
    }
    acked.sort_unstable();
    assert_eq!(acked, ids);
    let batches = h.logic.batches.lock().clone();
    assert_eq!(batches.iter().sum::<usize>(), 10, "{batches:?}");
    assert!(
        batches.iter().all(|&n| n <= 4),
        "no batch holds more than the cap: {batches:?}"
    );
    assert!(
        h.logic.most_sending.load(Ordering::SeqCst) <= 4,
        "never more than the cap at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_queued_while_a_batch_is_in_logic_go_in_one_batch_in_order() {
    let gate = Arc::new(Semaphore::new(0));
    let logic = FakeLogic {
        gate: Some(gate.clone()),
        ..FakeLogic::default()
    };
    let h = Harness::start(logic, |_| {}).await;
    let mut clients = Vec::new();
    for user in 1..=3 {
        clients.push(h.login(user, "d").await);
    }
    clients[0].send(send_to(9, "first")).await;
    wait_until(DEADLINE, "the first batch upstream", async || {
        (h.logic.sends.lock().len() == 1).then_some(())
    })
    .await;
    let mut expected = vec![(1, "first".to_owned())];
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let id = format!("r{round}-u{}", i + 1);
            client.send(send_to(9, &id)).await;
            expected.push((i as u64 + 1, id));
        }
    }
    // Nine more sends: wait until the node has read them all (they queue
    // behind the held batch), then let logic answer.
    wait_until(DEADLINE, "nine sends read", async || {
        (h.metrics.frames_in.get() >= 3 + 10).then_some(())
    })
    .await;
    gate.add_permits(2);
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in 0..if i == 0 { 4 } else { 3 } {
            let (_, body) = client.recv().await.expect("an ack");
            assert!(
                matches!(body, Body::SendAck(ref a) if a.error.is_none()),
                "{body:?}"
            );
        }
    }
    assert_eq!(*h.logic.batches.lock(), vec![1, 9]);
    let mut sent: Vec<(u64, String)> = h
        .logic
        .sends
        .lock()
        .iter()
        .map(|s| match &s.message {
            Some(outgoing::Message::ToUser(m)) => (s.from_user_id, m.client_msg_id.clone()),
            other => panic!("unexpected send {other:?}"),
        })
        .collect();
    // Connections are read in any order, each one's sends in its own order.
    sent.sort_by_key(|(user, _)| *user);
    expected.sort_by_key(|(user, _)| *user);
    assert_eq!(
        sent, expected,
        "each connection's sends in the order it made them"
    );
}

fn stored(seq: u64, body: &str) -> StoredMessage {
    StoredMessage {
        seq,
        server_msg_id: seq,
        from_user_id: 1,
        body: body.as_bytes().to_vec().into(),
        ..StoredMessage::default()
    }
}

/// A PUSH frame of `messages`, encoded once as msg_job does.
fn push_frame(messages: Vec<StoredMessage>) -> bytes::Bytes {
    encode_frame_to_bytes(Command::Push, 0, &pb::Push { messages }, 64 * 1024).unwrap()
}

fn pushed_seqs(body: &Body) -> Vec<u64> {
    match body {
        Body::Push(p) => p.messages.iter().map(|m| m.seq).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_reaches_every_device_of_a_user_and_reports_absent_users() {
    let h = Harness::start(FakeLogic::default(), |c| c.loops = 2).await;
    let mut phone = h.login(9, "phone").await;
    let mut laptop = h.login(9, "laptop").await;
    let reply = h.push.deliver(PushRequest {
        deliveries: vec![Delivery {
            user_ids: vec![9, 10],
            frame: push_frame(vec![stored(1, "a"), stored(2, "b")]),
        }],
    });
    assert_eq!(reply.absent_user_ids, [10]);
    assert_eq!(reply.delivered_connections, 2);
    for device in [&mut phone, &mut laptop] {
        let (id, body) = device.recv().await.unwrap();
        assert_eq!((id, pushed_seqs(&body)), (0, vec![1, 2]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consecutive_deliveries_to_the_same_users_arrive_as_whole_frames_in_order() {
    let h = Harness::start(FakeLogic::default(), |c| c.loops = 2).await;
    let mut one = h.login(1, "d").await;
    let mut two = h.login(2, "d").await;
    let to = |user_ids: &[u64], seq| Delivery {
        user_ids: user_ids.to_vec(),
        frame: push_frame(vec![stored(seq, "m")]),
    };
    let torn = Delivery {
        user_ids: vec![1, 2],
        frame: push_frame(vec![stored(99, "torn")]).slice(..10),
    };
    let reply = h.push.deliver(PushRequest {
        deliveries: vec![
            to(&[1, 2], 1),
            to(&[1, 2], 2),
            torn,
            to(&[1, 2], 3),
            to(&[2], 4),
            to(&[1, 2], 5),
        ],
    });
    assert_eq!(
        reply.delivered_connections, 9,
        "one per frame and connection"
    );
    for (client, seqs) in [
        (&mut one, vec![1, 2, 3, 5]),
        (&mut two, vec![1, 2, 3, 4, 5]),
    ] {
        let mut got = Vec::new();
        while got.len() < seqs.len() {
            let (_, body) = client.recv().await.unwrap();
            let frame = pushed_seqs(&body);
            assert_eq!(
                frame.len(),
                1,
                "each message in a frame of its own: {body:?}"
            );
            got.extend(frame);
        }
        assert_eq!(got, seqs);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_never_reads_is_kicked_as_a_slow_consumer() {
    let h = Harness::start(FakeLogic::default(), |c| c.max_outbound_bytes = 64 * 1024).await;
    let _stalled = h.login(1, "d").await;
    let message = "x".repeat(10_000);
    let mut pushed = 0;
    // 10 MB, far more than the socket buffers and the cap together.
    for seq in 1..=1000 {
        h.push.deliver(PushRequest {
            deliveries: vec![Delivery {
                user_ids: vec![1],
                frame: push_frame(vec![stored(seq, &message)]),
            }],
        });
        pushed += message.len();
        if h.connections() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    wait_until(DEADLINE, "the stalled reader to be cut off", async || {
        (h.connections() == 0).then_some(())
    })
    .await;
    assert!(h.kicks(KickReason::SlowConsumer));
    assert!(pushed <= 10_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_login_of_the_same_device_kicks_the_first() {
    let h = Harness::start(FakeLogic::default(), |_| {}).await;
    let mut first = h.login(3, "phone").await;
    let mut other_device = h.login(3, "laptop").await;
    let _second = h.login(3, "phone").await;
    let frames = first.until_closed().await;
    assert_eq!(
        frames.iter().filter_map(kick_reason).collect::<Vec<_>>(),
        [KickReason::DuplicateLogin]
    );
    let pong = other_device.request(pb::Ping::default()).await;
    assert!(
        matches!(pong, Body::Pong(_)),
        "another device of the user stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_tells_new_connections_so_and_takes_them_again_once_one_goes() {
    let h = Harness::start(FakeLogic::default(), |c| {
        c.loops = 2;
        c.max_connections = 2;
    })
    .await;
    let first = h.login(1, "d").await;
    let mut second = h.login(2, "d").await;
    let mut third = h.connect().await;
    assert_eq!(
        third
            .until_closed()
            .await
            .iter()
            .filter_map(kick_reason)
            .collect::<Vec<_>>(),
        [KickReason::NodeFull]
    );
    assert!(h.kicks(KickReason::NodeFull));
    assert_eq!(h.connections(), 2);
    drop(first);
    wait_until(DEADLINE, "the first connection to be gone", async || {
        (h.connections() == 1).then_some(())
    })
    .await;
    h.login(3, "d").await;
    let pong = second.request(pb::Ping::default()).await;
    assert!(matches!(pong, Body::Pong(_)), "{pong:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_spreads_its_reconnects_over_the_window() {
    const CLIENTS: u64 = 20;
    let spread = Duration::from_millis(1_000);
    let mut h = Harness::start(FakeLogic::default(), |c| {
        c.loops = 2;
        c.drain_spread_ms = 1_000;
    })
    .await;
    let mut readers = tokio::task::JoinSet::new();
    for user in 1..=CLIENTS {
        let mut client = h.login(user, "d").await;
        readers.spawn(async move {
            let frames = client.until_closed().await;
            (
                frames.iter().filter_map(kick_reason).collect::<Vec<_>>(),
                Instant::now(),
            )
        });
    }
    let node = h.node.take().unwrap();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || node.drain())
        .await
        .unwrap();
    let mut closed = Vec::new();
    while let Some(reader) = readers.join_next().await {
        let (reasons, at) = reader.unwrap();
        assert_eq!(reasons, [KickReason::Reconnect]);
        closed.push(at - started);
    }
    closed.sort_unstable();
    // Each of the two loops kicks its share evenly: by a tenth of the window
    // only about a tenth are gone, and the last go near its end.
    let early = closed.iter().filter(|at| **at < spread / 10).count();
    assert!(
        early <= 4,
        "{early} of {CLIENTS} kicked in the first tenth: {closed:?}"
    );
    assert!(closed[closed.len() - 1] >= spread * 8 / 10, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_tells_every_client_to_reconnect_and_removes_their_sessions() {
    let mut h = Harness::start(FakeLogic::default(), |c| c.loops = 2).await;
    let mut clients = Vec::new();
    for user in 1..=4 {
        clients.push(h.login(user, "d").await);
    }
    let node = h.node.take().unwrap();
    tokio::task::spawn_blocking(move || node.drain())
        .await
        .unwrap();
    for client in &mut clients {
        let frames = client.until_closed().await;
        assert_eq!(
            frames.iter().filter_map(kick_reason).collect::<Vec<_>>(),
            [KickReason::Reconnect]
        );
    }
    assert!(
        TcpStream::connect(h.addr).await.is_err(),
        "no longer accepting"
    );
    wait_until(DEADLINE, "every session to be removed", async || {
        (h.logic.logouts.lock().len() == 4).then_some(())
    })
    .await;
}
