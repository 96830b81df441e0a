//! The register HTTP client and the `fishchat register` / `login` commands
//! against a real register service (started here on its own ports, database
//! and key prefix).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fishchat_client::register::{RegisterApi, RegisterError};
use fishchat_e2e::services::{ServiceProcess, bin_dir, free_port, wait_healthy};
use fishchat_e2e::{etcd_endpoint, mongo_url, redis_url, unique_name};

/// A register service of this test alone.
struct Register {
    _process: ServiceProcess,
    url: String,
}

async fn start_register(test: &str) -> Register {
    // Fail fast, with a start hint, when a server is down.
    fishchat_e2e::etcd().await;
    fishchat_e2e::redis().await;
    fishchat_e2e::mongo().await;
    let name = unique_name(test);
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let var = |key: &str, value: &str| (format!("FISHCHAT_REGISTER_{key}"), value.to_owned());
    let vars = vec![
        ("FISHCHAT_ETCD_NAMESPACE".to_owned(), format!("/{name}")),
        var("GRPC_LISTEN", &grpc),
        var("HTTP_LISTEN", &http),
        var("REDIS_URL", &redis_url()),
        var("KEY_PREFIX", &format!("{name}:")),
        var("MONGO_URL", &mongo_url()),
        var("DATABASE", &name.replace('-', "_")),
        var("ETCD_ENDPOINTS", &format!("[\"{}\"]", etcd_endpoint())),
        // Debug builds hash slowly; strength is not under test here.
        var("ARGON2_MEMORY_KIB", "1024"),
        var("ARGON2_ITERATIONS", "1"),
    ];
    let log_dir = bin_dir().join("e2e-logs").join(&name);
    eprintln!("register logs in {}", log_dir.display());
    let process = ServiceProcess::start("fishchat-register", vars, &log_dir);
    // The HTTP listener is bound before the gRPC server (and its health) starts.
    wait_healthy(&grpc, Duration::from_secs(60)).await;
    Register {
        _process: process,
        url: format!("http://{http}"),
    }
}

/// A user name no other run uses (register names are global per database, but be safe).
fn user(prefix: &str) -> String {
    unique_name(prefix)
}

#[tokio::test]
async fn register_api_accounts_tokens_and_groups() {
    let register = start_register("client-api").await;
    let api = RegisterApi::new(format!("{}/", register.url));
    let (alice, bob) = (user("alice"), user("bob"));
    let alice_id = api.create_user(&alice, "pw-a").await.unwrap();
    let bob_id = api.create_user(&bob, "pw-b").await.unwrap();
    assert_ne!(alice_id, bob_id);
    match api.create_user(&alice, "again").await {
        Err(RegisterError::Refused {
            status: 409, code, ..
        }) => assert_eq!(code, "INVALID_ARGUMENT"),
        other => panic!("expected 409, got {other:?}"),
    }

    let login = api.login(&alice, "pw-a").await.unwrap();
    assert_eq!(login.user_id, alice_id);
    assert!(!login.token.is_empty());
    let wrong = api.login(&alice, "nope").await.unwrap_err();
    assert!(wrong.is_unauthorized(), "{wrong}");

    let group = api.create_group(&login.token, "friends").await.unwrap();
    assert_eq!((group.name.as_str(), group.owner_id), ("friends", alice_id));
    let bob_login = api.login(&bob, "pw-b").await.unwrap();
    assert!(
        api.join_group(&bob_login.token, group.group_id)
            .await
            .unwrap()
    );
    assert!(
        !api.join_group(&bob_login.token, group.group_id)
            .await
            .unwrap()
    );
    let mut members = api
        .group_members(&login.token, group.group_id)
        .await
        .unwrap();
    members.sort_unstable();
    assert_eq!(members, [alice_id, bob_id]);
    let groups = api.my_groups(&bob_login.token).await.unwrap();
    assert_eq!(groups, [group]);

    api.logout(&bob_login.token).await.unwrap();
    let revoked = api.my_groups(&bob_login.token).await.unwrap_err();
    assert!(revoked.is_unauthorized(), "{revoked}");
}

#[tokio::test]
async fn an_unreachable_register_is_a_clear_error() {
    let api = RegisterApi::new(format!("http://127.0.0.1:{}", free_port()));
    let err = api.login("x", "y").await.unwrap_err();
    assert!(matches!(err, RegisterError::Http { .. }), "{err}");
    assert!(err.to_string().contains("register service at"), "{err}");
}

/// Runs the `fishchat` command with a profile folder and register URL, feeding `stdin`.
fn fishchat(home: &Path, register: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fishchat"))
        .arg("--home")
        .arg(home)
        .args(["--register", register])
        .args(args)
        .env_remove("FISHCHAT_PASSWORD")
        .env_remove("FISHCHAT_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fishchat");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("fishchat output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_register_and_login_keep_a_profile() {
    let register = start_register("client-cli").await;
    let home = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));

    let out = fishchat(
        home.path(),
        &register.url,
        &["register", &alice, "--password", "pw"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("registered {alice} as user")));

    let again = fishchat(
        home.path(),
        &register.url,
        &["register", &alice, "--password", "pw"],
        "",
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains(&format!("registering {alice}")),
        "{}",
        text(&again.stderr)
    );

    // The password typed on the terminal.
    let out = fishchat(home.path(), &register.url, &["register", &bob], "pw-b\n");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = fishchat(
        home.path(),
        &register.url,
        &["login", &alice, "--password", "pw"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fishchat(home.path(), &register.url, &["login", &bob], "pw-b\n");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let profile: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join("profiles").join(format!("{alice}.json"))).unwrap(),
    )
    .unwrap();
    assert!(profile["user_id"].as_u64().unwrap() > 0);
    assert!(!profile["token"].as_str().unwrap().is_empty());
    let current = std::fs::read_to_string(home.path().join("current")).unwrap();
    assert_eq!(current, bob, "the last login is the default identity");

    let wrong = fishchat(
        home.path(),
        &register.url,
        &["login", &alice, "--password", "bad"],
        "",
    );
    assert!(!wrong.status.success());
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains(&format!("logging in as {alice}")) && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn cli_commands_that_need_a_login_say_so() {
    let home = tempfile::tempdir().unwrap();
    let out = fishchat(
        home.path(),
        "http://127.0.0.1:1",
        &["send", "--to", "2", "hi"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("fishchat login"),
        "{}",
        text(&out.stderr)
    );
    let out = fishchat(
        home.path(),
        "http://127.0.0.1:1",
        &["login", "x", "--password", "y"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("register service at"),
        "{}",
        text(&out.stderr)
    );
}
