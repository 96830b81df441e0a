//! One access node: its event loops, table, upstream and push service, started together.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fishchat_rpc::logic::logic_client::LogicClient;
use mio::{Poll, Waker};
use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::config::Config;
use crate::event_loop::{EventLoop, Limits, Shared, WAKER, ticks};
use crate::login_guard::LoginGuard;
use crate::mailbox::{LoopHandle, ToLoop, mailbox};
use crate::metrics::Metrics;
use crate::push::PushService;
use crate::send_rate::SendRate;
use crate::session::Rules;
use crate::table::ConnTable;
use crate::tls::ClientTls;
use crate::upstream::{Upstream, UpstreamSettings};

/// Connections the kernel may queue per listener before accept.
const BACKLOG: i32 = 4096;

/// A running access node.
pub struct AccessNode {
    loops: Vec<LoopHandle>,
    threads: Vec<JoinHandle<()>>,
    dead_loops: mpsc::UnboundedReceiver<String>,
    table: Arc<ConnTable>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    client_addr: SocketAddr,
    max_frame_len: u32,
}

impl AccessNode {
    /// Binds the client listener and starts the event loops; upstream calls run on `runtime`.
    pub fn start(
        config: &Config,
        node_id: String,
        logic: LogicClient<Channel>,
        metrics: Arc<Metrics>,
        runtime: Handle,
    ) -> io::Result<Self> {
        let count = config.loop_count().clamp(1, crate::table::MAX_LOOPS);
        let client_tls = ClientTls::load(&config.client_tls_cert, &config.client_tls_key)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let listeners = bind_listeners(config.client_listen, count)?;
        let client_addr = listeners[0].local_addr()?;
        let mut polls = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        for _ in 0..count {
            let poll = Poll::new()?;
            let (handle, mailbox) = mailbox(
                Waker::new(poll.registry(), WAKER)?,
                config.max_queued_push_bytes,
            );
            polls.push(poll);
            handles.push(handle);
            mailboxes.push(mailbox);
        }
        let table = Arc::new(ConnTable::default());
        let upstream = Upstream::start(
            logic,
            runtime.clone(),
            handles.clone(),
            table.clone(),
            metrics.clone(),
            UpstreamSettings {
                node_id,
                push_addr: config.push_addr(),
                timeout: config.upstream_timeout(),
                heartbeat_interval_ms: u32::try_from(config.heartbeat_interval_ms)
                    .unwrap_or(u32::MAX),
                max_frame_len: config.max_frame_len,
                max_calls: config.max_upstream_calls,
            },
        );
        if config.heap_trim_quiet_ms > 0 {
            crate::heap::spawn_trimmer(
                &runtime,
                upstream.calls(),
                Duration::from_millis(config.heap_trim_quiet_ms),
            );
        }
        let shared = Arc::new(Shared {
            table: table.clone(),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            next_conn_id: AtomicU64::new(first_conn_id()),
            login_guard: LoginGuard::new(
                config.max_failed_logins_per_address,
                ticks(Duration::from_millis(config.failed_login_window_ms)),
            ),
            client_tls,
            limits: Limits {
                rules: Rules {
                    login_deadline: ticks(Duration::from_millis(config.login_deadline_ms)),
                    heartbeat_deadline: ticks(config.heartbeat_deadline()),
                    session_refresh: ticks(Duration::from_millis(config.session_refresh_ms)),
                    max_in_flight: config.max_in_flight.max(1),
                    send_rate: SendRate {
                        per_second: config.max_sends_per_sec,
                        burst: config.send_burst,
                    },
                    user_send_rate: SendRate {
                        per_second: config.max_sends_per_user_per_sec,
                        burst: config.user_send_burst,
                    },
                },
                max_connections: config.max_connections,
                max_outbound: config.max_outbound_bytes,
                max_frame_len: config.max_frame_len,
                drain_timeout: Duration::from_millis(config.drain_timeout_ms),
                drain_spread: Duration::from_millis(config.drain_spread_ms),
            },
        });
        let mut threads = Vec::with_capacity(count);
        let (died, dead_loops) = mpsc::unbounded_channel();
        for (index, ((poll, listener), mailbox)) in
            polls.into_iter().zip(listeners).zip(mailboxes).enumerate()
        {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let event_loop = EventLoop::new(index, poll, listener, mailbox, shared.clone())?;
            let died = died.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("access-loop-{index}"))
                    .spawn(move || watched(index, &died, || event_loop.run()))?,
            );
        }
        let tls = shared.client_tls.is_some();
        tracing::info!(addr = %client_addr, loops = count, tls, "access node accepting clients");
        Ok(Self {
            loops: handles,
            threads,
            dead_loops,
            table,
            upstream,
            metrics,
            client_addr,
            max_frame_len: config.max_frame_len,
        })
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The gRPC Push/Kick service of this node.
    pub fn push_service(&self) -> PushService {
        PushService::new(
            self.table.clone(),
            self.loops.clone(),
            self.upstream.clone(),
            self.metrics.clone(),
            self.max_frame_len,
        )
    }

    /// The node's upstream (to wait for its calls to settle after a drain).
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream.clone()
    }

    /// Live connections.
    pub fn connections(&self) -> i64 {
        self.metrics.connections.get()
    }

    /// Resolves, with the reason, when an event loop has died (a poll error
    /// or a panic). Its clients are no longer served and its table entries
    /// are stale, so the process should leave etcd and exit for its
    /// supervisor to restart it; clients reconnect elsewhere meanwhile.
    pub async fn loop_died(&mut self) -> String {
        match self.dead_loops.recv().await {
            Some(reason) => reason,
            // Every loop ended by a drain.
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, tells every client to reconnect elsewhere, and waits
    /// (blocking) until the loops have closed every connection.
    pub fn drain(self) {
        for handle in &self.loops {
            handle.send(ToLoop::Drain);
        }
        for thread in self.threads {
            // A loop that failed or panicked was reported by `watched`.
            let _ = thread.join();
        }
    }
}

/// Runs one event loop on this thread, and reports on `died` when it ends
/// other than by a drain: with an error or by a panic.
fn watched(index: u16, died: &mpsc::UnboundedSender<String>, run: impl FnOnce() -> io::Result<()>) {
    let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "it panicked".to_owned(),
    };
    let _ = died.send(format!("event loop {index}: {reason}"));
}

/// One listener per loop on the same address (SO_REUSEPORT: the kernel spreads
/// new connections across them). With port 0, the first picks the port.
fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<mio::net::TcpListener>> {
    if addr.port() != 0 {
        ensure_unused(addr)?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener = mio::net::TcpListener::from_std(socket.into());
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails when another socket listens on `addr`. SO_REUSEPORT would let this
/// node bind beside a leftover node of the same user, and the kernel would
/// then silently split the clients between them; a plain bind (with
/// SO_REUSEADDR, so connections in TIME_WAIT do not count) is refused instead.
fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("client address {addr} is already in use by another process: {err}"),
        )
    })
}

/// Connection ids start from the clock, so a restarted node with the same id
/// never reuses one a stale session in Redis may still name.
fn first_conn_id() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    ms << 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_fails_or_panics_is_reported_and_a_drained_one_is_not() {
        let (died, mut dead) = mpsc::unbounded_channel();
        watched(0, &died, || Ok(()));
        watched(1, &died, || Err(io::Error::other("poll failed")));
        watched(2, &died, || panic!("a bug"));
        drop(died);
        let mut reasons = Vec::new();
        while let Ok(reason) = dead.try_recv() {
            reasons.push(reason);
        }
        assert_eq!(
            reasons,
            ["event loop 1: poll failed", "event loop 2: it panicked"]
        );
    }

    #[test]
    fn a_client_address_in_use_is_refused_not_shared() {
        let first = bind_listeners("127.0.0.1:0".parse().expect("address"), 2).expect("bound");
        let taken = first[0].local_addr().expect("address");
        let err = bind_listeners(taken, 2).expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("already in use"), "{err}");
        drop(first);
        // Once the first node is gone the address binds again.
        bind_listeners(taken, 2).expect("free again");
    }
}
