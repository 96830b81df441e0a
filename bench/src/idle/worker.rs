//! The `idle-worker` process: opens its share of the connections at its
//! share of the rate, logs each in, holds them with PINGs, and closes them
//! all when its parent says so (a `close` line or the end of its stdin) or
//! its own deadline passes. It reports on stdout, one JSON [`Event`] a line.
//!
//! Connections are spread over processes because one process may hold only
//! so many sockets (20,000 open files here).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use super::events::{self, Counts, Event, Summary};
use super::wire::{self, Dial, Failure, TlsFlags, Wire};
use fishchat_client::ClientTls;

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Longest a LOGOUT may take to be written at the end.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parameters of one worker, set by the parent.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// File of `<index> <token>` lines: this worker's connections.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Where connection `i` goes and comes from.
    #[command(flatten)]
    pub dial: Dial,
    /// TLS to the access nodes.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Connections opened per second by this worker.
    #[arg(long)]
    pub rate: f64,
    /// Seconds between PINGs on a held connection.
    #[arg(long)]
    pub ping_interval: f64,
    /// Seconds a connection may take to connect and log in.
    #[arg(long)]
    pub login_timeout: f64,
    /// The device id every connection logs in with.
    #[arg(long)]
    pub device_id: String,
    /// Seconds after which the worker closes everything whatever its parent says.
    #[arg(long)]
    pub deadline: f64,
}

/// What one connection tells the worker's tally.
#[derive(Debug)]
enum Note {
    Started(Instant),
    LoggedIn(Duration),
    Failed(Failure),
    Dropped(Failure),
    Ping,
    Pong,
    Held,
}

/// What every connection task shares.
#[derive(Debug)]
struct Plan {
    dial: Dial,
    tls: Option<ClientTls>,
    ping_interval: Duration,
    login_timeout: Duration,
    device_id: String,
}

/// Runs the worker to the end.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let tokens = read_tokens(&args)?;
    if args.dial.access.is_empty() && args.dial.gateway.is_none() {
        bail!("give --access or --gateway");
    }
    let plan = Arc::new(Plan {
        dial: args.dial.clone(),
        tls: args.tls.load()?,
        ping_interval: secs(args.ping_interval, "--ping-interval")?,
        login_timeout: secs(args.login_timeout, "--login-timeout")?,
        device_id: args.device_id.clone(),
    });
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let deadline = Instant::now() + secs(args.deadline, "--deadline")?;
    let total = tokens.len() as u64;

    let (close_tx, close) = watch::channel(false);
    let (notes_tx, notes) = mpsc::unbounded_channel();
    tokio::spawn(watch_parent(close_tx.clone()));
    tokio::spawn(async move {
        sleep_until(deadline).await;
        let _ = close_tx.send(true);
    });
    tokio::spawn(open_all(tokens, plan, period, notes_tx, close));
    tally(notes, total).await
}

fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value}"))
}

fn read_tokens(args: &Args) -> anyhow::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("read {}", args.tokens.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (index, token) = line
                .split_once(' ')
                .with_context(|| format!("bad line in {}", args.tokens.display()))?;
            Ok((index.parse().context("bad index")?, token.to_owned()))
        })
        .collect()
}

/// Closes everything when the parent writes `close` or goes away.
async fn watch_parent(close: watch::Sender<bool>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() != "close" => {}
            _ => break,
        }
    }
    let _ = close.send(true);
}

/// Starts one connection every `period` until all are started or the run closes.
async fn open_all(
    tokens: Vec<(usize, String)>,
    plan: Arc<Plan>,
    period: Duration,
    notes: mpsc::UnboundedSender<Note>,
    close: watch::Receiver<bool>,
) {
    let start = Instant::now();
    for (k, (index, token)) in tokens.into_iter().enumerate() {
        if *close.borrow() {
            break;
        }
        sleep_until(start + period.mul_f64(k as f64)).await;
        tokio::spawn(connection(
            plan.clone(),
            index,
            token,
            notes.clone(),
            close.clone(),
        ));
    }
}

/// One connection's life: connect, log in, hold with PINGs, log out.
async fn connection(
    plan: Arc<Plan>,
    index: usize,
    token: String,
    notes: mpsc::UnboundedSender<Note>,
    mut close: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let _ = notes.send(Note::Started(started));
    let mut wire = match timeout(plan.login_timeout, log_in(&plan, index, token)).await {
        Ok(Ok(wire)) => wire,
        Ok(Err(failure)) => {
            let _ = notes.send(Note::Failed(failure));
            return;
        }
        Err(_) => {
            let _ = notes.send(Note::Failed(Failure("login timeout".into())));
            return;
        }
    };
    let _ = notes.send(Note::LoggedIn(started.elapsed()));

    // Spread the pings over the interval rather than in the flood's rhythm.
    let offset = plan.ping_interval.mul_f64((index % 1000) as f64 / 1000.0);
    let mut next_ping = Instant::now() + offset;
    let mut request_id: u32 = 1;
    loop {
        tokio::select! {
            biased;
            () = closed(&mut close) => break,
            () = sleep_until(next_ping) => {
                request_id = request_id.wrapping_add(1).max(2);
                let ping = pb::Ping { client_time_ms: 0 };
                if let Err(failure) = wire.send(Command::Ping, request_id, &ping).await {
                    let _ = notes.send(Note::Dropped(failure));
                    return;
                }
                let _ = notes.send(Note::Ping);
                next_ping += plan.ping_interval;
            }
            frame = wire.recv() => match frame {
                Ok((_, Body::Pong(_))) => { let _ = notes.send(Note::Pong); }
                Ok((_, Body::Kick(kick))) => {
                    let _ = notes.send(Note::Dropped(Failure(format!("kicked: {}", wire::kick_name(kick.reason)))));
                    return;
                }
                Ok(_) => {}
                Err(failure) => {
                    let _ = notes.send(Note::Dropped(failure));
                    return;
                }
            },
        }
    }
    let _ = notes.send(Note::Held);
    let _ = timeout(LOGOUT_TIMEOUT, wire.logout()).await;
}

/// Resolves once the run closes (or its closer is gone).
async fn closed(close: &mut watch::Receiver<bool>) {
    let _ = close.wait_for(|closed| *closed).await;
}

/// Connects (through the gateway when asked) and logs in with `token`.
async fn log_in(plan: &Plan, index: usize, token: String) -> Result<Wire, Failure> {
    let mut wire = plan.dial.connect_with(index, plan.tls.as_ref()).await?;
    let login = pb::LoginRequest {
        token,
        device_id: plan.device_id.clone(),
    };
    wire.send(Command::Login, 1, &login).await?;
    loop {
        match wire.recv().await? {
            (1, Body::LoginReply(_)) => return Ok(wire),
            (_, Body::Error(err)) => {
                return Err(Failure(format!("refused: {}", wire::code_name(err.code))));
            }
            (_, Body::Kick(kick)) => {
                return Err(Failure(format!("kicked: {}", wire::kick_name(kick.reason))));
            }
            _ => {}
        }
    }
}

/// Counts what the connections report and prints progress, then the summary
/// once every connection is gone.
async fn tally(mut notes: mpsc::UnboundedReceiver<Note>, total: u64) -> anyhow::Result<()> {
    let mut counts = Counts::default();
    let mut summary = Summary::default();
    let mut latency = events::latency_histogram()?;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_start: Option<Instant> = None;
    let mut last_answer = Instant::now();
    let mut answered = 0u64;
    let mut ramped = total == 0;
    if ramped {
        emit(&Event::Ramped {
            counts,
            ramp_secs: 0.0,
        })?;
    }
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    let mut reported = (u64::MAX, 0, 0);
    loop {
        tokio::select! {
            note = notes.recv() => {
                let Some(note) = note else { break };
                match note {
                    Note::Started(at) => {
                        counts.started += 1;
                        first_start.get_or_insert(at);
                    }
                    Note::LoggedIn(took) => {
                        counts.logged_in += 1;
                        answered += 1;
                        last_answer = Instant::now();
                        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                        let _ = latency.record(micros.clamp(1, events::MAX_LATENCY_US));
                    }
                    Note::Failed(Failure(kind)) => {
                        counts.failed += 1;
                        answered += 1;
                        last_answer = Instant::now();
                        *failures.entry(kind).or_default() += 1;
                    }
                    Note::Dropped(Failure(kind)) => {
                        counts.logged_in = counts.logged_in.saturating_sub(1);
                        *failures.entry(format!("while holding: {kind}")).or_default() += 1;
                    }
                    Note::Ping => summary.pings += 1,
                    Note::Pong => summary.pongs += 1,
                    Note::Held => summary.held += 1,
                }
                if !ramped && answered == total {
                    ramped = true;
                    let ramp_secs = first_start.map_or(0.0, |s| last_answer.duration_since(s).as_secs_f64());
                    emit(&Event::Ramped { counts, ramp_secs })?;
                }
            }
            _ = every.tick() => {
                let now = (counts.started, counts.logged_in, counts.failed);
                if now != reported {
                    reported = now;
                    emit(&Event::Progress(counts))?;
                }
            }
        }
    }
    summary.latency_us = events::buckets(&latency);
    summary.failures = failures;
    emit(&Event::Done(summary))
}

fn emit(event: &Event) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::BytesMut;
    use fishchat_codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in access node: answers LOGIN with `good` tokens, PONGs PINGs.
    async fn fake_access(good: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let decoder = FrameDecoder::default();
                    let mut input = BytesMut::new();
                    loop {
                        while let Ok(Some(frame)) = decoder.decode(&mut input) {
                            let rid = frame.header.request_id;
                            let mut out = BytesMut::new();
                            let _ = match frame.body() {
                                Ok(Body::Login(l)) if l.token == good => {
                                    let reply = pb::LoginReply {
                                        user_id: 1,
                                        ..Default::default()
                                    };
                                    encode_frame(
                                        Command::LoginReply,
                                        rid,
                                        &reply,
                                        DEFAULT_MAX_FRAME_LEN,
                                        &mut out,
                                    )
                                }
                                Ok(Body::Login(_)) => {
                                    let err = pb::Error {
                                        code: pb::ErrorCode::BadToken as i32,
                                        message: String::new(),
                                    };
                                    encode_frame(
                                        Command::Error,
                                        rid,
                                        &err,
                                        DEFAULT_MAX_FRAME_LEN,
                                        &mut out,
                                    )
                                }
                                Ok(Body::Ping(_)) => encode_frame(
                                    Command::Pong,
                                    rid,
                                    &pb::Pong::default(),
                                    DEFAULT_MAX_FRAME_LEN,
                                    &mut out,
                                ),
                                _ => return,
                            };
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        match stream.read_buf(&mut input).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        addr
    }

    fn plan(access: SocketAddr) -> Arc<Plan> {
        Arc::new(Plan {
            dial: Dial {
                access: vec![access],
                gateway: None,
                source_ips: vec!["127.0.0.2".parse().expect("ip")],
            },
            tls: None,
            ping_interval: Duration::from_millis(20),
            login_timeout: Duration::from_secs(5),
            device_id: "d".into(),
        })
    }

    /// Notes until the connection's task ends (bounded by a deadline).
    async fn notes_of(mut rx: mpsc::UnboundedReceiver<Note>) -> Vec<Note> {
        let mut notes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(Some(note)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            notes.push(note);
        }
        notes
    }

    #[tokio::test]
    async fn a_connection_logs_in_pings_and_logs_out_when_closed() {
        let access = fake_access("good").await;
        let (close_tx, close) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(connection(plan(access), 0, "good".into(), tx, close));
        let mut notes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Hold until a few PONGs came back, then close.
        while notes.iter().filter(|n| matches!(n, Note::Pong)).count() < 3 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(note)) => notes.push(note),
                other => panic!("no third PONG: {other:?} after {notes:?}"),
            }
        }
        close_tx.send(true).expect("close");
        notes.extend(notes_of(rx).await);
        assert!(matches!(notes[0], Note::Started(_)));
        assert!(matches!(notes[1], Note::LoggedIn(_)), "{notes:?}");
        assert!(notes.iter().any(|n| matches!(n, Note::Ping)));
        assert!(matches!(notes.last(), Some(Note::Held)), "{notes:?}");
    }

    #[tokio::test]
    async fn a_refused_login_is_a_failure_named_by_its_code() {
        let access = fake_access("good").await;
        let (_close_tx, close) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(connection(plan(access), 0, "bad".into(), tx, close));
        let notes = notes_of(rx).await;
        assert!(
            matches!(&notes[..], [Note::Started(_), Note::Failed(Failure(kind))] if kind == "refused: BAD_TOKEN"),
            "{notes:?}"
        );
    }

    #[tokio::test]
    async fn a_dead_address_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let (_close_tx, close) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(connection(plan(addr), 0, "good".into(), tx, close));
        let notes = notes_of(rx).await;
        assert!(
            matches!(&notes[..], [Note::Started(_), Note::Failed(Failure(kind))] if kind == "connect: ConnectionRefused"),
            "{notes:?}"
        );
    }
}
