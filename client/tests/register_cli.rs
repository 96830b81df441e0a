//! The register HTTP client and the `fishchat register` / `login` commands
//! against a real register service (started here on its own ports, database
//! and key prefix).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fishchat_client::register::{
    InviteStatus, JoinStatus, Member, RegisterApi, RegisterError, Role,
};
use fishchat_e2e::services::{ServiceProcess, bin_dir, free_port, wait_healthy};
use fishchat_e2e::{etcd_endpoint, mongo_url, redis_url, unique_name};

/// A register service of this test alone, with the manager it records group membership in.
struct Register {
    _processes: [ServiceProcess; 2],
    url: String,
}

async fn start_register(test: &str) -> Register {
    // Fail fast, with a start hint, when a server is down.
    fishchat_e2e::etcd().await;
    fishchat_e2e::redis().await;
    fishchat_e2e::mongo().await;
    let name = unique_name(test);
    let database = name.replace('-', "_");
    let log_dir = bin_dir().join("e2e-logs").join(&name);
    eprintln!("register and manager logs in {}", log_dir.display());
    let namespace = ("FISHCHAT_ETCD_NAMESPACE".to_owned(), format!("/{name}"));
    let etcd = format!("[\"{}\"]", etcd_endpoint());
    let manager_grpc = format!("127.0.0.1:{}", free_port());
    let var = |key: &str, value: &str| (format!("FISHCHAT_MANAGER_{key}"), value.to_owned());
    let manager = ServiceProcess::start(
        "fishchat-manager",
        vec![
            namespace.clone(),
            var("GRPC_LISTEN", &manager_grpc),
            var("METRICS_LISTEN", &format!("127.0.0.1:{}", free_port())),
            var("MONGO_URL", &mongo_url()),
            var("DATABASE", &database),
            var("ETCD_ENDPOINTS", &etcd),
        ],
        &log_dir,
    );
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let var = |key: &str, value: &str| (format!("FISHCHAT_REGISTER_{key}"), value.to_owned());
    let vars = vec![
        namespace,
        var("GRPC_LISTEN", &grpc),
        var("METRICS_LISTEN", &format!("127.0.0.1:{}", free_port())),
        var("HTTP_LISTEN", &http),
        var("REDIS_URL", &redis_url()),
        var("KEY_PREFIX", &format!("{name}:")),
        var("MONGO_URL", &mongo_url()),
        var("DATABASE", &database),
        var("ETCD_ENDPOINTS", &etcd),
        // Debug builds hash slowly; strength is not under test here.
        var("ARGON2_MEMORY_KIB", "1024"),
        var("ARGON2_ITERATIONS", "1"),
        var("MANAGER_ADDR", &format!("http://{manager_grpc}")),
    ];
    let register = ServiceProcess::start("fishchat-register", vars, &log_dir);
    wait_healthy(&manager_grpc, Duration::from_secs(60)).await;
    // The HTTP listener is bound before the gRPC server (and its health) starts.
    wait_healthy(&grpc, Duration::from_secs(60)).await;
    Register {
        _processes: [register, manager],
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
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol a/b"));
    let alice_id = api.create_user(&alice, "pw-a").await.unwrap();
    let bob_id = api.create_user(&bob, "pw-b").await.unwrap();
    let carol_id = api.create_user(&carol, "pw-c").await.unwrap();
    assert_ne!(alice_id, bob_id);
    match api.create_user(&alice, "again").await {
        Err(err @ RegisterError::Refused { status: 409, .. }) => {
            assert_eq!(err.code(), Some("NAME_TAKEN"));
        }
        other => panic!("expected 409, got {other:?}"),
    }

    let login = api.login(&alice, "pw-a").await.unwrap();
    assert_eq!(login.user_id, alice_id);
    assert!(!login.token.is_empty());
    let wrong = api.login(&alice, "nope").await.unwrap_err();
    assert!(wrong.is_unauthorized(), "{wrong}");
    let bob_login = api.login(&bob, "pw-b").await.unwrap();
    let carol_login = api.login(&carol, "pw-c").await.unwrap();

    // Names with a slash and a space are looked up as one path segment.
    let found = api.user_by_name(&bob_login.token, &carol).await.unwrap();
    assert_eq!(
        (found.user_id, found.name.as_str()),
        (carol_id, carol.as_str())
    );
    let missing = api
        .user_by_name(&bob_login.token, "nobody?")
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");

    // An open group: Bob joins at once, leaves, and joins again.
    let open = api
        .create_group(&login.token, "friends", true)
        .await
        .unwrap();
    assert_eq!(
        (open.name.as_str(), open.owner_id, open.open),
        ("friends", alice_id, true)
    );
    assert_eq!(
        api.group(&bob_login.token, open.group_id).await.unwrap(),
        open
    );
    for _ in 0..2 {
        assert_eq!(
            api.join_group(&bob_login.token, open.group_id)
                .await
                .unwrap(),
            JoinStatus::Member
        );
    }
    let members = api
        .group_members(&login.token, open.group_id)
        .await
        .unwrap();
    assert_eq!(
        members,
        [
            Member {
                user_id: alice_id,
                role: Role::Owner
            },
            Member {
                user_id: bob_id,
                role: Role::Member
            }
        ]
    );
    assert!(
        api.leave_group(&bob_login.token, open.group_id)
            .await
            .unwrap()
    );
    assert!(
        !api.leave_group(&bob_login.token, open.group_id)
            .await
            .unwrap()
    );
    let owner_stays = api
        .leave_group(&login.token, open.group_id)
        .await
        .unwrap_err();
    assert_eq!(
        owner_stays.code(),
        Some("OWNER_CANNOT_LEAVE"),
        "{owner_stays}"
    );

    // A closed group: requests wait, are approved or rejected; invitations admit.
    let closed = api
        .create_group(&login.token, "closed", false)
        .await
        .unwrap();
    assert_eq!(
        api.join_group(&bob_login.token, closed.group_id)
            .await
            .unwrap(),
        JoinStatus::Pending
    );
    let outsider = api
        .group_members(&bob_login.token, closed.group_id)
        .await
        .unwrap_err();
    assert_eq!(outsider.status(), Some(403), "{outsider}");
    assert_eq!(
        api.join_requests(&login.token, closed.group_id)
            .await
            .unwrap(),
        [bob_id]
    );
    api.approve(&login.token, closed.group_id, bob_id)
        .await
        .unwrap();
    assert_eq!(
        api.join_group(&carol_login.token, closed.group_id)
            .await
            .unwrap(),
        JoinStatus::Pending
    );
    api.reject(&login.token, closed.group_id, carol_id)
        .await
        .unwrap();
    assert!(
        api.join_requests(&login.token, closed.group_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.invite(&login.token, closed.group_id, carol_id)
            .await
            .unwrap(),
        InviteStatus::Invited
    );
    assert_eq!(
        api.join_group(&carol_login.token, closed.group_id)
            .await
            .unwrap(),
        JoinStatus::Member
    );

    // Admins: Bob, made admin, removes Carol; the owner demotes him.
    let bob_admin = api
        .add_admin(&login.token, closed.group_id, bob_id)
        .await
        .unwrap();
    assert_eq!(bob_admin.role, Role::Admin);
    let forbidden = api
        .remove_member(&bob_login.token, closed.group_id, alice_id)
        .await
        .unwrap_err();
    assert_eq!(forbidden.status(), Some(403), "{forbidden}");
    api.remove_member(&bob_login.token, closed.group_id, carol_id)
        .await
        .unwrap();
    api.remove_admin(&login.token, closed.group_id, bob_id)
        .await
        .unwrap();
    let members = api
        .group_members(&bob_login.token, closed.group_id)
        .await
        .unwrap();
    let roles: Vec<(u64, Role)> = members.iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(roles, [(alice_id, Role::Owner), (bob_id, Role::Member)]);

    let groups = api.my_groups(&bob_login.token).await.unwrap();
    assert_eq!(groups, [closed]);

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
