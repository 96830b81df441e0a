//! TLS on the client port (`client_tls_cert`, `client_tls_key`): the same
//! frames through rustls inside the event loop; a client that does not speak
//! TLS, or stalls in its handshake, is closed without disturbing the others.

use std::path::{Path, PathBuf};

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::*;

/// A CA and a certificate for localhost from `scripts/certs`, removed on drop.
struct Certs(PathBuf);

impl Certs {
    fn issue() -> Self {
        let dir = std::env::temp_dir().join(fishchat_e2e::unique_name("access-tls"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/certs");
        let out = std::process::Command::new(script)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/certs failed: {out:?}");
        Self(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.0.join("ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node whose client port speaks TLS only.
async fn start(certs: &Certs, tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start(FakeLogic::default(), |c| {
        c.client_tls_cert = certs.file("node.pem");
        c.client_tls_key = certs.file("node.key");
        tweak(c);
    })
    .await
}

impl Harness {
    async fn connect_tls(&self, certs: &Certs) -> Client {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(DEADLINE, certs.connector().connect(name, tcp))
            .await
            .expect("a handshake within the deadline")
            .unwrap();
        Client {
            stream: Box::new(tls),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    async fn login_tls(&self, certs: &Certs, user_id: u64, device: &str) -> Client {
        self.connect_tls(certs).await.log_in(user_id, device).await
    }
}

/// Writes `bytes` on a plain TCP connection and reads until the node closes it.
async fn refused_in_clear(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("closed within the deadline");
    // A reset after the alert is a close too.
    assert!(read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    answer
}

/// Nothing but a TLS alert record (content type 21), if anything, came back.
fn only_an_alert(answer: &[u8]) -> bool {
    answer.is_empty() || answer[0] == 21
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_client_logs_in_sends_and_receives_pushes() {
    let certs = Certs::issue();
    let h = start(&certs, |c| c.max_outbound_bytes = 8 << 20).await;
    let mut client = h.login_tls(&certs, 7, "phone").await;
    let pong = client.request(pb::Ping { client_time_ms: 42 }).await;
    assert!(matches!(pong, Body::Pong(p) if p.client_time_ms == 42));
    let ack = client.request(send_to(8, "m1")).await;
    assert!(
        matches!(ack, Body::SendAck(ref a) if a.client_msg_id == "m1" && a.server_msg_id > 0),
        "{ack:?}"
    );
    assert_eq!(h.logic.sends.lock()[0].from_user_id, 7);

    // 2 MB of pushes before the client reads any: far more than the socket
    // takes, so most waits in rustls and goes out on writable events, in order.
    let message = "x".repeat(20_000);
    for seq in 1..=100 {
        let reply = h.push.deliver(PushRequest {
            deliveries: vec![Delivery {
                user_ids: vec![7],
                frame: push_frame(vec![stored(seq, &message)]),
            }],
        });
        assert_eq!(reply.delivered_connections, 1);
    }
    for seq in 1..=100 {
        let (id, body) = client.recv().await.expect("a push");
        assert_eq!((id, pushed_seqs(&body)), (0, vec![seq]));
    }
    let pong = client.request(pb::Ping { client_time_ms: 43 }).await;
    assert!(matches!(pong, Body::Pong(p) if p.client_time_ms == 43));
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_instead_of_a_client_hello_closes_only_that_connection() {
    let certs = Certs::issue();
    let h = start(&certs, |_| {}).await;
    let mut bystander = h.login_tls(&certs, 1, "d").await;
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A handshake record whose message is no ClientHello.
        &[22, 3, 1, 0, 6, 1, 0, 0, 2, 0xff, 0xff],
        &[0xff; 4096],
    ];
    for bytes in garbage {
        let answer = refused_in_clear(h.addr, bytes).await;
        assert!(only_an_alert(&answer), "{answer:?}");
    }
    wait_until(
        DEADLINE,
        "the refused connections to be forgotten",
        async || (h.connections() == 1).then_some(()),
    )
    .await;
    let pong = bystander.request(pb::Ping::default()).await;
    assert!(matches!(pong, Body::Pong(_)), "the bystander is unaffected");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_client_on_a_tls_port_is_refused() {
    let certs = Certs::issue();
    let h = start(&certs, |_| {}).await;
    let mut login = BytesMut::new();
    Body::from(pb::LoginRequest {
        token: "tok-5".into(),
        device_id: "d".into(),
    })
    .encode(1, u32::MAX, &mut login)
    .unwrap();
    let answer = refused_in_clear(h.addr, &login).await;
    assert!(only_an_alert(&answer), "answered in clear: {answer:?}");
    assert_eq!(
        h.logic.logins.load(Ordering::SeqCst),
        0,
        "nothing went upstream"
    );
    wait_until(DEADLINE, "the connection to be forgotten", async || {
        (h.connections() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_not_finished_by_the_login_deadline_is_closed() {
    let certs = Certs::issue();
    let h = start(&certs, |c| c.login_deadline_ms = 300).await;
    let mut stalled = TcpStream::connect(h.addr).await.unwrap();
    // The start of a ClientHello record, and then nothing.
    stalled.write_all(&[22, 3, 1]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut rest))
        .await
        .expect("closed within the deadline")
        .unwrap();
    assert!(rest.is_empty(), "nothing can be said before a handshake");
    assert!(h.kicks(KickReason::LoginTimeout));
    wait_until(DEADLINE, "the connection to be forgotten", async || {
        (h.connections() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_reader_that_never_reads_is_kicked_as_a_slow_consumer() {
    let certs = Certs::issue();
    let h = start(&certs, |c| c.max_outbound_bytes = 64 * 1024).await;
    let _stalled = h.login_tls(&certs, 1, "d").await;
    let message = "x".repeat(10_000);
    // At most 10 MB, far more than the socket buffers and the cap together.
    for seq in 1..=1000 {
        h.push.deliver(PushRequest {
            deliveries: vec![Delivery {
                user_ids: vec![1],
                frame: push_frame(vec![stored(seq, &message)]),
            }],
        });
        if h.connections() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    wait_until(DEADLINE, "the stalled reader to be cut off", async || {
        (h.connections() == 0).then_some(())
    })
    .await;
    assert!(h.kicks(KickReason::SlowConsumer));
}
