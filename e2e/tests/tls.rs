//! Mutual TLS between services (docs/security.md): a deployment whose
//! certificates `scripts/certs` issued carries a chat end to end, while a
//! caller without a certificate, or with one another CA signed, is refused
//! on every internal port it tries: a forged Push to an access node and a
//! SendToUser that names another user as the sender both fail, and nothing
//! they carried reaches anyone.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fishchat_client::{Client, ClientOptions, Event, Events};
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
