//! Mutual TLS between services (docs/security.md): a deployment whose
//! certificates `scripts/certs` issued carries a chat end to end, while a
//! caller without a certificate, or with one another CA signed, is refused
//! on every internal port it tries: a forged Push to an access node and a
//! SendToUser that names another user as the sender both fail, and nothing
//! they carried reaches anyone. And the HTTP APIs clients reach (register's
//! accounts, the gateway's lookup) speak HTTPS with the public certificate.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fishchat_client::{Client, ClientOptions, ClientTls, Event, Events};
use fishchat_e2e::cluster::Cluster;
use fishchat_rpc::access::access_client::AccessClient;
use fishchat_rpc::access::{Delivery, PushRequest};
use fishchat_rpc::logic::logic_client::LogicClient;
use fishchat_rpc::logic::{Outgoing, SendBatch, outgoing};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const DEADLINE: Duration = Duration::from_secs(30);

/// Issues a CA and one certificate into a fresh folder with `scripts/certs`.
fn issue(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(fishchat_e2e::unique_name(name));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/certs");
    let status = std::process::Command::new(script)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/certs failed: {status}");
    dir
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// TLS as a caller holding `identity` (if any) that trusts the CA in `trusted`.
fn tls(trusted: &Path, identity: Option<&Path>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(trusted, "ca.pem")))
        .domain_name(fishchat_node::DEFAULT_SERVER_NAME);
    match identity {
        Some(dir) => config.identity(Identity::from_pem(
            read(dir, "node.pem"),
            read(dir, "node.key"),
        )),
        None => config,
    }
}

/// A channel to `addr` as an outsider would open it; `None` when refused.
async fn outsider(addr: &str, tls: Option<ClientTlsConfig>) -> Option<Channel> {
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
    };
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()
}

fn forged_push(to: u64) -> PushRequest {
    PushRequest {
        deliveries: vec![Delivery {
            user_ids: vec![to],
            frame: vec![0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].into(),
        }],
    }
}

fn spoofed_send(from: u64, to: u64) -> SendBatch {
    SendBatch {
        sends: vec![Outgoing {
            from_user_id: from,
            message: Some(outgoing::Message::ToUser(fishchat_codec::pb::SendToUser {
                to_user_id: to,
                client_msg_id: "spoofed".into(),
                body: b"i am not who you think".to_vec().into(),
            })),
        }],
    }
}

async fn next_message(events: &mut Events) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(Event::Message { message, .. })) => {
                return String::from_utf8_lossy(&message.body).into_owned();
            }
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_talk_over_mutual_tls_and_refuse_callers_without_a_deployment_certificate() {
    let certs = issue("tls-deployment");
    let rogue = issue("tls-rogue");
    // This process dials the services as one of them, with the deployment's certificate.
    assert!(fishchat_discovery::use_client_tls(tls(
        &certs,
        Some(&certs)
    )));
    let path = |file: &str| certs.join(file).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("node.pem"), path("node.key"));
    let mut cluster = Cluster::start_with(
        "tls",
        &[
            ("FISHCHAT_TLS_CA", &ca),
            ("FISHCHAT_TLS_CERT", &cert),
            ("FISHCHAT_TLS_KEY", &key),
        ],
    )
    .await;
    cluster.add_access(&[]).await;
    let gateway = cluster.add_gateway().await;

    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    let options = |token: &str, device: &str| ClientOptions {
        gateway: Some(gateway.to_string()),
        request_timeout: Duration::from_secs(20),
        ..ClientOptions::new(token, device)
    };
    let (a, _a_events) = Client::connect(options(&alice_token, "a")).await.unwrap();
    let (_b, mut b_events) = Client::connect(options(&bob_token, "b")).await.unwrap();
    a.send_to_user(bob, "over tls").await.unwrap();
    assert_eq!(
        next_message(&mut b_events).await,
        "over tls",
        "every hop carried it"
    );

    let push = cluster.access[0].push.to_string();
    let logic = cluster.logic[0].1.to_string();
    // The ports answer a caller holding the deployment's certificate...
    let insider = outsider(&push, Some(tls(&certs, Some(&certs))))
        .await
        .unwrap();
    let kick = fishchat_rpc::access::KickRequest {
        user_id: bob,
        conn_id: 0,
        reason: 0,
    };
    let answered = AccessClient::new(insider).kick(kick).await.unwrap();
    assert!(!answered.into_inner().kicked, "no such connection");
    // ... and nobody else.
    let callers = [
        ("no TLS", None),
        ("TLS without a certificate", Some(tls(&certs, None))),
        (
            "a certificate of another CA",
            Some(tls(&certs, Some(&rogue))),
        ),
    ];
    for (who, config) in callers {
        if let Some(channel) = outsider(&push, config.clone()).await {
            let forged = AccessClient::new(channel).push(forged_push(bob)).await;
            assert!(
                forged.is_err(),
                "{who}: a forged Push was answered: {forged:?}"
            );
        }
        if let Some(channel) = outsider(&logic, config).await {
            let spoofed = LogicClient::new(channel)
                .send(spoofed_send(bob, alice))
                .await;
            assert!(
                spoofed.is_err(),
                "{who}: a spoofed send was answered: {spoofed:?}"
            );
        }
    }
    // What did get through still does, and nothing forged came before it.
    a.send_to_user(bob, "still here").await.unwrap();
    assert_eq!(next_message(&mut b_events).await, "still here");
    let _ = std::fs::remove_dir_all(&certs);
    let _ = std::fs::remove_dir_all(&rogue);
}

/// `request` over TLS to `addr`, trusting the CA in `trusted`; the response
/// as text, or `None` when the connection failed.
async fn https(addr: std::net::SocketAddr, trusted: &Path, request: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(trusted.join("ca.pem")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// A plain HTTP/1.1 request to `addr`; what came back, perhaps nothing.
async fn plain(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_apis_clients_reach_speak_https_only() {
    let certs = issue("tls-public");
    let path = |file: &str| certs.join(file).display().to_string();
    let (cert, key) = (path("node.pem"), path("node.key"));
    let mut cluster = Cluster::start_with(
        "https",
        &[
            ("FISHCHAT_PUBLIC_TLS_CERT", &cert),
            ("FISHCHAT_PUBLIC_TLS_KEY", &key),
        ],
    )
    .await;
    cluster.add_access(&[]).await;
    cluster.add_gateway().await;
    let gateway = cluster.gateway.as_ref().unwrap().http;
    let register = cluster.register_http;

    let (_, _) = cluster.new_user("carol").await;
    let name = format!("carol-{}", cluster.name);
    let login = post_json(
        "/login",
        &format!(r#"{{"name":"{name}","password":"pw-123456"}}"#),
    );
    let answer = https(register, &certs, &login).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"token\""), "{answer}");
    let lookup = "GET /lookup HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = https(gateway, &certs, lookup).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // In clear, neither answers: the password would have crossed the network.
    for addr in [register, gateway] {
        let answer = plain(addr, &login).await;
        assert!(
            !answer.starts_with("HTTP/1.1 2"),
            "{addr} answered in clear: {answer}"
        );
    }
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_chat_over_tls_with_an_access_node_whose_client_port_speaks_only_tls() {
    let certs = issue("tls-client-port");
    let path = |file: &str| certs.join(file).display().to_string();
    let (cert, key) = (path("node.pem"), path("node.key"));
    let mut cluster = Cluster::start("client-tls").await;
    cluster
        .add_access(&[("CLIENT_TLS_CERT", &cert), ("CLIENT_TLS_KEY", &key)])
        .await;
    let gateway = cluster.add_gateway().await;

    let (alice, alice_token) = cluster.new_user("alice").await;
    let (bob, bob_token) = cluster.new_user("bob").await;
    // The gateway hands out 127.0.0.1:<port>, the name checked by default,
    // which the certificate carries.
    let tls = ClientTls::from_ca_file(&certs.join("ca.pem"), None).unwrap();
    let options = |token: &str, device: &str, tls: Option<ClientTls>| ClientOptions {
        gateway: Some(gateway.to_string()),
        request_timeout: Duration::from_secs(20),
        tls,
        ..ClientOptions::new(token, device)
    };
    let (a, mut a_events) = Client::connect(options(&alice_token, "a", Some(tls.clone())))
        .await
        .unwrap();
    let (b, mut b_events) = Client::connect(options(&bob_token, "b", Some(tls)))
        .await
        .unwrap();
    a.send_to_user(bob, "over client tls").await.unwrap();
    assert_eq!(next_message(&mut b_events).await, "over client tls");
    b.send_to_user(alice, "and back").await.unwrap();
    // Alice's own message comes to her devices too, first.
    assert_eq!(next_message(&mut a_events).await, "over client tls");
    assert_eq!(next_message(&mut a_events).await, "and back");

    // A client speaking plain TCP gets no login there.
    let plain = ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..options(&bob_token, "plain", None)
    };
    let refused = Client::connect(plain).await;
    assert!(refused.is_err(), "a plain client logged in on a TLS port");
    let _ = std::fs::remove_dir_all(&certs);
}
