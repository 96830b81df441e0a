//! Requests from connections to logic, run on the tokio runtime.
//!
//! An event loop never waits on the network: it hands a request here with the
//! identity of the connection it came from, and the answer comes back to the
//! loop's mailbox. The user id in every call is the one the connection logged
//! in as, taken from the loop's own record, never from the client's frame.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fishchat_codec::pb;
use fishchat_codec::{Command, ErrorCode, KickReason};
use fishchat_discovery::Dialer;
use fishchat_rpc::access::KickRequest;
use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::logic::{
    HistoryRequest, LoginRequest, LogoutRequest, Origin, ReadRequest, SyncConversationsRequest,
    SyncRequest, outgoing,
};
use fishchat_rpc::status::error_code;
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::device_id::{DeviceId, DeviceIds};
use crate::frames;
use crate::mailbox::{LoopHandle, Reply, ToLoop};
use crate::session::Then;

mod heartbeats;
mod sends;
use crate::metrics::Metrics;
use crate::table::ConnTable;

/// First pause between retries of a call that found no logic node.
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// The connection a request comes from.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The loop that owns the connection.
    pub loop_index: u16,
    /// Its slab slot.
    pub slot: u32,
    /// Its connection id.
    pub conn_id: u64,
    /// The request id to answer.
    pub request_id: u32,
    /// The logged-in user (0 before login).
    pub user_id: u64,
    /// The device id the session is recorded under (empty before login).
    pub device_id: DeviceId,
}

/// A request that needs logic.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// SEND_TO_USER or SEND_TO_GROUP, which go in batches.
    Send(outgoing::Message),
    /// Any other request, a call of its own.
    Call(Call),
}

/// A request that is a call of its own.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// LOGIN.
    Login(pb::LoginRequest),
    /// SYNC_CONVERSATIONS.
    SyncConversations(pb::SyncConversationsRequest),
    /// SYNC.
    Sync(pb::SyncRequest),
    /// HISTORY.
    History(pb::HistoryRequest),
    /// READ.
    Read(pb::ReadRequest),
}

/// Calls logic on behalf of connections and routes the answers back.
#[derive(Debug)]
pub struct Upstream {
    logic: LogicClient<Channel>,
    runtime: Handle,
    loops: Vec<LoopHandle>,
    table: Arc<ConnTable>,
    metrics: Arc<Metrics>,
    dialer: Dialer,
    /// The device ids of logged-in connections.
    device_ids: DeviceIds,
    node_id: String,
    push_addr: String,
    timeout: Duration,
    heartbeat_interval_ms: u32,
    max_frame_len: u32,
    /// Calls running on the runtime, so a drain can wait for its logouts.
    running: AtomicUsize,
    /// Calls (other than sends and heartbeats) ever queued plus those ever
    /// ended: logins, logouts and syncs, the bursts whose memory the heap
    /// trimmer gives back. It stands still only once none is queued or
    /// running.
    calls: Arc<AtomicU64>,
    settled: Notify,
    /// Calls allowed on the wire at once (see [`Upstream::dispatch`]).
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit.
    jobs: mpsc::UnboundedSender<Job>,
    /// Sends waiting for their batch (see [`sends`]).
    sends: mpsc::UnboundedSender<sends::Queued>,
    /// Session heartbeats waiting for their batch (see [`heartbeats`]).
    heartbeats: mpsc::UnboundedSender<heartbeats::Beat>,
}

/// A call not yet started: only what it captured, not its future.
type Job = Box<dyn FnOnce(Arc<Upstream>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Counts one running call for as long as it lives.
struct Running<'a>(&'a Upstream);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// What [`Upstream`] needs to know about its node.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// This node's id, as recorded in sessions.
    pub node_id: String,
    /// This node's push address, as recorded in sessions.
    pub push_addr: String,
    /// How long one call, with retries, may take.
    pub timeout: Duration,
    /// Told to clients at login.
    pub heartbeat_interval_ms: u32,
    /// Largest frame a client accepts.
    pub max_frame_len: u32,
    /// Calls on the wire at once.
    pub max_calls: usize,
}

impl Upstream {
    /// An upstream over `logic`, answering through `loops`; its dispatcher runs on `runtime`.
    pub fn start(
        logic: LogicClient<Channel>,
        runtime: Handle,
        loops: Vec<LoopHandle>,
        table: Arc<ConnTable>,
        metrics: Arc<Metrics>,
        settings: UpstreamSettings,
    ) -> Arc<Self> {
        let (jobs, waiting) = mpsc::unbounded_channel();
        let (sends, queued) = mpsc::unbounded_channel();
        let (heartbeats, beats) = mpsc::unbounded_channel();
        let upstream = Arc::new(Self {
            logic,
            runtime,
            loops,
            table,
            metrics,
            dialer: Dialer::new(),
            device_ids: DeviceIds::default(),
            node_id: settings.node_id,
            push_addr: settings.push_addr,
            timeout: settings.timeout,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            max_frame_len: settings.max_frame_len,
            running: AtomicUsize::new(0),
            calls: Arc::default(),
            settled: Notify::new(),
            permits: Arc::new(Semaphore::new(settings.max_calls.max(1))),
            jobs,
            sends,
            heartbeats,
        });
        upstream.runtime.spawn(upstream.clone().dispatch(waiting));
        upstream.runtime.spawn(upstream.clone().batch_sends(queued));
        upstream
            .runtime
            .spawn(upstream.clone().batch_heartbeats(beats));
        upstream
    }

    /// Starts waiting calls as permits free up.
    ///
    /// A login storm would otherwise put thousands of gRPC calls in flight at
    /// once: each task is sized for its largest state (a whole tonic call),
    /// and the allocator keeps that memory long after the calls end. Waiting
    /// here, a call is only the few bytes it captured.
    async fn dispatch(self: Arc<Self>, mut waiting: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = waiting.recv().await {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let this = self.clone();
            self.runtime.spawn(async move {
                let _permit = permit;
                let _running = Running(&this);
                job(this.clone()).await;
                this.calls.fetch_add(1, Ordering::Relaxed);
            });
        }
    }

    /// Queues `task` for the dispatcher, counted until it ends.
    fn spawn<F>(&self, task: impl FnOnce(Arc<Self>) -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move |this| Box::pin(task(this)));
        if self.jobs.send(job).is_err() {
            // The runtime is gone; nothing will run it.
            drop(Running(self));
        }
    }

    /// The count of calls ever queued plus those ever ended, live.
    pub fn calls(&self) -> Arc<AtomicU64> {
        self.calls.clone()
    }

    /// Counts one call (or queued send) as ended.
    fn finished(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Waits until no call is running, or `timeout` passes.
    pub async fn settled(&self, timeout: Duration) {
        let wait = async {
            loop {
                let notified = self.settled.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn origin(&self, conn_id: u64) -> Origin {
        Origin {
            access_node_id: self.node_id.clone(),
            push_addr: self.push_addr.clone(),
            conn_id,
        }
    }

    fn answer(&self, caller: &Caller, frame: Bytes, then: Then) {
        if let Some(handle) = self.loops.get(usize::from(caller.loop_index)) {
            handle.send(ToLoop::Reply(Reply {
                slot: caller.slot,
                conn_id: caller.conn_id,
                frame: Some(frame),
                then,
            }));
        }
    }

    fn error(&self, caller: &Caller, status: &Status) -> Bytes {
        frames::error(
            caller.request_id,
            error_code(status),
            status.message(),
            self.max_frame_len,
        )
    }

    /// Runs `request` for `caller`; the answer arrives in the caller's loop mailbox.
    pub fn call(&self, caller: Caller, request: Request) {
        let send = match request {
            Request::Send(send) => send,
            Request::Call(call) => return self.spawn_call(caller, call),
        };
        self.running.fetch_add(1, Ordering::AcqRel);
        if self.sends.send(sends::Queued::new(caller, send)).is_err() {
            // The runtime is gone; nothing will answer it.
            self.finished();
        }
    }

    fn spawn_call(&self, caller: Caller, request: Call) {
        self.spawn(move |this| async move {
            let (frame, then) = this.run(&caller, request).await;
            this.answer(&caller, frame, then);
        });
    }

    async fn run(&self, caller: &Caller, request: Call) -> (Bytes, Then) {
        match request {
            Call::Login(login) => self.login(caller, login).await,
            Call::SyncConversations(request) => {
                let request = SyncConversationsRequest {
                    user_id: caller.user_id,
                    request: Some(request),
                };
                let result = self
                    .retrying(&request, |mut logic, request| async move {
                        logic.sync_conversations(request).await
                    })
                    .await;
                self.reply(caller, result, frames::conversations_reply)
            }
            Call::Sync(request) => {
                let request = SyncRequest {
                    user_id: caller.user_id,
                    request: Some(request),
                };
                let result = self
                    .retrying(&request, |mut logic, request| async move {
                        logic.sync(request).await
                    })
                    .await;
                self.reply(caller, result, frames::sync_reply)
            }
            Call::History(request) => {
                let request = HistoryRequest {
                    user_id: caller.user_id,
                    request: Some(request),
                };
                let result = self
                    .retrying(&request, |mut logic, request| async move {
                        logic.history(request).await
                    })
                    .await;
                self.reply(caller, result, frames::history_reply)
            }
            Call::Read(request) => {
                let request = ReadRequest {
                    user_id: caller.user_id,
                    request: Some(request),
                };
                let result = self
                    .retrying(&request, |mut logic, request| async move {
                        logic.read(request).await
                    })
                    .await;
                self.reply(caller, result, |id, reply, max| {
                    frames::frame(Command::ReadReply, id, &reply, max)
                })
            }
        }
    }

    /// The answer to a call: its reply as `frame` encodes it, or an ERROR.
    fn reply<T>(
        &self,
        caller: &Caller,
        result: Result<T, Status>,
        frame: impl FnOnce(u32, T, u32) -> Bytes,
    ) -> (Bytes, Then) {
        match result {
            Ok(reply) => (
                frame(caller.request_id, reply, self.max_frame_len),
                Then::Nothing,
            ),
            Err(status) => (self.error(caller, &status), Then::Nothing),
        }
    }

    async fn login(&self, caller: &Caller, login: pb::LoginRequest) -> (Bytes, Then) {
        let max = self.max_frame_len;
        let request = LoginRequest {
            token: login.token,
            device_id: login.device_id.clone(),
            origin: Some(self.origin(caller.conn_id)),
        };
        let result = self
            .retrying(&request, |mut logic, request| async move {
                logic.login(request).await
            })
            .await;
        let reply = match result {
            Ok(reply) => reply,
            Err(status) => {
                self.metrics.login(false);
                let bad_token = error_code(&status) == ErrorCode::BadToken;
                return (
                    self.error(caller, &status),
                    Then::LoginRefused { bad_token },
                );
            }
        };
        self.metrics.login(true);
        if let Some(replaced) = reply.replaced.filter(|o| o.conn_id != 0) {
            self.kick_replaced(reply.user_id, replaced, caller.conn_id);
        }
        let body = pb::LoginReply {
            user_id: reply.user_id,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            server_time_ms: now_ms(),
        };
        (
            frames::frame(Command::LoginReply, caller.request_id, &body, max),
            Then::LoggedIn {
                user_id: reply.user_id,
                device_id: self.device_ids.intern(&login.device_id),
            },
        )
    }

    /// Kicks the connection a login replaced, here or on its own node.
    fn kick_replaced(&self, user_id: u64, replaced: Origin, new_conn_id: u64) {
        let reason = KickReason::DuplicateLogin;
        if replaced.access_node_id == self.node_id {
            if replaced.conn_id != new_conn_id {
                self.kick_local(user_id, replaced.conn_id, reason);
            }
            return;
        }
        let channel = match self.dialer.channel(&replaced.push_addr) {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(%err, node = %replaced.access_node_id, "cannot reach the replaced session's node");
                return;
            }
        };
        let request = KickRequest {
            user_id,
            conn_id: replaced.conn_id,
            reason: reason as i32,
        };
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            let mut client = AccessClient::new(channel);
            match tokio::time::timeout(timeout, client.kick(request)).await {
                Ok(Ok(_)) => {}
                // A dead node's connections are gone anyway.
                Ok(Err(status)) => tracing::info!(%status, "kicking a replaced session failed"),
                Err(_) => tracing::info!("kicking a replaced session timed out"),
            }
        });
    }

    /// Kicks connection `conn_id` of `user_id` if it lives on this node; true when found.
    pub fn kick_local(&self, user_id: u64, conn_id: u64, reason: KickReason) -> bool {
        let found = if reason == KickReason::DuplicateLogin {
            // Its login may not have reached the table yet (see `table`).
            self.table.find_or_mark_replaced(user_id, conn_id)
        } else {
            self.table.find(user_id, conn_id)
        };
        let Some(conn) = found else {
            return false;
        };
        self.loops
            .get(usize::from(conn.loop_index))
            .is_some_and(|handle| {
                handle.send(ToLoop::Kick {
                    slot: conn.slot,
                    conn_id,
                    reason,
                })
            })
    }

    /// Queues a live connection's session heartbeat (see [`heartbeats`]); the
    /// connection is kicked when another login replaced it.
    pub fn heartbeat(&self, user_id: u64, device_id: &DeviceId, conn_id: u64) {
        let _ = self.heartbeats.send(heartbeats::Beat {
            user_id,
            device_id: device_id.clone(),
            conn_id,
        });
    }

    /// Removes a closed connection's session (only if it is still this connection's).
    pub fn logout(&self, user_id: u64, device_id: &str, conn_id: u64) {
        let request = LogoutRequest {
            user_id,
            device_id: device_id.to_owned(),
            origin: Some(self.origin(conn_id)),
        };
        self.spawn(move |this| async move {
            let result = this
                .retrying(&request, |mut logic, request| async move {
                    logic.logout(request).await
                })
                .await;
            if let Err(status) = result {
                tracing::warn!(%status, user_id, "removing a closed session failed");
            }
        });
    }

    /// Calls logic until it answers, a non-retryable error comes back, or the
    /// timeout passes. Only failures to reach logic are retried (see
    /// [`unreached`]): every call here is safe to repeat (sends carry their
    /// client message id, which logic dedups), so a logic node that restarts
    /// under a call delays it instead of failing it.
    async fn retrying<R, T, F, Fut>(&self, request: &R, mut call: F) -> Result<T, Status>
    where
        R: Clone,
        F: FnMut(LogicClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut pause = RETRY_FIRST;
        loop {
            let status =
                match tokio::time::timeout_at(deadline, call(self.logic.clone(), request.clone()))
                    .await
                {
                    Ok(Ok(reply)) => return Ok(reply.into_inner()),
                    Ok(Err(status)) => status,
                    Err(_) => return Err(Status::unavailable("logic did not answer in time")),
                };
            if !unreached(&status) || Instant::now() + pause >= deadline {
                return Err(status);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

/// Whether a call failed for want of a logic node rather than by logic's
/// answer: none was reachable (UNAVAILABLE), or the connection broke under
/// the call (a transport error, such as a reset by a node killed mid-call).
fn unreached(status: &Status) -> bool {
    status.code() == Code::Unavailable
        || std::error::Error::source(status)
            .is_some_and(|source| source.is::<tonic::transport::Error>())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
