//! `fishchat send`, `listen` and `chat` against a small fake access node and
//! a small fake register HTTP API: their output, what they ask the servers,
//! and their exit statuses.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fishchat_client::{Connection, Conversation, ErrorCode, StoredMessage};
use fishchat_codec::Body;
use fishchat_codec::pb::{self, stored_message};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake access node behaves.
#[derive(Clone, Default)]
struct Script {
    /// Refuse every send with this code.
    refuse: Option<ErrorCode>,
    /// The summaries of the first page of every listing.
    summaries: Vec<pb::ConversationSummary>,
    /// Pushed right after each listing is answered.
    push: Vec<StoredMessage>,
    /// The answer to every HISTORY request.
    history: Vec<StoredMessage>,
}

/// What the fake access node saw.
#[derive(Default)]
struct Seen {
    device_ids: Vec<String>,
    /// The `known` list of every SYNC_CONVERSATIONS: (conversation, seq).
    listings: Vec<Vec<(Conversation, u64)>>,
    sends: Vec<pb::SendToUser>,
    group_sends: Vec<pb::SendToGroup>,
    reads: Vec<pb::ReadRequest>,
}

/// Writes a scripted SEND_ACK for a send with `client_msg_id`.
fn ack(script: &Script, client_msg_id: String) -> Body {
    let error = script.refuse.map(|code| pb::Error {
        code: code as i32,
        message: "refused by the script".into(),
    });
    pb::SendAck {
        client_msg_id,
        server_msg_id: if error.is_some() { 0 } else { 501 },
        error,
        ..Default::default()
    }
    .into()
}

fn known(request: &pb::SyncConversationsRequest) -> Vec<(Conversation, u64)> {
    request
        .known
        .iter()
        .filter_map(|k| {
            let conversation = Conversation::try_from(k.conversation.as_ref()?).ok()?;
            Some((conversation, k.seq))
        })
        .collect()
}

/// Serves connections until the test ends: login as user 1 (alice), the scripted
/// listing and push, empty syncs, scripted sends, history and reads.
async fn fake_access(script: Script) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, seen) = (script.clone(), seen.clone());
            tokio::spawn(async move {
                let mut conn = Connection::new(stream);
                while let Ok((id, body)) = conn.recv().await {
                    let mut push = false;
                    let reply: Option<Body> = match body {
                        Body::Login(login) => {
                            seen.lock().expect("lock").device_ids.push(login.device_id);
                            let reply = pb::LoginReply {
                                user_id: 1,
                                ..Default::default()
                            };
                            Some(reply.into())
                        }
                        Body::SyncConversations(request) => {
                            seen.lock().expect("lock").listings.push(known(&request));
                            push = !script.push.is_empty();
                            let reply = pb::SyncConversationsReply {
                                conversations: script.summaries.clone(),
                                has_more: false,
                            };
                            Some(reply.into())
                        }
                        Body::Sync(_) => Some(pb::SyncReply::default().into()),
                        Body::History(_) => {
                            let reply = pb::HistoryReply {
                                messages: script.history.clone(),
                                has_more: true,
                            };
                            Some(reply.into())
                        }
                        Body::Read(read) => {
                            let reply = pb::ReadReply {
                                read_seq: read.seq,
                                unread: 0,
                            };
                            seen.lock().expect("lock").reads.push(read);
                            Some(reply.into())
                        }
                        Body::Ping(_) => Some(pb::Pong::default().into()),
                        Body::SendToUser(send) => {
                            let reply = ack(&script, send.client_msg_id.clone());
                            seen.lock().expect("lock").sends.push(send);
                            Some(reply)
                        }
                        Body::SendToGroup(send) => {
                            let reply = ack(&script, send.client_msg_id.clone());
                            seen.lock().expect("lock").group_sends.push(send);
                            Some(reply)
                        }
                        Body::Logout(_) => return,
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        conn.send(id, &reply).await.expect("reply");
                    }
                    if push {
                        let push = pb::Push {
                            messages: script.push.clone(),
                        };
                        conn.send(0, &push.into()).await.expect("push");
                    }
                }
            });
        }
    });
    (addr, recorded)
}

/// One request to the fake register: (method, path, authorization, body).
type HttpRequest = (String, String, String, String);

/// The fake register's answers: (status, JSON body) per (method, path).
fn register_answer(method: &str, path: &str) -> (u16, Value) {
    let no_user = json!({ "error": "no such user" });
    match (method, path) {
        ("GET", "/users/dave") => (200, json!({ "user_id": 4, "name": "dave" })),
        ("GET", _) if path.starts_with("/users/") => (404, no_user),
        ("POST", "/groups") => (
            201,
            json!({ "group_id": 5, "name": "lobby", "owner_id": 1, "open": true }),
        ),
        ("POST", "/groups/5/join") => (202, json!({ "status": "pending" })),
        ("POST", "/groups/5/leave") => (200, json!({ "changed": true })),
        ("GET", "/groups/5/members") => (
            200,
            json!({ "members": [
                { "user_id": 1, "role": "owner" },
                { "user_id": 2, "role": "member" },
            ] }),
        ),
        _ => (404, json!({ "error": "no such route" })),
    }
}

/// A fake register HTTP API (one request per connection); returns its base URL.
async fn fake_register() -> (String, Arc<Mutex<Vec<HttpRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if let Some(request) = serve_http(stream).await {
                    seen.lock().expect("lock").push(request);
                }
            });
        }
    });
    (url, recorded)
}

/// Reads one HTTP/1.1 request and answers it from [`register_answer`].
async fn serve_http(mut stream: TcpStream) -> Option<HttpRequest> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split_whitespace();
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    let (status, answer) = register_answer(&method, &path);
    let answer = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    let authorization = header("authorization").unwrap_or_default();
    Some((method, path, authorization, body))
}

/// A profile folder with alice (user 1) logged in and bob (user 2) known.
fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    for (name, id) in [("bob", 2), ("alice", 1)] {
        let profile = json!({
            "name": name, "user_id": id, "token": format!("tk-{name}"), "expires_at_ms": 0
        });
        std::fs::write(profiles.join(format!("{name}.json")), profile.to_string())
            .expect("profile");
    }
    std::fs::write(dir.path().join("current"), "alice").expect("current");
    dir
}

/// Where `fishchat` finds the fake servers.
struct Servers<'a> {
    access: &'a str,
    register: &'a str,
}

async fn fishchat(home: &Path, servers: &Servers<'_>, args: &[&str]) -> Output {
    fishchat_with_input(home, servers, args, "").await
}

async fn fishchat_with_input(
    home: &Path,
    servers: &Servers<'_>,
    args: &[&str],
    input: &str,
) -> Output {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fishchat"));
    command
        .arg("--home")
        .arg(home)
        .args(["--access", servers.access, "--register", servers.register])
        .args(["--device", "box"])
        .args(args)
        .env_remove("FISHCHAT_GATEWAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = input.to_owned();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("run fishchat");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("fishchat output")
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("fishchat finished in time")
        .expect("the runner task")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A message from bob (user 2) to group 7.
fn group_message(seq: u64, text: &str) -> StoredMessage {
    StoredMessage {
        seq,
        server_msg_id: 100 + seq,
        from_user_id: 2,
        conversation: Some(stored_message::Conversation::GroupId(7)),
        body: text.as_bytes().to_vec().into(),
        timestamp_ms: 1,
        client_msg_id: format!("c{seq}"),
    }
}

#[tokio::test]
async fn send_prints_the_ack_as_json_and_resolves_names() {
    let (access, seen) = fake_access(Script::default()).await;
    let (register, asked) = fake_register().await;
    let servers = Servers {
        access: &access,
        register: &register,
    };
    let home = home();
    let out = fishchat(home.path(), &servers, &["send", "--to", "bob", "hello bob"]).await;
    assert_success(&out);
    let out = fishchat(home.path(), &servers, &["send", "--to", "dave", "hi dave"]).await;
    assert_success(&out);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["server_msg_id"], 501);
    let seen = seen.lock().unwrap();
    let sent: Vec<_> = seen
        .sends
        .iter()
        .map(|s| (s.to_user_id, String::from_utf8_lossy(&s.body).to_string()))
        .collect();
    assert_eq!(sent, [(2, "hello bob".into()), (4, "hi dave".into())]);
    assert_eq!(
        lines[0]["client_msg_id"],
        seen.sends[1].client_msg_id.as_str()
    );
    assert_eq!(
        seen.device_ids,
        ["box-send", "box-send"],
        "send must not kick the listening device"
    );
    assert!(seen.listings.is_empty(), "a send does not catch up");
    // bob is a profile here; only dave was looked up, as alice.
    let asked = asked.lock().unwrap();
    let lookups: Vec<_> = asked.iter().map(|r| (r.1.as_str(), r.2.as_str())).collect();
    assert_eq!(lookups, [("/users/dave", "Bearer tk-alice")]);
}

#[tokio::test]
async fn a_refused_send_exits_non_zero_with_the_code() {
    let script = Script {
        refuse: Some(ErrorCode::UnknownUser),
        ..Script::default()
    };
    let (access, _seen) = fake_access(script).await;
    let (register, _asked) = fake_register().await;
    let servers = Servers {
        access: &access,
        register: &register,
    };
    let home = home();
    let out = fishchat(home.path(), &servers, &["send", "--to", "99", "anyone?"]).await;
    assert!(!out.status.success());
    assert_eq!(json_lines(&out)[0]["error"], "UNKNOWN_USER");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNKNOWN_USER") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = fishchat(home.path(), &servers, &["send", "--to", "carol", "x"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no user named \"carol\""), "{stderr}");
}

#[tokio::test]
async fn listen_prints_count_messages_and_the_next_run_resumes_after_them() {
    let script = Script {
        push: vec![
            group_message(1, "m1"),
            group_message(2, "m2"),
            group_message(3, "m3"),
        ],
        ..Script::default()
    };
    let (access, seen) = fake_access(script).await;
    let (register, _asked) = fake_register().await;
    let servers = Servers {
        access: &access,
        register: &register,
    };
    let home = home();
    let listen = ["listen", "--count", "2", "--timeout", "20"];
    let out = fishchat(home.path(), &servers, &listen).await;
    assert_success(&out);
    let lines = json_lines(&out);
    let printed: Vec<_> = lines
        .iter()
        .map(|l| (l["conversation"].as_str(), l["seq"].as_u64()))
        .collect();
    assert_eq!(printed, [(Some("g:7"), Some(1)), (Some("g:7"), Some(2))]);
    assert_eq!(
        (lines[0]["group"].as_u64(), lines[0]["text"].as_str()),
        (Some(7), Some("m1"))
    );
    // Only what was printed counts as received: the next run starts after 2.
    let next = ["listen", "--count", "1", "--timeout", "20"];
    let out = fishchat(home.path(), &servers, &next).await;
    assert_success(&out);
    let seqs: Vec<_> = json_lines(&out).iter().map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, [Some(3)]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.listings[0], []);
    assert_eq!(seen.listings[1], [(Conversation::Group(7), 2)]);
}

#[tokio::test]
async fn listen_stops_at_its_timeout() {
    let (access, _seen) = fake_access(Script::default()).await;
    let (register, _asked) = fake_register().await;
    let servers = Servers {
        access: &access,
        register: &register,
    };
    let home = home();
    let out = fishchat(home.path(), &servers, &["listen", "--timeout", "1"]).await;
    assert_success(&out);
    assert!(json_lines(&out).is_empty());
}

#[tokio::test]
async fn chat_lists_opens_pages_back_reads_and_runs_group_commands() {
    let group = pb::ConversationSummary {
        conversation: Some(Conversation::Group(7).into()),
        head_seq: 3,
        read_seq: 1,
        unread: 2,
        messages: vec![
            group_message(1, "m1"),
            group_message(2, "m2"),
            group_message(3, "m3"),
        ],
        has_gap: false,
        first_seq: 1,
    };
    let script = Script {
        summaries: vec![group],
        history: vec![group_message(3, "h3"), group_message(2, "h2")],
        ..Script::default()
    };
    let (access, seen) = fake_access(script).await;
    let (register, asked) = fake_register().await;
    let servers = Servers {
        access: &access,
        register: &register,
    };
    let home = home();
    let input = "/help\n/to bob hi from chat\n/to carol who?\n/to dave hi dave\n\
        hello nobody\n/open #7\nhello group\n/history 2\n/read\n/list\n\
        /create --open lobby\n/join 5\n/members 5\n/leave 5\n/nonsense\n/quit\n";
    let out = fishchat_with_input(home.path(), &servers, &["chat"], input).await;
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "alice (user 1)",
        "[g:7 #3] bob: m3",
        "  g:7  2 unread  (last #3)",
        "/create [--open] NAME",
        "-> bob: sent (message 501)",
        "no user named \"carol\"",
        "-> dave: sent (message 501)",
        "no conversation is open",
        "open: g:7; 2 unread",
        "-> g:7: sent (message 501)",
        "[g:7 #2] bob: h2",
        "[g:7 #3] bob: h3",
        "read up to #3; 0 unread",
        "* g:7  0 unread  (last #3)",
        "created group #5 \"lobby\"; anyone may /join it",
        "asked to join group #5; the owner or an admin must approve",
        "group #5: alice (owner), bob (member)",
        "left group #5",
        "unknown command",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    let seen = seen.lock().unwrap();
    let direct: Vec<_> = seen.sends.iter().map(|s| s.to_user_id).collect();
    assert_eq!(direct, [2, 4]);
    assert_eq!(seen.group_sends.len(), 1);
    assert_eq!(
        (seen.group_sends[0].group_id, &seen.group_sends[0].body[..]),
        (7, &b"hello group"[..])
    );
    let reads: Vec<_> = seen.reads.iter().map(|r| r.seq).collect();
    assert_eq!(reads, [3]);
    assert_eq!(seen.device_ids, ["box"]);
    let asked = asked.lock().unwrap();
    let create = asked
        .iter()
        .find(|r| r.0 == "POST" && r.1 == "/groups")
        .expect("POST /groups");
    let body: Value = serde_json::from_str(&create.3).expect("JSON body");
    assert_eq!(
        (body["name"].as_str(), body["open"].as_bool()),
        (Some("lobby"), Some(true))
    );
    assert!(asked.iter().all(|r| r.2 == "Bearer tk-alice"), "{asked:?}");
}
