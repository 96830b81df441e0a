//! `fishchat send` and `fishchat listen` against a small fake access node:
//! their JSON lines, acks and exit statuses.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fishchat_client::{Connection, ErrorCode, StoredMessage};
use fishchat_codec::Body;
use fishchat_codec::pb::{self, stored_message::Conversation};
use serde_json::Value;
use tokio::net::TcpListener;

/// How the fake node behaves.
#[derive(Clone, Default)]
struct Script {
    /// Refuse every send with this code.
    refuse: Option<ErrorCode>,
    /// Pushed right after the first SYNC is answered.
    push: Vec<StoredMessage>,
}

/// What the fake node saw.
#[derive(Default)]
struct Seen {
    device_ids: Vec<String>,
    sends: Vec<pb::SendToUser>,
    acks: Vec<u64>,
}

/// Serves connections until the test ends: login as user 1, empty syncs, scripted sends.
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
                let mut pushed = false;
                while let Ok((id, body)) = conn.recv().await {
                    let reply: Option<Body> = match body {
                        Body::Login(login) => {
                            seen.lock().expect("lock").device_ids.push(login.device_id);
                            Some(
                                pb::LoginReply {
                                    user_id: 1,
                                    ..Default::default()
                                }
                                .into(),
                            )
                        }
                        Body::Sync(_) => Some(pb::SyncReply::default().into()),
                        Body::Ping(_) => Some(pb::Pong::default().into()),
                        Body::SendToUser(send) => {
                            let error = script.refuse.map(|code| pb::Error {
                                code: code as i32,
                                message: "refused by the script".into(),
                            });
                            let ack = pb::SendAck {
                                client_msg_id: send.client_msg_id.clone(),
                                server_msg_id: if error.is_some() { 0 } else { 501 },
                                error,
                                ..Default::default()
                            };
                            seen.lock().expect("lock").sends.push(send);
                            Some(ack.into())
                        }
                        Body::DeliveryAck(ack) => {
                            seen.lock().expect("lock").acks.push(ack.up_to_seq);
                            None
                        }
                        Body::Logout(_) => return,
                        _ => None,
                    };
                    let is_sync = matches!(reply, Some(Body::SyncReply(_)));
                    if let Some(reply) = reply {
                        conn.send(id, &reply).await.expect("reply");
                    }
                    if is_sync && !pushed && !script.push.is_empty() {
                        pushed = true;
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

/// A profile folder with alice (user 1) logged in and bob (user 2) known.
fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    for (name, id) in [("bob", 2), ("alice", 1)] {
        let profile = serde_json::json!({
            "name": name, "user_id": id, "token": format!("tk-{name}"), "expires_at_ms": 0
        });
        std::fs::write(profiles.join(format!("{name}.json")), profile.to_string())
            .expect("profile");
    }
    std::fs::write(dir.path().join("current"), "alice").expect("current");
    dir
}

async fn fishchat(home: &Path, access: &str, args: &[&str]) -> Output {
    fishchat_with_input(home, access, args, "").await
}

async fn fishchat_with_input(home: &Path, access: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fishchat"));
    command
        .arg("--home")
        .arg(home)
        .args(["--access", access, "--device", "box"])
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

#[tokio::test]
async fn send_prints_the_ack_as_json_and_resolves_known_names() {
    let (access, seen) = fake_access(Script::default()).await;
    let home = home();
    let out = fishchat(home.path(), &access, &["send", "--to", "bob", "hello bob"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["server_msg_id"], 501);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sends.len(), 1);
    assert_eq!(seen.sends[0].to_user_id, 2);
    assert_eq!(&seen.sends[0].body[..], b"hello bob");
    assert_eq!(
        lines[0]["client_msg_id"],
        seen.sends[0].client_msg_id.as_str()
    );
    assert_eq!(
        seen.device_ids,
        ["box-send"],
        "send must not kick the listening device"
    );
}

#[tokio::test]
async fn a_refused_send_exits_non_zero_with_the_code() {
    let script = Script {
        refuse: Some(ErrorCode::UnknownUser),
        ..Script::default()
    };
    let (access, _seen) = fake_access(script).await;
    let home = home();
    let out = fishchat(home.path(), &access, &["send", "--to", "99", "anyone?"]).await;
    assert!(!out.status.success());
    assert_eq!(json_lines(&out)[0]["error"], "UNKNOWN_USER");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNKNOWN_USER") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = fishchat(home.path(), &access, &["send", "--to", "carol", "x"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("numeric user id"));
}

#[tokio::test]
async fn listen_prints_and_acks_the_first_count_messages() {
    let message = |seq: u64| StoredMessage {
        seq,
        server_msg_id: 100 + seq,
        from_user_id: 2,
        conversation: Some(Conversation::GroupId(7)),
        body: format!("m{seq}").into_bytes().into(),
        timestamp_ms: 1,
        client_msg_id: format!("c{seq}"),
    };
    let script = Script {
        push: vec![message(1), message(2), message(3)],
        ..Script::default()
    };
    let (access, seen) = fake_access(script).await;
    let home = home();
    let out = fishchat(
        home.path(),
        &access,
        &["listen", "--count", "2", "--timeout", "20"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let seqs: Vec<_> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(
        (lines[0]["group"].as_u64(), lines[0]["text"].as_str()),
        (Some(7), Some("m1"))
    );
    // Only what was printed is acknowledged: the third message waits for the next listen.
    assert_eq!(seen.lock().unwrap().acks, [1, 2]);
}

#[tokio::test]
async fn listen_stops_at_its_timeout() {
    let (access, _seen) = fake_access(Script::default()).await;
    let home = home();
    let out = fishchat(home.path(), &access, &["listen", "--timeout", "1"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json_lines(&out).is_empty());
}

#[tokio::test]
async fn chat_sends_syncs_and_waits_for_acks_before_quitting() {
    let (access, seen) = fake_access(Script::default()).await;
    let home = home();
    let input = "/help\n/to bob hi from chat\n/to carol who?\n/sync\n/nonsense\n/quit\n";
    let out = fishchat_with_input(home.path(), &access, &["chat"], input).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "alice (user 1)",
        "/group GROUP_ID text",
        "-> bob: sent (message 501)",
        "unknown user \"carol\"",
        "nothing new",
        "unknown command",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sends.len(), 1);
    assert_eq!(&seen.sends[0].body[..], b"hi from chat");
    assert_eq!(seen.device_ids, ["box"]);
}
