//! One event loop: a `mio::Poll`, a listener, and a slab of connections.
//!
//! Read top to bottom, an iteration is: wait for readiness (or the next
//! tick), read and decode what arrived, hand each frame to its connection's
//! session (`session.rs`, where the protocol's rules live) and carry out what
//! it decides, take what the tokio side sent back (replies, pushes, kicks),
//! run the timers, then write the iteration's frames. The loop never blocks
//! on anything but `poll`.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fishchat_codec::pb;
use fishchat_codec::{Command, Frame, FrameDecoder, KickReason};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::{Conn, NO_FRAME};
use crate::drain::Drain;
use crate::frames;
use crate::login_guard::LoginGuard;
use crate::mailbox::{Mailbox, PushBatch, Reply, ToLoop};
use crate::metrics::Metrics;
use crate::session::{self, Action, Due, Env, Flow, Rules, Session, State, Then};
use crate::table::{ConnRef, ConnTable, MAX_SLOTS, tag};
use crate::tls::ClientTls;
use crate::upstream::{Caller, Upstream};

/// The mailbox's waker.
pub const WAKER: Token = Token(usize::MAX);
/// The listening socket.
const LISTENER: Token = Token(usize::MAX - 1);
/// Timer resolution.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Reads one connection may take in a row before the others get their turn.
const READ_BUDGET: usize = 16;

/// The limits every loop applies, in ticks where they are times.
#[derive(Debug, Clone)]
pub struct Limits {
    /// What each connection's protocol obeys.
    pub rules: Rules,
    /// Connections of the whole node (0: no cap).
    pub max_connections: usize,
    /// Outbound bytes per connection before it is kicked.
    pub max_outbound: usize,
    /// Largest frame in either direction.
    pub max_frame_len: u32,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// The window over which a drain tells its clients to reconnect.
    pub drain_spread: Duration,
}

/// Converts a duration to whole ticks (at least one).
pub fn ticks(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis() / TICK.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// What every loop of a node shares.
#[derive(Debug)]
pub struct Shared {
    /// user → connections.
    pub table: Arc<ConnTable>,
    /// Calls to logic.
    pub upstream: Arc<Upstream>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The next connection id.
    pub next_conn_id: AtomicU64,
    /// Limits.
    pub limits: Limits,
    /// Bad-token LOGINs per client address.
    pub(crate) login_guard: LoginGuard,
    /// TLS on the client port, when configured.
    pub(crate) client_tls: Option<ClientTls>,
}

/// What one read from a socket gave.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// Bytes (0 after an interrupted call).
    Got(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed, or the socket failed.
    Eof,
}

/// Counts kept locally and added to the shared metrics once per iteration.
#[derive(Debug, Default)]
struct Counters {
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// A frame to write at the end of the iteration.
#[derive(Debug)]
struct Outgoing {
    frame: Bytes,
    /// The same connection's frame sent before this one in the iteration
    /// ([`NO_FRAME`]: none): each connection chains its frames backwards from
    /// `Conn::out_last`, so the outbox needs no sorting and no per-frame key.
    prev: u32,
}

/// One event loop and everything it owns.
pub struct EventLoop {
    index: u16,
    poll: Poll,
    listener: Option<TcpListener>,
    mailbox: Mailbox,
    conns: Slab<Conn>,
    /// The last tick whose deadlines were looked at.
    ticked: u32,
    /// No connection's deadline is before this tick (see [`EventLoop::sweep`]).
    next_due: u32,
    started: Instant,
    /// The read buffer every connection borrows while it has no partial frame.
    scratch: BytesMut,
    decoder: FrameDecoder,
    /// Frames sent in this iteration, written together at its end.
    outbox: Vec<Outgoing>,
    /// The slots whose connections have frames in the outbox.
    staged: Vec<usize>,
    /// One connection's frames of the outbox, as they are written.
    run: Vec<Bytes>,
    dirty: Vec<usize>,
    /// Connections that used up their read budget with input still waiting.
    backlog: Vec<usize>,
    due: Vec<usize>,
    inbox: Vec<ToLoop>,
    pushes_received: Vec<Instant>,
    counters: Counters,
    drain: Option<Drain>,
    /// An accept failed (out of files): retry on the next tick.
    accept_pending: bool,
    shared: Arc<Shared>,
}

impl EventLoop {
    /// A loop over `poll` (whose registry already holds the mailbox's waker) and `listener`.
    pub fn new(
        index: u16,
        poll: Poll,
        mut listener: TcpListener,
        mailbox: Mailbox,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            index,
            poll,
            listener: Some(listener),
            mailbox,
            conns: Slab::new(),
            ticked: 0,
            next_due: u32::MAX,
            started: Instant::now(),
            scratch: BytesMut::new(),
            decoder: FrameDecoder::new(shared.limits.max_frame_len),
            outbox: Vec::new(),
            staged: Vec::new(),
            run: Vec::new(),
            dirty: Vec::new(),
            backlog: Vec::new(),
            due: Vec::new(),
            inbox: Vec::new(),
            pushes_received: Vec::new(),
            counters: Counters::default(),
            drain: None,
            accept_pending: false,
            shared,
        })
    }

    /// Runs until drained; fails when polling fails, which leaves this
    /// loop's connections unserved.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.backlog.is_empty() {
                self.until_next_tick()
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(%err, event_loop = self.index, "poll failed; the loop stops");
                return Err(err);
            }
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    LISTENER => self.accept(),
                    Token(slot) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(slot);
                        }
                        if event.is_writable() {
                            self.mark_dirty(slot);
                        }
                    }
                }
            }
            for slot in std::mem::take(&mut self.backlog) {
                self.on_readable(slot);
            }
            if woken {
                self.on_mailbox();
            }
            self.on_tick();
            self.flush_outbox();
            self.flush_dirty();
            self.publish_counters();
            self.drain_step();
            if let Some(drain) = &self.drain
                && (self.conns.is_empty() || drain.is_over(Instant::now()))
            {
                let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
                slots.into_iter().for_each(|slot| self.close_now(slot));
                self.publish_counters();
                tracing::info!(event_loop = self.index, "drained");
                return Ok(());
            }
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_millis() / TICK.as_millis()).unwrap_or(u32::MAX)
    }

    fn until_next_tick(&self) -> Duration {
        let elapsed = self.started.elapsed().as_millis() % TICK.as_millis();
        TICK.saturating_sub(Duration::from_millis(u64::try_from(elapsed).unwrap_or(0)))
    }

    // ---- accepting ------------------------------------------------------------------------

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.add(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // Typically out of file descriptors: the connection waits in the
                    // backlog and is retried on the next tick.
                    if !self.accept_pending {
                        tracing::warn!(%err, event_loop = self.index, "accept failed; retrying each tick");
                    }
                    self.accept_pending = true;
                    return;
                }
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream) {
        // Frames are written whole; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let limits = &self.shared.limits;
        if limits.max_connections > 0
            && self.shared.metrics.connections.get()
                >= i64::try_from(limits.max_connections).unwrap_or(i64::MAX)
        {
            // Told why before anything is read, so the client goes to another
            // node; the frame fits any fresh socket's send buffer, and a client
            // that misses it sees the close and reconnects all the same.
            // (A TLS client cannot read it before a handshake: it only sees the close.)
            self.shared.metrics.kick(KickReason::NodeFull);
            if self.shared.client_tls.is_none() {
                let _ = stream.write(&frames::kick(KickReason::NodeFull, limits.max_frame_len));
            }
            return;
        }
        let tls = match self.shared.client_tls.as_ref().map(ClientTls::accept) {
            None => None,
            Some(Ok(tls)) => Some(tls),
            Some(Err(err)) => {
                tracing::warn!(%err, "starting a client TLS session failed");
                return;
            }
        };
        let session = Session::new(self.now(), &limits.rules);
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        // The table packs a slot into 24 bits.
        if slot >= MAX_SLOTS {
            return;
        }
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%err, "registering a connection failed");
            return;
        }
        let id = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        self.next_due = self.next_due.min(session.deadline);
        entry.insert(match tls {
            Some(tls) => Conn::with_tls(stream, id, session, tls),
            None => Conn::new(stream, id, session),
        });
        self.shared.metrics.connections.inc();
    }

    // ---- reading --------------------------------------------------------------------------

    fn on_readable(&mut self, slot: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if conn.session.flow(&self.shared.limits.rules) != Flow::Continue {
                return;
            }
            // A connection with a partial frame reads into its own buffer; all
            // others borrow the loop's, and keep nothing once it is decoded.
            let own = conn.has_input();
            let mut buf = if own {
                conn.take_input()
            } else {
                std::mem::take(&mut self.scratch)
            };
            let start = buf.len();
            buf.resize(start + READ_CHUNK, 0);
            let outcome = match conn.read(&mut buf[start..]) {
                Ok(0) => Read::Eof,
                Ok(n) => Read::Got(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Read::WouldBlock,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => Read::Got(0),
                Err(_) => Read::Eof,
            };
            let n = match outcome {
                Read::Got(n) => n,
                _ => 0,
            };
            buf.truncate(start + n);
            self.counters.bytes_in += n as u64;
            let flow = if n > 0 {
                self.decode_frames(slot, &mut buf)
            } else {
                Flow::Continue
            };
            self.restore_input(slot, buf, own);
            match outcome {
                Read::Eof => return self.close_now(slot),
                Read::WouldBlock => return,
                Read::Got(_) if flow != Flow::Continue => return,
                Read::Got(_) => {}
            }
        }
        // Readiness is edge-triggered: what is left raises no new event, so come back to it.
        self.backlog.push(slot);
    }

    /// Gives the undecoded rest of `buf` back: to the connection (copied out of
    /// the shared buffer, at its exact size) or, emptied, to the loop.
    fn restore_input(&mut self, slot: usize, mut buf: BytesMut, own: bool) {
        if own {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.keep_input(buf);
            }
            return;
        }
        if !buf.is_empty()
            && let Some(conn) = self.conns.get_mut(slot)
            && conn.session.state != State::Closing
        {
            conn.keep_input(BytesMut::from(&buf[..]));
        }
        buf.clear();
        self.scratch = buf;
    }

    fn decode_frames(&mut self, slot: usize, buf: &mut BytesMut) -> Flow {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return Flow::Stopped;
            };
            let flow = conn.session.flow(&self.shared.limits.rules);
            if flow != Flow::Continue {
                return flow;
            }
            // Copied out: a body waiting on logic must not pin the loop's read buffer.
            match self.decoder.decode_copied(buf) {
                Ok(Some(frame)) => {
                    self.counters.frames_in += 1;
                    self.on_frame(slot, frame);
                }
                Ok(None) => return Flow::Continue,
                Err(err) => {
                    let now = self.now();
                    if let Some(conn) = self.conns.get_mut(slot) {
                        let action = conn.session.on_decode_error(&err, now);
                        self.apply(slot, action);
                    }
                    return Flow::Stopped;
                }
            }
        }
    }

    /// Starts reading again after replies brought `in_flight` under the cap.
    fn resume(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.has_input() {
            let mut buf = conn.take_input();
            let flow = self.decode_frames(slot, &mut buf);
            self.restore_input(slot, buf, true);
            if flow != Flow::Continue {
                return;
            }
        }
        // Readiness is edge-triggered: what arrived while paused raised no new event.
        self.on_readable(slot);
    }

    // ---- requests -------------------------------------------------------------------------

    fn on_frame(&mut self, slot: usize, frame: Frame) {
        let now = self.now();
        let shared = &*self.shared;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut env = LoopEnv {
            shared,
            stream: &conn.stream,
            conn: ConnRef {
                conn_id: conn.id,
                slot: slot as u32,
                loop_index: self.index,
            },
        };
        let action = conn
            .session
            .on_frame(frame, now, &shared.limits.rules, &mut env);
        self.apply(slot, action);
    }

    /// Carries out what the session decided about a frame.
    fn apply(&mut self, slot: usize, action: Action) {
        let max = self.shared.limits.max_frame_len;
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        match action {
            Action::Nothing => {}
            Action::Pong {
                request_id,
                client_time_ms,
                refresh,
            } => {
                if refresh {
                    let user_id = conn.session.user_id;
                    self.shared
                        .upstream
                        .heartbeat(user_id, &conn.device_id, conn.id);
                }
                let pong = pb::Pong {
                    client_time_ms,
                    server_time_ms: now_ms(),
                };
                self.send(slot, frames::frame(Command::Pong, request_id, &pong, max));
            }
            Action::SendRefused {
                request_id,
                client_msg_id,
                message,
            } => {
                let ack = session::send_refused(client_msg_id, message);
                self.send(slot, frames::frame(Command::SendAck, request_id, &ack, max));
            }
            Action::Upstream {
                request_id,
                request,
            } => {
                let caller = Caller {
                    loop_index: self.index,
                    slot: slot as u32,
                    conn_id: conn.id,
                    request_id,
                    user_id: conn.session.user_id,
                    device_id: conn.device_id.clone(),
                };
                self.shared.upstream.call(caller, request);
            }
            Action::Refuse {
                request_id,
                code,
                message,
            } => {
                self.write_last(slot, frames::error(request_id, code, &message, max));
                self.closing(slot);
            }
            Action::Close => self.closing(slot),
        }
    }

    // ---- the mailbox ----------------------------------------------------------------------

    fn on_mailbox(&mut self) {
        let mut inbox = std::mem::take(&mut self.inbox);
        inbox.extend(self.mailbox.drain());
        for message in inbox.drain(..) {
            match message {
                ToLoop::Reply(reply) => self.on_reply(reply),
                ToLoop::Push(batch) => self.on_push(batch),
                ToLoop::Kick {
                    slot,
                    conn_id,
                    reason,
                } => {
                    let slot = slot as usize;
                    if self.is(slot, conn_id) {
                        self.kick(slot, reason);
                    }
                }
                ToLoop::Drain => self.start_drain(),
            }
        }
        self.inbox = inbox;
    }

    /// True when `slot` holds connection `conn_id` and it is not closing.
    fn is(&self, slot: usize, conn_id: u64) -> bool {
        self.conns
            .get(slot)
            .is_some_and(|c| c.id == conn_id && c.session.state != State::Closing)
    }

    fn on_reply(&mut self, reply: Reply) {
        let Reply {
            slot,
            conn_id,
            frame,
            then,
        } = reply;
        let slot = slot as usize;
        let now = self.now();
        let shared = &*self.shared;
        let conn = match self.conns.get_mut(slot) {
            Some(conn) if conn.id == conn_id => conn,
            _ => {
                // The connection went while its login was upstream: undo the session.
                if let Then::LoggedIn { user_id, device_id } = then {
                    shared.table.forget_replaced(user_id, conn_id);
                    shared.upstream.logout(user_id, &device_id, conn_id);
                }
                return;
            }
        };
        let mut env = LoopEnv {
            shared,
            stream: &conn.stream,
            conn: ConnRef {
                conn_id,
                slot: slot as u32,
                loop_index: self.index,
            },
        };
        let after = conn
            .session
            .on_reply(then, now, &shared.limits.rules, &mut env);
        if let Some(device_id) = after.activated {
            conn.device_id = device_id;
            self.next_due = self.next_due.min(conn.session.deadline);
        }
        if let Some((user_id, device_id)) = after.undo_login {
            shared.upstream.logout(user_id, &device_id, conn_id);
        }
        if let Some(frame) = frame.filter(|f| !f.is_empty()) {
            self.send(slot, frame);
        }
        if let Some(reason) = after.kick {
            return self.kick(slot, reason);
        }
        if after.resume {
            self.resume(slot);
        }
    }

    fn on_push(&mut self, batch: PushBatch) {
        for (frame, slot, conn_tag) in batch.targets {
            let slot = slot as usize;
            let active = self
                .conns
                .get(slot)
                .is_some_and(|c| tag(c.id) == conn_tag && c.session.state == State::Active);
            if let (true, Some((bytes, frames))) = (active, batch.frames.get(frame as usize)) {
                self.send(slot, bytes.clone());
                // `send` counted the run as one frame.
                self.counters.frames_out += u64::from(frames.saturating_sub(1));
            }
        }
        if let Some(received) = batch.received {
            self.pushes_received.push(received);
        }
    }

    // ---- writing --------------------------------------------------------------------------

    /// Sends `frame` on the connection unless it is closing.
    fn send(&mut self, slot: usize, frame: Bytes) {
        if self
            .conns
            .get(slot)
            .is_some_and(|c| c.session.state != State::Closing)
        {
            self.write_last(slot, frame);
        }
    }

    /// Sends `frame` even on a closing connection: its last (an ERROR or a KICK).
    fn write_last(&mut self, slot: usize, frame: Bytes) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Ok(index) = u32::try_from(self.outbox.len()) else {
            return;
        };
        if conn.out_last == NO_FRAME {
            self.staged.push(slot);
        }
        self.outbox.push(Outgoing {
            frame,
            prev: conn.out_last,
        });
        conn.out_last = index;
        self.counters.frames_out += 1;
    }

    /// Writes the iteration's frames, each connection's in one `writev`
    /// straight from the outbox; only what a socket does not take is queued
    /// on its connection. A connection whose queue passes the cap is kicked
    /// (whose KICK goes out in the next round). The frames of a connection
    /// closed meanwhile are left behind with it.
    fn flush_outbox(&mut self) {
        while !self.staged.is_empty() {
            let mut staged = std::mem::take(&mut self.staged);
            let mut outbox = std::mem::take(&mut self.outbox);
            let mut run = std::mem::take(&mut self.run);
            for slot in staged.drain(..) {
                let Some(conn) = self.conns.get_mut(slot) else {
                    continue;
                };
                let mut at = std::mem::replace(&mut conn.out_last, NO_FRAME);
                while let Some(out) = outbox.get_mut(at as usize) {
                    run.push(std::mem::take(&mut out.frame));
                    at = out.prev;
                }
                if !run.is_empty() {
                    run.reverse();
                    self.write_run(slot, &mut run);
                    run.clear();
                }
            }
            outbox.clear();
            self.run = run;
            if self.outbox.is_empty() {
                self.outbox = outbox;
            }
            if self.staged.is_empty() {
                self.staged = staged;
            }
        }
    }

    /// Writes one connection's frames of the outbox.
    fn write_run(&mut self, slot: usize, frames: &mut [Bytes]) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match conn.write_or_queue(frames) {
            Ok(n) => self.counters.bytes_out += n as u64,
            Err(_) => return self.close_now(slot),
        }
        if conn.queued() > self.shared.limits.max_outbound {
            conn.drop_unsent();
            return self.kick(slot, KickReason::SlowConsumer);
        }
        if conn.queued() > 0 || conn.session.state == State::Closing {
            // The rest waits for the socket (edge-triggered: flushed on its
            // writable event); a closing connection closes once all is out.
            self.mark_dirty(slot);
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            conn.dirty = false;
            match conn.flush() {
                Ok(n) => {
                    self.counters.bytes_out += n as u64;
                    if conn.session.state == State::Closing && conn.queued() == 0 {
                        self.close_now(slot);
                    }
                }
                Err(_) => self.close_now(slot),
            }
        }
        self.dirty = dirty;
        for received in self.pushes_received.drain(..) {
            self.shared
                .metrics
                .push_latency
                .observe(received.elapsed().as_secs_f64());
        }
    }

    // ---- closing --------------------------------------------------------------------------

    /// Tells the client why, then closes once that is written.
    fn kick(&mut self, slot: usize, reason: KickReason) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.session.state == State::Closing {
            return;
        }
        conn.session.close(now);
        self.shared.metrics.kick(reason);
        self.write_last(slot, frames::kick(reason, self.shared.limits.max_frame_len));
        self.closing(slot);
    }

    /// Files a closing connection's linger and flushes it: it closes when its
    /// queue is written or its linger is over.
    fn closing(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get(slot) {
            self.next_due = self.next_due.min(conn.session.deadline);
        }
        self.mark_dirty(slot);
    }

    /// Closes at once: forgets the connection here, in the table and upstream.
    fn close_now(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.try_remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let user_id = conn.session.user_id;
        if user_id != 0 {
            self.shared.table.remove(user_id, conn.id);
            self.shared
                .upstream
                .logout(user_id, &conn.device_id, conn.id);
        }
        self.shared.metrics.connections.dec();
    }

    fn start_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        let limits = &self.shared.limits;
        self.drain = Some(Drain::new(
            slots,
            Instant::now(),
            limits.drain_spread,
            limits.drain_timeout,
        ));
        self.drain_step();
    }

    /// Tells the connections whose turn has come to reconnect elsewhere.
    fn drain_step(&mut self) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        // No connection is accepted once draining, so a slot still names the
        // connection it named when the drain began, or is empty.
        for slot in drain.due(Instant::now()) {
            if self.conns.contains(slot) {
                self.kick(slot, KickReason::Reconnect);
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now();
        if now <= self.ticked {
            return;
        }
        self.ticked = now;
        if now >= self.next_due {
            self.sweep(now);
        }
        if self.accept_pending {
            self.accept();
        }
    }

    /// Acts on every deadline that came due, and finds the next one.
    ///
    /// There is no timer per connection: a deadline lives in its session and
    /// moves later with every frame without anything else to update, and the
    /// loop only keeps the earliest deadline it knows of. Whatever moves a
    /// deadline earlier (a new connection, a login, a close's linger) lowers
    /// that mark too. When the mark comes due, one pass over the slab acts on
    /// what is due and sets the mark to the earliest deadline left. Idle
    /// connections that ping well within their deadline make that a pass
    /// every tens of seconds, and they cost no byte beyond their record.
    fn sweep(&mut self, now: u32) {
        let mut due = std::mem::take(&mut self.due);
        let mut next = u32::MAX;
        for (slot, conn) in &self.conns {
            let deadline = conn.session.deadline;
            if deadline <= now {
                due.push(slot);
            } else {
                next = next.min(deadline);
            }
        }
        self.next_due = next;
        for slot in due.drain(..) {
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            match conn.session.on_deadline(now) {
                Due::Later(at) => self.next_due = self.next_due.min(at),
                Due::Kick(reason) => self.kick(slot, reason),
                Due::Close => self.close_now(slot),
            }
        }
        self.due = due;
    }

    fn publish_counters(&mut self) {
        let c = std::mem::take(&mut self.counters);
        let m = &self.shared.metrics;
        if c.frames_in > 0 {
            m.frames_in.inc_by(c.frames_in);
        }
        if c.frames_out > 0 {
            m.frames_out.inc_by(c.frames_out);
        }
        if c.bytes_in > 0 {
            m.bytes_in.inc_by(c.bytes_in);
        }
        if c.bytes_out > 0 {
            m.bytes_out.inc_by(c.bytes_out);
        }
    }
}

/// The node as a session sees it, for one connection.
struct LoopEnv<'a> {
    shared: &'a Shared,
    stream: &'a TcpStream,
    conn: ConnRef,
}

impl Env for LoopEnv<'_> {
    fn take_user_send(&mut self, user_id: u64, now: u32) -> bool {
        let rate = &self.shared.limits.rules.user_send_rate;
        self.shared.table.take_send(user_id, rate, now)
    }

    fn login_allowed(&mut self, now: u32) -> bool {
        self.stream
            .peer_addr()
            .map_or(true, |peer| self.shared.login_guard.allows(peer.ip(), now))
    }

    fn login_failed(&mut self, now: u32) {
        if let Ok(peer) = self.stream.peer_addr() {
            self.shared.login_guard.failed(peer.ip(), now);
        }
    }

    fn add_to_table(&mut self, user_id: u64) -> bool {
        self.shared.table.insert(user_id, self.conn)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
