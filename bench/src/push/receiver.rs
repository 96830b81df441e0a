//! The receiving side: a few threads, each a `mio::Poll` over its share of
//! the connections, so that counting a million frames a second costs the
//! shared cores as little as possible.
//!
//! A thread first connects and logs its connections in, a chunk at a time
//! (so the server's accept backlog never overflows), then reads PUSH frames
//! until told to stop: it counts frames and messages, and takes each
//! message's latency from the send time the driver wrote into its body.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use fishchat_codec::pb::{self, Command};
use fishchat_codec::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LENGTH_LEN, encode_frame};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use prost::Message as _;
use socket2::{Domain, Socket, Type};

use super::clock;

/// Connections opened before waiting for their logins.
const LOGIN_CHUNK: usize = 256;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Longest wait in `poll`, so stop flags are seen promptly.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

/// One connection to open.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's client address.
    pub server: SocketAddr,
    /// The source address to bind, if any.
    pub source: Option<IpAddr>,
    /// The LOGIN token.
    pub token: String,
}

/// Counters every receiver thread adds to and the driver reads.
#[derive(Debug, Default)]
pub struct Shared {
    /// PUSH frames received.
    pub frames: AtomicU64,
    /// Latencies are recorded only while this is set.
    pub measuring: AtomicBool,
    /// Close everything and return.
    pub stop: AtomicBool,
}

/// How the login phase of one thread went.
#[derive(Debug, Default)]
pub struct Logins {
    /// The user ids the server confirmed, one per logged-in connection.
    pub user_ids: Vec<u64>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
}

/// What one thread saw while reading pushes.
#[derive(Debug)]
pub struct Received {
    /// PUSH frames.
    pub frames: u64,
    /// Messages in them.
    pub messages: u64,
    /// Send-to-receive latency of messages received while measuring, µs.
    pub latency_us: Histogram<u64>,
    /// Connections the server closed or kicked during the run.
    pub lost_connections: u64,
    /// Frames that were neither PUSH nor expected (ERROR, KICK, ...), by command.
    pub unexpected: BTreeMap<String, u64>,
}

/// One connection.
struct Conn {
    stream: TcpStream,
    /// Bytes of a partial frame.
    partial: BytesMut,
    answered: bool,
}

/// One receiver thread's state.
struct Receiver {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    scratch: Vec<u8>,
    logins: Logins,
    received: Received,
    shared: Arc<Shared>,
}

/// Connects and logs in `targets`, reports the logins on `ready`, then reads
/// pushes until `shared.stop` is set or `deadline` passes.
pub fn run(
    targets: &[Target],
    login_timeout: Duration,
    deadline: Instant,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Logins>,
) -> anyhow::Result<Received> {
    let mut receiver = Receiver {
        poll: Poll::new().context("mio poll")?,
        conns: Vec::with_capacity(targets.len()),
        scratch: vec![0; READ_CHUNK],
        logins: Logins::default(),
        received: Received {
            frames: 0,
            messages: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")?,
            lost_connections: 0,
            unexpected: BTreeMap::new(),
        },
        shared,
    };
    let mut events = Events::with_capacity(1024);
    for chunk in targets.chunks(LOGIN_CHUNK) {
        let first = receiver.conns.len();
        for target in chunk {
            let token = Token(receiver.conns.len());
            match open(target, token, &receiver.poll) {
                Ok(stream) => receiver.conns.push(Some(Conn {
                    stream,
                    partial: BytesMut::new(),
                    answered: false,
                })),
                Err(err) => {
                    receiver.conns.push(None);
                    *receiver
                        .logins
                        .failures
                        .entry(format!("connect: {:?}", err.kind()))
                        .or_default() += 1;
                }
            }
        }
        let until = Instant::now() + login_timeout;
        while Instant::now() < until.min(deadline)
            && receiver.conns[first..]
                .iter()
                .any(|c| c.as_ref().is_some_and(|c| !c.answered))
        {
            receiver.poll_once(&mut events)?;
        }
        for slot in &mut receiver.conns[first..] {
            if slot.as_ref().is_some_and(|c| !c.answered) {
                *slot = None;
                *receiver
                    .logins
                    .failures
                    .entry("login timeout".into())
                    .or_default() += 1;
            }
        }
    }
    let _ = ready.send(std::mem::take(&mut receiver.logins));
    while !receiver.shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        receiver.poll_once(&mut events)?;
    }
    Ok(receiver.received)
}

/// Opens a blocking socket (from `source`), writes LOGIN, then hands it to mio.
fn open(target: &Target, token: Token, poll: &Poll) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target.server), Type::STREAM, None)?;
    if let Some(ip) = target.source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect(&target.server.into())?;
    socket.set_tcp_nodelay(true)?;
    let mut std: std::net::TcpStream = socket.into();
    let login = pb::LoginRequest {
        token: target.token.clone(),
        device_id: "bench-push".into(),
    };
    let mut frame = BytesMut::new();
    encode_frame(Command::Login, 1, &login, DEFAULT_MAX_FRAME_LEN, &mut frame)
        .map_err(io::Error::other)?;
    std.write_all(&frame)?;
    std.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std);
    poll.registry()
        .register(&mut stream, token, Interest::READABLE)?;
    Ok(stream)
}

impl Receiver {
    /// One `poll` and the reads it calls for; publishes the frame count.
    fn poll_once(&mut self, events: &mut Events) -> anyhow::Result<()> {
        if let Err(err) = self.poll.poll(events, Some(POLL_TIMEOUT)) {
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err).context("mio poll");
        }
        let before = self.received.frames;
        let measuring = self.shared.measuring.load(Ordering::Relaxed);
        for event in events.iter() {
            self.on_readable(event.token().0, measuring);
        }
        let new = self.received.frames - before;
        if new > 0 {
            self.shared.frames.fetch_add(new, Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_readable(&mut self, index: usize, measuring: bool) {
        loop {
            let Some(Some(conn)) = self.conns.get_mut(index) else {
                return;
            };
            let n = match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.lose(index),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.lose(index),
            };
            let now_us = clock::now_us();
            let mut sink = Sink {
                logins: &mut self.logins,
                received: &mut self.received,
                answered: &mut conn.answered,
                now_us,
                measuring,
                close: false,
            };
            let ok = if conn.partial.is_empty() {
                let used = frames(&self.scratch[..n], &mut sink);
                if let Some(used) = used {
                    conn.partial.extend_from_slice(&self.scratch[used..n]);
                }
                used.is_some()
            } else {
                conn.partial.extend_from_slice(&self.scratch[..n]);
                let used = frames(&conn.partial, &mut sink);
                if let Some(used) = used {
                    let _ = conn.partial.split_to(used);
                }
                used.is_some()
            };
            if !ok || sink.close {
                return self.lose(index);
            }
            // Linux raises a new edge for every arrival, so a short read means
            // the socket is empty: skip the read that would say WouldBlock.
            if n < self.scratch.len() {
                return;
            }
        }
    }

    /// Drops a connection the server closed (or that broke the framing).
    fn lose(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index)
            && let Some(conn) = slot.take()
        {
            if conn.answered {
                self.received.lost_connections += 1;
            } else {
                *self
                    .logins
                    .failures
                    .entry("closed before the login reply".into())
                    .or_default() += 1;
            }
        }
    }
}

/// Where decoded frames go.
struct Sink<'a> {
    logins: &'a mut Logins,
    received: &'a mut Received,
    answered: &'a mut bool,
    now_us: u64,
    measuring: bool,
    close: bool,
}

impl Sink<'_> {
    fn frame(&mut self, command: u16, body: &[u8]) {
        let command = Command::try_from(i32::from(command)).unwrap_or(Command::Unspecified);
        match command {
            Command::Push => self.push(body),
            Command::LoginReply if !*self.answered => {
                *self.answered = true;
                match pb::LoginReply::decode(body) {
                    Ok(reply) => self.logins.user_ids.push(reply.user_id),
                    Err(_) => {
                        self.failure("bad LOGIN_REPLY".into());
                        self.close = true;
                    }
                }
            }
            Command::Error if !*self.answered => {
                let code = pb::Error::decode(body).map_or(0, |e| e.code);
                let name = pb::ErrorCode::try_from(code)
                    .map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned());
                self.failure(format!("refused: {name}"));
                self.close = true;
            }
            other => {
                *self
                    .received
                    .unexpected
                    .entry(other.as_str_name().to_owned())
                    .or_default() += 1;
                if other == Command::Kick {
                    self.close = true;
                }
            }
        }
    }

    fn failure(&mut self, kind: String) {
        *self.logins.failures.entry(kind).or_default() += 1;
    }

    fn push(&mut self, body: &[u8]) {
        self.received.frames += 1;
        let Ok(push) = pb::Push::decode(body) else {
            *self
                .received
                .unexpected
                .entry("undecodable PUSH".into())
                .or_default() += 1;
            return;
        };
        self.received.messages += push.messages.len() as u64;
        if !self.measuring {
            return;
        }
        for message in &push.messages {
            if let Some(sent) = clock::sent_us(&message.body) {
                let _ = self
                    .received
                    .latency_us
                    .record(self.now_us.saturating_sub(sent).max(1));
            }
        }
    }
}

/// Feeds every whole frame at the front of `buf` to `sink`; returns the bytes
/// used, or None when the stream is not well framed.
fn frames(buf: &[u8], sink: &mut Sink<'_>) -> Option<usize> {
    let mut at = 0;
    while let Some(prefix) = buf.get(at..at + LENGTH_LEN) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len < HEADER_LEN || len > DEFAULT_MAX_FRAME_LEN as usize {
            return None;
        }
        let Some(frame) = buf.get(at + LENGTH_LEN..at + LENGTH_LEN + len) else {
            break;
        };
        sink.frame(
            u16::from_be_bytes([frame[2], frame[3]]),
            &frame[HEADER_LEN..],
        );
        at += LENGTH_LEN + len;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Received {
        Received {
            frames: 0,
            messages: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).unwrap(),
            lost_connections: 0,
            unexpected: BTreeMap::new(),
        }
    }

    #[test]
    fn a_login_reply_then_stamped_pushes_split_anywhere_are_all_counted() {
        let mut wire = BytesMut::new();
        let reply = pb::LoginReply {
            user_id: 9,
            ..pb::LoginReply::default()
        };
        encode_frame(
            Command::LoginReply,
            1,
            &reply,
            DEFAULT_MAX_FRAME_LEN,
            &mut wire,
        )
        .unwrap();
        for at in [100, 200] {
            let push = pb::Push {
                messages: vec![pb::StoredMessage {
                    body: clock::stamped(at, 16),
                    ..pb::StoredMessage::default()
                }],
            };
            encode_frame(Command::Push, 0, &push, DEFAULT_MAX_FRAME_LEN, &mut wire).unwrap();
        }
        let (mut logins, mut received, mut answered) = (Logins::default(), received(), false);
        let mut sink = Sink {
            logins: &mut logins,
            received: &mut received,
            answered: &mut answered,
            now_us: 1_000,
            measuring: true,
            close: false,
        };
        // A cut inside the second push: the first call takes what is whole.
        let cut = wire.len() - 5;
        let used = frames(&wire[..cut], &mut sink).unwrap();
        let rest = frames(&wire[used..], &mut sink).unwrap();
        assert_eq!(used + rest, wire.len());
        assert!(!sink.close);
        assert_eq!(logins.user_ids, [9]);
        assert_eq!((received.frames, received.messages), (2, 2));
        assert_eq!(received.latency_us.len(), 2);
        assert_eq!(received.latency_us.max(), 900);
    }

    #[test]
    fn a_bad_length_is_not_a_frame() {
        let (mut logins, mut received, mut answered) = (Logins::default(), received(), false);
        let mut sink = Sink {
            logins: &mut logins,
            received: &mut received,
            answered: &mut answered,
            now_us: 0,
            measuring: false,
            close: false,
        };
        assert_eq!(frames(&[0, 0, 0, 1, 0, 0], &mut sink), None);
    }
}
